"""Pre-training and linear probing of one CoMM / baseline run on bimodal Trifeatures.

Pre-training (AdamW, a linear warm-up then a constant learning rate as the authors' runs, or
cosine decay; fresh pairs every epoch: same-shape pairs, ``pairs="biased"``: every pair in M;
SimCLR's augmentations with the blur scaled to the renderer's texture period,
``trifeatures.BLUR_SCALE``):
* comm:       two SimCLR augmentations of both images; :func:`mmcl_fast.comm_loss` over
              [Z_1, Z_2, Z_full] of each view (temperature 0.1, the configured term weights);
* cross:      CLIP between the two encoders (linear projections of the encoder outputs, learnable
              logit scale) on lightly cropped images (scale 0.5-1);
* cross_self: cross + 1/2 (NT-Xent at the same temperature of modality 1's two augmentations,
              through a two-layer head on the encoder output, + the same for modality 2);
* supervised: the control C: cross-entropy of linear heads on the fused CLS for the pair labels
              R, U1, U2 and S, on Cross's light crops and flips (``supervised_augment="light"``;
              "none": clean images; never SimCLR's crops); ``pairs="biased"`` trains it on
              balanced pairs (half in M), the pairs the synergy probe uses.
Evaluation: frozen features, without augmentation, at each method's probe point as the authors'
code extracts them (CoMM and the control: the fused CLS; Cross: the CLIP embeddings, linear in the
encoder output; Cross+Self: the encoder outputs), at the common point (the CNN maps' mean, every
method), and for Cross at its encoder output too; each also on the randomly initialised model of
the same seed (the control r). Both modalities' features are concatenated per pair; logistic
regression with C chosen by 3-fold cross-validation on the training pairs, balanced accuracy on
test pairs (5 pairings of the 200 test images). The unbiased run scores R, U1, U2; the biased run
scores S on balanced probe pairs (half in M).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

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
from .linear_probe import probe_scores
from .model import BimodalModel
from .trifeatures import TrifeaturesImages, pair_labels, render_split, same_shape_pairs, synergy_probe_pairs

TEST_PAIRINGS = 5


def light_augment(x: torch.Tensor, g: torch.Generator, flip: bool = True) -> torch.Tensor:
    """Cross's crops (area 0.5-1 of the image), and with ``flip`` a horizontal flip with probability 1/2."""
    out = random_resized_crop(x, g, scale=(0.5, 1.0))
    if flip:
        out = torch.where((torch.rand(len(x), generator=g) < 0.5).view(-1, 1, 1, 1), out.flip(3), out)
    return out


class CommRun:
    def __init__(self, cfg: CommConfig, train_data: TrifeaturesImages | None = None):
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.train_data = train_data or render_split("train", seed=cfg.seed + RENDER_SEED_OFFSET,
                                                     rendering=cfg.rendering)
        self.images = torch.from_numpy(self.train_data.images)
        self.model = BimodalModel(cfg.encoder_width, cfg.width, encoder_dim=cfg.encoder_dim)
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

    def _epoch_pairs(self) -> np.ndarray:
        if self.cfg.method == "supervised" and self.cfg.pairs == "biased":
            return synergy_probe_pairs(self.train_data, self.rng)
        return same_shape_pairs(self.train_data, self.rng, biased=self.cfg.pairs == "biased")

    def _batch(self) -> np.ndarray:
        """The next (batch_size, 2) index pairs."""
        if not self._epoch:  # a fresh pairing and order every epoch
            pairs = self._epoch_pairs()
            self.rng.shuffle(pairs)
            bs = self.cfg.batch_size
            self._epoch = [pairs[k:k + bs] for k in range(0, len(pairs) - bs + 1, bs)][::-1]
        return self._epoch.pop()

    def loss(self, idx: np.ndarray) -> torch.Tensor:
        cfg, m, g = self.cfg, self.model, self.gen
        x1, x2 = self.images[idx[:, 0]], self.images[idx[:, 1]]
        if cfg.method == "supervised":
            labels = pair_labels(self.train_data, idx)
            if cfg.supervised_augment == "light":
                x1, x2 = (light_augment(x, g) for x in (x1, x2))
            logits = m.pair_logits(x1, x2)
            return sum(F.cross_entropy(logits[k], torch.from_numpy(labels[k])) for k in logits)
        if cfg.method == "comm":
            v1 = m.comm_embeddings(self.augment(x1, g), self.augment(x2, g))
            v2 = m.comm_embeddings(self.augment(x1, g), self.augment(x2, g))
            return comm_loss(v1, v2, cfg.temperature, weights=cfg.weights())
        c1, c2 = light_augment(x1, g, flip=False), light_augment(x2, g, flip=False)
        scale = m.logit_scale.exp().clamp(max=100.0)
        loss = symmetric_infonce(m.clip_embedding(c1, 0), m.clip_embedding(c2, 1), logit_scale=scale)
        if cfg.method == "cross_self":
            selfs = [nt_xent(m.self_embedding(m.encoder_output(self.augment(x, g), i), i),
                             m.self_embedding(m.encoder_output(self.augment(x, g), i), i), cfg.temperature)
                     for i, x in enumerate((x1, x2))]
            loss = loss + 0.5 * (selfs[0] + selfs[1])
        return loss

    def step(self) -> float:
        for group in self.opt.param_groups:
            group["lr"] = learning_rate(self.cfg.lr_schedule, self.cfg.lr, self.step_count, self.cfg.steps,
                                        warmup=self.cfg.warmup)
        self.model.train()
        loss = self.loss(self._batch())
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
    # the authors' code extracts (PROBE_FEATURES); every method is also probed at COMMON_FEATURES.
    FEATURE_KINDS = ("fused", "unimodal_fused", "pooled", "encoder", "clip")
    PROBE_FEATURES = {"comm": "fused", "cross": "clip", "cross_self": "encoder", "supervised": "fused"}
    COMMON_FEATURES = "pooled"

    def probe_points(self) -> tuple[str, ...]:
        """The feature kinds a finished run is scored at: its own, the common one, and for Cross
        its encoder output as well."""
        own = self.PROBE_FEATURES[self.cfg.method]
        extra = ("encoder",) if self.cfg.method == "cross" else ()
        return tuple(dict.fromkeys((own, self.COMMON_FEATURES, *extra)))

    @torch.no_grad()
    def features(self, data: TrifeaturesImages, pairs: np.ndarray, kind: str | None = None) -> np.ndarray:
        """Features of the pairs: "fused" CLS of both modalities, "unimodal_fused" CLS of each alone
        (concatenated), and concatenated over the two modalities: "pooled" CNN maps' means,
        "encoder" outputs, "clip" embeddings."""
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
                   "encoder": lambda a, b: torch.cat([m.encoder_output(a, 0), m.encoder_output(b, 1)], 1),
                   "clip": lambda a, b: torch.cat([m.clip_embedding(a, 0), m.clip_embedding(b, 1)], 1)}[kind]
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
        scores = probe_scores(ftr, fte, {t: ytr[t] for t in tasks}, {t: yte[t] for t in tasks})
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
    test_data = test_data or render_split("test", seed=cfg.seed + RENDER_SEED_OFFSET, rendering=cfg.rendering)
    init = CommRun(cfg, run.train_data)  # the seed's initialisation, untrained: the control r
    probes = {}
    for kind in run.probe_points():
        probes[f"trained/{kind}"] = run.evaluate(test_data, kind)
        probes[f"random_init/{kind}"] = init.evaluate(test_data, kind)
    result = {"config": asdict(cfg), "probe_point": run.PROBE_FEATURES[cfg.method],
              "scores": probes[f"trained/{run.PROBE_FEATURES[cfg.method]}"], "probes": probes,
              "steps": run.step_count, "train_seconds": train_s, "eval_seconds": time.perf_counter() - t1,
              "final_train_loss": float(np.mean(losses[-50:])) if losses else None}
    if out is not None:
        (out / "results.json").write_text(json.dumps(result, indent=1))
    return result
