"""Failure-mode scorer: bounds, monotonicity, streaks, routing, config."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from rankguide_edge.config import from_mapping
from rankguide_edge.errors import ConfigError
from rankguide_edge.signals.failure import (
    FailureConfig,
    FailureInputs,
    FailureScorer,
    mode_scores,
    route_score,
    squash,
)

BASE = FailureInputs(entropy_mean=0.4, entropy_max=2.0, top1_mean=0.8, margin_min=0.3, rank_eff_norm=0.5,
                     novelty=0.5, kw_revalidation=0, kw_uncertainty=0, kw_confident=0, repetition=0.2,
                     arith_repeats=0)


def _scores(**changes: float) -> dict[str, float]:
    return mode_scores(dataclasses.replace(BASE, **changes), FailureConfig())


def test_squash() -> None:
    assert squash(0.0, 0.0, 1.0) == 0.5
    assert squash(1e9, 0.0, 1.0) == 1.0 and 0.0 <= squash(-1e9, 0.0, 1.0) < 1e-300
    assert squash(float("inf"), 0.0, 1.0) == 1.0 and squash(float("-inf"), 0.0, 1.0) < 1e-300
    assert squash(2.0, 1.0, -0.5) < 0.5 < squash(0.0, 1.0, -0.5)
    assert squash(float("nan"), 0.0, 1.0) == 0.5


def test_scores_stay_in_unit_interval_for_extreme_inputs() -> None:
    rng = np.random.default_rng(0)
    cfg = FailureConfig()
    for _ in range(200):
        vals = rng.choice([-1e12, -1.0, 0.0, 0.5, 1.0, 7.0, 1e12], size=11)
        inp = FailureInputs(*[float(v) for v in vals])
        for rule in ("max", "noisy_or"):
            sc = FailureScorer(dataclasses.replace(cfg, route_rule=rule)).score(inp)
            assert all(0.0 <= sc[k] <= 1.0 for k in ("overconfidence", "uncertainty", "revalidation", "route"))


@pytest.mark.parametrize("field,mode,direction", [
    ("entropy_mean", "uncertainty", +1), ("entropy_max", "uncertainty", +1), ("top1_mean", "uncertainty", -1),
    ("rank_eff_norm", "uncertainty", +1), ("kw_uncertainty", "uncertainty", +1),
    ("rank_eff_norm", "overconfidence", -1), ("entropy_mean", "overconfidence", -1),
    ("margin_min", "overconfidence", +1), ("kw_confident", "overconfidence", +1),
    ("kw_revalidation", "revalidation", +1), ("repetition", "revalidation", +1),
    ("arith_repeats", "revalidation", +1), ("novelty", "revalidation", -1),
])
def test_scores_are_monotone_in_their_inputs(field: str, mode: str, direction: int) -> None:
    grid = np.linspace(0.0, 3.0, 13)
    values = [_scores(**{field: float(x)})[mode] for x in grid]
    diffs = np.diff(values) * direction
    assert (diffs >= -1e-15).all()
    assert values[-1] * direction > values[0] * direction


def test_negative_scale_flips_and_zero_scale_is_rejected() -> None:
    flipped = FailureConfig(unc_entropy_mean_scale=-0.2)
    lo = mode_scores(dataclasses.replace(BASE, entropy_mean=0.0), flipped)["uncertainty"]
    hi = mode_scores(dataclasses.replace(BASE, entropy_mean=3.0), flipped)["uncertainty"]
    assert lo > hi
    with pytest.raises(ConfigError):
        FailureConfig(over_rank_scale=0.0)
    with pytest.raises(ConfigError):
        from_mapping(FailureConfig, {"no_such_knob": 1})
    with pytest.raises(ConfigError):
        FailureConfig(route_rule="mean")
    assert from_mapping(FailureConfig, {"unc_rank_weight": 2}).unc_rank_weight == 2.0


def test_empty_step_and_unavailable_inputs() -> None:
    sc = FailureScorer().score(FailureInputs())
    assert all(0.0 <= v <= 1.0 for k, v in sc.items() if k != "revalidation_streak")
    # a weight of zero removes the component; a mode without components scores 0
    cfg = FailureConfig(over_rank_weight=0, over_entropy_weight=0, over_margin_weight=0, over_kw_weight=0)
    assert mode_scores(BASE, cfg)["overconfidence"] == 0.0
    # missing rank leaves the other components' mean
    without = mode_scores(dataclasses.replace(BASE, rank_eff_norm=None), FailureConfig())
    assert 0.0 < without["uncertainty"] < 1.0


def test_revalidation_streak_counts_consecutive_steps() -> None:
    scorer = FailureScorer(FailureConfig(revalidation_threshold=0.5))
    heavy = dataclasses.replace(BASE, kw_revalidation=4, repetition=0.9, arith_repeats=2, novelty=0.0)
    light = BASE
    streaks = [scorer.score(x)["revalidation_streak"] for x in (heavy, heavy, heavy, light, heavy)]
    assert streaks == [1.0, 2.0, 3.0, 0.0, 1.0]
    peek = scorer.score(heavy, commit=False)
    assert peek["revalidation_streak"] == 2.0 and scorer.streak == 1
    scorer.reset()
    assert scorer.streak == 0


def test_streak_raises_the_route_score() -> None:
    cfg = FailureConfig(route_weight_revalidation=0.3)
    scorer = FailureScorer(cfg)
    heavy = dataclasses.replace(BASE, kw_revalidation=4, repetition=0.9, arith_repeats=2, novelty=0.0)
    routes = [scorer.score(heavy)["route"] for _ in range(5)]
    assert routes[-1] > routes[0]
    assert all(b >= a for a, b in itertools.pairwise(routes))


def test_route_rules() -> None:
    scores = {"overconfidence": 0.2, "uncertainty": 0.7, "revalidation": 0.4}
    cfg = FailureConfig()
    assert route_score(scores, 0, cfg) == pytest.approx(0.7)
    noisy = route_score(scores, 0, dataclasses.replace(cfg, route_rule="noisy_or"))
    assert noisy == pytest.approx(1 - 0.8 * 0.3 * 0.6)
    half = dataclasses.replace(cfg, route_weight_uncertainty=0.5)
    assert route_score(scores, 0, half) == pytest.approx(0.4)
    higher = dict(scores, revalidation=0.9)
    for rule in ("max", "noisy_or"):
        c = dataclasses.replace(cfg, route_rule=rule)
        assert route_score(higher, 0, c) >= route_score(scores, 0, c)
