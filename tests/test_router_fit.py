"""Learning a router from label records (pure numpy: synthetic label files whose answer is known)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rankguide_edge.collab.router import load_router, parse_router
from rankguide_edge.errors import InvalidInputError
from rankguide_edge.fitting.label import FORMAT, encode_vector
from rankguide_edge.fitting.router_fit import (
    FitConfig,
    fit_markdown,
    fit_router,
    load_steps,
    lrm_token_share,
    problem_folds,
    share_threshold,
)
from rankguide_edge.stats import average_precision

HEADER = {"format": FORMAT, "version": 1, "settings": {"lrm_first": 1}, "selection": "synthetic"}


def _records(n_problems: int = 120, seed: int = 0, level: float = 1.2, noise: float = 0.3) -> list[dict]:
    """Problems with a 20-token LRM plan and 4 SRM steps; a step "helps when routed" exactly when its entropy
    (plus ``noise``) exceeds ``level``, while its rank signal is pure noise."""
    rng = np.random.default_rng(seed)
    recs = []
    for p in range(n_problems):
        steps = [{"index": 0, "source": "lrm", "text": "plan\n\n", "n_tokens": 20, "token_start": 0}]
        for i in range(1, 5):
            ent = float(rng.normal())
            helps = ent + noise * rng.normal() > level
            steps.append({
                "index": i, "source": "srm", "text": "x" * 10, "n_tokens": 10, "token_start": 20 + 10 * (i - 1),
                "signals": {"text.entropy_max": ent, "rank.eff_norm.L23.win": float(rng.normal()),
                            "tucker.eff_norm.mode1": float(rng.normal()), "step.index": float(i),
                            "fail.route": float(rng.uniform())},
                "lrm": {"lrm.risk": float(rng.uniform()), "lrm.logprob_min": float(np.log(rng.uniform(0.01, 1)))},
                "pooled": encode_vector(rng.normal(size=16)),
                "cf": {"gain": 1 if helps else 0, "lrm_tokens": 12},
            })
        recs.append({"id": f"p{p}", "correct": False, "steps": steps})
    return recs


def test_held_out_validation_finds_the_informative_group() -> None:
    res = fit_router(HEADER, _records(), FitConfig(features=("text", "rank", "position"), n_boot=200))
    by = {a.name: a for a in res.ablations}
    assert by["text"].auroc > 0.9 and by["text"].auprc > 0.6
    assert abs(by["rank"].auroc - 0.5) < 0.15  # noise stays near a coin flip on problems it never saw
    lo, hi = by["text"].auroc_ci
    assert lo <= by["text"].auroc <= hi
    refs = {r.name: r for r in res.references}
    assert refs["text.entropy_max"].auroc > 0.9
    # one feature, positive weight in every fold: held-out scores rank the steps almost as the feature does
    assert by["text"].auroc == pytest.approx(refs["text.entropy_max"].auroc, abs=0.005)


def test_held_out_scores_of_all_folds_share_one_scale() -> None:
    """The held-out scores of all folds are ranked together, so no fold may be shifted against another (a
    per-fold intercept or standardisation did that: on real labels it took a one-feature model from its
    feature's AUROC of 0.69 to 0.56). A one-feature model's score is then a positive multiple of how far the
    feature lies from its mean over all steps, in every fold."""
    from rankguide_edge.fitting.router_fit import out_of_fold

    steps = load_steps(_records(60, seed=3, level=2.0, noise=1.0))
    cfg = FitConfig(features=("text",), n_boot=0)
    scores = out_of_fold(steps, ("text",), cfg, problem_folds(steps.problem, 5, 0))
    ent = np.array([s["text.entropy_max"] for s in steps.signals])
    assert np.isfinite(scores).all()
    assert np.array_equal(np.sign(scores), np.sign(ent - ent.mean()))


def test_the_router_file_round_trips_and_routes_high_entropy(tmp_path) -> None:
    from rankguide_edge.collab.router import save_router

    res = fit_router(HEADER, _records(), FitConfig(features=("text",), n_boot=0, target_lrm_share=0.5))
    path = tmp_path / "learned.json"
    save_router(res.router, path)
    router = load_router(path)
    assert router == parse_router(json.loads(path.read_text()), str(path))
    t = router.thresholds["post"]
    assert router.logistic.score({"text.entropy_max": 3.0}) >= t > router.logistic.score({"text.entropy_max": -3.0})


def test_folds_never_split_a_problem() -> None:
    steps = load_steps(_records(30))
    folds = problem_folds(steps.problem, 5, 0)
    for pid in np.unique(steps.problem):
        assert len(set(folds[steps.problem == pid])) == 1
    assert len(set(folds)) == 5


def test_the_threshold_keeps_the_lrm_share_at_the_target() -> None:
    steps = load_steps(_records(20))
    scores = np.array([s["text.entropy_max"] for s in steps.signals])
    # plan 20 tokens + 4 SRM steps of 10 per problem: the plan alone is 20/60 of the tokens
    assert lrm_token_share(steps, np.zeros(len(steps), bool)) == pytest.approx(1 / 3)
    t = share_threshold(scores, steps, 0.5)
    routed = scores >= t
    assert lrm_token_share(steps, routed) <= 0.5
    one_more = routed | (scores == scores[~routed].max())
    assert lrm_token_share(steps, one_more) > 0.5
    assert share_threshold(scores, steps, 0.2) == 1.0  # the plan alone exceeds it: route nothing more


def test_average_precision_against_its_definition() -> None:
    rng = np.random.default_rng(3)
    s, y = rng.normal(size=50), rng.uniform(size=50) < 0.3
    order = np.argsort(-s)
    precisions = [y[order][: k + 1].sum() / (k + 1) for k in range(50) if y[order][k]]
    assert average_precision(s, y) == pytest.approx(np.mean(precisions))
    assert average_precision(np.zeros(10), np.arange(10) < 3) == pytest.approx(np.mean([1 / 8, 2 / 9, 3 / 10]))
    assert average_precision(s, np.zeros(50, bool)) is None


def test_errors_name_the_fix() -> None:
    with pytest.raises(InvalidInputError, match="feature group"):
        FitConfig(features=("txt",))
    with pytest.raises(InvalidInputError, match="probe"):
        FitConfig(features=("text", "probe"))
    no_gain = _records(5)
    for r in no_gain:
        for st in r["steps"][1:]:
            st["cf"]["gain"] = 0
    with pytest.raises(InvalidInputError, match="positive"):
        fit_router(HEADER, no_gain, FitConfig())
    with pytest.raises(InvalidInputError, match="no SRM step"):
        load_steps([{"id": "a", "steps": [{"index": 0, "source": "lrm", "text": "all", "n_tokens": 3}]}])


def test_steps_of_right_answers_are_known_not_to_need_the_lrm() -> None:
    """Routing cannot fix an answer that is already right: such steps count as "does not help" without a
    counterfactual; a wrong answer's step without one stays unknown."""
    recs = _records(4)
    recs[0]["correct"] = True
    for st in recs[0]["steps"][1:] + recs[1]["steps"][1:]:
        st.pop("cf")
    steps = load_steps(recs)
    per = {p: steps.helps[steps.problem == p] for p in ("p0", "p1", "p2")}
    assert (per["p0"] == 0).all() and np.isnan(per["p1"]).all() and np.isfinite(per["p2"]).all()
    assert np.isnan(steps.gain[steps.problem == "p0"]).all()


def test_policies_the_router_is_benched_against_get_its_lrm_share() -> None:
    """The report names entropy, verify and random settings that give the LRM the fitted router's token share
    on the labelled traces; scored by the policies themselves (the registry's), not by a copy of their maths."""
    from rankguide_edge.fitting.router_fit import policy_scores

    res = fit_router(HEADER, _records(), FitConfig(features=("text",), n_boot=0, target_lrm_share=0.5))
    steps = load_steps(_records())
    share = res.share_at_threshold
    assert set(res.matched) == {"entropy", "verify", "random"}
    ent = policy_scores(steps, "entropy")
    # entropy is monotone in text.entropy_max, which the router learned: at the same share, the same steps
    learned = res.router.logistic
    assert learned is not None
    routed = np.array([learned.score(s) for s in steps.signals]) >= res.router.thresholds["post"]
    assert np.array_equal(ent >= res.matched["entropy"], routed)
    ver = policy_scores(steps, "verify")
    assert ((ver >= 0) & (ver <= 1)).all() and len(set(ver.round(6))) > len(ver) // 2  # scored from lrm.logprob_min
    assert share - 0.02 <= lrm_token_share(steps, ver >= res.matched["verify"]) <= share
    assert res.matched["random"] == pytest.approx(res.routed_share)
    assert f"`entropy:{res.matched['entropy']:.4g}^1`" in fit_markdown(res, HEADER)
