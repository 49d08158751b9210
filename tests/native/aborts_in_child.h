// Runs `run` in a forked child and says whether abort() ended it: how the CUDA emulator stops a
// run that must not go on (a deadlocked block, a misaligned or divergent wmma call), tested by
// emulated_kernels_test --deadlock and emulated_wmma_test --misaligned / --divergent.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>

template <typename Run>
bool aborts_in_child(Run&& run) {
  std::fflush(stdout);  // nothing buffered is printed twice
  const pid_t child = fork();
  if (child == 0) {
    run();
    std::_Exit(0);
  }
  int status = 0;
  waitpid(child, &status, 0);
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}
