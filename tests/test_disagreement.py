"""The LRM's disagreement features of a step, from arrays (pure numpy; the oracle is written out by hand)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rankguide_edge.collab.disagreement import FEATURES, disagreement_features, is_arith
from rankguide_edge.collab.policies import StepView, make_policy


def test_features_of_a_hand_made_step() -> None:
    # tokens: "We", " have", " 3", " +", " 4", " =", " 8"   (the LRM would have written 7 at the end)
    logprob = np.array([-0.1, -0.2, -0.05, -0.3, -0.01, -0.02, -2.5], np.float32)
    agree = np.array([True, True, True, True, True, True, False])
    arith = np.array([is_arith(p) for p in ["We", " have", " 3", " +", " 4", " =", " 8"]])
    assert arith.tolist() == [False, False, True, True, True, True, True]
    f = disagreement_features(logprob, agree, arith)
    assert set(f) == set(FEATURES)
    assert f["lrm.disagree"] == pytest.approx(1 / 7)
    assert f["lrm.disagree_arith"] == pytest.approx(1 / 5)
    assert f["lrm.first_disagree"] == pytest.approx(6 / 7)
    assert f["lrm.logprob_min"] == pytest.approx(-2.5) and f["lrm.logprob_min_arith"] == pytest.approx(-2.5)
    assert f["lrm.logprob_mean"] == pytest.approx(float(np.mean(logprob.astype(np.float64))))
    assert f["lrm.risk"] == pytest.approx(1 - math.exp(-2.5))
    assert f["lrm.n_tokens"] == 7


def test_a_step_without_arithmetic_is_judged_by_its_least_likely_token() -> None:
    f = disagreement_features(np.array([-0.1, -1.0]), np.array([True, True]), np.array([False, False]))
    assert f["lrm.disagree"] == 0.0 and f["lrm.first_disagree"] == 1.0 and f["lrm.disagree_arith"] == 0.0
    assert f["lrm.risk"] == pytest.approx(1 - math.exp(-1.0))


def test_an_empty_step_carries_no_evidence() -> None:
    f = disagreement_features(np.zeros(0), np.zeros(0, bool), np.zeros(0, bool))
    assert f["lrm.risk"] == 0.0 and f["lrm.n_tokens"] == 0.0


@pytest.mark.parametrize("key,value,score", [("lrm.risk", 0.7, 0.7), ("lrm.disagree_arith", 0.25, 0.25),
                                             ("lrm.logprob_min", math.log(0.2), 0.8),
                                             ("lrm.first_disagree", 0.25, 0.75)])
def test_verify_maps_each_feature_into_a_routing_score(key: str, value: float, score: float) -> None:
    policy = make_policy("verify", key=key)
    seen: list[str] = []

    def check(step: str) -> dict[str, float]:
        seen.append(step)
        return {key: value}

    view = StepView("post", 1, "3 + 4 = 8", 7, {}, check=check)
    assert policy.score(view) == pytest.approx(score)
    assert seen == ["3 + 4 = 8"]
    assert policy.score(StepView("post", 1, "3 + 4 = 8", 7, {})) == 0.0  # no LRM to check with: keep the step


def test_verify_reads_the_lrms_least_likely_token_by_default() -> None:
    view = StepView("post", 1, "3 + 4 = 8", 7, {}, check=lambda step: {"lrm.logprob_min": math.log(0.01),
                                                                        "lrm.risk": 0.2})
    assert make_policy("verify").score(view) == pytest.approx(0.99)


def test_verify_refuses_an_unknown_feature() -> None:
    from rankguide_edge.errors import ConfigError

    with pytest.raises(ConfigError, match="lrm.risk"):
        make_policy("verify", key="text.entropy_max")
