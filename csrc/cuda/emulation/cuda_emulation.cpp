// Runtime of the host CUDA emulation: grid execution on OS threads, block and warp barriers,
// per-block shared memory, and the runtime API calls (see cuda_emulation_device.h for the model).
#include "cuda_emulation_device.h"

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

namespace mmcl_fast {
namespace cuda_emulation {

thread_local ThreadContext this_thread;

namespace {

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
      if (++arrived_ == expected_) {
        if (on_complete) on_complete();
        complete_locked();
        return;
      }
    }
    while (phase_.load(std::memory_order_acquire) == phase) phase_.wait(phase, std::memory_order_acquire);
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
  Barrier barrier, end_of_block;
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

// One grid being executed: the worker with index w runs emulated thread w % threads of the
// blocks slot, slot + slots, ... where slot = w / threads.
struct Grid {
  dim3 grid, block;
  int threads, slots;
  uint64_t blocks;
  const std::function<void()>* body;
  std::vector<std::unique_ptr<BlockContext>> contexts;
};

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

// OS threads kept between launches (starting 256 threads costs ~15 ms here, waking them ~0.5 ms).
// A launch publishes its Grid and bumps `generation`; every worker runs its share (if any) and
// counts itself out of `pending`. Workers never exit; a forked child starts a pool of its own.
class WorkerPool {
 public:
  void run(Grid& g) {
    std::lock_guard<std::mutex> one_launch_at_a_time(launch_mutex_);
    const size_t needed = size_t(g.slots) * g.threads;
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
      if (index < size_t(g.slots) * g.threads) run_worker_share(g, static_cast<int>(index));
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
