"""Configuration of one Beyond-DAGs run; every field is a ``mmcl-fast beyond-dags`` flag."""
from __future__ import annotations

from dataclasses import dataclass

from ..common.config_flags import option
from .latent_model import SETTINGS, VIOLATIONS

# Random streams derived from a run's seed: training batches, evaluation samples, the control
# encoder's initialisation.
BATCH_SEED_OFFSET = 1
EVAL_SEED_OFFSET = 10_007
CONTROL_SEED_OFFSET = 20_011

# Training steps of a run without --steps; rows that get a multiple of it.
DEFAULT_STEPS = 12_000
LONGER_BUDGET = {("box", "normal_conditional"): 2}
# The logit scale's warm-up (a fraction of the steps) of a run without --scale-warmup. The sphere
# model on box data must fit a 6-d box into S^6 at the sphere's own scale; at full scale from the
# first step, seed 1 of 3 folded one box axis onto the others and stalled at a higher loss.
SCALE_WARMUP = {("box", "model_mismatch"): 0.25}


@dataclass
class BeyondDagsConfig:
    setting: str = option("sphere", f"latent geometry of the data: {' or '.join(SETTINGS)}")
    violation: str = option("none", f"assumption violated: {', '.join(VIOLATIONS)}")
    n_z: int = option(6, "coupled latent dimensions per modality (z_x, z_t)")
    n_m: int = option(2, "modality-specific dimensions per modality (m_x, m_t)")
    mixing_layers: int = option(3, "layers of each invertible mixing MLP g_x, g_t (the simulation's construction)")
    kappa: float = option(40.0, "vMF concentration of z_t around z_x (sphere); the model uses tau = 1 / kappa")
    laplace_scale: float = option(0.1, "Laplace scale lambda of z_t - z_x (box); the model uses tau = lambda")
    similarity: str = option("auto", "auto: cosine / tau for a sphere model, -L1 / tau for a box model; dot: "
                             "unconstrained outputs compared by dot product (the PCA+FastICA demonstration)")
    model_dim: int = option(0, "encoder output dimension; 0: n_z, except n_z + 1 for a sphere model on box "
                            "data (the sphere S^n_z, in R^(n_z + 1), is the smallest that holds an n_z-dim latent)")
    hidden: int = option(128, "encoder hidden width (three hidden layers)")
    batch_size: int = option(1024, "pairs per step")
    steps: int = option(0, "training steps; 0: the preset's budget, 12,000, or 24,000 for box data with a Normal "
                        "conditional (component-wise recovery converges more slowly there; set before its runs)")
    lr: float = option(1e-3, "Adam learning rate (cosine decay to 0 at --steps)")
    scale_warmup: float = option(-1.0, "fraction of the steps over which the model's logit scale rises linearly "
                                 "from 1/8 of its value to its value; -1: the preset's, 0.25 for the sphere model on "
                                 "box data (without it one seed in three folded a box axis), 0 elsewhere")
    eval_samples: int = option(10_000, "fresh samples for the metrics")
    seed: int = option(0, "seed of the mixing functions, the batches and the encoders")
    threads: int = option(1, "torch intra-op threads")
    checkpoint_every: int = option(500, "steps between checkpoints")

    def __post_init__(self):
        if self.steps == 0:
            self.steps = DEFAULT_STEPS * LONGER_BUDGET.get((self.setting, self.violation), 1)
        if self.scale_warmup == -1.0:
            self.scale_warmup = SCALE_WARMUP.get((self.setting, self.violation), 0.0)
        if self.setting not in SETTINGS:
            raise ValueError(f"setting must be one of {SETTINGS}, got {self.setting!r}")
        if self.violation not in VIOLATIONS:
            raise ValueError(f"violation must be one of {VIOLATIONS}, got {self.violation!r}")
        for name in ("n_z", "mixing_layers", "hidden", "batch_size", "steps", "eval_samples", "threads",
                     "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.scale_warmup <= 1.0:
            raise ValueError(f"scale_warmup must be in [0, 1], got {self.scale_warmup}")
        if self.model_dim < 0:
            raise ValueError(f"model_dim must be >= 0 (0: automatic), got {self.model_dim}")
        if self.similarity not in ("auto", "dot"):
            raise ValueError(f"similarity must be 'auto' or 'dot', got {self.similarity!r}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2, got {self.batch_size}")
        if self.eval_samples < 100:
            raise ValueError(f"eval_samples must be >= 100, got {self.eval_samples}")

    @property
    def model_geometry(self) -> str:
        """The encoder's output space: the data's, except under model_mismatch (the other one);
        "free" (no constraint) for the dot-product model."""
        if self.similarity == "dot":
            return "free"
        if self.violation == "model_mismatch":
            return "box" if self.setting == "sphere" else "sphere"
        return self.setting

    @property
    def output_dim(self) -> int:
        """The encoders' output dimension (``model_dim``, or its automatic value)."""
        if self.model_dim:
            return self.model_dim
        return self.n_z + 1 if self.setting == "box" and self.model_geometry == "sphere" else self.n_z


def resume_free_fields(cfg: BeyondDagsConfig) -> tuple[str, ...]:
    """Fields that may change when a run resumes from its checkpoint."""
    del cfg
    return ("eval_samples", "threads", "checkpoint_every")
