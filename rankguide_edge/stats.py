"""Statistics behind ``rankguide-edge analyze``: AUROC with ties, paired bootstrap, length strata, logistic CV.

Everything is numpy/scipy and works on plain arrays. Conventions:

* ``positive`` is a bool array ``(n,)``; True is the class to detect (a wrong trace, a wrong step).
* ``scores`` is float ``(n,)``; NaN means "missing" and the item is left out of that computation.
* Bootstrap weights ``W`` are float64 ``(B, n)``: how many times each item is drawn in each resample.
  The same ``W`` is reused for every feature, so differences between features are paired.
* No function returns NaN for the caller to print: an AUROC that cannot be computed (one class only) is
  ``None``, and a constant score gives exactly 0.5.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import minimize
from scipy.stats import rankdata


def auroc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve of ``scores`` (float ``(n,)``) for ``positive`` (bool ``(n,)``).

    Mann-Whitney with ties counted one half: ``(R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)`` with
    ``R_pos`` the sum of the positives' average ranks (``scipy.stats.rankdata``). Raw, not folded: 1.0 means
    high scores are positive, 0.0 means low scores are. NaN scores are dropped; None if a class is empty
    after that; exactly 0.5 for a constant score.
    """
    x = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    keep = np.isfinite(x)
    x, y = x[keep], y[keep]
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    if np.ptp(x) == 0.0:
        return 0.5
    ranks = rankdata(x)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def weighted_auroc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC under each row of ``weights`` (float ``(B, n)``, item multiplicities): float ``(B,)``.

    ``scores`` (float ``(n,)``) must be finite. Items are sorted once; per resample the weighted count of
    negatives strictly below each distinct value (plus half of those tied with it) is summed over the
    positives. Rows with no positive or no negative weight give NaN (callers drop them). With all weights
    1 this equals :func:`auroc`.
    """
    x = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    w = np.asarray(weights, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.concatenate(([True], xs[1:] != xs[:-1])))
    ws = w[:, order]
    ys = y[order]
    pos_w = ws * ys                                                   # (B, n)
    neg_w = ws - pos_w
    if starts.size < xs.size:                                         # ties: one column per distinct value
        pos_w = np.add.reduceat(pos_w, starts, axis=1)                # (B, G)
        neg_w = np.add.reduceat(neg_w, starts, axis=1)
    below = np.cumsum(neg_w, axis=1) - neg_w
    num = (pos_w * (below + 0.5 * neg_w)).sum(axis=1)
    den = pos_w.sum(axis=1) * neg_w.sum(axis=1)
    out = np.full(w.shape[0], np.nan)
    ok = den > 0
    out[ok] = num[ok] / den[ok]
    return out


def bootstrap_weights(positive: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Stratified bootstrap multiplicities, float64 ``(n_boot, n)``: each resample redraws the positives
    among the positives and the negatives among the negatives, so both class sizes stay fixed."""
    y = np.asarray(positive, dtype=bool)
    rng = np.random.default_rng(seed)
    w = np.zeros((n_boot, y.size))
    for cls in (True, False):
        idx = np.flatnonzero(y == cls)
        if idx.size:
            w[:, idx] = rng.multinomial(idx.size, np.full(idx.size, 1.0 / idx.size), size=n_boot)
    return w


def ci95(samples: np.ndarray) -> tuple[float, float] | None:
    """2.5th and 97.5th percentiles of the finite entries of ``samples`` (float ``(B,)``); None if none."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return None
    lo, hi = np.percentile(s, [2.5, 97.5])
    return float(lo), float(hi)


def length_bins(lengths: np.ndarray, n_bins: int) -> np.ndarray:
    """Quantile bin of each trace length (int ``(n,)`` in ``[0, n_bins)``). Bins come from average ranks,
    so equal lengths always share a bin (bins can be uneven when many lengths tie)."""
    x = np.asarray(lengths, dtype=np.float64)
    if n_bins <= 1 or x.size == 0:
        return np.zeros(x.size, dtype=np.int64)
    r = rankdata(x)
    return np.minimum(((r - 0.5) / x.size * n_bins).astype(np.int64), n_bins - 1)


@dataclasses.dataclass(frozen=True)
class Estimate:
    """An AUROC, its bootstrap samples (float ``(B,)``, NaN where undefined) and how many items it used."""

    value: float | None
    samples: np.ndarray
    n: int
    n_pos: int

    @property
    def ci(self) -> tuple[float, float] | None:
        return None if self.value is None else ci95(self.samples)


def estimate(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> Estimate:
    """AUROC of ``scores`` (float ``(n,)``, NaN = missing) with bootstrap samples under ``weights``
    (float ``(B, n)``). Constant scores give 0.5 and constant samples."""
    x = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    keep = np.isfinite(x)
    xk, yk = x[keep], y[keep]
    value = auroc(xk, yk)
    n_pos = int(yk.sum())
    if value is None:
        return Estimate(None, np.full(weights.shape[0], np.nan), int(keep.sum()), n_pos)
    if np.ptp(xk) == 0.0:
        return Estimate(0.5, np.full(weights.shape[0], 0.5), int(keep.sum()), n_pos)
    return Estimate(value, weighted_auroc(xk, yk, weights[:, keep]), int(keep.sum()), n_pos)


def stratified_estimate(scores: np.ndarray, positive: np.ndarray, bins: np.ndarray,
                        weights: np.ndarray) -> Estimate:
    """Within-bin AUROC averaged over the bins holding both classes, weighted by their item counts.

    ``bins`` is int ``(n,)`` (see :func:`length_bins`); bootstrap samples are combined the same way with
    the nominal bin sizes, each resample over the bins where it still holds both classes (a resample that
    drew no wrong trace in some bin averages the others, rather than being dropped, which would narrow the
    interval to the lucky resamples). None if no bin holds both classes.
    """
    x = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    total, acc = 0, 0.0
    acc_s = np.zeros(weights.shape[0])
    w_s = np.zeros(weights.shape[0])
    n_used, n_pos = 0, 0
    for b in np.unique(bins):
        sel = bins == b
        est = estimate(x[sel], y[sel], weights[:, sel])
        if est.value is None:
            continue
        total += est.n
        acc += est.n * est.value
        ok = np.isfinite(est.samples)
        acc_s = acc_s + np.where(ok, est.n * est.samples, 0.0)
        w_s = w_s + np.where(ok, est.n, 0)
        n_used += est.n
        n_pos += est.n_pos
    if total == 0:
        return Estimate(None, np.full(weights.shape[0], np.nan), 0, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        samples = np.where(w_s > 0, acc_s / np.where(w_s > 0, w_s, 1.0), np.nan)
    return Estimate(acc / total, samples, n_used, n_pos)


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates (float ``(m,)`` each, from (0, 0) to (1, 1)) of the rule
    "score >= t" over every distinct finite score t, highest first."""
    x = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    keep = np.isfinite(x)
    x, y = x[keep], y[keep]
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    order = np.argsort(-x, kind="stable")
    xs, ys = x[order], y[order]
    last = np.concatenate((xs[1:] != xs[:-1], [True])) if xs.size else np.zeros(0, bool)
    tp = np.cumsum(ys)[last]
    fp = np.cumsum(~ys)[last]
    return np.concatenate(([0.0], fp / n_neg)), np.concatenate(([0.0], tp / n_pos))


# --------------------------------------------------------------------------------------------- logistic


def stratified_folds(positive: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold number (int ``(n,)``) of each item: each class is shuffled (seeded) and dealt round-robin."""
    y = np.asarray(positive, dtype=bool)
    rng = np.random.default_rng(seed)
    folds = np.empty(y.size, dtype=np.int64)
    offset = 0
    for cls in (True, False):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        folds[idx] = (np.arange(idx.size) + offset) % n_folds
        offset += idx.size
    return folds


def _prepare(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Impute NaN with the training mean and standardise both (float ``(n, p)``) by training statistics."""
    ok = np.isfinite(train)
    count = ok.sum(axis=0)
    mean = np.where(ok, train, 0.0).sum(axis=0) / np.maximum(count, 1)
    tr = np.where(np.isfinite(train), train, mean)
    te = np.where(np.isfinite(test), test, mean)
    sd = tr.std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    return (tr - mean) / sd, (te - mean) / sd


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """L2-penalised logistic regression: weights (float ``(p,)``) and intercept minimising
    ``sum(log(1 + exp(-s_i z_i))) + l2/2 |w|^2`` with ``z = x w + b``, ``s = ±1`` (intercept unpenalised).

    ``x`` is float ``(n, p)`` (already standardised), ``y`` bool ``(n,)``. L-BFGS with the exact gradient.
    """
    s = np.where(y, 1.0, -1.0)
    p = x.shape[1]

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:p], theta[p]
        m = s * (x @ w + b)
        val = float(np.logaddexp(0.0, -m).sum() + 0.5 * l2 * w @ w)
        g = -s * np.exp(-np.logaddexp(0.0, m))                      # d loss / d z
        return val, np.concatenate((x.T @ g + l2 * w, [g.sum()]))

    res = minimize(loss, np.zeros(p + 1), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return res.x[:p], float(res.x[p])


def cross_validated_scores(x: np.ndarray, y: np.ndarray, folds: np.ndarray, l2: float) -> np.ndarray:
    """Out-of-fold decision values (float ``(n,)``) of :func:`fit_logistic` on ``x`` (float ``(n, p)``,
    NaN = missing, imputed per fold) for labels ``y`` (bool ``(n,)``) and fold numbers ``folds``."""
    out = np.zeros(y.size)
    for f in np.unique(folds):
        test = folds == f
        tr, te = _prepare(x[~test], x[test])
        w, b = fit_logistic(tr, y[~test], l2)
        out[test] = te @ w + b
    return out


def standardised_coefficients(x: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """Weights (float ``(p,)``) of a fit on all items, per standard deviation of each feature."""
    tr, _ = _prepare(x, x[:0])
    return fit_logistic(tr, y, l2)[0]
