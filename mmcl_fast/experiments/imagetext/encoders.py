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
    """This project's 1-D text ConvNet (``--text-encoder conv1d``): token embedding -> 4 x
    [Conv1d(k=3), LeakyReLU] -> max over the non-padding positions -> Linear(encoding_size)."""

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


def _halved(n: int) -> int:
    """Output length of a (kernel 4, stride 2, padding 1) convolution."""
    return (n + 2 - 4) // 2 + 1


class TextConvNet2D(nn.Module):
    """The paper code's text encoder layout (``--text-encoder conv2d``, the default).

    The (sequence length x 128) matrix of token embeddings (an embedding table is the linear map
    of one-hot tokens the original applies) is read as a one-channel image by three
    [Conv2d(kernel 4, stride 2, padding 1), BatchNorm2d, ReLU] stages of 25, 50 and 100 channels,
    flattened, and mapped to the encoding by a linear layer. Padding tokens keep an embedding
    of their own, as the original's "{pad}" one-hot column does.
    """

    def __init__(self, vocab_size: int, encoding_size: int, sequence_length: int,
                 embedding_dim: int = 128, base_channels: int = 25):
        super().__init__()
        if sequence_length < 8 or embedding_dim < 8:
            raise ValueError(f"TextConvNet2D needs sequence_length and embedding_dim >= 8, got "
                             f"{sequence_length} and {embedding_dim}")
        self.embed = nn.Embedding(vocab_size, embedding_dim)
        layers: list[nn.Module] = []
        channels = [1, base_channels, 2 * base_channels, 4 * base_channels]
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.ReLU()]
        self.convs = nn.Sequential(*layers)
        rows, cols = sequence_length, embedding_dim
        for _ in range(3):
            rows, cols = _halved(rows), _halved(cols)
        self.sequence_length = sequence_length
        self.head = nn.Linear(channels[-1] * rows * cols, encoding_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1] != self.sequence_length:
            raise ValueError(f"expected {self.sequence_length} tokens per caption, got {tokens.shape[1]}")
        h = self.convs(self.embed(tokens).unsqueeze(1))             # (N, 100, rows, cols)
        return self.head(h.flatten(1))
