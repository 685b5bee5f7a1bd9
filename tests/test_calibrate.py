"""Router configs, threshold calibration (traces and bench results) and trace replay by teacher forcing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from rankguide_edge.cli.main import main
from rankguide_edge.collab.reasoner import Reasoner, ReasonerConfig
from rankguide_edge.collab.router import Logistic, Router, load_router, parse_router, save_router
from rankguide_edge.collab.routing import DEFAULT_THRESHOLD, StepRouter
from rankguide_edge.engine.model import Model
from rankguide_edge.errors import ConfigError, InvalidInputError
from rankguide_edge.fitting.calibrate import (
    CalibrateConfig,
    calibrate_bench,
    calibrate_traces,
    fit_logistic,
    upper_quantile_threshold,
)
from rankguide_edge.fitting.replay import early_checkpoints, replay_traces


def test_upper_quantile_routes_the_target_share() -> None:
    scores = np.random.default_rng(0).random(1000)
    for share in (0.1, 0.25, 0.5):
        t = upper_quantile_threshold(scores, share)
        assert abs(np.mean(scores >= t) - share) <= 0.002
    assert upper_quantile_threshold(scores, 0.0) == 1.0
    assert upper_quantile_threshold([0.2, 0.9], 1.0) == 0.2
    with pytest.raises(InvalidInputError):
        upper_quantile_threshold([], 0.5)
    # ties: binary scores with 10 % ones; 0 would route every step, 1 routes 10 %, closer to 25 %
    assert upper_quantile_threshold([1.0] * 10 + [0.0] * 90, 0.25) == 1.0
    assert upper_quantile_threshold([1.0] * 10 + [0.0] * 90, 0.8) == 0.0  # here routing all is closer
    with pytest.raises(InvalidInputError, match="does not rank"):
        upper_quantile_threshold([0.0] * 50, 0.25)


def test_router_round_trip_and_bad_files(tmp_path) -> None:
    default = load_router()
    # the shipped router: learned from intervention labels, decides after a step, the LRM writes the plan
    assert default.policy == "rankguide" and set(default.thresholds) == {"post"}
    assert default.logistic is not None and "step.index" in default.logistic.features
    assert not any(f.startswith(("rank.", "tucker.")) for f in default.logistic.features)  # BENCHMARKS: no weight
    assert default.lrm_first == 1
    r = parse_router({"format": "rankguide-edge/router", "version": 1, "policy": "rankguide",
                      "thresholds": {"post": 0.3, "early": 0.5, "pre": 0.4},
                      "logistic": {"features": ["a", "b"], "mean": [0, 1], "scale": [1, 2], "weights": [2, -1],
                                   "bias": 0.5}, "note": "kept", "lrm_first": 2})
    assert r.thresholds["early"] == 0.5 and r.lrm_first == 2 and "lrm_first" not in r.meta
    # sigmoid(0.5 + 2*(1-0)/1 - 1*(3-1)/2) = sigmoid(1.5); a missing feature counts as its mean
    assert r.logistic.score({"a": 1.0, "b": 3.0}) == pytest.approx(1 / (1 + np.exp(-1.5)))
    assert r.logistic.score({"a": 1.0}) == pytest.approx(1 / (1 + np.exp(-2.5)))
    path = tmp_path / "r.json"
    save_router(r, path)
    assert not list(tmp_path.glob("*.tmp*"))
    back = load_router(path)
    assert back.to_dict() == r.to_dict() and back.meta["note"] == "kept"
    bad = [{"format": "x"}, {"format": "rankguide-edge/router", "version": 2, "thresholds": {"post": 0.1}},
           {"format": "rankguide-edge/router", "version": 1, "thresholds": {"mid": 0.1}},
           {"format": "rankguide-edge/router", "version": 1, "thresholds": {"post": 1.5}},
           {"format": "rankguide-edge/router", "version": 1, "thresholds": {"post": 0.5}, "lrm_first": -1},
           {"format": "rankguide-edge/router", "version": 1, "thresholds": {"post": 0.5}, "lrm_first": 1.5},
           {"format": "rankguide-edge/router", "version": 1, "thresholds": {"post": 0.5}, "lrm_first": True},
           {"format": "rankguide-edge/router", "version": 1, "thresholds": {"post": 0.5},
            "logistic": {"features": ["a"], "mean": [0], "scale": [0], "weights": [1], "bias": 0}}]
    for data in bad:
        with pytest.raises(ConfigError, match="calibrate"):
            parse_router(data)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_router(tmp_path / "broken.json")
    with pytest.raises(ConfigError, match="does not exist"):
        load_router(tmp_path / "missing.json")


def _records(n: int = 60, seed: int = 0) -> list[dict]:
    """Synthetic traces: wrong traces have higher entropy steps."""
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        wrong = i % 3 == 0
        steps = []
        for j in range(5):
            ent = rng.normal(2.5 if wrong else 1.5, 0.5)
            steps.append({"text": f"step {j}\n\n", "n_tokens": 10,
                          "signals": {"fail.route": float(rng.random()), "text.entropy_max": float(ent),
                                      "text.entropy_mean": float(ent / 2), "text.n_tokens": 10.0}})
        recs.append({"id": f"p{i}", "question": "q", "correct": not wrong, "steps": steps, "layers": [0, 1]})
    return recs


def test_calibrate_traces_quantiles_and_logistic() -> None:
    recs = _records()
    r = calibrate_traces(recs, CalibrateConfig(target_lrm_share=0.25, early=False))
    post = np.array([s["signals"]["fail.route"] for rec in recs for s in rec["steps"]])
    assert abs(np.mean(post >= r.thresholds["post"]) - 0.25) < 0.01
    assert r.thresholds["early"] == r.thresholds["post"] and "early_note" in r.meta
    assert r.meta["fitted_on"]["problems"] == 60
    lg = calibrate_traces(recs, CalibrateConfig(target_lrm_share=0.25, fit="logistic", early=False))
    w = dict(zip(lg.logistic.features, lg.logistic.weights, strict=True))
    assert w["text.entropy_max"] > 0.5  # entropy separates wrong traces: it gets the weight
    scores = np.array([lg.logistic.score(s["signals"]) for rec in recs for s in rec["steps"]])
    assert abs(np.mean(scores >= lg.thresholds["post"]) - 0.25) < 0.01
    with pytest.raises(ConfigError, match="exactly one"):
        CalibrateConfig()
    with pytest.raises(InvalidInputError, match="judge"):
        calibrate_traces(recs, CalibrateConfig(target_lrm_share=0.2, policy="judge", early=False))
    with pytest.raises(InvalidInputError, match="no usable"):
        calibrate_traces([{"id": "x", "error": "overflow", "steps": []}], CalibrateConfig(target_lrm_share=0.2))


def test_fit_logistic_recovers_a_separating_direction() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 2))
    y = (x[:, 0] + 0.1 * rng.normal(size=400) > 0).astype(float)
    x[::7, 1] = np.nan  # missing values are filled with the mean
    lg = fit_logistic(x, y, ("signal", "noise"), l2=0.1)
    assert lg.weights[0] > 3 * abs(lg.weights[1])
    assert lg.score({"signal": 2.0}) > 0.9 > 0.1 > lg.score({"signal": -2.0})


def test_calibrate_bench_picks_by_latency_or_share() -> None:
    res = [{"method": "lrm", "policy": "lrm", "seconds": 10.0, "correct": True, "n_steps": 5, "lrm_steps": 5}]
    for thr, secs, acc, share in ((0.3, 9.0, 0.9, 0.6), (0.5, 7.0, 0.8, 0.3), (0.7, 5.0, 0.6, 0.1)):
        for i in range(10):
            res.append({"method": f"rankguide:{thr}", "policy": "rankguide", "decide": "post", "threshold": thr,
                        "seconds": secs, "correct": i < acc * 10, "n_steps": 10, "lrm_steps": int(share * 10)})
    r = calibrate_bench(res, CalibrateConfig(max_latency_ratio=0.75))
    assert r.thresholds["post"] == 0.5  # 0.3 is too slow (0.9x); 0.5 beats 0.7 on accuracy
    assert r.thresholds["early"] == r.thresholds["pre"] == 0.5
    r = calibrate_bench(res, CalibrateConfig(target_lrm_share=0.1))
    assert r.thresholds["post"] == 0.7
    with pytest.raises(InvalidInputError, match="--sweep"):
        calibrate_bench(res, CalibrateConfig(target_lrm_share=0.1, policy="entropy"))


def test_calibrate_bench_prices_latency_under_a_profile_and_skips_steered_runs(tmp_path) -> None:
    """Wall seconds and a hardware profile disagree on which thresholds are fast enough; steered records
    (which would tie 0.7 with 0.5 on accuracy) do not count."""
    profile = tmp_path / "remote.json"  # fully specified: no rate comes from the run's fit
    profile.write_text(json.dumps({"srm": {"decode_tok_s": 100, "prefill_tok_s": 1000, "call_s": 0},
                                   "lrm": {"decode_tok_s": 10, "prefill_tok_s": 1000, "call_s": 0}}))

    def rec(method: str, thr: float | None, wall: float, ok: bool, srm: int, lrm: int, **kw) -> dict:
        return {"method": method, "policy": method.split(":")[0].split("+")[0], "decide": "post",
                "threshold": thr, "seconds": wall, "correct": ok, "n_steps": 10, "lrm_steps": 1,
                "timing": {"srm": wall / 2, "lrm": wall / 2},
                "counts": {"srm_decode": srm, "lrm_decode": lrm}, **kw}

    res = [rec("lrm", None, 10.0, True, 0, 100)]
    # (threshold, wall s, accuracy, SRM tokens, LRM tokens): priced 8.5 s, 4.5 s and 2.5 s against lrm's 10 s
    for thr, wall, acc, srm, lrm in ((0.3, 9.0, 0.9, 50, 80), (0.5, 9.5, 0.8, 150, 30), (0.7, 5.0, 0.6, 200, 5)):
        res += [rec(f"rankguide:{thr}", thr, wall, i < acc * 10, srm, lrm) for i in range(10)]
    res += [rec("rankguide:0.7+v", 0.7, 5.0, True, 200, 5, steer={"name": "v", "scale": 1.0}) for _ in range(10)]
    by_wall = calibrate_bench(res, CalibrateConfig(max_latency_ratio=0.75))
    assert by_wall.thresholds["post"] == 0.7 and by_wall.meta["profile"] == "wall seconds"
    priced = calibrate_bench(res, CalibrateConfig(max_latency_ratio=0.75, profile=str(profile)))
    assert priced.thresholds["post"] == 0.5 and priced.meta["profile"] == str(profile)
    cands = {c["threshold"]: c for c in priced.meta["candidates"]}
    assert cands[0.5]["latency_ratio"] == pytest.approx(0.45) and cands[0.7]["n"] == 10
    with pytest.raises(ConfigError):
        calibrate_bench(res, CalibrateConfig(max_latency_ratio=0.75, profile="no-such-profile"))


def test_calibrate_bench_keeps_the_logistic_weights_its_thresholds_apply_to(tmp_path) -> None:
    lg = Logistic(features=("fail.route",), mean=(0.5,), scale=(0.1,), weights=(2.0,), bias=-1.0)
    path = tmp_path / "logit.json"
    save_router(Router(policy="rankguide", thresholds={"post": 0.8, "early": 0.8, "pre": 0.8}, logistic=lg), path)
    used = {"file": str(path), "logistic": True}
    res = [{"method": "lrm", "policy": "lrm", "seconds": 10.0, "correct": True, "n_steps": 5, "lrm_steps": 5}]
    for thr in (0.7, 0.9):
        res += [{"method": f"rankguide:{thr}", "policy": "rankguide", "decide": "post", "threshold": thr,
                 "seconds": 5.0, "correct": True, "n_steps": 10, "lrm_steps": int(thr * 3), "router": used}
                for _ in range(4)]
    r = calibrate_bench(res, CalibrateConfig(target_lrm_share=0.2))
    assert r.logistic == lg and r.thresholds["post"] == 0.7
    plain = [dict(x, router={"file": "default", "logistic": False}) for x in res]
    assert calibrate_bench(plain, CalibrateConfig(target_lrm_share=0.2)).logistic is None
    mixed = res[:5] + plain[5:]
    with pytest.raises(InvalidInputError, match="different routers"):
        calibrate_bench(mixed, CalibrateConfig(target_lrm_share=0.2))
    path.unlink()
    with pytest.raises(InvalidInputError, match="gone"):
        calibrate_bench(res, CalibrateConfig(target_lrm_share=0.2))


def test_calibrate_bench_picks_out_one_routers_runs_in_the_planned_regime(tmp_path) -> None:
    """A folder holding the default router's runs and a learned router's planned runs (rankguide~learned:T^1):
    --router-file and --lrm-first select the learned ones, and the written router carries their weights."""
    lg = Logistic(features=("text.entropy_max",), mean=(1.0,), scale=(0.5,), weights=(1.5,), bias=-2.0)
    learned = tmp_path / "learned.json"
    save_router(Router(policy="rankguide", thresholds={"post": 0.5}, logistic=lg, lrm_first=1), learned)
    res = [{"method": "lrm", "policy": "lrm", "seconds": 10.0, "correct": True, "n_steps": 5, "lrm_steps": 5}]
    for thr in (0.2, 0.6):
        res += [{"method": f"rankguide~learned:{thr}^1", "policy": "rankguide", "decide": "post", "threshold": thr,
                 "seconds": 5.0, "correct": True, "n_steps": 10, "lrm_steps": int(10 * (1 - thr)), "lrm_first": 1,
                 "router": {"file": str(learned), "logistic": True}} for _ in range(3)]
        res += [{"method": f"rankguide:{thr}", "policy": "rankguide", "decide": "post", "threshold": thr,
                 "seconds": 5.0, "correct": True, "n_steps": 10, "lrm_steps": 1,
                 "router": {"file": "default", "logistic": False}} for _ in range(3)]
    cfg = CalibrateConfig(target_lrm_share=0.4, lrm_first=1, router_file=str(learned))
    r = calibrate_bench(res, cfg)
    assert r.logistic == lg and r.lrm_first == 1 and r.thresholds["post"] == 0.6
    assert calibrate_bench(res, CalibrateConfig(target_lrm_share=0.4)).logistic is None  # the plain runs
    with pytest.raises(InvalidInputError, match="--lrm-first 2"):
        calibrate_bench(res, CalibrateConfig(target_lrm_share=0.4, lrm_first=2, router_file=str(learned)))


def test_replay_reproduces_the_traced_signals(smollm2, tmp_path) -> None:
    """Teacher-forcing a greedy trace's text gives back its steps' signals (same model, same layers)."""
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "a", "question": "Tom has 3 apples and buys 4 more. How many?",
                                "answer": "#### 7"}) + "\n")
    out = tmp_path / "t.jsonl"
    res = CliRunner().invoke(main, ["trace", "--data", str(data), "--kind", "gsm8k", "--out", str(out), "--srm",
                                    str(smollm2), "--max-tokens", "60", "--n-ctx", "512", "--json"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rec = json.loads(out.read_text())
    with Model(smollm2) as m:
        [(_, steps)] = list(replay_traces(m, [rec], layers=rec["layers"], n_ctx=512))
    assert len(steps) == len(rec["steps"]) >= 2
    for got, want in zip(steps, rec["steps"], strict=True):
        assert got.n_tokens == want["n_tokens"] == len(want["token_ids"])
        assert got.checkpoints == early_checkpoints(got.n_tokens, 8, 4, want["ended_by"])
        assert len(got.partial) == len(got.checkpoints) == len(got.partial_text)
        # the draft's text so far at each checkpoint (keywords at "early" read it): text carried over from the
        # previous step's delimiter token, then its first n tokens (tests/test_replay.py checks it against live)
        assert all(t for t in got.partial_text)
        # batched and one-token llama.cpp evaluation differ by float noise (~1e-3), nothing more
        for key in ("text.entropy_mean", "text.entropy_max", "rank.eff_norm.L29.win", "fail.route"):
            assert got.signals[key] == pytest.approx(want["signals"][key], rel=0.01, abs=0.01), key


def test_reasoner_takes_thresholds_from_the_router(tiny_gguf, tmp_path) -> None:
    path = tmp_path / "router.json"
    save_router(parse_router({"format": "rankguide-edge/router", "version": 1, "policy": "rankguide",
                              "thresholds": {"post": 0.2, "early": 0.7, "pre": 0.4}}), path)
    with Model(tiny_gguf) as m:
        for decide, want in (("post", 0.2), ("early", 0.7), ("pre", 0.4)):
            with Reasoner(m, None, ReasonerConfig(router=str(path), decide=decide, max_tokens=8)) as r:
                assert r.threshold == want
        with Reasoner(m, None, ReasonerConfig(router=str(path), threshold=0.9)) as r:
            assert r.threshold == 0.9  # an explicit threshold wins
            r.reconfigure(decide="early")
            assert r.threshold == 0.9
        with Reasoner(m, None, ReasonerConfig(router=str(path))) as r:
            r.reconfigure(decide="pre")
            assert r.threshold == 0.4 and r.solve("hi").threshold == 0.4
        with Reasoner(m, None, ReasonerConfig(router=str(path), policy="entropy")) as r:
            assert r.threshold == DEFAULT_THRESHOLD  # the router calibrated another policy


def plan_steps(cfg: ReasonerConfig) -> int:
    return StepRouter(cfg).plan


def test_the_plan_length_comes_from_the_router_unless_given(tmp_path) -> None:
    path = tmp_path / "router.json"
    save_router(parse_router({"format": "rankguide-edge/router", "version": 1, "policy": "rankguide",
                              "thresholds": {"post": 0.2}, "lrm_first": 2}), path)
    assert plan_steps(ReasonerConfig(router=str(path))) == 2
    assert plan_steps(ReasonerConfig(router=str(path), lrm_first=0)) == 0  # an explicit value wins
    assert plan_steps(ReasonerConfig(router=str(path), policy="entropy")) == 0  # the router fitted rankguide
    for pure in ("srm", "lrm"):
        assert plan_steps(ReasonerConfig(policy=pure)) == 0  # the baselines stay pure unless told
    assert plan_steps(ReasonerConfig(policy="srm", lrm_first=1)) == 1
    assert plan_steps(ReasonerConfig()) == 1  # the shipped router
    # a router file without the key (written before it existed) plans nothing
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"format": "rankguide-edge/router", "version": 1, "thresholds": {"post": 0.3}}))
    assert plan_steps(ReasonerConfig(router=str(old))) == 0


def test_calibrate_cli(tmp_path) -> None:
    traces = tmp_path / "t.jsonl"
    traces.write_text("".join(json.dumps(r) + "\n" for r in _records(30)))
    out = tmp_path / "router.json"
    res = CliRunner().invoke(main, ["calibrate", str(traces), "--target-lrm-share", "0.3", "--no-early",
                                    "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert load_router(out).to_dict() == json.loads(res.output) and load_router(out).lrm_first == 0
    res = CliRunner().invoke(main, ["calibrate", str(traces), "--target-lrm-share", "0.3", "--no-early",
                                    "--lrm-first", "1", "--out", str(out)])
    assert res.exit_code == 0 and "the LRM writes the first 1 step" in res.output
    assert load_router(out).lrm_first == 1
    res = CliRunner().invoke(main, ["calibrate", str(traces), "--out", str(out)])
    assert res.exit_code == 2 and "exactly one" in res.output
    res = CliRunner().invoke(main, ["calibrate", str(traces), "--max-latency-ratio", "0.5", "--out", str(out)])
    assert res.exit_code == 2 and "bench dir" in res.output
    res = CliRunner().invoke(main, ["calibrate", str(traces), "--target-lrm-share", "0.3",
                                    "--profile", "gpu-large-ratio", "--no-early", "--out", str(out)])
    assert res.exit_code == 2 and "bench dir" in res.output


def test_holdout_reports_auroc_on_traces_kept_out_of_the_fit() -> None:
    recs = _records(80)
    r = calibrate_traces(recs, CalibrateConfig(target_lrm_share=0.25, fit="logistic", early=False, holdout=0.25))
    ho = r.meta["holdout"]
    assert ho["n"] == 20 and r.meta["fitted_on"]["problems"] == 60
    assert ho["auroc.router.mean"] > 0.9  # entropy separates the synthetic traces; the fit finds it
    assert ho["auroc.fail.route.mean"] < ho["auroc.router.mean"]  # fail.route is noise here
    with pytest.raises(InvalidInputError, match="holdout"):
        calibrate_traces(recs[:3], CalibrateConfig(target_lrm_share=0.25, early=False, holdout=0.5))


def test_calibrate_bench_compares_latency_on_the_problems_a_threshold_ran() -> None:
    """A sweep on fewer problems than the LRM alone is priced against the LRM on those problems only."""
    res = [{"id": f"p{i}", "method": "lrm", "policy": "lrm", "seconds": s, "correct": True, "n_steps": 5,
            "lrm_steps": 5} for i, s in enumerate((10.0, 10.0, 20.0, 20.0))]
    res += [{"id": f"p{i}", "method": "rankguide:0.5", "policy": "rankguide", "decide": "post", "threshold": 0.5,
             "seconds": 8.0, "correct": True, "n_steps": 10, "lrm_steps": 2} for i in range(2)]
    r = calibrate_bench(res, CalibrateConfig(max_latency_ratio=0.9))
    (cand,) = r.meta["candidates"]
    assert cand["latency_ratio"] == pytest.approx(0.8)  # 8 s against the LRM's 10 s on p0 and p1, not 15 s


@pytest.mark.parametrize("line, message", [
    ("[1]", "a record must be a JSON object"),
    ('{"id": "a", "steps": 3}', "'steps' must be a list"),
    ('{"id": "a", "steps": [{"index": 0, "signals": {"fail.route": "x"}}]}',
     "step 0: signal 'fail.route' is not a number"),
])
def test_calibrate_refuses_bad_trace_lines_by_number(tmp_path, line: str, message: str) -> None:
    traces = tmp_path / "t.jsonl"
    traces.write_text("".join(json.dumps(r) + "\n" for r in _records(3)) + line + "\n")
    res = CliRunner().invoke(main, ["calibrate", str(traces), "--target-lrm-share", "0.3", "--no-early",
                                    "--out", str(tmp_path / "r.json")])
    assert res.exit_code == 2 and f"t.jsonl:4 is not a trace record ({message}" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "r.json").exists()


def test_calibrate_from_a_bench_folder_refuses_trace_options_and_the_bare_results_file(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    rec = {"id": "p0", "method": "rankguide:0.5", "policy": "rankguide", "decide": "post", "threshold": 0.5,
           "correct": True, "seconds": 1.0, "n_steps": 2, "lrm_steps": 1, "usage": {}, "timing": {}, "steps": [],
           "counts": {}}
    (run / "results.jsonl").write_text(json.dumps(rec) + "\n")
    out = str(tmp_path / "r.json")
    res = CliRunner().invoke(main, ["calibrate", str(run), "--target-lrm-share", "0.3", "--holdout", "0.2",
                                    "--out", out])
    assert res.exit_code == 2 and "--holdout apply to traces, not to a bench dir" in res.output
    res = CliRunner().invoke(main, ["calibrate", str(run / "results.jsonl"), "--target-lrm-share", "0.3",
                                    "--no-early", "--out", out])
    assert res.exit_code == 2 and "holds `bench run` results, not traces: pass its folder" in res.output
    (run / "results.jsonl").write_text(json.dumps({"id": "p0", "method": "srm"}) + "\n")
    res = CliRunner().invoke(main, ["calibrate", str(run), "--target-lrm-share", "0.3", "--out", out])
    assert res.exit_code == 2 and "results.jsonl:1 is not a bench record (field 'correct'" in res.output
