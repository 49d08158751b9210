"""Configuration of one CoMM / baseline pre-training run on bimodal Trifeatures."""
from __future__ import annotations

from dataclasses import dataclass

from ..common.config_flags import option
from ..common.lr_schedule import SCHEDULES
from .trifeatures import BLUR_SCALE, RENDERINGS

METHODS = ("cross", "cross_self", "comm")
CONTROLS = ("supervised",)  # the pair-level supervised ceiling C, trained as a run of its own
PAIRS = ("unbiased", "biased")
SUPERVISED_AUGMENTS = ("none", "light")
# Random streams derived from a run's seed: rendering, pairs and batches, augmentations, probes.
RENDER_SEED_OFFSET = 0
BATCH_SEED_OFFSET = 1
AUGMENT_SEED_OFFSET = 2
PROBE_SEED_OFFSET = 3


@dataclass
class CommConfig:
    method: str = option("comm", "cross (CLIP between the encoders), cross_self (+ SimCLR per modality), comm, "
                         "or supervised (the control: the same model trained on the pair labels)")
    rendering: str = option("supersampled", "Trifeatures renderer: supersampled (the authors' proportions, "
                            "anti-aliased) or direct (point-sampled at 64 px)")
    pairs: str = option("unbiased", "pre-training pairs: unbiased same-shape pairs (R, U) or biased pairs in M (S)")
    term_weights: str = option("1,1,1", "CoMM's term weights (modality 1, modality 2, multimodal), the Fig. 5 "
                               "ablation: '0,0,1' keeps L'' only, '1,1,0' the unimodal terms only")
    temperature: float = option(0.1, "NT-Xent temperature (CoMM and the Self terms)")
    blur_scale: float = option(BLUR_SCALE, "SimCLR's blur sigma range, 0.1-2.0 pixels at the authors' 224 x 224, "
                               "times this factor (default: this renderer's texture period over theirs)")
    supervised_augment: str = option("light", "the supervised control's images: none, or light (Cross's "
                                     "crops, area 0.5-1, and horizontal flips; never SimCLR's 0.2 crops)")
    encoder_width: int = option(64, "channels of the last CNN layers (tokens' width)")
    encoder_dim: int = option(128, "the baselines' encoder output: the flattened CNN map through a linear layer")
    width: int = option(128, "fusion transformer width")
    batch_size: int = option(64, "pairs per step (the authors: 64)")
    steps: int = option(1000, "training steps (the authors: about 15,700; 1000 fits the CPU budget of 3 seeds)")
    lr: float = option(3e-4, "AdamW learning rate")
    lr_schedule: str = option("constant", "constant (the authors') or cosine (decay to 0 at the last step)")
    warmup: int = option(100, "steps of linear learning-rate warm-up")
    weight_decay: float = option(1e-4, "AdamW weight decay")
    seed: int = option(0, "seed of the rendering, the pairs, the augmentations and the model")
    threads: int = option(2, "torch intra-op threads")
    checkpoint_every: int = option(200, "steps between checkpoints")

    def __post_init__(self):
        if self.method not in METHODS + CONTROLS:
            raise ValueError(f"method must be one of {METHODS + CONTROLS}, got {self.method!r}")
        if self.rendering not in RENDERINGS:
            raise ValueError(f"rendering must be one of {RENDERINGS}, got {self.rendering!r}")
        if self.supervised_augment not in SUPERVISED_AUGMENTS:
            raise ValueError(f"supervised_augment must be one of {SUPERVISED_AUGMENTS}, "
                             f"got {self.supervised_augment!r}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.pairs not in PAIRS:
            raise ValueError(f"pairs must be one of {PAIRS}, got {self.pairs!r}")
        for name in ("encoder_width", "encoder_dim", "width", "batch_size", "steps", "threads", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.blur_scale > 0:
            raise ValueError(f"blur_scale must be positive, got {self.blur_scale}")
        if self.encoder_width % 4:
            raise ValueError(f"encoder_width must be a multiple of 4, got {self.encoder_width}")
        self.weights()  # parses

    def weights(self) -> list[float]:
        try:
            w = [float(v) for v in self.term_weights.split(",")]
        except ValueError:
            w = []
        if len(w) != 3 or any(v < 0 for v in w) or sum(w) == 0:
            raise ValueError(f"term_weights must be three non-negative numbers, not all 0, got {self.term_weights!r}")
        return w


def resume_free_fields(cfg: CommConfig) -> tuple[str, ...]:
    del cfg
    return ("threads", "checkpoint_every")
