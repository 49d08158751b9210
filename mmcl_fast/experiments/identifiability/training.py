"""Training and evaluation of one simulation run.

Encoders g1, g2 are trained on fresh samples of the generative process of :mod:`.sim_data` every
step, with the authors' estimator ``symmetric_lpsimclr`` (squared euclidean, tau = 1, negatives
from a second independent batch, log-mean-exp; the paper presets) or ``symmetric_infonce`` over
the batch's other pairs (the quick preset). Afterwards every latent block is predicted from each
encoder's output (:mod:`..common.evaluation`), probes fit on half the evaluation samples and
scored on the other; each continuous block also gets its MCC with the encoding (mean |Pearson|
after matching components), an extra column beside the paper's R^2.

    from mmcl_fast.experiments.identifiability.config import SimConfig
    from mmcl_fast.experiments.identifiability.training import train
    result = train(SimConfig(steps=2000, batch_size=1024), out_dir="runs/x")
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from mmcl_fast import symmetric_infonce, symmetric_lpsimclr

from ..common.evaluation import accuracy_scores, mcc, r2_scores
from ..common.lr_schedule import learning_rate
from ..common.step_loop import finished_result, run_steps
from .config import BATCH_SEED_OFFSET, EVAL_SEED_OFFSET, LOSSES, SimConfig, paper_hidden, resume_free_fields
from .encoders import encoder
from .report import summary
from .sim_data import MultimodalProcess


class Simulation:
    """Process + encoders + optimiser of one run; `step()` trains on one fresh batch."""

    def __init__(self, cfg: SimConfig):
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.process = MultimodalProcess(cfg.spec(), multimodal=cfg.multimodal, seed=cfg.seed,
                                         cond_threshold_ratio=cfg.cond_threshold_ratio,
                                         n_cond_draws=cfg.n_cond_draws)
        if cfg.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {cfg.loss!r}")
        d = cfg.spec().dim
        hidden = tuple(cfg.hidden) if cfg.hidden is not None else paper_hidden(d)
        self.g1 = encoder(d, hidden, cfg.encoding_size, init=cfg.init)
        self.g2 = encoder(d, hidden, cfg.encoding_size, init=cfg.init) if cfg.multimodal else self.g1
        params = list(self.g1.parameters()) + (list(self.g2.parameters()) if cfg.multimodal else [])
        self.params = params
        self.opt = torch.optim.Adam(params, lr=cfg.lr)
        self.gen = torch.Generator().manual_seed(cfg.seed + BATCH_SEED_OFFSET)
        self.step_count = 0
        # training-loss curve (paper Fig. 6 b/d): the mean loss of every curve_every steps
        self.curve_every = max(1, cfg.steps // 200)
        self.loss_curve: list[list[float]] = []
        self._curve_sum, self._curve_n = 0.0, 0

    def loss(self, x1, x2, g: torch.Generator) -> torch.Tensor:
        """The configured estimator on the pair batch (x1, x2). ``lpsimclr`` draws its negatives
        from a second, independent batch through the same encoders (the authors' estimator);
        ``symmetric_infonce`` uses the other pairs of the batch."""
        h1, h2 = self.g1(x1), self.g2(x2)
        if self.cfg.loss == "symmetric_infonce":
            return symmetric_infonce(h1, h2, temperature=self.cfg.temperature, similarity="euclidean")
        x1_neg, x2_neg, _ = self.process.sample(x1.shape[0], g)
        return symmetric_lpsimclr(h1, h2, self.g1(x1_neg), self.g2(x2_neg), temperature=self.cfg.temperature)

    def lr_at(self, step: int) -> float:
        return learning_rate(self.cfg.lr_schedule, self.cfg.lr, step, self.cfg.steps)

    def step(self) -> float:
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step_count)
        x1, x2, _ = self.process.sample(self.cfg.batch_size, self.gen)
        loss = self.loss(x1, x2, self.gen)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.opt.step()
        self.step_count += 1
        value = loss.item()
        self._curve_sum, self._curve_n = self._curve_sum + value, self._curve_n + 1
        if self.step_count % self.curve_every == 0 or self.step_count == self.cfg.steps:
            self.loss_curve.append([self.step_count, self._curve_sum / self._curve_n])
            self._curve_sum, self._curve_n = 0.0, 0
        return value

    # -- checkpoints (common.checkpoint adds the config, the step and torch's global RNG) ------
    def state_dict(self) -> dict:
        return {"g1": self.g1.state_dict(), "g2": self.g2.state_dict(), "opt": self.opt.state_dict(),
                "gen": self.gen.get_state(), "loss_curve": [list(p) for p in self.loss_curve],
                "curve_partial": [self._curve_sum, self._curve_n]}

    def load_state_dict(self, state: dict) -> None:
        self.g1.load_state_dict(state["g1"])
        self.g2.load_state_dict(state["g2"])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])
        # checkpoints written before the curve was logged resume with the curve from here on
        self.loss_curve = [list(p) for p in state.get("loss_curve", [])]
        self._curve_sum, self._curve_n = state.get("curve_partial", [0.0, 0])

    # -- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict:
        cfg = self.cfg
        g = torch.Generator().manual_seed(cfg.seed + EVAL_SEED_OFFSET)
        x1, x2, z = self.process.sample(cfg.eval_samples, g)
        h1, h2 = self.g1(x1), self.g2(x2)
        val_loss = self.loss(x1, x2, g).item()  # the training estimator (paper Fig. 7)
        out = {"val_loss": val_loss, "encoder1": self._scores(h1, z), "encoder2": self._scores(h2, z)}
        if cfg.intervention:
            xi1, xi2, c_prime = self.process.intervene(z, g)
            fac = {"c": z["c"], "c_prime": c_prime, "s": z["s"], "s_tilde": z["s_tilde"],
                   "m1": z["m1"], "m2": z["m2"]}
            out["intervention_encoder1"] = self._scores(self.g1(xi1), fac)
            out["intervention_encoder2"] = self._scores(self.g2(xi2), fac)
        return out

    def _scores(self, h: torch.Tensor, z: dict[str, torch.Tensor]) -> dict:
        """R^2 per continuous block, accuracy per discrete block (marked "metric": "accuracy")."""
        spec = self.process.spec
        block = lambda name: "c" if name == "c_prime" else name  # noqa: E731
        cont = {k: v.numpy() for k, v in z.items() if not spec.is_discrete(block(k))}
        disc = {k: spec.classes(v).numpy() for k, v in z.items() if spec.is_discrete(block(k))}
        out = r2_scores(h.numpy(), cont, nonlinear=self.cfg.nonlinear_eval)
        for name, values in cont.items():  # component-wise recovery (an extra column; R^2 is the paper's)
            if name in out:
                out[name]["mcc"] = mcc(h.numpy(), values)
        for name, acc in accuracy_scores(h.numpy(), disc, nonlinear=self.cfg.nonlinear_eval).items():
            out[name] = dict(acc, metric="accuracy", chance=1.0 / spec.n_classes)
        return {k: out[k] for k in z if k in out}   # blocks of width 0 (n_m = 0) are skipped


def train(cfg: SimConfig, out_dir: str | Path | None = None, resume: bool = True,
          progress: bool = True) -> dict:
    """Train (resuming from out_dir/checkpoint.pt when present), evaluate, write results.json.

    A finished run whose results.json was written by the identical configuration is returned as
    it is (resuming a preset does not re-train or re-evaluate its completed runs)."""
    out = Path(out_dir) if out_dir is not None else None
    previous = finished_result(out, cfg, resume)
    if previous is not None:
        return previous
    sim = Simulation(cfg)
    losses, train_s = run_steps(sim, cfg.steps, out, resume, resume_free_fields(cfg), cfg.checkpoint_every,
                                "simulate", progress)
    t1 = time.perf_counter()
    result = sim.evaluate()
    result.update(config=asdict(cfg), steps=sim.step_count, train_seconds=train_s,
                  eval_seconds=time.perf_counter() - t1,
                  final_train_loss=float(np.mean(losses[-50:])) if losses else None,
                  loss_curve=sim.loss_curve)
    result["summary"] = summary(result)
    if out is not None:
        (out / "results.json").write_text(json.dumps(result, indent=1))
    return result
