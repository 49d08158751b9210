"""CoMM's bimodal model at CPU scale: one small CNN per modality, a latent converter that turns
each feature map into tokens, a transformer block that fuses the tokens of the modalities present
with a CLS token, and a projection head.

* ``fused(x1, x2)``: Z from the CLS token over both modalities' tokens;
* ``unimodal(x, i)``: the same block with the other modality's tokens dropped (CoMM's
  projection of modality i);
* ``pooled(x, i)``: the encoder's mean-pooled tokens, the unimodal representation the Cross and
  Cross+Self baselines contrast through a head per modality (``unimodal_embedding(x, i)``).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class ConvEncoder(nn.Module):
    """4 stride-2 conv layers: 64 x 64 x 3 -> 4 x 4 x width (16 tokens)."""

    def __init__(self, width: int = 64):
        super().__init__()
        chans = (3, width // 4, width // 2, width, width)
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 16, width) tokens."""
        return self.net(x).flatten(2).transpose(1, 2)


class LatentConverter(nn.Module):
    """Tokens of one modality into the fusion width, with learned position and modality embeddings."""

    def __init__(self, in_dim: int, width: int, n_tokens: int = 16):
        super().__init__()
        self.proj = nn.Linear(in_dim, width)
        self.position = nn.Parameter(torch.zeros(1, n_tokens, width))
        self.modality = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.normal_(self.position, std=0.02)
        nn.init.normal_(self.modality, std=0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.proj(tokens) + self.position + self.modality


def projection_head(width: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, out_dim))


class BimodalModel(nn.Module):
    def __init__(self, encoder_width: int = 64, width: int = 128, heads: int = 4, out_dim: int = 64):
        super().__init__()
        self.encoders = nn.ModuleList([ConvEncoder(encoder_width) for _ in range(2)])
        self.converters = nn.ModuleList([LatentConverter(encoder_width, width) for _ in range(2)])
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.fusion = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0,
                                                 batch_first=True, norm_first=True)
        self.norm = nn.LayerNorm(width)
        self.head = projection_head(width, out_dim)                    # CoMM's, shared by all its terms
        self.unimodal_heads = nn.ModuleList([projection_head(encoder_width, out_dim) for _ in range(2)])
        self.logit_scale = nn.Parameter(torch.tensor(1 / 0.07).log())  # the Cross baseline's CLIP scale

    def tokens(self, x: Tensor, i: int) -> Tensor:
        return self.converters[i](self.encoders[i](x))

    def _fuse(self, token_sets: list[Tensor]) -> Tensor:
        b = token_sets[0].shape[0]
        h = self.fusion(torch.cat([self.cls.expand(b, -1, -1), *token_sets], 1))
        return self.norm(h[:, 0])

    def fused_representation(self, x1: Tensor, x2: Tensor) -> Tensor:
        """Z before the projection head (the frozen features of the linear probes)."""
        return self._fuse([self.tokens(x1, 0), self.tokens(x2, 1)])

    def unimodal_fused_representation(self, x: Tensor, i: int) -> Tensor:
        """Z of modality i alone (the other modality's tokens dropped), before the head."""
        return self._fuse([self.tokens(x, i)])

    def comm_embeddings(self, x1: Tensor, x2: Tensor) -> list[Tensor]:
        """[Z_1, Z_2, Z_full] after the head: each modality alone, then both."""
        t1, t2 = self.tokens(x1, 0), self.tokens(x2, 1)
        return [self.head(self._fuse([t1])), self.head(self._fuse([t2])), self.head(self._fuse([t1, t2]))]

    def pooled(self, x: Tensor, i: int) -> Tensor:
        """The encoder's mean-pooled tokens (the baselines' unimodal representation)."""
        return self.encoders[i](x).mean(1)

    def unimodal_embedding(self, x: Tensor, i: int) -> Tensor:
        return self.unimodal_heads[i](self.pooled(x, i))
