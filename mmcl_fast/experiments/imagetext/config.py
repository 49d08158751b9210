"""Configuration of one image/text run; every field carries its command-line help (``option``).

``resume_free_fields`` gives the fields a run may change when it resumes from a checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..common.config_flags import option

LOSSES = ("symmetric_infonce", "nt_xent")
TEXT_ENCODERS = ("conv2d", "conv1d")
TEXT_SEQUENCE_LENGTH = 24   # tokens per caption fed to the conv2d text encoder (padding after the words)
BATCH_SEED_OFFSET = 1   # the training batches' random stream, derived from the run's seed


@dataclass
class ImageTextConfig:
    # data
    image_size: int = option(64, "image side in pixels")
    n_train: int = option(10_000, "training pairs")
    n_val: int = option(2_000, "pairs the probes are fit on")
    n_test: int = option(1_000, "pairs the probes are scored on")
    causal: bool = option(True, "object hue tied to the x-position, the paper's main setting "
                                "(false: independent factors)")
    data_dir: str | None = option(None, "cache of the .npz splits (default: <out>/data)")
    # model and optimisation. Quick CPU defaults; the paper: batch 256, lr 1e-5, 100k steps,
    # temperature 1, constant lr, no warmup, torchvision's default init. At temperature 1 a few
    # hundred CPU steps learn position but not shape; temperature 0.1, a cosine decay after a
    # 50-step warmup and residual blocks that start as identities were the best of a short
    # search (docs/experiments/imagetext.md).
    encoding_size: int = option(4, "encoder output dimension")
    text_encoder: str = option("conv2d", "conv2d: the paper code's 2-D ConvNet over the token "
                                         "embeddings; conv1d: this project's 1-D ConvNet")
    batch_size: int = option(64, "pairs per step")
    steps: int = option(800, "training steps")
    lr: float = option(1e-3, "Adam learning rate")
    lr_schedule: str = option("cosine", "cosine or constant (the paper)")
    warmup_steps: int = option(50, "linear learning-rate ramp over the first steps (0: none)")
    zero_init_residual: bool = option(True, "ResNet blocks start as their shortcut (the paper: false)")
    grad_clip: float = option(2.0, "gradient-norm clipping threshold")
    temperature: float = option(0.1, "loss temperature")
    loss: str = option("symmetric_infonce", "symmetric_infonce or nt_xent")
    seed: int = option(0, "seed of the data, the encoders and the batches")
    checkpoint_every: int = option(100, "steps between checkpoints")
    eval_every: int = option(0, "validation loss every N steps (0: only at the end)")
    threads: int = option(0, "torch threads (0: torch's default)")
    seeds: int = option(1, "runs with seeds seed, seed+1, ...; scores reported as mean and sd")
    encoding_sizes: list[int] = option(default_factory=list,
                                       help="sweep: one run per encoding size, plus the Fig. 3 plot (empty: one run)")


def resume_free_fields(cfg: ImageTextConfig) -> tuple[str, ...]:
    """Fields that may differ from a checkpoint's when resuming: evaluation, bookkeeping and the
    held-out split sizes, and the step budget unless the learning-rate schedule depends on it."""
    free = ("n_val", "n_test", "data_dir", "checkpoint_every", "eval_every", "threads", "encoding_sizes",
            "seeds")
    return free if cfg.lr_schedule == "cosine" else (*free, "steps")


# Values a preset sets; flags given on the command line override them.
PRESETS = {
    "quick": {},
    # what the paper trained (its main_imgtxt.py defaults; App. B.1 data sizes): the original
    # estimator (NT-Xent, negatives from both modalities, cosine, temperature 1), Adam 1e-5 with a
    # constant rate, batch 256, 100k steps, torchvision's initialisation. GPU-sized.
    "paper": {"loss": "nt_xent", "temperature": 1.0, "batch_size": 256, "lr": 1e-5,
              "steps": 100_000, "lr_schedule": "constant", "warmup_steps": 0,
              "zero_init_residual": False, "n_train": 125_000, "n_val": 10_000, "n_test": 10_000,
              "causal": True, "text_encoder": "conv2d"},
}
