"""Identifiability evaluation: how well ground-truth factors can be predicted from encodings.

``r2_scores`` fits, on the first half of held-out samples, a linear regression and a kernel ridge
regression (RBF kernel, grid search over alpha in {1, 0.1, 0.01, 0.001} and gamma in
logspace(-2, 2, 4), 3-fold CV) from the standardised encoding to each factor block, and reports
the coefficient of determination R^2 = 1 - SS_res / SS_tot (averaged over the block's dimensions)
on the second half. Discrete factors (class labels) get classification accuracy instead:
``classification_accuracy`` (an MLP with one hidden layer, as in the paper) and
``accuracy_scores`` (logistic regression and that MLP, per component of a block).

Disentanglement (component-wise recovery, as in cl-ica and "Beyond DAGs"):
``mcc`` is the mean absolute correlation (Pearson, or Spearman on ranks) between the factor's
components and the encoding's, after the one-to-one matching that maximises it (Hungarian
algorithm): 1 for any permutation with rescaling (monotone maps for Spearman), about 0 for
unrelated data. ``procrustes_r2`` fits the orthogonal map that best takes the encoding to the
factor (orthogonal Procrustes) on the first samples and scores R^2 on the rest: 1 when the
encoding is a rotation of the factor, which is what identifiability on the hypersphere promises.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV
from sklearn.preprocessing import StandardScaler

KRR_GRID = {"alpha": [1.0, 0.1, 0.01, 0.001], "gamma": list(np.logspace(-2, 2, 4))}


def fit_size(n: int, n_fit: int | None) -> int:
    """Samples [0, n_fit) fit the probe, [n_fit, n) score it (default: the first half)."""
    if n < 8:
        raise ValueError(f"need at least 8 samples to evaluate, got {n}")
    n_fit = n // 2 if n_fit is None else n_fit
    if not 4 <= n_fit <= n - 4:
        raise ValueError(f"n_fit must leave >= 4 samples on each side, got {n_fit} of {n}")
    return n_fit


def r2_scores(encoding: np.ndarray, factors: dict[str, np.ndarray], nonlinear: bool = True,
              n_jobs: int | None = None, n_fit: int | None = None) -> dict[str, dict[str, float]]:
    """{factor: {"linear": R^2, "nonlinear": R^2}}: fit on the first ``n_fit`` samples (default
    half), scored on the rest."""
    n = encoding.shape[0]
    half = fit_size(n, n_fit)
    h = StandardScaler().fit(encoding[:half]).transform(encoding)
    out = {}
    for name, y in factors.items():
        y = np.asarray(y, dtype=np.float64).reshape(n, -1)
        if y.shape[1] == 0:
            continue
        ys = StandardScaler().fit(y[:half]).transform(y)
        res = {"linear": float(r2_score(ys[half:], LinearRegression().fit(h[:half], ys[:half]).predict(h[half:])))}
        if nonlinear:
            search = GridSearchCV(KernelRidge(kernel="rbf"), KRR_GRID, cv=3, n_jobs=n_jobs)
            search.fit(h[:half], ys[:half])
            res["nonlinear"] = float(r2_score(ys[half:], search.predict(h[half:])))
        out[name] = res
    return out


def classification_accuracy(encoding: np.ndarray, labels: np.ndarray, seed: int = 0,
                            linear: bool = False, n_fit: int | None = None) -> float:
    """Accuracy on samples [n_fit, n) of a classifier fit on [0, n_fit) (default: halves): an MLP
    with one hidden layer of 100 units (sklearn's default, as in the paper's code), or logistic
    regression when ``linear``."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    half = fit_size(len(labels), n_fit)
    h = StandardScaler().fit(encoding[:half]).transform(encoding)
    clf = (LogisticRegression(max_iter=1000) if linear
           else MLPClassifier(hidden_layer_sizes=(100,), max_iter=1000, random_state=seed))
    with warnings.catch_warnings():        # 1000 Adam epochs; the score is what counts
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(h[:half], labels[:half])
    return float(clf.score(h[half:], labels[half:]))


def accuracy_scores(encoding: np.ndarray, factors: dict[str, np.ndarray],
                    nonlinear: bool = True) -> dict[str, dict[str, float]]:
    """{factor: {"linear": accuracy, "nonlinear": accuracy}} for blocks of class labels (n, d),
    the mean over the d components; the counterpart of ``r2_scores`` for discrete factors."""
    out = {}
    for name, y in factors.items():
        y = np.asarray(y).reshape(encoding.shape[0], -1)
        if y.shape[1] == 0:
            continue
        out[name] = {kind: float(np.mean([classification_accuracy(encoding, y[:, j], linear=kind == "linear")
                                          for j in range(y.shape[1])]))
                     for kind in (("linear", "nonlinear") if nonlinear else ("linear",))}
    return out


def _columns(name: str, a: np.ndarray, n: int | None = None) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 2 or a.shape[1] < 1:
        raise ValueError(f"{name} must be a (samples, dims) array with >= 2 samples, got shape {a.shape}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name} has {a.shape[0]} samples, the other array {n}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return a


def mcc(encoding: np.ndarray, factor: np.ndarray, method: str = "pearson") -> float:
    """Mean |correlation| over the best one-to-one matching of factor and encoding components
    (min(dims) pairs; a constant column correlates 0 with everything)."""
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    h = _columns("encoding", encoding)
    z = _columns("factor", factor, h.shape[0])
    if method == "spearman":
        h, z = rankdata(h, axis=0), rankdata(z, axis=0)
    h = h - h.mean(0)
    z = z - z.mean(0)
    hn, zn = np.linalg.norm(h, axis=0), np.linalg.norm(z, axis=0)
    corr = (h.T @ z) / np.maximum(np.outer(hn, zn), 1e-300)
    corr[hn == 0, :] = 0.0
    corr[:, zn == 0] = 0.0
    rows, cols = linear_sum_assignment(-np.abs(corr))
    return float(np.abs(corr[rows, cols]).mean())


def procrustes_r2(encoding: np.ndarray, factor: np.ndarray, n_fit: int | None = None) -> float:
    """R^2 of factor from encoding @ R on samples [n_fit, n), R the isometry fit on [0, n_fit)
    (default: halves) by orthogonal Procrustes: an orthogonal matrix for equal widths, else the
    k x d map with orthonormal columns (k > d: the factor inside a subspace of the encoding) or
    rows (k < d), from the SVD of encoding^T factor."""
    h = _columns("encoding", encoding)
    z = _columns("factor", factor, h.shape[0])
    half = fit_size(h.shape[0], n_fit)
    u, _, vt = np.linalg.svd(h[:half].T @ z[:half], full_matrices=False)
    return float(r2_score(z[half:], h[half:] @ (u @ vt)))
