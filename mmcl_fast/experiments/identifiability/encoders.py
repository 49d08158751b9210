"""The simulation's encoders g1, g2: LeakyReLU MLPs (the authors' widths: ``config.paper_hidden``)."""
from __future__ import annotations

from torch import nn

from .config import INITS


def encoder(d_in: int, hidden: tuple[int, ...], d_out: int, slope: float = 0.01,
            init: str = "torch") -> nn.Sequential:
    """MLP d_in -> hidden... -> d_out with LeakyReLU(slope) between layers.

    ``init="torch"`` keeps PyTorch's default Linear initialisation (weights U(+-1/sqrt(fan_in)),
    which shrinks the activation variance about 6x per LeakyReLU layer, so the encoding starts
    ~100x smaller than the input). ``init="kaiming"`` draws W ~ N(0, 2 / ((1 + slope^2) fan_in))
    and zero biases, which keeps the variance through the layers. Why it matters: from a tiny
    start, contrastive training switches the encoding's directions on one at a time, with a
    plateau before each (the stepwise learning of SSL); the last content direction can take
    longer than a short run. From a variance-preserving start all directions train at once.
    """
    if init not in INITS:
        raise ValueError(f"init must be 'torch' or 'kaiming', got {init!r}")
    dims = (d_in, *hidden)
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.LeakyReLU(slope)]
    layers.append(nn.Linear(dims[-1], d_out))
    if init == "kaiming":
        for layer in layers:
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_normal_(layer.weight, a=slope, nonlinearity="leaky_relu")
                nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)
