// The CPU kernels' parallel sections: a fixed set of slots run on the calling thread and on
// helper threads that sleep between sections.
//
// Helpers block on a condition variable when there is no work, so an idle helper takes no CPU
// from a process that shares the cores (OpenMP workers spin-wait for a while after every parallel
// region instead). Slots are claimed through an atomic counter, so a helper that is descheduled or
// slow to wake leaves its slots to the threads that do run; the caller claims slots too and only
// ever waits for slots already running, so a section completes even when no helper starts.
// Which thread runs a slot varies from call to call: a slot's function writes only that slot's
// state, and the caller combines slot results in slot order (deterministic results).
//
// Fork safety: a child process (e.g. a DataLoader worker) starts with no helper threads; its
// first section creates a fresh pool.
#pragma once

#include <cstdint>
#include <functional>

namespace mmcl_fast {

// Calls fn(slot) once for every slot in [0, slots), on at most `threads` threads including the
// caller, and returns when all have finished. The first exception thrown by fn is rethrown here.
// Runs inline (slot order, calling thread) when threads <= 1, slots <= 1, or when called from
// inside an ATen parallel region.
void run_slots(int64_t slots, int64_t threads, const std::function<void(int64_t)>& fn);

// run_slots over [0, n) cut into contiguous ranges: fn(begin, end) for each range, with at most
// `threads` ranges of at least `grain` items.
void run_ranges(int64_t n, int64_t grain, int64_t threads,
                const std::function<void(int64_t, int64_t)>& fn);

}  // namespace mmcl_fast
