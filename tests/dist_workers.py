"""Worker processes of tests/test_distributed.py and tests/test_ring.py (started by a fork server
that has imported torch and mmcl_fast once; gloo over a file rendezvous).

Each worker writes ``rank{r}.pt`` with its results, or ``rank{r}.err`` with the traceback.
"""
import os
import traceback

import torch
import torch.distributed as dist
import torch.nn.functional as F

MODES = [(False, False), (False, True), (True, False), (True, True)]   # (local_loss, gather_with_grad)


def full_batch(seed: int, n_global: int, dim: int, dtype=torch.float32):
    """The global batch every rank can regenerate: normalised features and a logit scale."""
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n_global, dim, generator=g, dtype=torch.float64), dim=1)
    txt = F.normalize(img + 0.8 * torch.randn(n_global, dim, generator=g, dtype=torch.float64),
                      dim=1)
    scale = 5.0 + 45.0 * torch.rand((), generator=g, dtype=torch.float64)
    return img.to(dtype), txt.to(dtype), scale.to(dtype)


def _run(target, rank, world, init_file, out_dir, pg_timeout, *args):
    import datetime
    try:
        torch.set_num_threads(1)
        timeout = {} if pg_timeout is None else {"timeout": datetime.timedelta(seconds=pg_timeout)}
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                world_size=world, **timeout)
        result = target(rank, world, *args)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.destroy_process_group()
    except BaseException:                                  # reported by the parent test
        with open(os.path.join(out_dir, f"rank{rank}.err"), "w") as f:
            f.write(traceback.format_exc())
        raise
    # torch 2.13 + gloo: after torch.distributed.nn's autograd all_gather (used by the open_clip
    # reference) a rank sometimes aborts in a static destructor at interpreter exit ("terminate
    # called without an active exception"). The results are written; skip the teardown.
    os._exit(0)


def _grads(loss, *tensors):
    return [g.detach().clone() for g in torch.autograd.grad(loss, tensors)]


def losses_worker(rank, world, seed, n_local, dim):
    import mmcl_fast as mf
    from mmcl_fast.reference import OpenClipLoss
    img, txt, scale = full_batch(seed, world * n_local, dim)
    sl = slice(rank * n_local, (rank + 1) * n_local)
    out = {}
    for mode in MODES:
        for name, cls in (("mmcl", mf.ClipLoss), ("open_clip", OpenClipLoss)):
            a = img[sl].clone().requires_grad_()
            b = txt[sl].clone().requires_grad_()
            s = scale.clone().reshape(1).requires_grad_()          # open_clip's [1]-shaped scale
            loss = cls(local_loss=mode[0], gather_with_grad=mode[1], rank=rank,
                       world_size=world)(a, b, s)
            out[(name,) + mode] = [loss.detach()] + _grads(loss, a, b, s)
    for sim in ("cosine", "euclidean"):
        for ddp in (True, False):
            a = (3 * img[sl]).requires_grad_()
            b = (3 * txt[sl]).requires_grad_()
            s = scale.clone().requires_grad_()
            loss = mf.distributed.symmetric_infonce(a, b, logit_scale=s, similarity=sim,
                                                    ddp_scaling=ddp)
            out[("distributed", sim, ddp)] = [loss.detach()] + _grads(loss, a, b, s)
    module = mf.SymmetricInfoNCE(temperature=0.1, learnable=True, gather_distributed=True)
    a = img[sl].clone().requires_grad_()
    loss = module(a, txt[sl])
    out[("module",)] = [loss.detach()] + _grads(loss, a, module.log_scale)
    # uneven local batches: every rank must raise the same clear error
    try:
        mf.ClipLoss(rank=rank, world_size=world)(img[:n_local + rank], txt[:n_local + rank],
                                                  scale)
        out["uneven"] = "no error"
    except ValueError as e:
        out["uneven"] = str(e)
    return out


def full_batch_ids(seed: int, n_global: int) -> torch.Tensor:
    """Ids with duplicates within and across ranks (about n_global / 3 distinct values)."""
    g = torch.Generator().manual_seed(seed + 100)
    return torch.randint(0, max(2, n_global // 3), (n_global,), generator=g)


def labels_worker(rank, world, seed, n_local, dim):
    """ClipLoss (every mode) and the distributed symmetric loss with label-aware ids on this rank:
    (loss, d a, d b, d logit_scale)."""
    import mmcl_fast as mf
    img, txt, scale = full_batch(seed, world * n_local, dim)
    ids = full_batch_ids(seed, world * n_local)
    sl = slice(rank * n_local, (rank + 1) * n_local)
    out = {}
    for mode in MODES:
        a, b = img[sl].clone().requires_grad_(), txt[sl].clone().requires_grad_()
        s = scale.clone().reshape(1).requires_grad_()
        loss = mf.ClipLoss(local_loss=mode[0], gather_with_grad=mode[1], rank=rank, world_size=world)(
            a, b, s, ids=ids[sl])
        out[mode] = [loss.detach()] + _grads(loss, a, b, s)
    for sim in ("cosine", "l1"):
        a, b = (3 * img[sl]).requires_grad_(), (3 * txt[sl]).requires_grad_()
        s = scale.clone().requires_grad_()
        loss = mf.distributed.symmetric_infonce(a, b, logit_scale=s, similarity=sim, ids=ids[sl])
        out[("distributed", sim)] = [loss.detach()] + _grads(loss, a, b, s)
    return out


RING_SIMILARITIES = ("cosine", "dot", "euclidean", "l1")


def ring_worker(rank, world, seed, n_local, dim):
    """The distributed InfoNCE losses in both modes ("gather", "ring") on this rank: (loss, d a,
    d b, d scale) per (loss, similarity, mode[, ddp]), plain and with ids; ClipLoss(mode="ring")
    in its three ring configurations; the ring's errors."""
    import mmcl_fast as mf
    img, txt, scale = full_batch(seed, world * n_local, dim)
    ids = full_batch_ids(seed, world * n_local)
    sl = slice(rank * n_local, (rank + 1) * n_local)
    out = {}

    def run(key, fn, *feats, **kw):
        a, b = (f.clone().requires_grad_() for f in feats)
        s = scale.clone().requires_grad_()
        loss = fn(a, b, logit_scale=s, **kw)
        out[key] = [loss.detach()] + _grads(loss, a, b, s)

    for mode in ("gather", "ring"):
        for sim in RING_SIMILARITIES:
            for name, fn in (("symmetric", mf.distributed.symmetric_infonce), ("infonce", mf.distributed.infonce)):
                run((name, sim, mode), fn, 3 * img[sl], 3 * txt[sl], similarity=sim, mode=mode)
        run(("symmetric", "dot", mode, "no ddp"), mf.distributed.symmetric_infonce, img[sl], txt[sl],
            similarity="dot", mode=mode, ddp_scaling=False)
        for sim in ("cosine", "l1"):
            for name, fn in (("symmetric", mf.distributed.symmetric_infonce), ("infonce", mf.distributed.infonce)):
                run((name, sim, mode, "ids"), fn, 3 * img[sl], 3 * txt[sl], similarity=sim, mode=mode,
                    ids=ids[sl])
    for clip_mode in ((False, False), (False, True), (True, True)):
        for with_ids in (False, True):
            a, b = img[sl].clone().requires_grad_(), txt[sl].clone().requires_grad_()
            s = scale.clone().reshape(1).requires_grad_()
            loss_fn = mf.ClipLoss(local_loss=clip_mode[0], gather_with_grad=clip_mode[1], rank=rank,
                                  world_size=world, mode="ring")
            loss = loss_fn(a, b, s, ids=ids[sl] if with_ids else None)
            out[("ClipLoss", clip_mode, with_ids)] = [loss.detach()] + _grads(loss, a, b, s)
    # half precision travels as such; the statistics and accumulators stay float32
    a, b = img[sl].bfloat16().requires_grad_(), txt[sl].bfloat16().requires_grad_()
    loss = mf.distributed.symmetric_infonce(a, b, logit_scale=scale, similarity="dot", mode="ring")
    out[("symmetric", "bf16")] = [loss.detach()] + _grads(loss, a, b)
    try:
        mf.distributed.symmetric_infonce(img[:n_local + rank], txt[:n_local + rank], logit_scale=scale,
                                         mode="ring")
        out["uneven"] = "no error"
    except ValueError as e:
        out["uneven"] = str(e)
    return out


def ring_emulated_cuda_worker(rank, world, seed, n_local, dim):
    """The ring's blocks on the CUDA kernels (host-emulated, tests/emulated_cuda.py): each block's
    backward gets column statistics merged on other ranks, not its own partials."""
    import mmcl_fast as mf

    import emulated_cuda
    img, txt, scale = full_batch(seed, world * n_local, dim)
    ids = full_batch_ids(seed, world * n_local)
    sl = slice(rank * n_local, (rank + 1) * n_local)
    out = {}
    with emulated_cuda.cpu_ops_run_emulated_cuda(concurrent_blocks=2):
        for sim in ("dot", "l1"):
            for with_ids in (False, True):
                for name, fn in (("symmetric", mf.distributed.symmetric_infonce), ("infonce", mf.distributed.infonce)):
                    a, b = (3 * img[sl]).requires_grad_(), (3 * txt[sl]).requires_grad_()
                    s = scale.clone().requires_grad_()
                    loss = fn(a, b, logit_scale=s, similarity=sim, mode="ring", ids=ids[sl] if with_ids else None)
                    out[(name, sim, with_ids)] = [loss.detach()] + _grads(loss, a, b, s)
    return out


def ring_failure_worker(rank, world, n_local, dim):
    """Rank 1 raises in the middle of the ring's forward (its second block); every other rank
    must get an error from its next transfer instead of waiting forever. Returns what each saw."""
    import time

    import mmcl_fast as mf
    from mmcl_fast import ring_lse

    calls = {"n": 0}
    real_forward = ring_lse._Block.forward

    def failing_forward(self, *args):
        calls["n"] += 1
        if rank == 1 and calls["n"] == 2:
            raise RuntimeError("rank 1 fails mid-ring")
        return real_forward(self, *args)

    ring_lse._Block.forward = failing_forward
    g = torch.Generator().manual_seed(rank)
    a, b = torch.randn(n_local, dim, generator=g), torch.randn(n_local, dim, generator=g)
    start = time.monotonic()
    try:
        mf.distributed.symmetric_infonce(a, b, temperature=0.1, mode="ring")
        result = "no error"
    except Exception as e:                     # noqa: BLE001 (the test reads the message)
        result = f"{type(e).__name__}: {e}"
    return {"error": result, "seconds": time.monotonic() - start}


SIGLIP_IMPLS = ("bidir", "shift", "reduce", "gather")


def siglip_labels_worker(rank, world, seed, n_local, dim):
    """mmcl_fast.SigLipLoss with label-aware ids (duplicates within and across ranks), every
    dist_impl: (loss, d img, d txt, d logit_scale, d logit_bias) on this rank."""
    import mmcl_fast as mf
    img, txt, scale = full_batch(seed, world * n_local, dim)
    ids = full_batch_ids(seed, world * n_local)
    sl = slice(rank * n_local, (rank + 1) * n_local)
    out = {}
    for impl in SIGLIP_IMPLS:
        a, b = img[sl].clone().requires_grad_(), txt[sl].clone().requires_grad_()
        s = scale.clone().reshape(1).requires_grad_()
        t = torch.tensor([-4.0], requires_grad=True)
        loss = mf.SigLipLoss(rank=rank, world_size=world, dist_impl=impl)(a, b, s, t, ids=ids[sl])
        out[impl] = [loss.detach()] + _grads(loss, a, b, s, t)
    return out


def siglip_worker(rank, world, seed, n_local, dim):
    """mmcl_fast.SigLipLoss and the open_clip reference, every dist_impl: (loss, d img, d txt,
    d logit_scale, d logit_bias) on this rank."""
    import mmcl_fast as mf
    from mmcl_fast.reference import OpenClipSigLipLoss
    img, txt, scale = full_batch(seed, world * n_local, dim)
    sl = slice(rank * n_local, (rank + 1) * n_local)
    out = {}
    for impl in SIGLIP_IMPLS:
        for name in ("mmcl", "open_clip"):
            a, b = img[sl].clone().requires_grad_(), txt[sl].clone().requires_grad_()
            s = scale.clone().reshape(1).requires_grad_()
            t = torch.tensor([-4.0], requires_grad=True)
            if name == "mmcl":
                loss = mf.SigLipLoss(rank=rank, world_size=world, dist_impl=impl)(a, b, s, t)
            else:
                loss = OpenClipSigLipLoss(rank=rank, world_size=world, dist_impl=impl)(a, b, s, t)
            out[(name, impl)] = [loss.detach()] + _grads(loss, a, b, s, t)
    return out


def _status_bytes(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))


def memory_worker(rank, world, b, dim, loss):
    """Extra peak resident memory of one forward + backward on this rank of ``loss`` ("siglip":
    SigLipLoss, "clip": ClipLoss) with the ring ("ring") and the all-gather ("gather"), after a
    warm-up step. glibc returns freed blocks above 64 KiB to the system (mallopt), so the peak is
    that of the live tensors."""
    import ctypes

    import mmcl_fast as mf
    ctypes.CDLL("libc.so.6").mallopt(-3, 65536)  # M_MMAP_THRESHOLD
    g = torch.Generator().manual_seed(rank)
    img = F.normalize(torch.randn(b, dim, generator=g), dim=1).requires_grad_()
    txt = F.normalize(torch.randn(b, dim, generator=g), dim=1).requires_grad_()
    s, t = torch.tensor(10.0, requires_grad=True), torch.tensor(-10.0, requires_grad=True)
    out = {}
    for impl in ("ring", "gather"):
        if loss == "siglip":
            loss_fn = mf.SigLipLoss(rank=rank, world_size=world, dist_impl="shift" if impl == "ring" else impl)
        else:
            loss_fn = mf.ClipLoss(rank=rank, world_size=world, mode=impl)
        for timed in (False, True):
            img.grad = txt.grad = s.grad = t.grad = None
            dist.barrier()
            if timed:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")                     # the peak (VmHWM) restarts from here
                base = _status_bytes("VmRSS:")
            loss_fn(img, txt, s, t).backward()
            if timed:
                out[impl] = _status_bytes("VmHWM:") - base
    return out


DDP_STEP_CASES = ("clip_local_gwg", "clip_global_gwg", "clip_local_gwg_ring", "clip_global_gwg_ring", "module")


def ddp_step_worker(rank, world, seed, n_local, dim):
    """One SGD step of two MLP encoders under DDP with the distributed losses."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    import mmcl_fast as mf
    x1, x2, _ = full_batch(seed, world * n_local, dim)
    sl = slice(rank * n_local, (rank + 1) * n_local)
    out = {}
    for name in DDP_STEP_CASES:
        model = make_pair_model(seed, dim, own_scale=name == "module")
        ddp = DDP(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.5)
        za, zb = ddp(x1[sl], x2[sl])
        if name == "module":
            loss = model.loss(za, zb)
        else:
            loss = mf.ClipLoss(local_loss=name.startswith("clip_local"), gather_with_grad=True, rank=rank,
                               world_size=world, mode="ring" if name.endswith("ring") else "gather")(
                za, zb, model.logit_scale.exp())
        loss.backward()
        opt.step()
        out[name] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return out


class PairModel(torch.nn.Module):
    """Two small MLP encoders and either a logit_scale parameter or a SymmetricInfoNCE module."""

    def __init__(self, dim, own_scale):
        super().__init__()
        import mmcl_fast as mf
        self.f = torch.nn.Sequential(torch.nn.Linear(dim, 32), torch.nn.Tanh(),
                                     torch.nn.Linear(32, 8))
        self.g = torch.nn.Sequential(torch.nn.Linear(dim, 32), torch.nn.Tanh(),
                                     torch.nn.Linear(32, 8))
        if own_scale:
            self.loss = mf.SymmetricInfoNCE(temperature=0.2, learnable=True,
                                            gather_distributed=True)
        else:
            self.logit_scale = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, a, b):
        return F.normalize(self.f(a), dim=1), F.normalize(self.g(b), dim=1)


def make_pair_model(seed, dim, own_scale):
    torch.manual_seed(seed + 1)
    return PairModel(dim, own_scale)


def launch(target, world, tmp_path, *args, timeout=180, pg_timeout=None):
    """Run ``target`` on ``world`` gloo ranks; returns the per-rank results. ``pg_timeout``: the
    process group's timeout in seconds (None: torch's default).

    The ranks are forked from multiprocessing's fork server, a fresh single-threaded interpreter
    that has imported torch, mmcl_fast and this module (and run no op), so a rank does not pay
    for those imports again; it sees the environment of the test process when the server started."""
    import multiprocessing as mp
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch.distributed", "mmcl_fast", "dist_workers"])
    init_file = os.path.join(tmp_path, "rendezvous")
    procs = [ctx.Process(target=_run, args=(target, r, world, init_file, str(tmp_path), pg_timeout) + args)
             for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    for p in procs:
        if p.is_alive():
            p.kill()
    errors = [open(os.path.join(tmp_path, f"rank{r}.err")).read() for r in range(world)
              if os.path.exists(os.path.join(tmp_path, f"rank{r}.err"))]
    assert not errors, "\n".join(errors)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return [torch.load(os.path.join(tmp_path, f"rank{r}.pt"), weights_only=False)
            for r in range(world)]
