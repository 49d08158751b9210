"""The CPU kernels' own thread pool (csrc/cpu/runtime/worker_pool.h): correct under any thread count, after
fork(), and idle without spinning.

Each check runs in a fresh interpreter, so that thread counts and the pool's state are its own.
"""
import pytest

from conftest import run_python

_SETUP = """
    import json, os, time, resource, torch, mmcl_fast as mf
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 40, generator=g, dtype=torch.float64)
    y = torch.randn(1000, 40, generator=g, dtype=torch.float64)
    s = torch.tensor(3.0, dtype=torch.float64)

    def op(sim="dot"):
        return mf.pairwise_lse(x, y, s, sim, mask_diag=True)

    def reference(sim="dot"):
        L = s * (x @ y.T)
        L.fill_diagonal_(float("-inf"))
        return L.logsumexp(1), L.logsumexp(0)

    def rel_err(a, b):
        return float((a - b).abs().max() / b.abs().max())
"""


def test_any_thread_count_matches_the_float64_reference_and_repeats_bitwise():
    res = run_python(_SETUP + """
    ref_r, ref_c = reference()
    out = {}
    for threads in (1, 2, 3, 5):  # 3 and 5: more slots than this machine's cores
        torch.set_num_threads(threads)
        r1, c1 = op(); r2, c2 = op()
        out[threads] = {"err": max(rel_err(r1, ref_r), rel_err(c1, ref_c)),
                        "repeat_equal": bool(torch.equal(r1, r2) and torch.equal(c1, c2))}
    print(json.dumps(out))
    """)
    for threads, r in res.items():
        assert r["err"] < 1e-12, (threads, r)
        assert r["repeat_equal"], (threads, r)


def test_a_forked_child_runs_the_kernel():
    # The parent's helpers do not exist in a fork()ed child (a DataLoader worker): the child's
    # first call must build its own pool rather than wait on threads that are gone.
    res = run_python(_SETUP + """
    torch.set_num_threads(2)
    parent = op()[0]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        child = op()[0]
        x.requires_grad_(); y.requires_grad_()
        mf.symmetric_infonce(x, y, temperature=0.5, similarity="dot").backward()
        os.write(write, b"1" if torch.equal(child, parent) and x.grad.isfinite().all() else b"0")
        os._exit(0)
    os.close(write)
    deadline = time.time() + 60
    while time.time() < deadline and os.waitpid(pid, os.WNOHANG) == (0, 0):
        time.sleep(0.05)
    else:
        finished = time.time() < deadline
    if not finished:
        os.kill(pid, 9)
    print(json.dumps({"finished": finished, "same": os.read(read, 1) == b"1" if finished else None}))
    """, timeout=120)
    assert res == {"finished": True, "same": True}, res


@pytest.mark.slow
def test_idle_threads_take_no_cpu_after_the_op():
    # After one of its calls the op leaves no thread spinning: the process's CPU time over a
    # following sleep stays near zero. (An OpenMP parallel region leaves its workers spinning for
    # milliseconds after it ends, which is what starves a process sharing the cores.)
    res = run_python(_SETUP + """
    torch.set_num_threads(2)
    op(); op("euclidean")
    def cpu():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime
    spent = []
    for sim in ("dot", "euclidean", "dot"):
        time.sleep(0.3)  # anything spinning from the set-up has stopped
        op(sim)
        c = cpu(); time.sleep(0.3); spent.append(cpu() - c)
    print(json.dumps({"cpu_during_sleep_s": spent}))
    """)
    assert min(res["cpu_during_sleep_s"]) < 0.002, res


@pytest.mark.slow
def test_helper_threads_share_the_work():
    # With 2 threads the op's row slots run on a helper as well as on the caller: threads that
    # appear during the calls accumulate CPU time (read from /proc, in clock ticks).
    res = run_python(_SETUP + """
    def ticks():
        out = {}
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[tid] = int(fields[11]) + int(fields[12])  # utime + stime
        return out
    torch.set_num_threads(2)
    a = torch.randn(3000, 64); b = torch.randn(3000, 64); sc = torch.tensor(2.0)
    before = ticks()
    for _ in range(5):
        mf.pairwise_lse(a, b, sc, "dot")
    after = ticks()
    main = str(os.getpid())
    print(json.dumps({"new_thread_ticks": sum(t for tid, t in after.items() if tid not in before),
                      "main_ticks": after[main] - before[main]}))
    """)
    assert res["new_thread_ticks"] >= 0.25 * res["main_ticks"] > 0, res


@pytest.mark.slow
def test_the_losses_backward_leaves_no_thread_spinning_before_the_op():
    # The first backward step of every masked loss is its softplus; the operator's backward runs
    # right after it. That step must not open an OpenMP region (logaddexp's backward does, through
    # exp, from ~6k elements): ATen's threads would spin on the cores the operator then needs.
    res = run_python(_SETUP + """
    from mmcl_fast import losses
    torch.set_num_threads(2)
    z = torch.randn(6144, requires_grad=True)
    losses._softplus(z).sum().backward()
    def cpu():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime
    spent = []
    for _ in range(3):
        time.sleep(0.3)
        y = losses._softplus(z).sum()
        y.backward()
        c = cpu(); time.sleep(0.3); spent.append(cpu() - c)
    print(json.dumps({"cpu_during_sleep_s": spent}))
    """)
    assert min(res["cpu_during_sleep_s"]) < 0.002, res


@pytest.mark.slow
def test_the_op_leaves_the_callers_floating_point_mode_as_it_was():
    # The kernel's slots flush subnormal results to zero (csrc/cpu/runtime/flush_denormals.h) and must
    # restore the mode: after the op, a subnormal product on the calling thread is still exact.
    res = run_python(_SETUP + """
    torch.set_num_threads(2)
    def subnormal_survives():
        v = torch.tensor([1e-30], dtype=torch.float32) * torch.tensor([1e-10], dtype=torch.float32)
        return v.item() > 0
    before = subnormal_survives()
    for sim in ("dot", "euclidean"):
        r, c = mf.pairwise_lse(x.float().requires_grad_(), y.float(), s.float() * 50, sim)
        (r.sum() + c.sum()).backward()
    print(json.dumps({"before": before, "after": subnormal_survives()}))
    """)
    assert res == {"before": True, "after": True}, res
