"""rankguide_edge.stats against independent oracles: sklearn's metrics, closed forms, optimality conditions and
small hand-computed cases (the AUROC, bootstrap and length-strata cases of ``analyze`` are in test_analyze)."""

from __future__ import annotations

import builtins
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from rankguide_edge import stats
from rankguide_edge.errors import DependencyError


def test_auroc_equals_sklearn_with_ties_and_missing_scores() -> None:
    rng = np.random.default_rng(0)
    for n in (5, 40, 300):
        x = np.round(rng.normal(size=n), 1)                                    # many ties
        y = rng.random(n) < 0.3
        y[:2] = [True, False]
        x[rng.random(n) < 0.1] = np.nan
        keep = np.isfinite(x)
        assert stats.auroc(x, y) == pytest.approx(roc_auc_score(y[keep], x[keep]), abs=1e-12)


def test_roc_curve_steps_through_every_distinct_score() -> None:
    # scores 4 (pos), 3 (neg), 3 (pos), 1 (neg): thresholds 4, 3, 1 -> (0, 1/2), (1/2, 1), (1, 1)
    fpr, tpr = stats.roc_curve(np.array([4.0, 3.0, 3.0, np.nan, 1.0]), np.array([1, 0, 1, 1, 0], bool))
    assert fpr.tolist() == [0.0, 0.0, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 1.0, 1.0]


def test_average_precision_breaks_ties_against_the_positives() -> None:
    y = np.array([1, 0, 1, 0, 0], bool)
    # untied: precision 1/1 at the first positive, 2/3 at the second
    assert stats.average_precision(np.array([5.0, 4, 3, 2, 1]), y) == pytest.approx((1 + 2 / 3) / 2)
    # scores 5 and 4 tied: the negative ranks first, so the first positive gets 1/2
    assert stats.average_precision(np.array([5.0, 5, 3, 2, 1]), y) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert stats.average_precision(np.array([1.0, 2, np.nan]), np.array([0, 0, 1], bool)) is None


def test_quantile_and_ci95() -> None:
    assert stats.quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert np.isnan(stats.quantile([], 0.9))
    assert stats.ci95(np.array([np.nan, np.inf])) is None
    lo, hi = stats.ci95(np.append(np.arange(1001.0), np.nan))                # 0..1000: percentiles are exact
    assert (lo, hi) == (25.0, 975.0)


def test_bootstrap_distribution_resamples_units_with_replacement() -> None:
    seen: list[np.ndarray] = []

    def stat(idx: np.ndarray) -> np.ndarray:
        seen.append(idx)
        return np.where(idx.min(axis=1) == 0, np.nan, idx.mean(axis=1))    # undefined when unit 0 is drawn

    d = stats.bootstrap_distribution(stat, 6, 400, seed=3)
    idx = np.concatenate(seen)
    assert d.shape == (400,) and idx.shape == (400, 6) and idx.min() == 0 and idx.max() == 5
    assert np.array_equal(np.isnan(d), idx.min(axis=1) == 0)               # NaN kept where undefined
    assert np.allclose(d[~np.isnan(d)], idx[idx.min(axis=1) > 0].mean(axis=1))
    again: list[np.ndarray] = []
    stats.bootstrap_distribution(lambda i: again.append(i) or i.mean(axis=1), 6, 400, seed=3)
    assert np.array_equal(np.concatenate(again), idx)                       # seeded
    assert stats.bootstrap_distribution(stat, 1, 400, seed=3).size == 0     # one unit: nothing to resample


def test_unit_counts_count_each_unit_per_resample() -> None:
    counts = stats.unit_counts(np.array([[0, 0, 2], [1, 2, 2]]), 4)
    assert counts.tolist() == [[2, 0, 1, 0], [0, 1, 2, 0]]


def test_standardize_imputes_the_fit_rows_mean_and_scales_by_their_sd() -> None:
    fit = np.array([[1.0, 5.0, np.nan], [3.0, 5.0, np.nan], [np.nan, 5.0, np.nan]])
    z = stats.standardize(fit, np.array([[np.nan, 7.0, 2.0]]))
    assert z.mean.tolist() == [2.0, 5.0, 0.0]
    assert z.sd[0] == pytest.approx(np.sqrt(2 / 3)) and z.sd[1:].tolist() == [1.0, 1.0]  # constant columns: 1
    assert z.fit[:, 0] == pytest.approx([-1 / np.sqrt(2 / 3), 1 / np.sqrt(2 / 3), 0.0])
    assert z.apply.tolist() == [[0.0, 2.0, 2.0]]


def test_fit_logistic_meets_the_optimality_conditions_of_its_objective() -> None:
    """At the minimum of sum(log(1 + exp(-s z))) + l2/2 |w|^2 the gradient vanishes: X^T (y - p) = l2 w and
    sum(y - p) = 0 (the intercept is not penalised)."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 3))
    y = rng.random(300) < 1 / (1 + np.exp(-(x @ [1.5, -0.5, 0.0] + 0.3)))
    for l2 in (0.0, 1.0, 30.0):
        w, b = stats.fit_logistic(x, y, l2)
        resid = y - 1 / (1 + np.exp(-(x @ w + b)))
        assert x.T @ resid == pytest.approx(l2 * w, abs=1e-3)
        assert abs(resid.sum()) < 1e-3
    assert abs(stats.fit_logistic(x, y, 1e6)[0]).max() < 1e-3             # a huge penalty: no weight left


def test_principal_components_match_the_svd_of_the_centred_fit_rows() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 6)) @ np.diag([5.0, 3, 1, 0.5, 0.2, 0.1])
    x[7, 2] = np.nan
    train = np.arange(40) < 30
    pcs = stats.principal_components(x, train, 3)
    fit = x[train & np.isfinite(x).all(axis=1)]
    _, _, vt = np.linalg.svd(fit - fit.mean(axis=0), full_matrices=False)
    ok = np.isfinite(x).all(axis=1)
    expected = (x[ok] - fit.mean(axis=0)) @ vt[:3].T
    assert np.allclose(np.abs(pcs[ok]), np.abs(expected))                   # components are defined up to sign
    assert np.isnan(pcs[7]).all()
    assert np.isnan(stats.principal_components(x[:, :2], train, 3)[:, 2]).all()  # 2 columns: 2 components


def test_threshold_for_share_nearest_and_at_most() -> None:
    scores = np.array([0.9, 0.8, 0.8, 0.8, 0.1, np.nan])
    # shares of the candidates 0.9, 0.8, 0.1: 1/5, 4/5, 1
    assert stats.threshold_for_share(scores, 0.5) == 0.9                    # at most 0.5
    assert stats.threshold_for_share(scores, 0.1) is None                   # even the top score routes more
    assert stats.threshold_for_share(scores, 0.5, nearest=True) == 0.9      # |1/5 - .5| <= |4/5 - .5|: higher
    assert stats.threshold_for_share(scores, 0.6, nearest=True) == 0.8
    assert stats.threshold_for_share(scores, 1.0, nearest=True) == 0.1
    assert stats.threshold_for_share([np.nan], 0.5) is None
    # a share of something else: routing item i (score i) costs i + 1 of 15 units; shares 5/15, 9/15, 12/15...
    cost = np.arange(1.0, 6.0)
    routed = stats.threshold_for_share(np.arange(5.0), 0.6, routed_share=lambda m: float(cost[m].sum() / 15))
    assert routed == 3.0


def test_a_missing_scikit_learn_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_sklearn(name: str, *args: object, **kwargs: object):  # noqa: ANN202
        if name == "sklearn" or name.startswith("sklearn."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    x, y = np.array([[0.0], [1.0], [2.0]]), np.array([False, True, True])
    with pytest.raises(DependencyError, match=r"rankguide-edge\[fit\]"):
        stats.fit_logistic(x, y, 1.0)
    with pytest.raises(DependencyError, match=r"rankguide-edge\[fit\]"):
        stats.average_precision(x[:, 0], y)
    assert stats.auroc(x[:, 0], y) == 1.0                                   # the AUROC needs no scikit-learn


def test_solving_serving_and_reports_import_no_scikit_learn() -> None:
    """The router's runtime score is plain numpy: only a fit or a ranking metric imports scikit-learn."""
    code = ("import sys; import rankguide_edge.stats, rankguide_edge.collab.router, rankguide_edge.collab.reasoner, "
            "rankguide_edge.bench.report, rankguide_edge.bench.run, rankguide_edge.fitting.analyze, "
            "rankguide_edge.fitting.router_fit, rankguide_edge.collab.solver; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
