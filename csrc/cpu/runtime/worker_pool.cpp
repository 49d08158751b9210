// Implementation of run_slots (worker_pool.h): one process-wide pool of sleeping helper threads.
#include "worker_pool.h"

#include <ATen/Parallel.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>

namespace mmcl_fast {
namespace {

// One parallel section: its slots are claimed in order by whichever thread asks next.
struct Section {
  const std::function<void(int64_t)>* fn;
  int64_t slots;
  std::atomic<int64_t> next{0};
  std::mutex m;
  std::condition_variable finished;
  int64_t done = 0;          // guarded by m
  std::exception_ptr error;  // guarded by m

  Section(const std::function<void(int64_t)>* f, int64_t n) : fn(f), slots(n) {}

  void work() {
    for (int64_t s = next.fetch_add(1); s < slots; s = next.fetch_add(1)) {
      std::exception_ptr err;
      try {
        (*fn)(s);
      } catch (...) {
        err = std::current_exception();
      }
      std::lock_guard<std::mutex> lock(m);
      if (err && !error) error = err;
      if (++done == slots) finished.notify_all();
    }
  }
};

class Pool {
 public:
  // Queues `copies` helper visits to the section, starting helper threads up to `copies`.
  void post(const std::shared_ptr<Section>& section, int64_t copies) {
    {
      std::lock_guard<std::mutex> lock(m_);
      while (helpers_ < copies) {
        std::thread([this] { loop(); }).detach();
        ++helpers_;
      }
      for (int64_t c = 0; c < copies; ++c) queue_.push_back(section);
    }
    if (copies == 1) {
      wake_.notify_one();
    } else {
      wake_.notify_all();
    }
  }

 private:
  void loop() {
    for (;;) {
      std::shared_ptr<Section> section;
      {
        std::unique_lock<std::mutex> lock(m_);
        wake_.wait(lock, [this] { return !queue_.empty(); });
        section = std::move(queue_.front());
        queue_.pop_front();
      }
      section->work();
    }
  }

  std::mutex m_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Section>> queue_;
  int64_t helpers_ = 0;
};

// Never destroyed: helpers may still be blocked in loop() when the process exits. A forked child
// has none of the parent's threads, so it drops the parent's pool (leaked, never touched again:
// its mutex may have been held at the fork) and builds its own on first use.
std::atomic<Pool*> g_pool{nullptr};
std::mutex g_pool_init;

void forget_pool_in_child() { g_pool.store(nullptr); }

Pool& pool() {
  Pool* p = g_pool.load();
  if (p) return *p;
  static std::once_flag atfork_registered;
  std::call_once(atfork_registered, [] { pthread_atfork(nullptr, nullptr, forget_pool_in_child); });
  std::lock_guard<std::mutex> lock(g_pool_init);
  p = g_pool.load();
  if (!p) {
    p = new Pool();
    g_pool.store(p);
  }
  return *p;
}

}  // namespace

void run_slots(int64_t slots, int64_t threads, const std::function<void(int64_t)>& fn) {
  if (slots <= 0) return;
  const int64_t helpers = std::min(threads, slots) - 1;
  if (helpers <= 0 || at::in_parallel_region()) {
    for (int64_t s = 0; s < slots; ++s) fn(s);
    return;
  }
  auto section = std::make_shared<Section>(&fn, slots);
  pool().post(section, helpers);
  section->work();
  std::unique_lock<std::mutex> lock(section->m);
  section->finished.wait(lock, [&] { return section->done == slots; });
  if (section->error) std::rethrow_exception(section->error);
}

void run_ranges(int64_t n, int64_t grain, int64_t threads,
                const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int64_t ranges = std::max<int64_t>(1, std::min(threads, n / std::max<int64_t>(1, grain)));
  run_slots(ranges, ranges, [&](int64_t r) { fn(r * n / ranges, (r + 1) * n / ranges); });
}

}  // namespace mmcl_fast
