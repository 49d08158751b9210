"""Scores of every generative factor from each modality's encoding, as the paper's code scores
them (its ``main_imgtxt.py``, factor lists of its ``datasets.py``).

Probes are fit on the validation encodings and scored on the test encodings, both standardised
with the validation statistics. Discrete factors: accuracy of logistic regression (``linear``)
and of an MLP classifier (``score``). Continuous factors: R^2 of linear regression (``linear``)
and of RBF kernel ridge regression with a cross-validated grid (``score``), on the factor's value
in [0, 1]. The text side's colour is the original's ``object_color_index``, the caption's colour
name as a class. One deliberate addition, kept beside the original columns: circular factors
(hues, angles) also get a kernel ridge R^2 on (cos, sin) of the angle (``circular``), which does
not count the wrap-around at 0 = 1 as an error; and the text encoding's R^2 for the image hue
(``object_hue`` in the text table, role "style (extra)").
"""
from __future__ import annotations

import numpy as np

from ..common.evaluation import classification_accuracy, fit_size, r2_scores
from . import procedural_m3di as m3di

# factor -> role, as in the paper's Table 3; the original's factor lists per modality
IMAGE_FACTORS = {"shape": "content", "x": "content", "y": "content", "object_hue": "style",
                 "rotation": "image-specific", "spot_pos": "image-specific",
                 "spot_hue": "image-specific", "background_hue": "image-specific"}
TEXT_FACTORS = {"shape": "content", "x": "content", "y": "content",
                "object_color_index": "style", "phrasing": "text-specific",
                "object_hue": "style (extra)"}
DISCRETE = (*m3di.DISCRETE, "object_color_index")
CHANCE = {"shape": 1 / 7, "x": 1 / 3, "y": 1 / 3, "phrasing": 1 / 5}


def _circular(v: np.ndarray) -> np.ndarray:
    """A value in [0, 1) on a circle (hue, angle) as (cos, sin) of 2 pi v."""
    return np.stack([np.cos(2 * np.pi * v), np.sin(2 * np.pi * v)], axis=1)


def _majority_rate(labels: np.ndarray, n_fit: int) -> float:
    """Accuracy on the scored samples of always answering the fit split's most frequent class."""
    values, counts = np.unique(labels[:n_fit], return_counts=True)
    return float(np.mean(labels[n_fit:] == values[np.argmax(counts)]))


def evaluate_factors(z_image: np.ndarray, z_text: np.ndarray, factors: dict[str, np.ndarray],
                     n_fit: int | None = None) -> dict[str, dict[str, dict]]:
    """{modality: {factor: {"role", "metric", "score", "linear", ...}}} for the latents ``factors``
    (as drawn by ``procedural_m3di.sample_latents``); probes fit on the first ``n_fit`` samples
    (default half) and scored on the rest."""
    fit = fit_size(len(z_image), n_fit)
    factors = dict(factors)
    factors["object_color_index"] = m3di.color_indices(factors["object_hue"], factors["palette"])
    out: dict[str, dict[str, dict]] = {}
    for modality, z, table in (("image", z_image, IMAGE_FACTORS), ("text", z_text, TEXT_FACTORS)):
        res = {}
        for name, role in table.items():
            y = np.asarray(factors[name])
            if name in DISCRETE:
                res[name] = {"role": role, "metric": "accuracy",
                             "score": classification_accuracy(z, y, n_fit=n_fit),
                             "linear": classification_accuracy(z, y, linear=True, n_fit=n_fit),
                             "chance": CHANCE[name] if name in CHANCE else _majority_rate(y, fit)}
            else:
                raw = r2_scores(z, {name: y}, n_fit=n_fit)[name]
                circular = r2_scores(z, {name: _circular(y)}, n_fit=n_fit)[name]
                res[name] = {"role": role, "metric": "R2", "score": raw["nonlinear"],
                             "linear": raw["linear"], "circular": circular["nonlinear"]}
        out[modality] = res
    return out
