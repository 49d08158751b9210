"""The image and text encoders of the image/text experiment."""
from __future__ import annotations

import torch
from torch import nn

from .resnet import ResNet18


class ImageEncoder(nn.Module):
    """ResNet-18 with 100 outputs -> LeakyReLU -> Linear(encoding_size), as in the paper's code."""

    def __init__(self, encoding_size: int, zero_init_residual: bool = False):
        super().__init__()
        self.net = nn.Sequential(ResNet18(100, zero_init_residual), nn.LeakyReLU(),
                                 nn.Linear(100, encoding_size))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


class TextEncoder(nn.Module):
    """Token embedding (= a linear map of one-hot tokens) -> 4 x [Conv1d(k=3), LeakyReLU] ->
    max over positions -> Linear(encoding_size)."""

    def __init__(self, vocab_size: int, encoding_size: int, width: int = 128):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width, padding_idx=0)
        layers: list[nn.Module] = []
        for _ in range(4):
            layers += [nn.Conv1d(width, width, 3, padding=1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.head = nn.Linear(width, encoding_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.convs(self.embed(tokens).transpose(1, 2))          # (N, width, L)
        pad = (tokens == 0)[:, None, :]
        return self.head(h.masked_fill(pad, float("-inf")).amax(dim=2))
