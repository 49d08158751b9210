"""Training and evaluation of one image/text run on the procedural Multimodal3DIdent.

Loss: ``symmetric_infonce(..., similarity="cosine")`` (or ``nt_xent``). Evaluation as in the
paper's code: probes fit on the validation split's encodings and scored on the test split
(:mod:`.evaluation`).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from mmcl_fast import nt_xent, symmetric_infonce

from ..common.lr_schedule import learning_rate
from ..common.step_loop import finished_result, run_steps
from . import procedural_m3di as m3di
from .config import BATCH_SEED_OFFSET, LOSSES, TEXT_ENCODERS, TEXT_SEQUENCE_LENGTH, ImageTextConfig, resume_free_fields
from .encoders import ImageEncoder, TextConvNet2D, TextEncoder
from .evaluation import evaluate_factors


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) scaled to [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


class ImageTextRun:
    """Data, encoders and optimiser of one run; ``step()`` trains on one random batch."""

    def __init__(self, cfg: ImageTextConfig, out_dir: Path):
        if cfg.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {cfg.loss!r}")
        if cfg.text_encoder not in TEXT_ENCODERS:
            raise ValueError(f"text_encoder must be one of {TEXT_ENCODERS}, got {cfg.text_encoder!r}")
        if cfg.encoding_size < 1 or cfg.batch_size < 2 or cfg.steps < 0:
            raise ValueError("need encoding_size >= 1, batch_size >= 2, steps >= 0")
        learning_rate(cfg.lr_schedule, cfg.lr, 0, cfg.steps, cfg.warmup_steps)   # rejects bad ones
        self.cfg = cfg
        data = Path(cfg.data_dir) if cfg.data_dir else out_dir / "data"
        tag = (f"s{cfg.seed}_px{cfg.image_size}_{'causal' if cfg.causal else 'indep'}"
               f"_v{m3di.GENERATOR_VERSION}")
        self.splits = {name: m3di.load_or_generate(data / f"{name}_{n}_{tag}.npz", n,
                                                   1000 * cfg.seed + k, cfg.image_size, cfg.causal)
                       for k, (name, n) in enumerate((("train", cfg.n_train), ("val", cfg.n_val),
                                                      ("test", cfg.n_test)))}
        self.vocab = m3di.Vocabulary(self.splits["train"].captions)
        conv2d = cfg.text_encoder == "conv2d"
        length = TEXT_SEQUENCE_LENGTH if conv2d else m3di.MAX_TOKENS
        self.tokens = {k: torch.from_numpy(self.vocab.encode(s.captions, length))
                       for k, s in self.splits.items()}
        torch.manual_seed(cfg.seed)
        self.image_encoder = ImageEncoder(cfg.encoding_size, cfg.zero_init_residual)
        self.text_encoder = (TextConvNet2D(len(self.vocab), cfg.encoding_size, length) if conv2d
                             else TextEncoder(len(self.vocab), cfg.encoding_size))
        self.params = [*self.image_encoder.parameters(), *self.text_encoder.parameters()]
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr)
        self.gen = torch.Generator().manual_seed(cfg.seed + BATCH_SEED_OFFSET)
        self.step_count = 0

    def contrastive(self, zi: torch.Tensor, zt: torch.Tensor) -> torch.Tensor:
        """The configured loss (symmetric InfoNCE or NT-Xent, cosine) between two encodings."""
        fn = symmetric_infonce if self.cfg.loss == "symmetric_infonce" else nt_xent
        return fn(zi, zt, temperature=self.cfg.temperature, similarity="cosine")

    def loss(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.contrastive(self.image_encoder(images), self.text_encoder(tokens))

    def step(self) -> float:
        for group in self.opt.param_groups:
            group["lr"] = learning_rate(self.cfg.lr_schedule, self.cfg.lr, self.step_count,
                                        self.cfg.steps, self.cfg.warmup_steps)
        n = len(self.splits["train"])
        idx = torch.randint(0, n, (self.cfg.batch_size,), generator=self.gen)
        images = images_to_tensor(self.splits["train"].images[idx.numpy()])
        loss = self.loss(images, self.tokens["train"][idx])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.opt.step()
        self.step_count += 1
        return float(loss.detach())

    @torch.no_grad()
    def encode(self, split: str, batch: int = 250) -> tuple[np.ndarray, np.ndarray]:
        """(image encodings, text encodings) of a split, encoders in eval mode."""
        self.image_encoder.eval(), self.text_encoder.eval()
        s, toks = self.splits[split], self.tokens[split]
        zi = [self.image_encoder(images_to_tensor(s.images[i:i + batch]))
              for i in range(0, len(s), batch)]
        zt = [self.text_encoder(toks[i:i + batch]) for i in range(0, len(s), batch)]
        self.image_encoder.train(), self.text_encoder.train()
        return torch.cat(zi).numpy(), torch.cat(zt).numpy()

    @torch.no_grad()
    def validation_loss(self, encodings: tuple[np.ndarray, np.ndarray] | None = None) -> float:
        """The loss on the whole validation split (``encodings``: its image/text encodings, if
        already computed)."""
        zi, zt = encodings if encodings is not None else self.encode("val")
        return float(self.contrastive(torch.from_numpy(zi), torch.from_numpy(zt)))

    # -- checkpoints (common.checkpoint adds the config, the step and torch's global RNG) ------
    def state_dict(self) -> dict:
        return {"image_encoder": self.image_encoder.state_dict(),
                "text_encoder": self.text_encoder.state_dict(), "opt": self.opt.state_dict(),
                "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.image_encoder.load_state_dict(state["image_encoder"])
        self.text_encoder.load_state_dict(state["text_encoder"])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])


# Fields that change neither the trained model nor its scores: a results.json written under other
# values of these is this configuration's result.
RESULT_FREE_FIELDS = ("data_dir", "checkpoint_every", "threads", "encoding_sizes", "seeds")


def train(cfg: ImageTextConfig, out_dir: Path | str, progress: bool = True) -> dict:
    """Train (resuming from ``out_dir/checkpoint.pt``; a checkpoint of another configuration is an
    error), evaluate, write results.json. A finished run of the same configuration (results.json)
    is returned as it is, so an interrupted sweep re-run only trains what is missing."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = finished_result(out_dir, cfg, True, RESULT_FREE_FIELDS)
    if done is not None:
        return done
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.time()
    run = ImageTextRun(cfg, out_dir)
    m3di.contact_sheet(run.splits["train"], out_dir / "samples.png")
    t_data = time.time() - t0
    history = []

    def record_validation(step: int, loss: float) -> None:
        if cfg.eval_every and step % cfg.eval_every == 0:
            history.append({"step": step, "train_loss": loss, "val_loss": run.validation_loss()})

    _, t_train = run_steps(run, cfg.steps, out_dir, True, resume_free_fields(cfg), cfg.checkpoint_every,
                           f"train-imagetext enc={cfg.encoding_size}", progress, on_step=record_validation)
    t2 = time.time()
    # as in the paper's code: probes fit on the validation encodings, scored on the test split
    (vi, vt), (ti, tt) = run.encode("val"), run.encode("test")
    val_f, test_f = run.splits["val"].factors, run.splits["test"].factors
    scores = evaluate_factors(np.concatenate([vi, ti]), np.concatenate([vt, tt]),
                              {k: np.concatenate([val_f[k], test_f[k]]) for k in test_f}, n_fit=len(vi))
    results = {"config": asdict(cfg), "scores": scores, "val_loss": run.validation_loss((vi, vt)),
               "history": history, "vocab_size": len(run.vocab),
               "seconds": {"data": t_data, "train": t_train, "eval": time.time() - t2,
                           "total": time.time() - t0}}
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    return results
