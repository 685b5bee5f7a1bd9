"""Routing policies: scores in [0, 1], registry, determinism, and each policy's rule."""

from __future__ import annotations

import pytest

from rankguide_edge.collab.policies import (
    DECISION_POINTS,
    Policy,
    StepView,
    available_policies,
    make_policy,
    register_policy,
)
from rankguide_edge.errors import ConfigError


def _view(text: str = "", signals: dict | None = None, decide: str = "post", judge=None) -> StepView:
    return StepView(decide, 0, text, len(text.split()), signals or {}, judge=judge)


def test_registry_lists_the_built_in_policies() -> None:
    assert set(available_policies()) >= {"rankguide", "entropy", "keywords", "judge", "random", "srm", "lrm"}
    for name in available_policies():
        p = make_policy(name)
        assert isinstance(p, Policy)
        assert set(p.points) <= set(DECISION_POINTS)
    with pytest.raises(ConfigError, match="unknown policy"):
        make_policy("nope")
    with pytest.raises(ConfigError, match="bad options"):
        make_policy("entropy", bogus=1)


def test_a_user_policy_is_a_peer_of_ours() -> None:
    class Half:
        name, points = "half", ("post",)

        def score(self, view: StepView) -> float:
            return 0.5

        def reset(self) -> None:
            pass

    register_policy("half", Half)
    assert make_policy("half").score(_view("x")) == 0.5


def test_constant_policies() -> None:
    assert make_policy("srm").score(_view("x")) == 0.0
    assert make_policy("lrm").score(_view("x")) == 1.0


def test_rankguide_uses_the_routing_score_clipped() -> None:
    p = make_policy("rankguide")
    assert p.score(_view(signals={"fail.route": 0.73})) == pytest.approx(0.73)
    assert p.score(_view(signals={"fail.route": 1.7})) == 1.0
    assert p.score(_view(signals={})) == 0.0


def test_entropy_is_monotone_and_bounded() -> None:
    p = make_policy("entropy")
    vals = [p.score(_view(signals={"text.entropy_max": h})) for h in (0.0, 1.0, 2.0, 3.0, 8.0)]
    assert vals == sorted(vals) and 0.0 <= vals[0] < 0.5 < vals[-1] <= 1.0
    assert p.score(_view(signals={})) == 0.0


def test_keywords_look_at_the_start_of_the_step_with_word_boundaries() -> None:
    p = make_policy("keywords")
    assert p.score(_view("Wait, let me recompute 3 * 4.")) == 1.0
    assert p.score(_view("Hmm. Actually that is wrong.")) == 1.0
    assert p.score(_view("The waiter brings 3 plates.")) == 0.0
    assert p.score(_view("We add 3 and 4 to get 7, and then we wait for the bus.")) == 0.0


def test_judge_maps_ratings_and_survives_failures() -> None:
    p = make_policy("judge")
    assert p.score(_view("step", judge=lambda s: 9)) == 0.0
    assert p.score(_view("step", judge=lambda s: 0)) == 1.0
    assert p.score(_view("step", judge=lambda s: 3)) == pytest.approx(6 / 9)
    assert p.score(_view("step", judge=lambda s: None)) == 0.0
    assert p.score(_view("step", judge=None)) == 0.0


def test_random_is_seeded_and_has_the_asked_rate() -> None:
    a = make_policy("random", p=0.3, seed=4)
    b = make_policy("random", p=0.3, seed=4)
    xs = [a.score(_view("s")) for _ in range(2000)]
    assert xs == [b.score(_view("s")) for _ in range(2000)]
    assert set(xs) == {0.0, 1.0} and abs(sum(xs) / len(xs) - 0.3) < 0.04
    a.reset()
    assert [a.score(_view("s")) for _ in range(50)] == xs[:50]
    with pytest.raises(ConfigError):
        make_policy("random", p=1.5)


def test_random_draws_per_problem_whatever_the_order_of_solves() -> None:
    """Each solve (reset) draws from a stream keyed by the problem: not the same step pattern on every problem
    (the control would then always route the same step positions), and the same pattern for a problem
    whether it is solved first or after others (a resumed benchmark)."""
    p = make_policy("random", p=0.3, seed=0)

    def pattern(problem: str) -> list[float]:
        p.reset()
        return [p.score(StepView("post", i, "s", 1, {}, problem=problem)) for i in range(40)]

    first = {q: pattern(q) for q in ("q1", "q2", "q3")}
    assert len({tuple(v) for v in first.values()}) == 3
    assert {q: pattern(q) for q in ("q3", "q1", "q2")} == first


def test_rankguide_with_a_logistic_router_scores_no_evidence_as_zero() -> None:
    """At "pre" after an LRM step there are no signals; a logistic score of nothing would be sigmoid(bias),
    which can exceed the threshold and route every later step."""
    from rankguide_edge.collab.router import Logistic

    lg = Logistic(features=("fail.route",), mean=(0.5,), scale=(0.1,), weights=(1.0,), bias=3.0)
    p = make_policy("rankguide", logistic=lg)
    assert p.score(_view(signals={})) == 0.0
    assert p.score(_view(signals={"fail.route": 0.5})) > 0.9


def test_a_router_fitted_after_the_step_refuses_to_decide_before_it() -> None:
    """A learned router written for ``post`` (the step's own text signals) has no threshold before the step:
    falling back to the post threshold would route on weights fitted to something else."""
    from rankguide_edge.collab.reasoner import ReasonerConfig
    from rankguide_edge.collab.router import Logistic, Router
    from rankguide_edge.collab.routing import StepRouter

    lg = Logistic(features=("text.entropy_max",), mean=(1.5,), scale=(0.6,), weights=(1.0,), bias=-2.0)
    learned = Router(thresholds={"post": 0.13}, logistic=lg, lrm_first=1, source="learned.json")
    assert StepRouter(ReasonerConfig(decide="post"), learned).policy.logistic is lg
    with pytest.raises(ConfigError, match=r"learned.json was fitted to decide at post only: use --decide post"):
        StepRouter(ReasonerConfig(decide="pre"), learned)
    # an explicit threshold is the user's own choice; a hand-set router (no weights) keeps its fallback
    assert StepRouter(ReasonerConfig(decide="pre", threshold=0.5), learned).policy.logistic is lg
    assert StepRouter(ReasonerConfig(decide="pre"), Router(thresholds={"post": 0.4})).threshold == 0.4
