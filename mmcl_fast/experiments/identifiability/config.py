"""Configuration of one simulation run (Daunhawer et al., ICLR 2023, Sec. 5.1 / App. B).

Every field carries its command-line help (``option``), from which ``mmcl-fast simulate`` builds
its flags. ``resume_free_fields`` gives the fields a run may change when it resumes from a
checkpoint (the step budget, unless a cosine schedule depends on it, and the evaluation).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..common.config_flags import option
from .sim_data import LatentSpec

PAPER_WIDTH_FACTORS = (10, 50, 50, 50, 50, 10)   # hidden widths in units of the input dimension
LOSSES = ("lpsimclr", "symmetric_infonce")
INITS = ("torch", "kaiming")
# Random streams derived from a run's seed: the training batches, and the evaluation samples.
BATCH_SEED_OFFSET = 1
EVAL_SEED_OFFSET = 10_007


def paper_hidden(d_in: int) -> tuple[int, ...]:
    """The authors' encoder widths for input dimension d: [10d, 50d, 50d, 50d, 50d, 10d]
    (150/750 at d = 15, 100/500 at d = 10)."""
    return tuple(f * d_in for f in PAPER_WIDTH_FACTORS)


@dataclass
class SimConfig:
    # generative process
    n_c: int = option(5, "content dimensions")
    n_s: int = option(5, "style dimensions")
    n_m: int = option(5, "modality-specific dimensions per modality (0: none)")
    p_change: float = option(0.75, "probability that a style dimension changes between the modalities")
    statistical: bool = option(False, "statistical dependence: each block ~ N(0, Wishart Sigma)")
    causal: bool = option(False, "causal dependence: s <- s + B c + a")
    discrete: str = option("", "discrete group (paper Fig. 5): content, style or modality; empty: none")
    n_classes: int = option(5, "classes per discrete component")
    multimodal: bool = option(True, "f1 != f2 and two encoders; false: the original setting (f1 = f2)")
    cond_threshold_ratio: float = option(1e-3, "mixing layers are redrawn above this condition-number quantile")
    n_cond_draws: int = option(25_000, "random matrices drawn to estimate that quantile")
    # model and optimisation (paper defaults, Table 2a)
    encoding_size: int = option(5, "encoder output dimension")
    hidden: tuple[int, ...] | None = option(None, "encoder hidden widths (default: 10d, 50d x4, 10d for input d)")
    loss: str = option("lpsimclr", "lpsimclr (the paper's estimator, negatives from a second batch) or "
                       "symmetric_infonce (the batch's other pairs)")
    batch_size: int = option(6144, "pairs per step")
    steps: int = option(300_000, "training steps")
    lr: float = option(1e-4, "Adam learning rate")
    lr_schedule: str = option("constant", "constant (the paper) or cosine (decays to 0 at --steps)")
    init: str = option("torch", "encoder init: torch (PyTorch's default, the paper's code) or kaiming")
    grad_clip: float = option(2.0, "gradient-norm clipping threshold")
    temperature: float = option(1.0, "loss temperature tau")
    seed: int = option(0, "seed of the process, the encoders and the batches")
    # evaluation
    eval_samples: int = option(40960, "evaluation samples: probes fit on the first half, scored on the second "
                               "(the paper: 20,480 + 20,480)")
    nonlinear_eval: bool = option(True, "also fit kernel-ridge (or MLP-classifier) probes")
    intervention: bool = option(False, "also evaluate under test-time interventions (paper Fig. 8)")
    checkpoint_every: int = option(2000, "steps between checkpoints")

    def spec(self) -> LatentSpec:
        return LatentSpec(self.n_c, self.n_s, self.n_m, self.p_change, self.statistical, self.causal,
                          self.discrete, self.n_classes)


def resume_free_fields(cfg: SimConfig) -> tuple[str, ...]:
    """Fields that may differ from a checkpoint's when resuming: the evaluation settings, and the
    step budget unless the learning-rate schedule depends on it (cosine)."""
    free = ("eval_samples", "nonlinear_eval", "intervention", "checkpoint_every")
    return free if cfg.lr_schedule == "cosine" else (*free, "steps")
