"""Generative process of the numerical simulation (Daunhawer et al., ICLR 2023, Sec. 5.1, App. B).

Latents z = (c, s, m1, m2) (content, style, modality-specific), each block Gaussian:

* independent:            every block ~ N(0, I);
* statistical dependence: block ~ N(0, Sigma_block), Sigma_block ~ Wishart(n_block, I), each block's
                          draw from its own generator seeded with the run's seed (as the authors'
                          code does), so blocks of equal size share one Sigma;
* causal dependence:      s <- s + B c + a with a_i, B_ij ~ N(0, 1), drawn once per run.

Style change: s~ = s + mask * eps, mask_i ~ Bernoulli(p_change) per sample and dimension,
eps ~ N(0, Sigma_s) (or N(0, I) without statistical dependence). Content is never changed.
Observations: x1 = f1(c, s, m1), x2 = f2(c, s~, m2) with f an invertible 3-layer MLP (square
bias-free linear layers, LeakyReLU(0.2) between them, uniform(-1, 1) weights with L2-normalised
columns, each layer resampled until its condition number is below the cond_threshold_ratio
quantile of many draws). "Original setting": f1 = f2 and no modality-specific latents.

Discrete latents (paper App. B.2, Fig. 5): one group ("content", "style" or "modality") has
components drawn uniformly from k classes, standardised to mean 0 and variance 1
(v = (class - (k - 1) / 2) / sqrt((k^2 - 1) / 12)); a changed discrete style component is redrawn
uniformly from the k classes. Discrete groups exclude statistical and causal dependence.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

DISCRETE_GROUPS = ("", "content", "style", "modality")


@dataclass(frozen=True)
class LatentSpec:
    n_c: int = 5
    n_s: int = 5
    n_m: int = 5                 # per modality; 0 = no modality-specific latents
    p_change: float = 0.75
    statistical: bool = False
    causal: bool = False
    discrete: str = ""           # "", "content", "style" or "modality": that group is discrete
    n_classes: int = 5           # k, the classes of each discrete component

    def __post_init__(self):
        if self.discrete not in DISCRETE_GROUPS:
            raise ValueError(f"discrete must be one of {DISCRETE_GROUPS}, got {self.discrete!r}")
        if self.discrete and self.n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {self.n_classes}")
        if self.discrete and (self.statistical or self.causal):
            raise ValueError("discrete latents are defined without statistical or causal dependence")

    def is_discrete(self, block: str) -> bool:
        """Whether latent block c / s / s_tilde / m1 / m2 is discrete."""
        group = {"c": "content", "s": "style", "s_tilde": "style", "m1": "modality", "m2": "modality"}
        return bool(self.discrete) and group[block] == self.discrete

    def _class_moments(self) -> tuple[float, float]:
        """Mean (k - 1) / 2 and standard deviation sqrt((k^2 - 1) / 12) of a uniform class 0..k-1."""
        k = self.n_classes
        return (k - 1) / 2, math.sqrt((k * k - 1) / 12)

    def standardised(self, classes: Tensor) -> Tensor:
        """Discrete values (class - mean) / sd of class indices: mean 0, variance 1."""
        mean, sd = self._class_moments()
        return (classes.float() - mean) / sd

    def classes(self, values: Tensor) -> Tensor:
        """Class indices (long) of standardised discrete values (the inverse of ``standardised``)."""
        mean, sd = self._class_moments()
        return torch.round(values * sd + mean).long()

    @property
    def dim(self) -> int:
        """Dimension of each modality's latent (c, s, m_i) and of its observation."""
        return self.n_c + self.n_s + self.n_m


# Random streams derived from a run's seed: the mixing MLPs' condition-number threshold, and f1, f2.
THRESHOLD_SEED_OFFSET = 1
MIXING_SEED_OFFSETS = (101, 202)


def wishart_identity(n: int, rng: np.random.Generator) -> np.ndarray:
    """One draw of Wishart(n, I_n): sum of n outer products of N(0, I_n) vectors."""
    g = rng.standard_normal((n, n))
    return g.T @ g


class LatentSampler:
    """Draws (c, s, s~, m1, m2) batches; all structure (Sigmas, a, B) is fixed by `seed`."""

    def __init__(self, spec: LatentSpec, seed: int = 0):
        self.spec = spec
        self.chol = {}
        for name, n in (("c", spec.n_c), ("s", spec.n_s), ("m1", spec.n_m), ("m2", spec.n_m)):
            # One generator per block, all seeded alike: Sigma_c = Sigma_s = Sigma_m1 = Sigma_m2
            # whenever the sizes agree (the style-change noise uses Sigma_s too).
            sigma = wishart_identity(n, np.random.default_rng(seed)) if (spec.statistical and n > 0) else np.eye(n)
            self.chol[name] = torch.from_numpy(np.linalg.cholesky(sigma) if n else sigma).float()
        rng = np.random.default_rng([seed, 1])  # the causal map, independent of the Sigmas
        if spec.causal:
            self.a = torch.from_numpy(rng.standard_normal(spec.n_s)).float()
            self.B = torch.from_numpy(rng.standard_normal((spec.n_s, spec.n_c))).float()
        else:
            self.a, self.B = torch.zeros(spec.n_s), torch.zeros(spec.n_s, spec.n_c)

    def _block(self, name: str, n: int, g: torch.Generator) -> Tensor:
        L = self.chol[name]
        if self.spec.is_discrete(name):
            classes = torch.randint(0, self.spec.n_classes, (n, L.shape[0]), generator=g)
            return self.spec.standardised(classes)
        return torch.randn(n, L.shape[0], generator=g) @ L.T

    def sample(self, n: int, g: torch.Generator) -> dict[str, Tensor]:
        c = self._block("c", n, g)
        s = self._block("s", n, g) + c @ self.B.T + self.a
        eps = self._block("s", n, g)           # a fresh draw: the noise, or the redrawn classes
        mask = torch.rand(n, self.spec.n_s, generator=g) < self.spec.p_change
        s_tilde = torch.where(mask, eps, s) if self.spec.is_discrete("s") else s + mask.float() * eps
        return {"c": c, "s": s, "s_tilde": s_tilde,
                "m1": self._block("m1", n, g), "m2": self._block("m2", n, g)}


def _normalised_uniform(d: int, rng: np.random.Generator) -> np.ndarray:
    w = rng.uniform(-1.0, 1.0, size=(d, d))
    return w / np.linalg.norm(w, axis=0, keepdims=True)


def condition_threshold(d: int, ratio: float = 1e-3, n_draws: int = 25_000, seed: int = 0) -> float:
    """The `ratio` quantile of the condition numbers of `n_draws` random layers (the 25th smallest
    of 25,000 for the paper's ratio 1e-3)."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(-1.0, 1.0, size=(n_draws, d, d))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    conds = np.sort(np.linalg.cond(w))
    return float(conds[max(0, int(round(ratio * n_draws)) - 1)])


class InvertibleMLP(nn.Module):
    """x = W3 lrelu(W2 lrelu(W1 z)), square well-conditioned bias-free layers: a bijection of R^d."""

    def __init__(self, d: int, n_layers: int = 3, slope: float = 0.2, seed: int = 0,
                 cond_threshold_ratio: float = 1e-3, n_cond_draws: int = 25_000):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.threshold = condition_threshold(d, cond_threshold_ratio, n_cond_draws, seed=seed + THRESHOLD_SEED_OFFSET)
        self.slope = slope
        weights = []
        for _ in range(n_layers):
            while True:
                w = _normalised_uniform(d, rng)
                if np.linalg.cond(w) < self.threshold:
                    break
            weights.append(torch.from_numpy(w).float())
        self.register_buffer("weights", torch.stack(weights))

    @torch.no_grad()
    def forward(self, z: Tensor) -> Tensor:
        h = z
        for k, w in enumerate(self.weights):
            h = h @ w.T
            if k < len(self.weights) - 1:
                h = torch.nn.functional.leaky_relu(h, self.slope)
        return h

    @torch.no_grad()
    def inverse(self, x: Tensor) -> Tensor:
        h = x
        for k in range(len(self.weights) - 1, -1, -1):
            if k < len(self.weights) - 1:
                h = torch.where(h >= 0, h, h / self.slope)
            h = torch.linalg.solve(self.weights[k].double(), h.double().T).T.float()
        return h


class MultimodalProcess:
    """Pairs (x1, x2) and their latents; f1 = f2 when not `multimodal` (the original setting)."""

    def __init__(self, spec: LatentSpec, multimodal: bool = True, seed: int = 0,
                 cond_threshold_ratio: float = 1e-3, n_cond_draws: int = 25_000):
        self.spec, self.multimodal = spec, multimodal
        self.latents = LatentSampler(spec, seed=seed)
        kw = dict(cond_threshold_ratio=cond_threshold_ratio, n_cond_draws=n_cond_draws)
        self.f1 = InvertibleMLP(spec.dim, seed=seed + MIXING_SEED_OFFSETS[0], **kw)
        self.f2 = InvertibleMLP(spec.dim, seed=seed + MIXING_SEED_OFFSETS[1], **kw) if multimodal else self.f1

    def observe(self, z: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        z1 = torch.cat([z["c"], z["s"], z["m1"]], 1)
        z2 = torch.cat([z["c"], z["s_tilde"], z["m2"]], 1)
        return self.f1(z1), self.f2(z2)

    def sample(self, n: int, g: torch.Generator):
        z = self.latents.sample(n, g)
        x1, x2 = self.observe(z)
        return x1, x2, z

    def intervene(self, z: dict[str, Tensor], g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """Test-time intervention c -> c' (a batch permutation): x'_i regenerated from c'."""
        perm = torch.randperm(z["c"].shape[0], generator=g)
        z2 = dict(z, c=z["c"][perm])
        x1, x2 = self.observe(z2)
        return x1, x2, z2["c"]
