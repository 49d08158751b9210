"""Pre-training and linear probing of one CoMM / baseline run on bimodal Trifeatures.

Pre-training (AdamW, cosine decay, fresh same-shape pairs every epoch; ``pairs="biased"``: every
pair in M; SimCLR's augmentations with the blur scaled to this renderer's texture period,
``trifeatures.BLUR_SCALE``):
* comm:       two SimCLR augmentations of both images; :func:`mmcl_fast.comm_loss` over
              [Z_1, Z_2, Z_full] of each view (temperature 0.1, the configured term weights);
* cross:      CLIP between the two encoders (pooled tokens, a head each, learnable logit scale) on
              lightly cropped images (scale 0.5-1);
* cross_self: cross + 1/2 (NT-Xent of modality 1's two augmentations + the same for modality 2).
Evaluation: frozen features, without augmentation, chosen as the authors' code extracts them
(CoMM: the fused Z before the head; Cross: both modalities' CLIP embeddings, after their heads,
concatenated, as their CLIP's ``encode_image``/``encode_text`` include the projection; Cross+Self:
both encoders' pooled tokens, before the heads, concatenated); logistic regression with C chosen by
3-fold cross-validation on the training pairs, balanced accuracy on test pairs (5 pairings of
the 200 test images). The unbiased run scores R, U1, U2; the biased run scores S on balanced
probe pairs (half in M).
"""
from __future__ import annotations

import inspect
import json
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import balanced_accuracy_score
from sklearn.preprocessing import StandardScaler

from mmcl_fast import comm_loss, nt_xent, symmetric_infonce

from ..common.lr_schedule import learning_rate
from ..common.step_loop import finished_result, run_steps
from .augmentations import SimCLRAugment, random_resized_crop
from .config import (
    AUGMENT_SEED_OFFSET,
    BATCH_SEED_OFFSET,
    PROBE_SEED_OFFSET,
    RENDER_SEED_OFFSET,
    CommConfig,
    resume_free_fields,
)
from .model import BimodalModel
from .trifeatures import TrifeaturesImages, pair_labels, render_split, same_shape_pairs, synergy_probe_pairs

TEST_PAIRINGS = 5
# plain L2 logistic regression, stated explicitly where this scikit-learn takes the arguments
_PROBE_OPTIONS = {k: v for k, v in {"l1_ratios": (0.0,), "use_legacy_attributes": False}.items()
                  if k in inspect.signature(LogisticRegressionCV).parameters}


def linear_probe_scores(ftr: np.ndarray, fte: np.ndarray, ytr: dict[str, np.ndarray],
                        yte: dict[str, np.ndarray]) -> dict[str, float]:
    """Balanced test accuracy per task of the linear probe: features standardised on the training
    set, logistic regression with C in {0.01, 0.1, 1, 10} chosen by 3-fold cross-validation."""
    scaler = StandardScaler().fit(ftr)
    ftr, fte = scaler.transform(ftr), scaler.transform(fte)
    scores = {}
    for task, labels in ytr.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf = LogisticRegressionCV(Cs=[0.01, 0.1, 1.0, 10.0], cv=3, max_iter=2000,
                                       scoring="balanced_accuracy", **_PROBE_OPTIONS)
            clf.fit(ftr, labels)
        scores[task] = float(balanced_accuracy_score(yte[task], clf.predict(fte)))
    return scores


class CommRun:
    def __init__(self, cfg: CommConfig, train_data: TrifeaturesImages | None = None):
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.train_data = train_data or render_split("train", seed=cfg.seed + RENDER_SEED_OFFSET)
        self.images = torch.from_numpy(self.train_data.images)
        self.model = BimodalModel(cfg.encoder_width, cfg.width)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.rng = np.random.default_rng(cfg.seed + BATCH_SEED_OFFSET)
        self.gen = torch.Generator().manual_seed(cfg.seed + AUGMENT_SEED_OFFSET)
        self.augment = SimCLRAugment(blur_sigma=self.blur_sigma(cfg))
        self.step_count = 0
        self._epoch: list[np.ndarray] = []

    @staticmethod
    def blur_sigma(cfg: CommConfig) -> tuple[float, float]:
        """SimCLR's blur sigma range (``SimCLRAugment``'s default, pixels at 224 x 224) scaled by
        ``cfg.blur_scale``."""
        low, high = SimCLRAugment.blur_sigma
        return low * cfg.blur_scale, high * cfg.blur_scale

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._epoch:  # a fresh pairing and order every epoch
            pairs = same_shape_pairs(self.train_data, self.rng, biased=self.cfg.pairs == "biased")
            self.rng.shuffle(pairs)
            bs = self.cfg.batch_size
            self._epoch = [pairs[k:k + bs] for k in range(0, len(pairs) - bs + 1, bs)][::-1]
        idx = self._epoch.pop()
        return self.images[idx[:, 0]], self.images[idx[:, 1]]

    def loss(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        cfg, m, g = self.cfg, self.model, self.gen
        if cfg.method == "comm":
            v1 = m.comm_embeddings(self.augment(x1, g), self.augment(x2, g))
            v2 = m.comm_embeddings(self.augment(x1, g), self.augment(x2, g))
            return comm_loss(v1, v2, cfg.temperature, weights=cfg.weights())
        c1, c2 = random_resized_crop(x1, g, scale=(0.5, 1.0)), random_resized_crop(x2, g, scale=(0.5, 1.0))
        scale = m.logit_scale.exp().clamp(max=100.0)
        loss = symmetric_infonce(m.unimodal_embedding(c1, 0), m.unimodal_embedding(c2, 1), logit_scale=scale)
        if cfg.method == "cross_self":
            selfs = [nt_xent(m.unimodal_embedding(self.augment(x, g), i), m.unimodal_embedding(self.augment(x, g), i),
                             cfg.temperature) for i, x in enumerate((x1, x2))]
            loss = loss + 0.5 * (selfs[0] + selfs[1])
        return loss

    def step(self) -> float:
        for group in self.opt.param_groups:
            group["lr"] = learning_rate("cosine", self.cfg.lr, self.step_count, self.cfg.steps)
        self.model.train()
        loss = self.loss(*self._batch())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step_count += 1
        return loss.item()

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "gen": self.gen.get_state(),
                "rng": json.dumps(self.rng.bit_generator.state),
                "epoch": [e.tolist() for e in self._epoch]}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])
        self.rng.bit_generator.state = json.loads(state["rng"])
        self._epoch = [np.asarray(e, dtype=np.int64).reshape(-1, 2) for e in state["epoch"]]

    # The frozen features a probe can read (``features(kind=...)``); each method's own is the one
    # the authors' code extracts (PROBE_FEATURES).
    FEATURE_KINDS = ("fused", "unimodal_fused", "pooled", "clip")
    PROBE_FEATURES = {"comm": "fused", "cross": "clip", "cross_self": "pooled"}

    @torch.no_grad()
    def features(self, data: TrifeaturesImages, pairs: np.ndarray, kind: str | None = None) -> np.ndarray:
        """Features of the pairs: "fused" Z of both modalities, "unimodal_fused" Z of each alone
        (concatenated), "pooled" tokens of both encoders, "clip" embeddings of both (after the heads)."""
        kind = kind or self.PROBE_FEATURES[self.cfg.method]
        if kind not in self.FEATURE_KINDS:
            raise ValueError(f"kind must be one of {self.FEATURE_KINDS}, got {kind!r}")
        m = self.model
        m.eval()
        imgs = torch.from_numpy(data.images)
        extract = {"fused": lambda a, b: m.fused_representation(a, b),
                   "unimodal_fused": lambda a, b: torch.cat([m.unimodal_fused_representation(a, 0),
                                                             m.unimodal_fused_representation(b, 1)], 1),
                   "pooled": lambda a, b: torch.cat([m.pooled(a, 0), m.pooled(b, 1)], 1),
                   "clip": lambda a, b: torch.cat([m.unimodal_embedding(a, 0), m.unimodal_embedding(b, 1)], 1)}[kind]
        out = []
        for k in range(0, len(pairs), 256):
            p = pairs[k:k + 256]
            out.append(extract(imgs[p[:, 0]], imgs[p[:, 1]]))
        return torch.cat(out).numpy().astype(np.float64)

    def evaluate(self, test_data: TrifeaturesImages, kind: str | None = None) -> dict:
        rng = np.random.default_rng(self.cfg.seed + PROBE_SEED_OFFSET)
        if self.cfg.pairs == "unbiased":
            make, tasks = (lambda d: same_shape_pairs(d, rng)), ("R", "U1", "U2")
        else:
            make, tasks = (lambda d: synergy_probe_pairs(d, rng)), ("S",)
        train_pairs = make(self.train_data)
        test_pairs = np.concatenate([make(test_data) for _ in range(TEST_PAIRINGS)])
        ftr, fte = self.features(self.train_data, train_pairs, kind), self.features(test_data, test_pairs, kind)
        ytr, yte = pair_labels(self.train_data, train_pairs), pair_labels(test_data, test_pairs)
        scores = linear_probe_scores(ftr, fte, {t: ytr[t] for t in tasks}, {t: yte[t] for t in tasks})
        if "U1" in scores:
            scores["U"] = (scores["U1"] + scores["U2"]) / 2
        scores["n_train_pairs"], scores["n_test_pairs"] = len(train_pairs), len(test_pairs)
        return scores


def train(cfg: CommConfig, out_dir: str | Path | None = None, resume: bool = True, progress: bool = True,
          test_data: TrifeaturesImages | None = None) -> dict:
    """Pre-train (resuming from out_dir/checkpoint.pt), probe, write results.json; a finished run
    of the identical configuration is returned as it is."""
    torch.set_num_threads(cfg.threads)
    out = Path(out_dir) if out_dir is not None else None
    previous = finished_result(out, cfg, resume)
    if previous is not None:
        return previous
    run = CommRun(cfg)
    losses, train_s = run_steps(run, cfg.steps, out, resume, resume_free_fields(cfg), cfg.checkpoint_every,
                                f"comm {cfg.method}/{cfg.pairs} seed {cfg.seed}", progress)
    t1 = time.perf_counter()
    test_data = test_data or render_split("test", seed=cfg.seed + RENDER_SEED_OFFSET)
    result = {"config": asdict(cfg), "scores": run.evaluate(test_data), "steps": run.step_count,
              "train_seconds": train_s, "eval_seconds": time.perf_counter() - t1,
              "final_train_loss": float(np.mean(losses[-50:])) if losses else None}
    if out is not None:
        (out / "results.json").write_text(json.dumps(result, indent=1))
    return result
