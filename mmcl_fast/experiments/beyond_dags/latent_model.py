"""The latent partial causal model of "Beyond DAGs" (Liu et al.): data generation.

Two coupled latents z_x -- z_t (an undirected edge) and modality-specific m_x, m_t, independent of
them; observations x = g_x(z_x, m_x), t = g_t(z_t, m_t) through separate invertible MLPs (the
identifiability simulation's mixing, :class:`..identifiability.sim_data.InvertibleMLP`).
The authors' synthetic code is not public; this design is the project's own, stated as such.

* sphere: z_x uniform on S^{n-1}, z_t ~ vMF(z_x, kappa); m ~ N(0, I).
* box:    z_x uniform on [0, 1]^n, z_t = z_x + Laplace(0, lambda) per component, each component
          redrawn until it lies in [0, 1] (the truncated conditional); m ~ U(0, 1).
Violations of the assumptions (the paper's robustness study):
* nonuniform_marginal: sphere z_x ~ vMF(e_1, 2); box z_x components ~ Beta(2, 5);
* normal_conditional:  sphere z_t = normalise(z_x + N(0, I / kappa)); box z_t = z_x + N(0, 2
                       lambda^2) truncated to the box by redrawing (Laplace's variance);
* model_mismatch:      the data are as in the setting, the model is the other geometry's.

vMF sampling is Wood's (1994) rejection sampler for the component w = <z_t, z_x>, then a
uniform direction orthogonal to z_x.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..identifiability.sim_data import InvertibleMLP

SETTINGS = ("sphere", "box")
VIOLATIONS = ("none", "nonuniform_marginal", "normal_conditional", "model_mismatch")


def uniform_sphere(n: int, dim: int, g: torch.Generator) -> Tensor:
    v = torch.randn(n, dim, generator=g, dtype=torch.float64)
    return v / v.norm(dim=1, keepdim=True)


def sample_vmf(mu: Tensor, kappa: float, g: torch.Generator) -> Tensor:
    """One draw from vMF(mu_i, kappa) per row of mu (unit rows, float64), Wood's algorithm."""
    if not kappa > 0:
        raise ValueError(f"kappa must be positive, got {kappa}")
    n, p = mu.shape
    b = (p - 1) / (2 * kappa + math.sqrt(4 * kappa ** 2 + (p - 1) ** 2))
    x0 = (1 - b) / (1 + b)
    c = kappa * x0 + (p - 1) * math.log(1 - x0 ** 2)
    shape_ab = (p - 1) / 2
    w = torch.empty(n, dtype=torch.float64)
    todo = torch.arange(n)
    while todo.numel():
        zb = beta_draws((todo.numel(),), shape_ab, shape_ab, g)
        u = torch.rand(todo.numel(), generator=g, dtype=torch.float64)
        cand = (1 - (1 + b) * zb) / (1 - (1 - b) * zb)
        ok = kappa * cand + (p - 1) * torch.log(1 - x0 * cand) - c >= torch.log(u)
        w[todo[ok]] = cand[ok]
        todo = todo[~ok]
    v = torch.randn(n, p, generator=g, dtype=torch.float64)
    v = v - (v * mu).sum(1, keepdim=True) * mu
    v = v / v.norm(dim=1, keepdim=True)
    return w[:, None] * mu + torch.sqrt(torch.clamp(1 - w ** 2, min=0))[:, None] * v


def beta_draws(shape, a: float, b: float, g: torch.Generator) -> Tensor:
    """Beta(a, b) from the generator's stream, as Ga / (Ga + Gb) with Gamma(a), Gamma(b) draws."""
    ga = torch._standard_gamma(torch.full(shape, float(a), dtype=torch.float64), generator=g)
    gb = torch._standard_gamma(torch.full(shape, float(b), dtype=torch.float64), generator=g)
    return ga / (ga + gb)


def truncated_to_unit_box(center: Tensor, draw, g: torch.Generator) -> Tensor:
    """center + noise with every component in [0, 1]: components outside are redrawn (noise from
    ``draw(shape, g)``) until all lie inside."""
    out = center + draw(center.shape, g)
    bad = (out < 0) | (out > 1)
    while bad.any():
        out[bad] = center[bad] + draw((int(bad.sum()),), g)
        bad = (out < 0) | (out > 1)
    return out


def laplace(shape, scale: float, g: torch.Generator) -> Tensor:
    u = torch.rand(shape, generator=g, dtype=torch.float64) - 0.5
    return -scale * torch.sign(u) * torch.log1p(-2 * u.abs())


class PartialCausalProcess:
    """Sampler of (x, t) and the latents (z_x, z_t, m_x, m_t) for one setting and violation."""

    def __init__(self, setting: str, violation: str = "none", n_z: int = 6, n_m: int = 2,
                 kappa: float = 10.0, laplace_scale: float = 0.1, seed: int = 0,
                 mixing_layers: int = 3):
        if setting not in SETTINGS:
            raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
        if violation not in VIOLATIONS:
            raise ValueError(f"violation must be one of {VIOLATIONS}, got {violation!r}")
        if n_z < 2 or n_m < 0:
            raise ValueError(f"need n_z >= 2 and n_m >= 0, got n_z={n_z}, n_m={n_m}")
        if mixing_layers < 1:
            raise ValueError(f"mixing_layers must be >= 1, got {mixing_layers}")
        if not (kappa > 0 and laplace_scale > 0):
            raise ValueError(f"kappa and laplace_scale must be positive, got {kappa}, {laplace_scale}")
        self.setting, self.violation = setting, violation
        self.n_z, self.n_m, self.kappa, self.laplace_scale = n_z, n_m, kappa, laplace_scale
        d = n_z + n_m
        self.g_x = InvertibleMLP(d, n_layers=mixing_layers, seed=seed * 2 + 1, n_cond_draws=5000)
        self.g_t = InvertibleMLP(d, n_layers=mixing_layers, seed=seed * 2 + 2, n_cond_draws=5000)

    @property
    def obs_dim(self) -> int:
        return self.n_z + self.n_m

    def _marginal(self, n: int, g: torch.Generator) -> Tensor:
        nonuniform = self.violation == "nonuniform_marginal"
        if self.setting == "sphere":
            if nonuniform:
                mu = torch.zeros(n, self.n_z, dtype=torch.float64)
                mu[:, 0] = 1.0
                return sample_vmf(mu, 2.0, g)
            return uniform_sphere(n, self.n_z, g)
        if nonuniform:
            return beta_draws((n, self.n_z), 2.0, 5.0, g)
        return torch.rand(n, self.n_z, generator=g, dtype=torch.float64)

    def _conditional(self, z_x: Tensor, g: torch.Generator) -> Tensor:
        normal = self.violation == "normal_conditional"
        if self.setting == "sphere":
            if normal:
                v = z_x + torch.randn(z_x.shape, generator=g, dtype=torch.float64) / math.sqrt(self.kappa)
                return v / v.norm(dim=1, keepdim=True)
            return sample_vmf(z_x, self.kappa, g)
        if normal:
            sd = math.sqrt(2.0) * self.laplace_scale
            return truncated_to_unit_box(z_x, lambda shape, gg: sd * torch.randn(shape, generator=gg,
                                                                              dtype=torch.float64), g)
        return truncated_to_unit_box(z_x, lambda shape, gg: laplace(shape, self.laplace_scale, gg), g)

    def _specific(self, n: int, g: torch.Generator) -> Tensor:
        if self.setting == "sphere":
            return torch.randn(n, self.n_m, generator=g, dtype=torch.float64)
        return torch.rand(n, self.n_m, generator=g, dtype=torch.float64)

    def sample(self, n: int, g: torch.Generator) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """x, t (float32, n x obs_dim) and the latents {z_x, z_t, m_x, m_t} (float64)."""
        z_x = self._marginal(n, g)
        z_t = self._conditional(z_x, g)
        m_x, m_t = self._specific(n, g), self._specific(n, g)
        x = self.g_x(torch.cat([z_x, m_x], 1).float())
        t = self.g_t(torch.cat([z_t, m_t], 1).float())
        return x, t, {"z_x": z_x, "z_t": z_t, "m_x": m_x, "m_t": m_t}
