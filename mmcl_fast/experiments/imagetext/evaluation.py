"""Scores of every generative factor from each modality's encoding (the paper's Table 3 roles):
MLP-classifier accuracy for discrete factors, kernel-ridge R^2 for continuous ones, circular
factors (hues, angles) regressed as (cos, sin) pairs."""
from __future__ import annotations

import numpy as np

from ..common.evaluation import classification_accuracy, r2_scores
from . import procedural_m3di as m3di

# factor -> (modality it is read from, kind, role); roles as in the paper's Table 3
IMAGE_FACTORS = {"shape": "content", "x": "content", "y": "content", "object_hue": "style",
                 "rotation": "image-specific", "spot_pos": "image-specific",
                 "spot_hue": "image-specific", "background_hue": "image-specific"}
TEXT_FACTORS = {"shape": "content", "x": "content", "y": "content", "object_hue": "style",
                "phrasing": "text-specific"}
CHANCE = {"shape": 1 / 7, "x": 1 / 3, "y": 1 / 3, "phrasing": 1 / 5}


def _circular(v: np.ndarray) -> np.ndarray:
    """A value in [0, 1) on a circle (hue, angle) as (cos, sin) of 2 pi v."""
    return np.stack([np.cos(2 * np.pi * v), np.sin(2 * np.pi * v)], axis=1)


def evaluate_factors(z_image: np.ndarray, z_text: np.ndarray, factors: dict[str, np.ndarray],
                     n_fit: int | None = None) -> dict[str, dict[str, dict]]:
    """{modality: {factor: {"role", "metric", "score"}}}: accuracy for discrete factors, kernel
    ridge R^2 for continuous ones; probes fit on the first ``n_fit`` samples (default half) and
    scored on the rest."""
    out: dict[str, dict[str, dict]] = {}
    for modality, z, table in (("image", z_image, IMAGE_FACTORS), ("text", z_text, TEXT_FACTORS)):
        res = {}
        for name, role in table.items():
            if name in m3di.DISCRETE:
                score = classification_accuracy(z, factors[name], n_fit=n_fit)
                res[name] = {"role": role, "metric": "accuracy", "score": score,
                             "chance": CHANCE[name]}
            else:
                r2 = r2_scores(z, {name: _circular(factors[name])}, n_fit=n_fit)[name]
                res[name] = {"role": role, "metric": "R2", "score": r2["nonlinear"],
                             "linear": r2["linear"]}
        out[modality] = res
    return out
