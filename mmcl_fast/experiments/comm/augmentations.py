"""SimCLR's image augmentations in torch, batched (torchvision cannot be installed next to the CPU
torch here). Images are (B, 3, H, W) floats in [0, 1]; each image draws its own parameters from
the given generator:

* random resized crop: area fraction U(scale), aspect ratio log-uniform in ratio, position
  uniform, resampled bilinearly to the input size (grid_sample);
* colour jitter with probability p_jitter, in this order: brightness (multiply by U(1 +- b)),
  contrast (blend with the image's mean grey), saturation (blend with its greyscale), hue
  (rotate the chroma plane of YIQ by U(+-h) turns, the usual linear stand-in for an HSV hue shift);
* greyscale with probability p_grey (ITU-R 601 luma);
* Gaussian blur with probability p_blur, sigma U(blur_sigma), separable, 9 taps, edges replicated;
* horizontal flip with probability 1/2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

LUMA = (0.299, 0.587, 0.114)
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _check(images: Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(f"images must be a float (B, 3, H, W) tensor, got {tuple(images.shape)} {images.dtype}")


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=g)


def random_resized_crop(images: Tensor, g: torch.Generator, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)) -> Tensor:
    _check(images)
    b = images.shape[0]
    area = _uniform(b, *scale, g)
    log_r = _uniform(b, math.log(ratio[0]), math.log(ratio[1]), g)
    aspect = torch.exp(log_r)
    w = torch.sqrt(area * aspect).clamp(max=1.0)   # fractions of the side
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (1 - w) * torch.rand(b, generator=g) + w / 2  # crop centre, fraction of the side
    cy = (1 - h) * torch.rand(b, generator=g) + h / 2
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = w, h
    theta[:, 0, 2], theta[:, 1, 2] = 2 * cx - 1, 2 * cy - 1
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def greyscale(images: Tensor) -> Tensor:
    _check(images)
    luma = torch.tensor(LUMA, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * luma).sum(1, keepdim=True).expand_as(images).contiguous()


def colour_jitter(images: Tensor, g: torch.Generator, brightness=0.4, contrast=0.4, saturation=0.4,
                  hue=0.1) -> Tensor:
    _check(images)
    b = images.shape[0]
    view = lambda t: t.view(b, 1, 1, 1).to(images.dtype)  # noqa: E731
    out = images * view(_uniform(b, 1 - brightness, 1 + brightness, g))
    mean = greyscale(out).mean((1, 2, 3), keepdim=True)
    c = view(_uniform(b, 1 - contrast, 1 + contrast, g))
    out = c * out + (1 - c) * mean
    s = view(_uniform(b, 1 - saturation, 1 + saturation, g))
    out = s * out + (1 - s) * greyscale(out.clamp(0, 1))
    angle = 2 * math.pi * _uniform(b, -hue, hue, g)
    yiq = torch.einsum("ij,bjhw->bihw", _RGB_TO_YIQ.to(images.dtype), out)
    cos, sin = view(torch.cos(angle)), view(torch.sin(angle))
    i, q = yiq[:, 1:2], yiq[:, 2:3]
    yiq = torch.cat([yiq[:, :1], cos * i - sin * q, sin * i + cos * q], 1)
    out = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(_RGB_TO_YIQ).to(images.dtype), yiq)
    return out.clamp(0, 1)


def gaussian_blur(images: Tensor, sigma: Tensor, taps: int = 9) -> Tensor:
    """Each image blurred with its own sigma (B,), separable kernel of ``taps`` taps."""
    _check(images)
    b, ch, hgt, wid = images.shape
    x = torch.arange(taps, dtype=images.dtype) - (taps - 1) / 2
    k = torch.exp(-x[None, :] ** 2 / (2 * sigma.to(images.dtype)[:, None] ** 2))
    k = k / k.sum(1, keepdim=True)                                    # (B, taps)
    k = k.repeat_interleave(ch, 0)                                    # (B * 3, taps)
    flat = images.reshape(1, b * ch, hgt, wid)
    pad = taps // 2
    flat = F.conv2d(F.pad(flat, (pad, pad, 0, 0), mode="replicate"), k.view(b * ch, 1, 1, taps), groups=b * ch)
    flat = F.conv2d(F.pad(flat, (0, 0, pad, pad), mode="replicate"), k.view(b * ch, 1, taps, 1), groups=b * ch)
    return flat.view(b, ch, hgt, wid)


@dataclass(frozen=True)
class SimCLRAugment:
    """The composition above with SimCLR's probabilities; ``__call__(images, g)``."""
    crop_scale: tuple[float, float] = (0.2, 1.0)
    p_jitter: float = 0.8
    p_grey: float = 0.2
    p_blur: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    def __call__(self, images: Tensor, g: torch.Generator) -> Tensor:
        _check(images)
        b = images.shape[0]
        pick = lambda p: (torch.rand(b, generator=g) < p).view(b, 1, 1, 1)  # noqa: E731
        out = random_resized_crop(images, g, self.crop_scale)
        out = torch.where(pick(self.p_jitter), colour_jitter(out, g), out)
        out = torch.where(pick(self.p_grey), greyscale(out), out)
        out = torch.where(pick(self.p_blur), gaussian_blur(out, _uniform(b, *self.blur_sigma, g)), out)
        return torch.where(pick(0.5), out.flip(3), out)
