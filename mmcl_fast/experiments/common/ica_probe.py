"""PCA + FastICA on frozen contrastive features, and few-shot linear probes on top ("Beyond DAGs",
Liu et al., Fig. 4: (1) linear probe, (2) (1) on FastICA components, (3) (1) on PCA + FastICA).

Contrastive learning on a hypersphere recovers the latents up to a rotation; FastICA, fitted
without labels, can undo that rotation when the latent components are independent and
non-Gaussian. Usage on any features:

    from mmcl_fast.experiments.common.ica_probe import fit_components, few_shot_accuracy
    comps = fit_components(unlabelled_features, pipeline="pca_ica", n_pca=32, seed=0)
    acc = few_shot_accuracy(comps, train_x, train_y, test_x, test_y, shots=2, seed=0)
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.decomposition import PCA, FastICA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

PIPELINES = ("raw", "ica", "pca_ica")


def fit_components(features: np.ndarray, pipeline: str = "pca_ica", n_pca: int | None = None,
                   n_ica: int | None = None, seed: int = 0) -> Pipeline:
    """An unsupervised transform fitted on ``features`` (n x d): standardise, then nothing
    ("raw"), FastICA with ``n_ica`` components ("ica"), or PCA to ``n_pca`` dimensions followed
    by FastICA ("pca_ica")."""
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be one of {PIPELINES}, got {pipeline!r}")
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 4:
        raise ValueError(f"features must be (samples >= 4, dims), got shape {features.shape}")
    d = features.shape[1]
    for name, k in (("n_pca", n_pca), ("n_ica", n_ica)):
        if k is not None and not 1 <= k <= d:
            raise ValueError(f"{name} must be in [1, {d}] (the feature width), got {k}")
    steps: list = [StandardScaler()]
    if pipeline == "pca_ica":
        steps.append(PCA(n_components=n_pca or d, random_state=seed))
    if pipeline != "raw":
        steps.append(FastICA(n_components=n_ica, whiten="unit-variance", max_iter=2000, tol=1e-4,
                             random_state=seed))
    model = make_pipeline(*steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(features)
    return model


def few_shot_accuracy(components: Pipeline, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                      test_y: np.ndarray, shots: int, seed: int = 0, draws: int = 10) -> float:
    """Mean test accuracy of logistic regression on ``shots`` labelled examples per class (drawn
    ``draws`` times from the training set) in the components' space."""
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    classes = np.unique(train_y)
    if shots < 1 or any((train_y == c).sum() < shots for c in classes):
        raise ValueError(f"shots must be >= 1 and at most the smallest class's count, got {shots}")
    rng = np.random.default_rng(seed)
    zt, zs = components.transform(train_x), components.transform(test_x)
    accs = []
    for _ in range(draws):
        idx = np.concatenate([rng.choice(np.flatnonzero(train_y == c), shots, replace=False) for c in classes])
        clf = LogisticRegression(max_iter=2000).fit(zt[idx], train_y[idx])
        accs.append(clf.score(zs, test_y))
    return float(np.mean(accs))
