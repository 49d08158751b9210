"""Training and evaluation of one Beyond-DAGs run.

Two encoders f_x, f_t (MLPs, three hidden layers) are trained on fresh pairs (x, t) of the
latent partial causal process every step with the symmetric InfoNCE of the fused operator:
* sphere model: L2-normalised outputs, similarity cosine / tau with tau = 1 / kappa;
* box model:    outputs sigmoid(h) * b with a learnable per-dimension bound b > 0, similarity
                -||f_x - f_t||_1 / tau with tau = lambda (the Laplace scale);
* dot model (``similarity="dot"``): unconstrained outputs, f_x . f_t (tau = 1): identifiable up
                to an affine map only, the starting point of the PCA+FastICA demonstration.
Then, on fresh samples: linear R^2, orthogonal-Procrustes R^2 and MCC (Pearson and Spearman)
of f_x(x) against z_x and f_t(t) against z_t, and R^2 of the modality-specific m from the
encoding (linear and kernel ridge; should be about 0). Controls: the same metrics for the raw
observation and for a randomly initialised encoder.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mmcl_fast import symmetric_infonce

from ..common.evaluation import mcc, procrustes_r2, r2_scores
from ..common.lr_schedule import learning_rate
from ..common.step_loop import finished_result, run_steps
from ..identifiability.encoders import encoder
from .config import BATCH_SEED_OFFSET, CONTROL_SEED_OFFSET, EVAL_SEED_OFFSET, BeyondDagsConfig, resume_free_fields
from .latent_model import PartialCausalProcess

M_PROBE_SAMPLES = 2000  # kernel ridge on the modality-specific latents: fit 1000, score 1000


class LatentEncoder(nn.Module):
    """LeakyReLU MLP d_in -> hidden x3 -> n_out onto the model's space (the unit sphere, or a box)."""

    def __init__(self, d_in: int, hidden: int, n_out: int, geometry: str):
        super().__init__()
        if geometry not in ("sphere", "box", "free"):
            raise ValueError(f"geometry must be 'sphere', 'box' or 'free', got {geometry!r}")
        self.geometry = geometry
        # variance-preserving (Kaiming) initialisation, as the simulation's encoders: from PyTorch's
        # default the encoding starts ~100x smaller and learns its directions one at a time
        self.body = encoder(d_in, (hidden, hidden, hidden), n_out, init="kaiming")
        # softplus(raw) = 1 at the start: the box (0, 1)^n of the data
        self.raw_bound = nn.Parameter(torch.full((n_out,), math.log(math.e - 1))) if geometry == "box" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        if self.geometry == "sphere":
            return nn.functional.normalize(h, dim=1)
        if self.geometry == "free":
            return h
        return torch.sigmoid(h) * nn.functional.softplus(self.raw_bound)


def contrastive_loss(fx: torch.Tensor, ft: torch.Tensor, cfg: BeyondDagsConfig,
                     scale_factor: float = 1.0) -> torch.Tensor:
    """The model's loss; ``scale_factor`` multiplies its logit scale (the warm-up, ``scale_warmup``)."""
    if cfg.model_geometry == "free":
        return symmetric_infonce(fx, ft, logit_scale=scale_factor, similarity="dot")
    if cfg.model_geometry == "sphere":
        return symmetric_infonce(fx, ft, logit_scale=scale_factor * cfg.kappa, similarity="cosine")
    return symmetric_infonce(fx, ft, logit_scale=scale_factor / cfg.laplace_scale, similarity="l1")


def scale_factor(cfg: BeyondDagsConfig, step: int) -> float:
    """1/8 rising linearly to 1 over the first ``scale_warmup`` of the steps, then 1."""
    ramp = cfg.scale_warmup * cfg.steps
    return 1.0 if step >= ramp else 0.125 + 0.875 * step / ramp


def encoding_scores(h: np.ndarray, z: np.ndarray, m: np.ndarray) -> dict[str, float]:
    """The identifiability metrics of an encoding h (n x k) of the coupled latent z (n x n_z)."""
    out = {"linear_r2": r2_scores(h, {"z": z}, nonlinear=False)["z"]["linear"],
           "mcc_pearson": mcc(h, z, "pearson"), "mcc_spearman": mcc(h, z, "spearman"),
           "procrustes_r2": procrustes_r2(h, z)}
    if m.shape[1]:
        r2m = r2_scores(h[:M_PROBE_SAMPLES], {"m": m[:M_PROBE_SAMPLES]}, nonlinear=True)["m"]
        out["m_r2_linear"], out["m_r2_nonlinear"] = r2m["linear"], r2m["nonlinear"]
    return out


def primary_metric(setting: str, model_geometry: str) -> str:
    """The metric of the identifiability the setting promises: component-wise (MCC) for box data
    and a box (L1) model; up to an orthogonal map (orthogonal-Procrustes R^2) for sphere data and a
    sphere (cosine) model, as the theorem states it; otherwise up to a linear map (linear R^2). A
    cosine model is rotation invariant, and so is a vMF conditional: neither singles out axes."""
    if setting == "box" and model_geometry == "box":
        return "mcc_pearson"
    if setting == "sphere" and model_geometry == "sphere":
        return "procrustes_r2"
    return "linear_r2"


class BeyondDagsRun:
    """Process + encoders + optimiser of one run; ``step()`` trains on one fresh batch."""

    def __init__(self, cfg: BeyondDagsConfig):
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.process = PartialCausalProcess(cfg.setting, cfg.violation, cfg.n_z, cfg.n_m, cfg.kappa,
                                            cfg.laplace_scale, seed=cfg.seed,
                                            mixing_layers=cfg.mixing_layers)
        d = self.process.obs_dim
        self.f_x = LatentEncoder(d, cfg.hidden, cfg.output_dim, cfg.model_geometry)
        self.f_t = LatentEncoder(d, cfg.hidden, cfg.output_dim, cfg.model_geometry)
        self.params = list(self.f_x.parameters()) + list(self.f_t.parameters())
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr)
        self.gen = torch.Generator().manual_seed(cfg.seed + BATCH_SEED_OFFSET)
        self.step_count = 0

    def step(self) -> float:
        for group in self.opt.param_groups:
            group["lr"] = learning_rate("cosine", self.cfg.lr, self.step_count, self.cfg.steps)
        x, t, _ = self.process.sample(self.cfg.batch_size, self.gen)
        loss = contrastive_loss(self.f_x(x), self.f_t(t), self.cfg, scale_factor(self.cfg, self.step_count))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step_count += 1
        return loss.item()

    def state_dict(self) -> dict:
        return {"f_x": self.f_x.state_dict(), "f_t": self.f_t.state_dict(), "opt": self.opt.state_dict(),
                "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.f_x.load_state_dict(state["f_x"])
        self.f_t.load_state_dict(state["f_t"])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])

    @torch.no_grad()
    def evaluate(self) -> dict:
        cfg = self.cfg
        g = torch.Generator().manual_seed(cfg.seed + EVAL_SEED_OFFSET)
        x, t, lat = self.process.sample(cfg.eval_samples, g)
        z = {k: v.numpy() for k, v in lat.items()}
        fx, ft = self.f_x(x), self.f_t(t)
        torch.manual_seed(cfg.seed + CONTROL_SEED_OFFSET)
        untrained = LatentEncoder(self.process.obs_dim, cfg.hidden, cfg.output_dim, cfg.model_geometry)
        return {
            "val_loss": contrastive_loss(fx[:cfg.batch_size], ft[:cfg.batch_size], cfg).item(),
            "f_x": encoding_scores(fx.numpy(), z["z_x"], z["m_x"]),
            "f_t": encoding_scores(ft.numpy(), z["z_t"], z["m_t"]),
            "controls": {"raw_x": encoding_scores(x.numpy(), z["z_x"], z["m_x"]),
                         "random_encoder_x": encoding_scores(untrained(x).numpy(), z["z_x"], z["m_x"])},
        }


def summary(result: dict) -> dict:
    """The primary metric (``primary_metric``) of both encoders and the controls, and the margin
    of the encoders' mean over the better control."""
    key = primary_metric(result["config"]["setting"], result["model_geometry"])
    enc = (result["f_x"][key] + result["f_t"][key]) / 2
    best_control = max(c[key] for c in result["controls"].values())
    return {"metric": key, "encoders": enc, "f_x": result["f_x"][key], "f_t": result["f_t"][key],
            "raw_x": result["controls"]["raw_x"][key], "random_encoder_x": result["controls"]["random_encoder_x"][key],
            "margin_over_controls": enc - best_control,
            "m_r2_nonlinear": (result["f_x"].get("m_r2_nonlinear", float("nan"))
                               + result["f_t"].get("m_r2_nonlinear", float("nan"))) / 2}


def train(cfg: BeyondDagsConfig, out_dir: str | Path | None = None, resume: bool = True,
          progress: bool = True) -> dict:
    """Train (resuming from out_dir/checkpoint.pt when present), evaluate, write results.json; a
    finished run of the identical configuration is returned as it is."""
    torch.set_num_threads(cfg.threads)
    out = Path(out_dir) if out_dir is not None else None
    previous = finished_result(out, cfg, resume)
    if previous is not None:
        return previous
    run = BeyondDagsRun(cfg)
    losses, train_s = run_steps(run, cfg.steps, out, resume, resume_free_fields(cfg), cfg.checkpoint_every,
                                f"beyond-dags {cfg.setting}/{cfg.violation} seed {cfg.seed}", progress)
    t1 = time.perf_counter()
    result = run.evaluate()
    result.update(config=asdict(cfg), model_geometry=cfg.model_geometry, output_dim=cfg.output_dim,
                  steps=run.step_count,
                  train_seconds=train_s, eval_seconds=time.perf_counter() - t1,
                  final_train_loss=float(np.mean(losses[-50:])) if losses else None)
    result["summary"] = summary(result)
    if out is not None:
        (out / "results.json").write_text(json.dumps(result, indent=1))
    return result
