"""The statistics of every report: ranking metrics, bootstrap intervals, length strata, logistic fits, shares.

One module for ``analyze``, ``calibrate``, ``router fit`` and ``bench report``. scikit-learn does the logistic
fits, ROC curves, average precision and PCA, and ``scipy.stats`` the bootstrap resampling; both are imported on
first use, scikit-learn only by the functions that need it (the ``fit`` extra: ``pip install
'rankguide-edge[fit]'``; a missing install is a one-line DependencyError). What is written here is what those
libraries do not offer in this form:

* :func:`weighted_auroc`: the AUROC under each of B bootstrap resamples at once, given as item multiplicities,
  and :func:`auroc` as its one-resample case (sklearn's ``roc_auc_score`` gives the same numbers, and is the
  tests' oracle, but spends ~3 ms per call on input checks: 30 times this, over the thousands of AUROCs and
  hundreds of thousands of resamples ``analyze`` computes);
* :func:`bootstrap_weights`: a stratified resample shared by every feature, so differences between features
  are paired;
* :func:`stratified_folds`: the seeded fold assignment that ``analyze``'s reports were made with (sklearn's
  ``StratifiedKFold`` deals other folds, and so other out-of-fold numbers);
* :func:`standardize`: the one missing-value and scaling rule (impute the training mean, divide by the
  training standard deviation, 1 for a constant column) that the fitted router files store.

Conventions:

* ``positive`` is a bool array ``(n,)``; True is the class to detect (a wrong trace, a step routing helps).
* ``scores`` is float ``(n,)``; NaN means "missing" and the item is left out of that computation.
* Bootstrap weights ``W`` are float64 ``(B, n)``: how many times each item is drawn in each resample.
* No function returns NaN for the caller to print: an AUROC that cannot be computed (one class only) is
  ``None``, and a constant score gives exactly 0.5.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .errors import DependencyError

FIT_EXTRA = "pip install 'rankguide-edge[fit]'"


def _need_sklearn() -> None:
    """Raise a DependencyError naming the extra to install when scikit-learn is missing."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise DependencyError(f"scikit-learn is needed for the fits and metrics of this command: {FIT_EXTRA}") from None


def _finite_pair(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    keep = np.isfinite(x)
    return x[keep], y[keep]


# --------------------------------------------------------------------------------------------- ranking


def auroc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve of ``scores`` (float ``(n,)``) for ``positive`` (bool ``(n,)``), ties counted
    one half: :func:`weighted_auroc` with every weight 1 (what sklearn's ``roc_auc_score`` computes, without
    its ~3 ms of input checks per call, which ``analyze`` would pay thousands of times). Raw, not folded: 1.0
    means high scores are positive, 0.0 means low scores are. NaN scores are dropped; None if a class is empty
    after that; exactly 0.5 for a constant score.
    """
    x, y = _finite_pair(scores, positive)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        return None
    if np.ptp(x) == 0.0:
        return 0.5
    return float(weighted_auroc(x, y, np.ones((1, x.size)))[0])


def auroc_parts(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The AUROC's numerator and denominator under each row of ``weights`` (float ``(B, n)``, item
    multiplicities): the weight of concordant (positive, negative) pairs, ties counted one half, and the weight
    of all such pairs, float ``(B,)`` each. Parts of several groups add up to the AUROC over the pairs within
    each group (a held-out AUROC over the pairs of each test fold, say).

    ``scores`` (float ``(n,)``) must be finite. Items are sorted once; per resample the weighted count of
    negatives strictly below each distinct value (plus half of those tied with it) is summed over the
    positives.
    """
    x = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if x.size == 0:
        return np.zeros(w.shape[0]), np.zeros(w.shape[0])
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
    return (pos_w * (below + 0.5 * neg_w)).sum(axis=1), pos_w.sum(axis=1) * neg_w.sum(axis=1)


def auroc_from_parts(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` of :func:`auroc_parts`, NaN where there is no pair."""
    out = np.full(np.shape(den), np.nan)
    ok = np.asarray(den) > 0
    out[ok] = np.asarray(num)[ok] / np.asarray(den)[ok]
    return out


def weighted_auroc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC under each row of ``weights`` (float ``(B, n)``, item multiplicities): float ``(B,)``; rows with
    no positive or no negative weight give NaN (callers drop them). With all weights 1 this equals
    :func:`auroc`. ``scores`` must be finite."""
    return auroc_from_parts(*auroc_parts(scores, positive, weights))


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates (float ``(m,)`` each, from (0, 0) to (1, 1)) of the rule
    "score >= t" over every distinct finite score t, highest first (sklearn's ``roc_curve``, no point dropped).
    Both classes must be present."""
    x, y = _finite_pair(scores, positive)
    _need_sklearn()
    from sklearn import metrics

    fpr, tpr, _ = metrics.roc_curve(y, x, drop_intermediate=False)
    return np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the precision-recall curve: the mean precision at each positive, ranked by descending score
    with ties broken against the positives (negatives first), so a tie never earns precision the ranking
    does not give (sklearn's ``average_precision_score`` of that strict ranking; on untied scores the two
    agree). None without positives."""
    x, y = _finite_pair(scores, positive)
    if not y.any():
        return None
    order = np.lexsort((y, -x))  # descending score; among ties negatives first
    rank_score = np.empty(x.size)
    rank_score[order] = -np.arange(x.size, dtype=np.float64)  # strictly decreasing along that order
    _need_sklearn()
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, rank_score))


# --------------------------------------------------------------------------------------------- intervals


def quantile(values: Any, q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by linear interpolation (numpy's default); NaN when empty."""
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    return float(np.quantile(a, q)) if a.size else math.nan


def ci95(samples: np.ndarray) -> tuple[float, float] | None:
    """The percentile 95% interval, 2.5th and 97.5th percentiles of the finite entries of ``samples``
    (float ``(B,)``: a bootstrap distribution); None if none is finite."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return None
    lo, hi = np.percentile(s, [2.5, 97.5])
    return float(lo), float(hi)


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


def bootstrap_distribution(statistic: Callable[[np.ndarray], np.ndarray], n: int, n_resamples: int,
                           seed: int) -> np.ndarray:
    """The statistic on ``n_resamples`` bootstrap resamples of ``n`` units (problems, say), float
    ``(n_resamples,)``, drawn by ``scipy.stats.bootstrap`` with ``numpy.random.default_rng(seed)``.

    ``statistic`` gets int ``(B, n)``: each row the unit indices of one resample (units drawn with
    replacement), and returns float ``(B,)``; NaN marks a resample where it is undefined (a resample without a
    positive, say), which :func:`ci95` then leaves out. Empty when ``n < 2`` (nothing to resample)."""
    if n < 2 or n_resamples <= 0:
        return np.zeros(0)
    from scipy import stats as sps

    gen = np.random.default_rng(seed)
    seeding = {"rng": gen} if "rng" in inspect.signature(sps.bootstrap).parameters else {"random_state": gen}

    def stat(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.asarray(statistic(np.asarray(idx, dtype=np.int64).reshape(-1, n)), dtype=np.float64)

    with warnings.catch_warnings():  # undefined resamples are NaN by design; the interval drops them
        warnings.simplefilter("ignore", getattr(sps, "DegenerateDataWarning", RuntimeWarning))
        res = sps.bootstrap((np.arange(n),), stat, n_resamples=n_resamples, vectorized=True,
                            method="percentile", **seeding)
    return np.asarray(res.bootstrap_distribution, dtype=np.float64).reshape(-1)


def unit_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each of ``n`` units occurs in each resample row of ``idx`` (int ``(B, m)``): float ``(B, n)``,
    the multiplicities :func:`weighted_auroc` takes."""
    idx = np.asarray(idx, dtype=np.int64)
    rows = np.repeat(np.arange(idx.shape[0]), idx.shape[1])
    return np.bincount(rows * n + idx.reshape(-1), minlength=idx.shape[0] * n).reshape(idx.shape[0], n).astype(
        np.float64)


# --------------------------------------------------------------------------------------------- strata


def length_bins(lengths: np.ndarray, n_bins: int) -> np.ndarray:
    """Quantile bin of each trace length (int ``(n,)`` in ``[0, n_bins)``). Bins come from average ranks,
    so equal lengths always share a bin (bins can be uneven when many lengths tie)."""
    from scipy.stats import rankdata

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


# --------------------------------------------------------------------------------------------- models


@dataclasses.dataclass(frozen=True)
class Standardized:
    """Columns imputed and scaled by one set of statistics: ``fit`` (the rows the statistics came from),
    ``apply`` (the other rows), and the per-column ``mean`` and ``sd`` (float ``(p,)``) a router file stores."""

    fit: np.ndarray
    apply: np.ndarray
    mean: np.ndarray
    sd: np.ndarray


def standardize(fit: np.ndarray, apply: np.ndarray | None = None) -> Standardized:
    """Impute every non-finite entry of ``fit`` and ``apply`` (float ``(n, p)``, ``(m, p)``) with ``fit``'s
    column mean (0 for a column with no value) and scale both by ``fit``'s standard deviation after imputing
    (1 for a constant column)."""
    x = np.asarray(fit, dtype=np.float64)
    other = x[:0] if apply is None else np.asarray(apply, dtype=np.float64)
    ok = np.isfinite(x)
    mean = np.where(ok, x, 0.0).sum(axis=0) / np.maximum(ok.sum(axis=0), 1)
    filled = np.where(ok, x, mean)
    rest = np.where(np.isfinite(other), other, mean)
    sd = filled.std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    return Standardized((filled - mean) / sd, (rest - mean) / sd, mean, sd)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """L2-penalised logistic regression: weights (float ``(p,)``) and intercept minimising
    ``sum(log(1 + exp(-s_i z_i))) + l2/2 |w|^2`` with ``z = x w + b``, ``s = ±1`` (intercept unpenalised;
    ``l2 = 0``: no penalty). sklearn's ``LogisticRegression`` (L-BFGS, ``C = 1 / l2``), converged tightly so
    that the weights do not depend on the solver's stopping point.

    ``x`` is float ``(n, p)`` (already standardised), ``y`` bool ``(n,)`` holding both classes.
    """
    _need_sklearn()
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=bool)
    model = LogisticRegression(C=1.0 / l2 if l2 > 0 else np.inf, tol=1e-6, max_iter=10_000)
    with warnings.catch_warnings():
        # without a penalty, separable data have no optimum: the solver's last iterate is the answer
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(xs, ys)
    return np.asarray(model.coef_[0], dtype=np.float64), float(model.intercept_[0])


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


def cross_validated_scores(x: np.ndarray, y: np.ndarray, folds: np.ndarray, l2: float) -> np.ndarray:
    """Out-of-fold decision values (float ``(n,)``) of :func:`fit_logistic` on ``x`` (float ``(n, p)``,
    NaN = missing, imputed per fold) for labels ``y`` (bool ``(n,)``) and fold numbers ``folds``."""
    out = np.zeros(y.size)
    for f in np.unique(folds):
        test = folds == f
        z = standardize(x[~test], x[test])
        w, b = fit_logistic(z.fit, y[~test], l2)
        out[test] = z.apply @ w + b
    return out


def standardised_coefficients(x: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """Weights (float ``(p,)``) of a fit on all items, per standard deviation of each feature."""
    return fit_logistic(standardize(x).fit, y, l2)[0]


def principal_components(x: np.ndarray, fit_rows: np.ndarray, dims: int) -> np.ndarray:
    """The first ``dims`` principal components (sklearn's ``PCA`` fitted on the ``fit_rows`` of ``x``, float
    ``(n, d)``) of every row: float ``(n, dims)``; NaN for rows with a non-finite entry, and in the columns
    beyond the components the fit rows support."""
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x).all(axis=1)
    fit = x[np.asarray(fit_rows, dtype=bool) & ok]
    out = np.full((x.shape[0], dims), np.nan)
    k = min(dims, fit.shape[0], fit.shape[1])
    if k == 0:
        return out
    _need_sklearn()
    from sklearn.decomposition import PCA

    pca = PCA(n_components=k, svd_solver="full").fit(fit)
    out[ok, :k] = pca.transform(x[ok])
    return out


# --------------------------------------------------------------------------------------------- thresholds


def threshold_for_share(scores: Any, share: float, *, routed_share: Callable[[np.ndarray], float] | None = None,
                        nearest: bool = False) -> float | None:
    """A threshold ``t`` among the finite ``scores`` for "route the items scoring >= t" that routes ``share``.

    ``routed_share(mask)`` says what share a routed bool mask ``(n,)`` over ``scores`` gives (non-decreasing
    as more items are routed); by default the share of items routed. Candidates are the distinct scores,
    highest first. ``nearest=False``: the lowest candidate whose share stays at or below ``share`` (None when
    even the highest exceeds it). ``nearest=True``: of the highest candidate reaching ``share`` and the next
    higher one, whichever share is closer to ``share`` (ties: the higher); None without a finite score.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if routed_share is None:
        s = s[np.isfinite(s)]
    candidates = np.unique(s[np.isfinite(s)])[::-1]
    if candidates.size == 0:
        return None
    if routed_share is None:  # the share of items at or above each candidate, at once
        counts = s.size - np.searchsorted(np.sort(s), candidates, side="left")
        shares: Iterable[float] = (counts / s.size).tolist()
    else:
        shares = (routed_share(s >= t) for t in candidates)
    if not nearest:
        best = None
        for t, r in zip(candidates, shares, strict=True):
            if r > share:
                break
            best = float(t)
        return best
    previous: tuple[float, float] | None = None  # (candidate, share) one step higher
    for t, r in zip(candidates, shares, strict=True):
        if r >= share:
            if previous is not None and abs(previous[1] - share) <= abs(r - share):
                return previous[0]
            return float(t)
        previous = (float(t), r)
    return float(candidates[-1])


def paired_difference(a: Any, b: Any, *, n_resamples: int = 5000, seed: int = 0) -> dict[str, float]:
    """Two methods' per-unit outcomes (``(n,)`` floats on the same units: 0/1 answers or expectations)
    compared: the mean of ``a - b``, its 95 % percentile-bootstrap interval over units
    (:func:`bootstrap_distribution`), a two-sided sign-flip permutation p-value (``scipy.stats.
    permutation_test``, exact when ``2**n <= n_resamples``; for 0/1 outcomes the same test as an exact
    McNemar on the discordant units), and the summed ``wins``/``losses`` of ``a``."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = d.size
    out = {"diff": float(d.mean()) if n else math.nan, "lo": math.nan, "hi": math.nan, "p": math.nan,
           "wins": float(d[d > 0].sum()), "losses": float(-d[d < 0].sum())}
    if n == 0:
        return out
    ci = ci95(bootstrap_distribution(lambda idx: d[idx].mean(axis=1), n, n_resamples, seed))
    out["lo"], out["hi"] = ci if ci is not None else (out["diff"], out["diff"])
    if n < 2 or np.count_nonzero(d) < 2:  # one discordant unit (or none) is never evidence
        out["p"] = 1.0
        return out
    if n_resamples <= 0:
        return out
    from scipy import stats as sps

    gen = np.random.default_rng(seed)
    seeding = {"rng": gen} if "rng" in inspect.signature(sps.permutation_test).parameters else {"random_state": gen}
    res = sps.permutation_test((d,), lambda x, axis=-1: np.mean(x, axis=axis), permutation_type="samples",
                               n_resamples=n_resamples, alternative="two-sided", vectorized=True, **seeding)
    out["p"] = float(min(1.0, res.pvalue))
    return out
