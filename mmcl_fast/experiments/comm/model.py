"""CoMM's bimodal model at CPU scale, with the baselines' heads shaped as in the authors' code.

Per modality i, a CNN maps a 64 x 64 image to a 4 x 4 map of ``encoder_width`` channels. Then:

* CoMM: a latent converter turns each map position into a token of the fusion width (position
  and modality embeddings added); a transformer block fuses the tokens of the modalities present
  with a CLS token; a projection head (shared by all of CoMM's terms) maps the CLS to the loss
  space. ``fused(x1, x2)`` is the CLS over both modalities (CoMM's probe point),
  ``unimodal_fused(x, i)`` the same block with the other modality's tokens dropped.
* The baselines: the map is flattened and mapped linearly to the *encoder output*
  (``encoder_output(x, i)``, Cross+Self's probe point, as the authors' baselines flatten their
  conv map through a linear layer); Cross's CLIP embedding is a linear projection of it
  (``clip_embedding``, Cross's probe point, as CLIP's ``encode_image``); Cross+Self's self terms
  use a separate two-layer head on the encoder output (``self_embedding``, as SLIP's image MLP).
* ``pooled(x, i)``: the map's mean over positions, the probe point common to every method.
* The supervised control: linear heads for the pair labels R, U1, U2 and S on the fused CLS.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

MAP_SIZE = 4           # the CNN's output map is MAP_SIZE x MAP_SIZE
N_TOKENS = MAP_SIZE * MAP_SIZE
PAIR_LABEL_CLASSES = {"R": 10, "U1": 10, "U2": 10, "S": 2}


class ConvEncoder(nn.Module):
    """4 stride-2 conv layers (channels width/4, width/2, width, width): 64 x 64 x 3 -> 4 x 4 x width."""

    def __init__(self, width: int = 64):
        super().__init__()
        chans = (3, width // 4, width // 2, width, width)
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 16, width) tokens, one per map position."""
        return self.net(x).flatten(2).transpose(1, 2)


class LatentConverter(nn.Module):
    """Tokens of one modality into the fusion width, with learned position and modality embeddings."""

    def __init__(self, in_dim: int, width: int, n_tokens: int = N_TOKENS):
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
    def __init__(self, encoder_width: int = 64, width: int = 128, heads: int = 4, out_dim: int = 64,
                 encoder_dim: int = 128):
        super().__init__()
        self.encoders = nn.ModuleList([ConvEncoder(encoder_width) for _ in range(2)])
        self.converters = nn.ModuleList([LatentConverter(encoder_width, width) for _ in range(2)])
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.fusion = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0,
                                                 batch_first=True, norm_first=True)
        self.norm = nn.LayerNorm(width)
        self.head = projection_head(width, out_dim)                    # CoMM's, shared by all its terms
        flat = encoder_width * N_TOKENS
        self.encoder_proj = nn.ModuleList([nn.Linear(flat, encoder_dim) for _ in range(2)])
        self.clip_proj = nn.ModuleList([nn.Linear(encoder_dim, out_dim, bias=False) for _ in range(2)])
        self.self_heads = nn.ModuleList([projection_head(encoder_dim, out_dim) for _ in range(2)])
        self.logit_scale = nn.Parameter(torch.tensor(1 / 0.07).log())  # the Cross baseline's CLIP scale
        self.label_heads = nn.ModuleDict({k: nn.Linear(width, n) for k, n in PAIR_LABEL_CLASSES.items()})

    def tokens(self, x: Tensor, i: int) -> Tensor:
        return self.converters[i](self.encoders[i](x))

    def _fuse(self, token_sets: list[Tensor]) -> Tensor:
        b = token_sets[0].shape[0]
        h = self.fusion(torch.cat([self.cls.expand(b, -1, -1), *token_sets], 1))
        return self.norm(h[:, 0])

    def fused_representation(self, x1: Tensor, x2: Tensor) -> Tensor:
        """Z before the projection head: the CLS over both modalities' tokens."""
        return self._fuse([self.tokens(x1, 0), self.tokens(x2, 1)])

    def unimodal_fused_representation(self, x: Tensor, i: int) -> Tensor:
        """Z of modality i alone (the other modality's tokens dropped), before the head."""
        return self._fuse([self.tokens(x, i)])

    def comm_embeddings(self, x1: Tensor, x2: Tensor) -> list[Tensor]:
        """[Z_1, Z_2, Z_full] after the head: each modality alone, then both."""
        t1, t2 = self.tokens(x1, 0), self.tokens(x2, 1)
        return [self.head(self._fuse([t1])), self.head(self._fuse([t2])), self.head(self._fuse([t1, t2]))]

    def pooled(self, x: Tensor, i: int) -> Tensor:
        """The CNN map's mean over positions (the probe point common to every method)."""
        return self.encoders[i](x).mean(1)

    def encoder_output(self, x: Tensor, i: int) -> Tensor:
        """The flattened map through a linear layer (the baselines' encoder output)."""
        return self.encoder_proj[i](self.encoders[i](x).flatten(1))

    def clip_embedding(self, x: Tensor, i: int) -> Tensor:
        """A linear projection of the encoder output (Cross's CLIP embedding)."""
        return self.clip_proj[i](self.encoder_output(x, i))

    def self_embedding(self, h: Tensor, i: int) -> Tensor:
        """Cross+Self's SimCLR head on an encoder output ``h``."""
        return self.self_heads[i](h)

    def pair_logits(self, x1: Tensor, x2: Tensor) -> dict[str, Tensor]:
        """The supervised control's logits for R, U1, U2 and S from the fused CLS."""
        z = self.fused_representation(x1, x2)
        return {k: head(z) for k, head in self.label_heads.items()}
