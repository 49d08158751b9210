// Runtime of the host CUDA emulation: grid execution (a block's threads as fibers on one OS
// thread, concurrent blocks on separate OS threads), block and warp barriers, per-block shared
// memory, and the runtime API calls (see cuda_emulation_device.h for the model).
#include "cuda_emulation_device.h"

#include <sys/mman.h>
#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <system_error>
#include <thread>
#include <unistd.h>
#include <vector>

#if defined(__SANITIZE_THREAD__)
extern "C" void AnnotateIgnoreSyncBegin(const char* file, int line);
extern "C" void AnnotateIgnoreSyncEnd(const char* file, int line);
extern "C" void AnnotateIgnoreReadsBegin(const char* file, int line);
extern "C" void AnnotateIgnoreReadsEnd(const char* file, int line);
extern "C" void AnnotateIgnoreWritesBegin(const char* file, int line);
extern "C" void AnnotateIgnoreWritesEnd(const char* file, int line);
#endif
#if defined(__SANITIZE_ADDRESS__)
extern "C" void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom, size_t size);
extern "C" void __sanitizer_finish_switch_fiber(void* fake_stack_save, const void** bottom_old, size_t* size_old);
#endif

namespace mmcl_fast {
namespace cuda_emulation {

thread_local ThreadContext this_thread;

namespace {

// Hand the OS thread to the next fiber of the block / count an arrival as the block's progress
// (defined with the scheduler below).
void wait_for_the_other_threads(const std::atomic<uint32_t>& phase, uint32_t seen);
void note_barrier_arrival();

constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr size_t kStaticSharedLimit = 48 * 1024;  // bytes of static __shared__ per block

thread_local cudaError_t last_error = cudaSuccess;

// A barrier over a changing set of participants: a participant that leaves (its thread returned
// from the kernel) no longer counts, like an exited thread at __syncthreads on Volta and later.
// All participants of one phase must arrive from the same call site.
class Barrier {
 public:
  void reset(int participants) {
    std::lock_guard<std::mutex> lock(mutex_);
    expected_ = participants;
    arrived_ = 0;
    site_line_ = 0;
  }

  // Waits until every current participant has arrived; the last one to arrive runs `on_complete`
  // (if any) before the others are released. Arrival is counted under a mutex; the release is a
  // futex wait on the phase counter, so waking threads do not contend for the mutex.
  void arrive_and_wait(const std::source_location& where, const char* what,
                       const std::function<void()>& on_complete = {}) {
    uint32_t phase;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (site_line_ == 0) {
        site_file_ = where.file_name();
        site_line_ = where.line();
      } else if (site_line_ != where.line() || std::string(site_file_) != where.file_name()) {
        const std::string message = std::string(what) + " reached from different call sites in one "
                                    "phase (divergent barrier): first " + site_file_ + ":" +
                                    std::to_string(site_line_) + ", then";
        fatal(message.c_str(), where);
      }
      phase = phase_.load(std::memory_order_relaxed);
      note_barrier_arrival();
      if (++arrived_ == expected_) {
        if (on_complete) on_complete();
        complete_locked();
        return;
      }
    }
    while (phase_.load(std::memory_order_acquire) == phase) wait_for_the_other_threads(phase_, phase);
  }

  void arrive_and_drop() {
    std::lock_guard<std::mutex> lock(mutex_);
    --expected_;
    if (arrived_ > 0 && arrived_ == expected_) complete_locked();
  }

 private:
  void complete_locked() {
    arrived_ = 0;
    site_line_ = 0;
    phase_.fetch_add(1, std::memory_order_release);
    phase_.notify_all();
  }

  std::mutex mutex_;
  std::atomic<uint32_t> phase_{0};
  int expected_ = 0, arrived_ = 0;
  const char* site_file_ = "";
  unsigned site_line_ = 0;  // 0: no thread has arrived in this phase
};

constexpr size_t kCollectBytes = 256;  // per lane and warp_collect call

struct Warp {
  Barrier barrier;
  int lanes = 32;
  unsigned full_mask = 0xffffffffu;
  uint64_t values[2][32] = {};  // warp_exchange's, used alternately (see there)
  uint64_t sequence[32] = {};  // number of exchanges each lane has published
  // warp_collect's buffers, used alternately: a lane can write buffer p again only two
  // collectives later, after every lane has passed the barrier of the one in between, and so has
  // finished reading buffer p.
  alignas(64) unsigned char collect[2][32][kCollectBytes] = {};
};

struct SharedAllocation {
  void* data;
  size_t bytes, alignment;
};

}  // namespace

struct BlockContext {
  explicit BlockContext(int threads) : threads(threads), warps((threads + 31) / 32) {
    end_of_block.reset(threads);  // nobody leaves it, so it never needs a reset
    reset();
  }
  ~BlockContext() { free_shared(); }

  // Fresh barriers and shared memory for the next block of this slot.
  void reset() {
    barrier.reset(threads);
    for (size_t w = 0; w < warps.size(); ++w) {
      Warp& warp = warps[w];
      warp.lanes = std::min(32, threads - static_cast<int>(32 * w));
      warp.full_mask = warp.lanes == 32 ? 0xffffffffu : ((1u << warp.lanes) - 1u);
      warp.barrier.reset(warp.lanes);
      for (int l = 0; l < 32; ++l) warp.sequence[l] = 0;
    }
    free_shared();
  }

  void free_shared() {
    for (auto& entry : shared) ::operator delete(entry.second.data, std::align_val_t(entry.second.alignment));
    shared.clear();
    shared_bytes = 0;
  }

  const int threads;
  Barrier barrier, end_of_block;  // end_of_block: the OS-thread execution's, see run_worker_share
  std::vector<Warp> warps;
  std::mutex shared_mutex;
  std::map<const void*, SharedAllocation> shared;
  size_t shared_bytes = 0;
};

namespace {

int env_int(const char* name, int fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? std::atoi(value) : fallback;
}

std::atomic<int> concurrent_blocks_setting{0};  // 0: not yet read from the environment

// MMCL_FAST_EMU_SKIP_SYNC=<file suffix>:<line> turns the __syncthreads() or __syncwarp() at that
// line into a no-op: the mutation the sanitizer tests use to show that a missing barrier is caught.
struct SkippedSync {
  std::string file_suffix;
  unsigned line = 0;
};
const SkippedSync& skipped_sync() {
  static const SkippedSync skipped = [] {
    SkippedSync s;
    const char* value = std::getenv("MMCL_FAST_EMU_SKIP_SYNC");
    if (value == nullptr) return s;
    const std::string spec(value);
    const auto colon = spec.rfind(':');
    if (colon == std::string::npos) return s;
    s.file_suffix = spec.substr(0, colon);
    s.line = static_cast<unsigned>(std::atoi(spec.c_str() + colon + 1));
    std::fprintf(stderr, "mmcl_fast CUDA emulation: the barrier at %s is skipped (mutation test)\n", value);
    return s;
  }();
  return skipped;
}

bool is_skipped(const std::source_location& where) {
  const SkippedSync& s = skipped_sync();
  if (s.line == 0 || s.line != where.line()) return false;
  const std::string file(where.file_name());
  return file.size() >= s.file_suffix.size() &&
         file.compare(file.size() - s.file_suffix.size(), s.file_suffix.size(), s.file_suffix) == 0;
}

bool valid_launch(dim3 grid, dim3 block) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  return grid.x >= 1 && grid.y >= 1 && grid.z >= 1 && grid.x <= 0x7fffffffu && grid.y <= 65535 &&
         grid.z <= 65535 && block.x >= 1 && block.y >= 1 && block.z >= 1 && block.x <= 1024 &&
         block.y <= 1024 && block.z <= 64 && threads <= kMaxThreadsPerBlock;
}

Warp& this_warp(const std::source_location& where) {
  if (this_thread.block == nullptr) fatal("a device built-in was called outside a kernel", where);
  return this_thread.block->warps[this_thread.linear_tid / 32];
}

}  // namespace

void fatal(const char* message, const std::source_location& where) {
  std::fprintf(stderr, "mmcl_fast CUDA emulation: %s %s:%u\n", message, where.file_name(), where.line());
  std::fflush(stderr);
  std::abort();
}

void set_concurrent_blocks(int blocks) {
  concurrent_blocks_setting.store(blocks < 1 ? 1 : blocks);
}

int concurrent_blocks() {
  int value = concurrent_blocks_setting.load();
  if (value == 0) {
    value = std::max(1, env_int("MMCL_FAST_EMU_CONCURRENT_BLOCKS", 1));
    concurrent_blocks_setting.store(value);
  }
  return value;
}

namespace {

// One grid being executed: slot s runs blocks s, s + slots, ... one after another, on one OS
// thread whose fibers are the block's threads (FiberScheduler), or under ThreadSanitizer on one OS
// thread per emulated thread (run_worker_share).
struct Grid {
  dim3 grid, block;
  int threads, slots;
  uint64_t blocks;
  const std::function<void()>* body;
  std::vector<std::unique_ptr<BlockContext>> contexts;
};

#if !defined(__SANITIZE_THREAD__)
// The fibers of one slot. The threads of a block take turns on the slot's OS thread: each runs
// until it waits at a barrier (or a warp collective) or returns, then the next one runs; a
// waiting thread that gets its turn again goes on if its barrier's phase has completed. So every
// thread runs as far ahead as the barriers let it (a missing barrier shows up at once), and a
// pass in which no thread moves is a deadlock, which stops the run.
//
// Under AddressSanitizer the stack switches are announced, so each fiber's stack is checked as
// its own. (Not compiled under ThreadSanitizer: see run_worker_share.)
class FiberScheduler {
 public:
  ~FiberScheduler() {
    for (Fiber& f : fibers_) {
      if (f.stack != nullptr) munmap(f.stack, kStackBytes + kGuardBytes);
    }
  }

  void run_block(const Grid& g, BlockContext& context, uint64_t b) {
    ensure_fibers(g.threads);
    const uint3 block_idx{static_cast<unsigned>(b % g.grid.x), static_cast<unsigned>((b / g.grid.x) % g.grid.y),
                          static_cast<unsigned>(b / (uint64_t(g.grid.x) * g.grid.y))};
    body_ = g.body;
    for (int t = 0; t < g.threads; ++t) {
      Fiber& f = fibers_[t];
      f.state.linear_tid = t;
      f.state.thread_idx = uint3{t % g.block.x, (t / g.block.x) % g.block.y, t / (g.block.x * g.block.y)};
      f.state.block_idx = block_idx;
      f.state.block_dim = g.block;
      f.state.grid_dim = g.grid;
      f.state.block = &context;
      f.finished = false;
      getcontext(&f.context);
      f.context.uc_stack.ss_sp = f.stack + kGuardBytes;
      f.context.uc_stack.ss_size = kStackBytes;
      f.context.uc_link = nullptr;
      makecontext(&f.context, &FiberScheduler::fiber_main, 0);
    }
    int unfinished = g.threads;
    while (unfinished > 0) {
      const uint64_t before = progress_;
      for (int t = 0; t < g.threads; ++t) {
        if (fibers_[t].finished) continue;
        switch_to(t);
        if (fibers_[t].finished) --unfinished;
      }
      if (unfinished > 0 && progress_ == before)
        fatal("deadlock: the live threads of a block wait at barriers that the others never reach",
              std::source_location::current());
    }
    this_thread = ThreadContext{};
  }

  // Called by a fiber that waits at a barrier: the other fibers run, then this one checks again.
  void yield() { switch_to_scheduler(false); }
  // Called on every arrival at a barrier and when a thread returns: the block moved.
  void note_progress() { ++progress_; }
  bool inside_fiber() const { return current_ >= 0; }

 private:
  static constexpr size_t kStackBytes = size_t(1) << 17;  // 128 KiB, mapped lazily
  static constexpr size_t kGuardBytes = 4096;             // an overflow faults instead of corrupting

  struct Fiber {
    ucontext_t context;
    char* stack = nullptr;
    ThreadContext state;
    bool finished = false;
    void* fake_stack = nullptr;
  };

  void ensure_fibers(int threads) {
    while (static_cast<int>(fibers_.size()) < threads) {
      Fiber& f = fibers_.emplace_back();
      void* mem = mmap(nullptr, kStackBytes + kGuardBytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (mem == MAP_FAILED) fatal("could not map an emulated thread's stack", std::source_location::current());
      mprotect(mem, kGuardBytes, PROT_NONE);
      f.stack = static_cast<char*>(mem);
    }
  }

  void switch_to(int t) {
    Fiber& f = fibers_[t];
    current_ = t;
#if defined(__SANITIZE_ADDRESS__)
    void* fake_stack = nullptr;
    __sanitizer_start_switch_fiber(&fake_stack, f.stack + kGuardBytes, kStackBytes);
#endif
    swapcontext(&main_, &f.context);
#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#endif
    current_ = -1;
  }

  void switch_to_scheduler(bool finished) {
    Fiber& f = fibers_[current_];
#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_start_switch_fiber(finished ? nullptr : &f.fake_stack, main_bottom_, main_size_);
#endif
    swapcontext(&f.context, &main_);
    // resumed by the scheduler: this fiber's turn again
#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_finish_switch_fiber(f.fake_stack, nullptr, nullptr);
#endif
    this_thread = fibers_[current_].state;
    (void)finished;
  }

  static void fiber_main();

  std::vector<Fiber> fibers_;
  ucontext_t main_;
  const void* main_bottom_ = nullptr;
  size_t main_size_ = 0;
  const std::function<void()>* body_ = nullptr;
  int current_ = -1;
  uint64_t progress_ = 0;
};

thread_local FiberScheduler* scheduler = nullptr;

void FiberScheduler::fiber_main() {
  FiberScheduler& s = *scheduler;
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(nullptr, &s.main_bottom_, &s.main_size_);
#endif
  this_thread = s.fibers_[s.current_].state;
  (*s.body_)();
  // This thread has returned: it leaves the block's barriers, as an exited thread does on Volta.
  BlockContext& context = *this_thread.block;
  context.barrier.arrive_and_drop();
  context.warps[this_thread.linear_tid / 32].barrier.arrive_and_drop();
  s.fibers_[s.current_].finished = true;
  s.note_progress();
  s.switch_to_scheduler(true);
  fatal("a finished emulated thread was resumed", std::source_location::current());
}

void note_barrier_arrival() {
  if (scheduler != nullptr) scheduler->note_progress();
}

void wait_for_the_other_threads(const std::atomic<uint32_t>&, uint32_t) {
  if (scheduler == nullptr || !scheduler->inside_fiber())
    fatal("a barrier was waited at outside an emulated thread", std::source_location::current());
  scheduler->yield();
}

void run_slot(const Grid& g, int slot) {
  static thread_local FiberScheduler own;
  scheduler = &own;
  for (uint64_t b = slot; b < g.blocks; b += g.slots) {
    BlockContext& context = *g.contexts[slot];
    context.reset();
    own.run_block(g, context, b);
  }
}

constexpr bool kFibers = true;
#else
// Under ThreadSanitizer every emulated thread is an OS thread: TSan's own handling of fiber
// switches would make the sanitizer runs twice as slow. The barriers wait on a futex.
void note_barrier_arrival() {}
void wait_for_the_other_threads(const std::atomic<uint32_t>& phase, uint32_t seen) {
  phase.wait(seen, std::memory_order_acquire);
}

void run_worker_share(const Grid& g, int worker) {
  const int slot = worker / g.threads, tid = worker % g.threads;
  BlockContext& context = *g.contexts[slot];
  this_thread.linear_tid = tid;
  this_thread.thread_idx = uint3{tid % g.block.x, (tid / g.block.x) % g.block.y, tid / (g.block.x * g.block.y)};
  this_thread.block_dim = g.block;
  this_thread.grid_dim = g.grid;
  this_thread.block = &context;
  for (uint64_t b = slot; b < g.blocks; b += g.slots) {
    this_thread.block_idx = uint3{static_cast<unsigned>(b % g.grid.x), static_cast<unsigned>((b / g.grid.x) % g.grid.y),
                                  static_cast<unsigned>(b / (uint64_t(g.grid.x) * g.grid.y))};
    (*g.body)();
    // This thread has returned: it leaves the block's barriers, then waits for the block to
    // finish, so that the next block of this slot starts with fresh shared memory and barriers.
    context.barrier.arrive_and_drop();
    context.warps[tid / 32].barrier.arrive_and_drop();
    context.end_of_block.arrive_and_wait(std::source_location::current(), "end of block",
                                         [&] { context.reset(); });
  }
  this_thread = ThreadContext{};
}

constexpr bool kFibers = false;
#endif

// OS threads kept between launches: one per concurrent block (with fibers), or one per emulated
// thread of each concurrent block (under TSan; starting 256 threads costs ~15 ms, waking them
// ~0.5 ms). A launch publishes its Grid and
// bumps `generation`; every worker runs its slot (if any) and counts itself out of `pending`.
// Workers never exit; a forked child starts a pool of its own.
class WorkerPool {
 public:
  void run(Grid& g) {
    std::lock_guard<std::mutex> one_launch_at_a_time(launch_mutex_);
    const size_t needed = size_t(g.slots) * (kFibers ? 1 : g.threads);
    try {
      while (workers_ < needed) {
        std::thread(&WorkerPool::work, this, workers_, generation_.load()).detach();
        ++workers_;
      }
    } catch (const std::system_error& error) {
      const std::string message = std::string("could not start the emulated threads (") + error.what() + ")";
      fatal(message.c_str(), std::source_location::current());
    }
    grid_ = &g;
    pending_.store(static_cast<int>(workers_), std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    generation_.notify_all();
    for (int left = pending_.load(std::memory_order_acquire); left != 0; left = pending_.load(std::memory_order_acquire))
      pending_.wait(left, std::memory_order_acquire);
    grid_ = nullptr;
  }

 private:
  void work(size_t index, uint64_t seen) {
    for (;;) {
      generation_.wait(seen, std::memory_order_acquire);
      seen = generation_.load(std::memory_order_acquire);
      const Grid& g = *grid_;
#if !defined(__SANITIZE_THREAD__)
      if (index < size_t(g.slots)) run_slot(g, static_cast<int>(index));
#else
      if (index < size_t(g.slots) * g.threads) run_worker_share(g, static_cast<int>(index));
#endif
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_one();
    }
  }

  std::mutex launch_mutex_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  size_t workers_ = 0;
  Grid* grid_ = nullptr;
};

WorkerPool& worker_pool() {
  static std::mutex mutex;
  static WorkerPool* pool = nullptr;
  static pid_t owner = 0;
  std::lock_guard<std::mutex> lock(mutex);
  if (pool == nullptr || owner != getpid()) {  // after fork() the parent's workers do not exist
    pool = new WorkerPool();  // never freed: its threads wait for launches until the process ends
    owner = getpid();
  }
  return *pool;
}

}  // namespace

void run_grid(dim3 grid, dim3 block, const std::function<void()>& body) {
  if (!valid_launch(grid, block)) {
    last_error = cudaErrorInvalidConfiguration;
    return;
  }
  Grid g{grid, block, static_cast<int>(block.x * block.y * block.z), 1,
         uint64_t(grid.x) * grid.y * grid.z, &body, {}};
  g.slots = static_cast<int>(std::min<uint64_t>(g.blocks, uint64_t(concurrent_blocks())));
  for (int s = 0; s < g.slots; ++s) g.contexts.push_back(std::make_unique<BlockContext>(g.threads));
  worker_pool().run(g);
}

void sync_block(const std::source_location& where) {
  if (this_thread.block == nullptr) fatal("__syncthreads() called outside a kernel", where);
  if (is_skipped(where)) return;
  this_thread.block->barrier.arrive_and_wait(where, "__syncthreads()");
}

void sync_warp(unsigned mask, const std::source_location& where) {
  Warp& warp = this_warp(where);
  if (mask != warp.full_mask) fatal("__syncwarp with a partial mask is not emulated", where);
  if (is_skipped(where)) return;
  warp.barrier.arrive_and_wait(where, "__syncwarp()");
}

// While alive (or until end()), ThreadSanitizer sees neither the synchronisation nor the accesses
// of this thread: the warp collectives' exchange is not a happens-before edge on a GPU, and their
// bookkeeping is not the kernel's memory traffic.
class HiddenFromTsan {
 public:
  HiddenFromTsan() {
#if defined(__SANITIZE_THREAD__)
    AnnotateIgnoreSyncBegin(__FILE__, __LINE__);
    AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
    AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
#endif
  }
  HiddenFromTsan(const HiddenFromTsan&) = delete;
  HiddenFromTsan& operator=(const HiddenFromTsan&) = delete;
  ~HiddenFromTsan() { end(); }
  void end() {
#if defined(__SANITIZE_THREAD__)
    if (active_) {
      AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
      AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
      AnnotateIgnoreSyncEnd(__FILE__, __LINE__);
    }
#endif
    active_ = false;
  }

 private:
  bool active_ = true;
};

uint64_t warp_exchange(unsigned mask, uint64_t bits, int src_lane, bool gather_all,
                       const std::source_location& where) {
  Warp& warp = this_warp(where);
  const int lane = this_thread.linear_tid & 31;
  if (mask != warp.full_mask) fatal("warp collective with a partial or foreign mask is not emulated", where);
  HiddenFromTsan hidden;  // a shuffle orders no memory on a GPU
  // One barrier per exchange: values[p] is written again only two collectives later, after every
  // lane has passed the barrier of the one in between (and so has read values[p]).
  const uint64_t sequence = ++warp.sequence[lane];
  const int parity = static_cast<int>(sequence & 1);
  warp.values[parity][lane] = bits;
  warp.barrier.arrive_and_wait(where, "warp collective");
  uint64_t result = 0;
  bool missing = false;
  if (gather_all) {
    for (int l = 0; l < warp.lanes; ++l) {
      missing |= warp.sequence[l] < sequence;
      result |= uint64_t(warp.values[parity][l] != 0) << l;
    }
  } else {
    const int src = src_lane < warp.lanes ? src_lane : lane;
    missing = warp.sequence[src] < sequence;
    result = warp.values[parity][src];
  }
  hidden.end();
  if (missing) fatal("warp collective after some lanes of the warp returned (not emulated)", where);
  return result;
}

void warp_collect(unsigned mask, const void* mine, size_t bytes, void* all, const std::source_location& where) {
  Warp& warp = this_warp(where);
  const int lane = this_thread.linear_tid & 31;
  if (mask != warp.full_mask || warp.lanes != 32) fatal("a warp-level matrix operation needs a full warp of 32 lanes", where);
  if (bytes > kCollectBytes) fatal("warp_collect: more bytes per lane than the emulator's buffer", where);
  HiddenFromTsan hidden;  // the registers move inside one instruction on a GPU
  const uint64_t sequence = ++warp.sequence[lane];
  const int parity = static_cast<int>(sequence & 1);
  std::memcpy(warp.collect[parity][lane], mine, bytes);
  warp.barrier.arrive_and_wait(where, "warp collective");
  bool missing = false;
  for (int l = 0; l < 32; ++l) {
    missing |= warp.sequence[l] < sequence;
    std::memcpy(static_cast<char*>(all) + l * bytes, warp.collect[parity][l], bytes);
  }
  hidden.end();
  if (missing) fatal("warp collective after some lanes of the warp returned (not emulated)", where);
}

void* block_shared(const void* key, size_t bytes, size_t alignment, const std::source_location& where) {
  if (this_thread.block == nullptr) fatal("shared memory declared outside a kernel", where);
  BlockContext& block = *this_thread.block;
  std::lock_guard<std::mutex> lock(block.shared_mutex);
  auto found = block.shared.find(key);
  if (found != block.shared.end()) {
    if (found->second.bytes != bytes) fatal("one shared declaration with two sizes", where);
    return found->second.data;
  }
  if (block.shared_bytes + bytes > kStaticSharedLimit)
    fatal("the block's static shared memory exceeds 48 KiB (a launch failure on the GPU)", where);
  alignment = std::max<size_t>(alignment, 16);
  void* data = ::operator new(bytes, std::align_val_t(alignment));
  std::memset(data, 0xff, bytes);  // NaN as float: a read before the first write shows up
  block.shared.emplace(key, SharedAllocation{data, bytes, alignment});
  block.shared_bytes += bytes;
  return data;
}

}  // namespace cuda_emulation
}  // namespace mmcl_fast

// --- runtime API ---
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t) {
  if (ptr == nullptr && bytes > 0) return cudaErrorInvalidValue;
  if (bytes > 0) std::memset(ptr, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemset(void* ptr, int value, size_t bytes) { return cudaMemsetAsync(ptr, value, bytes, nullptr); }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaGetLastError() {
  const cudaError_t error = mmcl_fast::cuda_emulation::last_error;
  mmcl_fast::cuda_emulation::last_error = cudaSuccess;
  return error;
}
cudaError_t cudaPeekAtLastError() { return mmcl_fast::cuda_emulation::last_error; }
const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
  }
  return "unknown error";
}
