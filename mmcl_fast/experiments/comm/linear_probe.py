"""The linear probe of the CoMM experiment: L2-regularised multinomial logistic regression, the
regularisation chosen by cross-validation, scored by balanced accuracy.

For one C the probe minimises, over the weights W (d x K) and the bias b (K),

    1/2 ||W||_F^2 + C * sum_i CE(softmax(x_i W + b), y_i),

the objective of scikit-learn's ``LogisticRegression(C=C)`` (bias not penalised; with two
classes, as there, one logit: W's first column and b's first entry held at 0), solved here
in float64 by full-batch L-BFGS in torch with a strong-Wolfe line search, warm-started from the
previous C of the grid. ``probe_scores`` standardises the features on the training set, picks C
from ``CS`` by 3-fold stratified cross-validation on the training set (the mean balanced
accuracy of the held-out folds; the smaller C on a tie), refits on the whole training set and
returns the balanced accuracy on the test set. It gives scikit-learn's ``LogisticRegressionCV``
result at a small fraction of its time on these problems (thousands of pairs, hundreds of
features, tens of fits per task).
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold

CS = (0.01, 0.1, 1.0, 10.0)
FOLDS = 3


def fit_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, c: float,
                 init: tuple[torch.Tensor, torch.Tensor] | None = None, max_iter: int = 500,
                 tol: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) minimising 1/2 ||W||^2 + c * sum CE (float64 tensors x (n, d), y (n,) int64), to a
    gradient of at most ``tol`` on the objective divided by c * n."""
    if not c > 0:
        raise ValueError(f"c must be positive, got {c}")
    d = x.shape[1]
    free = 1 if n_classes == 2 else n_classes  # two classes: a single logit against a zero one
    if init is None:
        init = (torch.zeros(d, n_classes, dtype=x.dtype), torch.zeros(n_classes, dtype=x.dtype))
    w0, b0 = init
    w = w0[:, n_classes - free:].clone().requires_grad_(True)
    b = b0[n_classes - free:].clone().requires_grad_(True)
    pad_w, pad_b = torch.zeros(d, n_classes - free, dtype=x.dtype), torch.zeros(n_classes - free, dtype=x.dtype)
    n = x.shape[0]
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        # the objective divided by c * n: the same minimiser, a gradient scale L-BFGS handles well
        logits = x @ torch.cat([pad_w, w], 1) + torch.cat([pad_b, b])
        loss = torch.nn.functional.cross_entropy(logits, y) + (w * w).sum() / (2 * c * n)
        loss.backward()
        return loss

    opt.step(closure)
    return torch.cat([pad_w, w.detach()], 1), torch.cat([pad_b, b.detach()])


def _predict(x: torch.Tensor, wb: tuple[torch.Tensor, torch.Tensor]) -> np.ndarray:
    return (x @ wb[0] + wb[1]).argmax(1).numpy()


def probe_scores(ftr: np.ndarray, fte: np.ndarray, ytr: dict[str, np.ndarray],
                 yte: dict[str, np.ndarray], cs=CS) -> dict[str, float]:
    """Balanced test accuracy per task (see the module's docstring)."""
    if ftr.ndim != 2 or fte.ndim != 2 or ftr.shape[1] != fte.shape[1]:
        raise ValueError(f"ftr and fte must be (n, d) with the same d, got {ftr.shape} and {fte.shape}")
    mean, std = ftr.mean(0), ftr.std(0)
    std[std == 0] = 1.0
    xtr = torch.from_numpy((ftr - mean) / std).double()
    xte = torch.from_numpy((fte - mean) / std).double()
    cs = sorted(cs)
    scores = {}
    for task, labels in ytr.items():
        classes, y = np.unique(labels, return_inverse=True)
        k = max(len(classes), 2)
        yt = torch.from_numpy(y).long()
        folds = list(StratifiedKFold(FOLDS).split(np.zeros(len(y)), y))
        cv, warm = [], [None] * len(folds)
        for c in cs:
            accs = []
            for f, (tr, va) in enumerate(folds):
                warm[f] = fit_logistic(xtr[tr], yt[tr], k, c, init=warm[f])
                accs.append(balanced_accuracy_score(y[va], _predict(xtr[va], warm[f])))
            cv.append(float(np.mean(accs)))
        best = cs[int(np.argmax(cv))]
        wb = fit_logistic(xtr, yt, k, best)
        pred = classes[_predict(xte, wb)]
        scores[task] = float(balanced_accuracy_score(yte[task], pred))
    return scores
