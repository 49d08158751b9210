"""Bimodal Trifeatures at 64 x 64 (CoMM, Dufumier et al., ICLR 2025, after Hermann & Lampinen's
Trifeatures): images of one shape, texture and colour, and the pairs that measure redundancy,
uniqueness and synergy.

Rendering, written here from the description (no code or assets of the originals), in the
proportions of the authors' 224-pixel images (a 128-pixel shape template, textures of one period,
strokes of 2-4 pixels, rotations within +-45 degrees) as far as 64 pixels allow:
* shape: one of 10 masks defined analytically on a 36-pixel template (half-size 18), rotated by
  an angle uniform in [-45, 45) degrees and centred at a random position that keeps it inside the
  64 x 64 canvas;
* texture: one of 10 periodic binary patterns, each with one period (``TEXTURE_PERIOD``, 5-8
  pixels, so that every stroke is at least ``STROKE`` = 2 pixels wide), at a random phase and a
  rotation uniform in [-45, 45) degrees ("noise" is i.i.d. Bernoulli(0.5) cells of 2 x 2 pixels);
* colour: one of 10 RGB colours; pixel = mask * texture * colour + (1 - mask * texture) * 0.5,
  evaluated on a grid ``SUPERSAMPLE`` = 4 times finer and averaged over each pixel's 4 x 4 samples
  (area downsampling, so strokes and edges are anti-aliased instead of point-sampled).
``rendering="direct"`` keeps the earlier renderer for comparison: point-sampled at 64 pixels,
two periods per class (5 or 6 pixels, drawn per image), strokes of 1.25-2 pixels, textures rotated
over [0, 180) degrees.
Splits: the 1,000 (shape, texture, colour) combinations are split 80 / 20 by a permutation drawn
with seed 42; every training combination is rendered 3 times, every test combination once, so
no test combination occurs in training.

Pairs: modality 1 and modality 2 are two different images with the same shape.
* R (redundancy) = the shared shape; U (uniqueness) = the texture of image 1 (and of image 2);
* S (synergy) = 1 iff (texture of image 1, colour of image 2) is in M, where M maps texture k to
  colour pi(k) for one fixed random permutation pi (``SYNERGY_SEED``): the same M for the biased
  pre-training pairs (every pair in M) and for the probe pairs (half in M, half not).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from matplotlib.path import Path as PolygonPath

SHAPES = ("triangle", "square", "plus", "circle", "tee", "rhombus", "pentagon", "star", "fivesquare", "trapezoid")
TEXTURES = ("solid", "stripes", "grid", "hexgrid", "dots", "noise", "triangles", "zigzags", "rain", "pluses")
COLOURS = {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.75, 0.2), "blue": (0.15, 0.25, 0.95),
           "yellow": (0.95, 0.9, 0.1), "pink": (1.0, 0.55, 0.8), "cyan": (0.1, 0.9, 0.9),
           "purple": (0.55, 0.15, 0.7), "ocean": (0.05, 0.45, 0.55), "orange": (1.0, 0.55, 0.05),
           "white": (1.0, 1.0, 1.0)}
COLOUR_NAMES = tuple(COLOURS)
IMAGE_SIZE = 64
TEMPLATE_HALF = 18          # the shape template spans 36 pixels before rotation
GREY = 0.5
SPLIT_SEED = 42
SYNERGY_SEED = 1234
TRAIN_RENDERINGS, TEST_RENDERINGS = 3, 1
RENDERINGS = ("supersampled", "direct")
SUPERSAMPLE = 4
STROKE = 2.0                 # pixels at 64 x 64: the narrowest line or gap of a texture
# One period per texture (pixels at 64 x 64), the smallest that keeps every stroke >= STROKE.
TEXTURE_PERIOD = {"solid": 6.0, "stripes": 5.0, "grid": 6.0, "hexgrid": 8.0, "dots": 6.0, "noise": 4.0,
                  "triangles": 6.0, "zigzags": 6.0, "rain": 6.0, "pluses": 7.0}
DIRECT_TEXTURE_PERIODS = (5.0, 6.0)  # the direct renderer's two periods per class
# The authors render at 224 x 224 with a 10-pixel texture period, and blur with SimCLR's sigma
# U(0.1, 2.0) pixels. Pixel-sized augmentations scale with the texture: the same sigma range times
# (this renderer's mean period / 10) blurs a texture as much as theirs (a 2-pixel sigma keeps 0.45
# of a 10-pixel period's contrast, and only 0.07 of a 5.5-pixel one).
AUTHORS_TEXTURE_PERIOD = 10.0
BLUR_SCALE = round(float(np.mean(list(TEXTURE_PERIOD.values()))) / AUTHORS_TEXTURE_PERIOD, 3)


def _polygon(points) -> PolygonPath:
    return PolygonPath(np.asarray(points, dtype=np.float64))


def _regular(n: int, radius: float, start: float = -math.pi / 2, inner: float | None = None) -> PolygonPath:
    """A regular n-gon, or an n-pointed star when ``inner`` (the inner radius) is given."""
    pts = []
    for k in range(n):
        a = start + 2 * math.pi * k / n
        pts.append((radius * math.cos(a), radius * math.sin(a)))
        if inner is not None:
            b = a + math.pi / n
            pts.append((inner * math.cos(b), inner * math.sin(b)))
    return _polygon(pts)


_POLYGONS = {"triangle": _polygon([(0.0, -0.9), (0.9, 0.75), (-0.9, 0.75)]),
             "pentagon": _regular(5, 0.9),
             "star": _regular(5, 0.95, inner=0.4),
             "trapezoid": _polygon([(-0.45, -0.6), (0.45, -0.6), (0.9, 0.6), (-0.9, 0.6)])}


def shape_mask(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership of the template points (u, v) in [-1, 1]^2 (v pointing down) in the shape."""
    au, av = np.abs(u), np.abs(v)
    if name == "square":
        return (au <= 0.75) & (av <= 0.75)
    if name == "circle":
        return u ** 2 + v ** 2 <= 0.85 ** 2
    if name == "plus":
        return ((au <= 0.28) & (av <= 0.9)) | ((av <= 0.28) & (au <= 0.9))
    if name == "tee":
        return ((au <= 0.28) & (v >= -0.9) & (v <= 0.9)) | ((v >= -0.9) & (v <= -0.35) & (au <= 0.9))
    if name == "rhombus":
        return au / 0.75 + av / 0.95 <= 1.0
    if name == "fivesquare":  # the five of a die: four corner squares and the centre one
        cell = lambda cu, cv: (np.abs(u - cu) <= 0.27) & (np.abs(v - cv) <= 0.27)  # noqa: E731
        return cell(0, 0) | cell(-0.6, -0.6) | cell(0.6, -0.6) | cell(-0.6, 0.6) | cell(0.6, 0.6)
    if name in _POLYGONS:
        pts = np.stack([u.ravel(), v.ravel()], 1)
        return _POLYGONS[name].contains_points(pts).reshape(u.shape)
    raise ValueError(f"unknown shape {name!r}")


def texture_pattern(name: str, a: np.ndarray, b: np.ndarray, period: float, rng: np.random.Generator,
                    stroke: float | None = None) -> np.ndarray:
    """The binary texture at rotated, phase-shifted pixel coordinates (a, b). ``stroke``: the
    narrowest line in pixels (None: the direct renderer's period fractions, 1.5-pixel rain and
    1.5-pixel plus arms, single-pixel noise)."""
    p = period
    w = stroke
    am, bm = np.mod(a, p), np.mod(b, p)
    if name == "solid":
        return np.ones_like(a, dtype=bool)
    if name == "stripes":
        return am < p / 2
    if name == "grid":
        return (am < p / 3) | (bm < p / 3)
    if name == "hexgrid":  # lines in three directions 60 degrees apart
        lines = [np.mod(a * math.cos(t) + b * math.sin(t), p) < p / 4 for t in (0.0, math.pi / 3, 2 * math.pi / 3)]
        return lines[0] | lines[1] | lines[2]
    if name == "dots":
        return (am - p / 2) ** 2 + (bm - p / 2) ** 2 < (p / 3) ** 2
    if name == "noise":
        if w is None:
            return rng.random(a.shape) < 0.5
        ia, ib = np.floor(a / w).astype(np.int64), np.floor(b / w).astype(np.int64)
        ia, ib = ia - ia.min(), ib - ib.min()
        cells = rng.random((ia.max() + 1, ib.max() + 1)) < 0.5
        return cells[ia, ib]
    if name == "triangles":
        return am + bm < 0.8 * p
    if name == "zigzags":
        wave = np.abs(np.mod(a, 2 * p) - p)
        return np.mod(b - wave, p) < p / 3
    if name == "rain":
        column = np.floor(a / p)
        return (am < (1.5 if w is None else w)) & (np.mod(b + column * p / 2, 2 * p) < p)
    if name == "pluses":
        cu, cv = np.abs(am - p / 2), np.abs(bm - p / 2)
        arm = 0.75 if w is None else w / 2
        return ((cu < arm) & (cv < p / 3)) | ((cv < arm) & (cu < p / 3))
    raise ValueError(f"unknown texture {name!r}")


def render(shape: int, texture: int, colour: int, rng: np.random.Generator,
           rendering: str = "supersampled") -> np.ndarray:
    """One 64 x 64 x 3 float32 image in [0, 1]."""
    if rendering not in RENDERINGS:
        raise ValueError(f"rendering must be one of {RENDERINGS}, got {rendering!r}")
    n = IMAGE_SIZE
    fine = SUPERSAMPLE if rendering == "supersampled" else 1
    y, x = (np.mgrid[0:n * fine, 0:n * fine].astype(np.float64) + 0.5) / fine
    angle = math.radians(rng.uniform(-45.0, 45.0))
    reach = TEMPLATE_HALF * 1.3  # the rotated template's farthest masked point, with margin
    cx, cy = rng.uniform(reach, n - reach, size=2)
    ca, sa = math.cos(angle), math.sin(angle)
    dx, dy = (x - cx) / TEMPLATE_HALF, (y - cy) / TEMPLATE_HALF
    u, v = ca * dx + sa * dy, -sa * dx + ca * dy
    mask = shape_mask(SHAPES[shape], u, v) & (np.abs(u) <= 1) & (np.abs(v) <= 1)
    if rendering == "direct":
        period, stroke = float(rng.choice(DIRECT_TEXTURE_PERIODS)), None
        theta = rng.uniform(0.0, math.pi)
    else:
        period, stroke = TEXTURE_PERIOD[TEXTURES[texture]], STROKE
        theta = math.radians(rng.uniform(-45.0, 45.0))
    ox, oy = rng.uniform(0.0, period, size=2)
    ct, st = math.cos(theta), math.sin(theta)
    a, b = ct * x + st * y + ox, -st * x + ct * y + oy
    tex = texture_pattern(TEXTURES[texture], a, b, period, rng, stroke)
    on = (mask & tex)[..., None]
    rgb = np.asarray(COLOURS[COLOUR_NAMES[colour]], dtype=np.float64)
    img = np.where(on, rgb, GREY)
    if fine > 1:  # area downsampling: each pixel is the mean of its fine x fine samples
        img = img.reshape(n, fine, n, fine, 3).mean((1, 3))
    return img.astype(np.float32)


def combination_split(seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) arrays of (shape, texture, colour) rows: 800 and 200 of the 1,000."""
    combos = np.array([(s, t, c) for s in range(10) for t in range(10) for c in range(10)])
    order = np.random.default_rng(seed).permutation(len(combos))
    cut = int(0.8 * len(combos))
    return combos[np.sort(order[:cut])], combos[np.sort(order[cut:])]


def synergy_map(seed: int = SYNERGY_SEED) -> np.ndarray:
    """M as an array: M[texture] = the colour it is paired with (a permutation of 0..9)."""
    return np.random.default_rng(seed).permutation(10)


@dataclass
class TrifeaturesImages:
    """Rendered images (n, 3, 64, 64) float32 and their attributes (n,) each."""
    images: np.ndarray
    shape: np.ndarray
    texture: np.ndarray
    colour: np.ndarray

    def __len__(self) -> int:
        return len(self.shape)


def render_split(split: str, seed: int = 0, split_seed: int = SPLIT_SEED,
                 rendering: str = "supersampled") -> TrifeaturesImages:
    """Every image of the split ("train": 3 renderings of each of the 800 training combinations;
    "test": 1 of each of the 200 others), rendered with the stream seeded by ``seed``. The last
    few splits are kept in memory (rendering the training split takes seconds); each call returns
    its own copy of the arrays."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if rendering not in RENDERINGS:
        raise ValueError(f"rendering must be one of {RENDERINGS}, got {rendering!r}")
    d = _rendered_split(split, seed, split_seed, rendering)
    return TrifeaturesImages(d.images.copy(), d.shape.copy(), d.texture.copy(), d.colour.copy())


@functools.lru_cache(maxsize=4)
def _rendered_split(split: str, seed: int, split_seed: int, rendering: str) -> TrifeaturesImages:
    train, test = combination_split(split_seed)
    combos, reps = (train, TRAIN_RENDERINGS) if split == "train" else (test, TEST_RENDERINGS)
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    rows = np.repeat(combos, reps, axis=0)
    imgs = np.stack([render(int(s), int(t), int(c), rng, rendering) for s, t, c in rows]).transpose(0, 3, 1, 2)
    return TrifeaturesImages(np.ascontiguousarray(imgs), rows[:, 0].copy(), rows[:, 1].copy(), rows[:, 2].copy())


def same_shape_pairs(data: TrifeaturesImages, rng: np.random.Generator, biased: bool = False,
                     m: np.ndarray | None = None) -> np.ndarray:
    """(n, 2) indices: image i with a different image j of the same shape; ``biased``: j's colour
    is also M[texture of i] (the synergy pre-training pairs). Rows without a partner are dropped."""
    m = synergy_map() if m is None else m
    out = []
    for i in range(len(data)):
        ok = (data.shape == data.shape[i]) & (np.arange(len(data)) != i)
        if biased:
            ok &= data.colour == m[data.texture[i]]
        cand = np.flatnonzero(ok)
        if cand.size:
            out.append((i, int(rng.choice(cand))))
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


def synergy_probe_pairs(data: TrifeaturesImages, rng: np.random.Generator, m: np.ndarray | None = None) -> np.ndarray:
    """(n, 2) same-shape pairs, for image i alternately in M (S = 1) and not (S = 0): a balanced
    probe set for the synergy label."""
    m = synergy_map() if m is None else m
    out = []
    for i in range(len(data)):
        same = (data.shape == data.shape[i]) & (np.arange(len(data)) != i)
        in_m = data.colour == m[data.texture[i]]
        cand = np.flatnonzero(same & (in_m if i % 2 == 0 else ~in_m))
        if cand.size:
            out.append((i, int(rng.choice(cand))))
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


def pair_labels(data: TrifeaturesImages, pairs: np.ndarray, m: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """R, U1, U2 and S of each pair."""
    m = synergy_map() if m is None else m
    i, j = pairs[:, 0], pairs[:, 1]
    return {"R": data.shape[i], "U1": data.texture[i], "U2": data.texture[j],
            "S": (m[data.texture[i]] == data.colour[j]).astype(np.int64)}
