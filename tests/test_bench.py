"""`bench run` / `bench report` on the tiny model: interleaving, resume, sweeps, the matched-rate random control,
specdec, judge metering, profiles, pareto.png and bad input."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rankguide_edge.bench.run import (
    RANDOM_FALLBACK_P,
    Method,
    completed_runs,
    expand_sweeps,
    matched_label,
    method_list,
    parse_methods,
)
from rankguide_edge.cli.main import main
from rankguide_edge.engine.model import Model
from rankguide_edge.engine.prompts import encode_prompt
from rankguide_edge.errors import ConfigError
from rankguide_edge.tasks.answers import prompt_for
from rankguide_edge.tasks.datasets import Problem


def test_parse_methods() -> None:
    ms = parse_methods("srm,lrm,rankguide@early:0.4,random,random@pre:0.3,specdec,specdec:6,judge,keywords:0.5")
    assert ms[0] == Method("srm", "srm", "post", None)
    assert ms[1] == Method("lrm", "lrm", "pre", None)
    assert ms[2] == Method("rankguide@early:0.4", "rankguide", "early", 0.4)
    assert ms[3] == Method("random", "random", "post", None, rate=None)
    assert ms[4] == Method("random@pre:0.3", "random", "pre", None, rate=0.3)
    assert ms[5].policy == "specdec" and ms[5].k == 4 and ms[6].k == 6
    assert (ms[7].policy, ms[8].threshold) == ("judge", 0.5)
    first = parse_methods("rankguide^1,entropy@pre:0.6^2,rankguide^1+v*0.5,srm^1")
    assert [(m.policy, m.decide, m.threshold, m.lrm_first, m.steer) for m in first] == [
        ("rankguide", "post", None, 1, None), ("entropy", "pre", 0.6, 2, None), ("rankguide", "post", None, 1, "v"),
        ("srm", "post", None, 1, None)]
    window = parse_methods("verify:0.99^1#1,random:0.3^1#2+v")
    assert [(m.policy, m.threshold, m.rate, m.lrm_first, m.route_steps, m.steer) for m in window] == [
        ("verify", 0.99, None, 1, 1, None), ("random", None, 0.3, 1, 2, "v")]
    assert expand_sweeps(["verify:0.9,0.99^1#1"]) == ["verify:0.9^1#1", "verify:0.99^1#1"]
    for bad in ("", "nope", "rankguide@later", "entropy:x", "entropy:1.5", "srm,srm", "specdec:0", "specdec:x",
                "specdec@post", "random:2", "rankguide^0", "rankguide^x", "lrm^1", "specdec^1", "srm^1#1",
                "verify:0.9^1#0", "verify:0.9^1#x"):
        with pytest.raises(ConfigError):
            parse_methods(bad)


def test_methods_name_a_declared_router() -> None:
    ms = parse_methods("rankguide~learned^1,rankguide~learned@early:0.4,rankguide")
    assert [(m.policy, m.router, m.decide, m.threshold, m.lrm_first) for m in ms] == [
        ("rankguide", "learned", "post", None, 1), ("rankguide", "learned", "early", 0.4, 0),
        ("rankguide", None, "post", None, 0)]
    for bad in ("entropy~learned", "rankguide~", "rankguide~a b", "rankguide~x~y"):
        with pytest.raises(ConfigError):
            parse_methods(bad)
    from rankguide_edge.bench.run import check_routers

    check_routers(ms, {"learned": "f.json"})
    with pytest.raises(ConfigError, match="--router-file NAME=FILE"):
        check_routers(ms, {})
    with pytest.raises(ConfigError, match="no method uses"):
        check_routers(ms, {"learned": "f.json", "other": "g.json"})


def test_sweeps_expand_to_methods() -> None:
    assert expand_sweeps(["entropy:0.3,0.5^1", "rankguide~learned:0.2,0.6^1+v*0.5"]) == [
        "entropy:0.3^1", "entropy:0.5^1", "rankguide~learned:0.2^1+v*0.5", "rankguide~learned:0.6^1+v*0.5"]
    assert expand_sweeps(["rankguide:0.2,0.4, 0.6", "entropy@early:0.5"]) == [
        "rankguide:0.2", "rankguide:0.4", "rankguide:0.6", "entropy@early:0.5"]
    ms = method_list("srm,lrm,rankguide:0.4", ["rankguide:0.2,0.4", "judge:0.3", "specdec:2,8"])
    assert [m.label for m in ms] == ["srm", "lrm", "rankguide:0.4", "rankguide:0.2", "judge:0.3", "specdec:2",
                                     "specdec:8"]
    assert [m.threshold for m in ms if m.policy == "rankguide"] == [0.4, 0.2]
    for bad in (["rankguide"], ["rankguide:"], ["srm:0.1,0.2"], ["lrm@pre:0.5"], ["entropy:0.2,9"]):
        with pytest.raises(ConfigError):
            method_list("srm", bad)


def _data(tmp_path, n=3):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)})
                            + "\n" for i in range(n)))
    return path


def test_the_matched_control_follows_the_first_plain_rankguide_method() -> None:
    assert matched_label(parse_methods("rankguide^1,rankguide+v*0.25,rankguide:0.4,rankguide,random")) == \
        "rankguide:0.4"
    assert matched_label(parse_methods("srm,rankguide^1,random")) == "rankguide^1"  # no plain one: the first
    assert matched_label(parse_methods("srm,lrm,random")) is None


def test_completed_runs_counts_only_the_selected_runs(tmp_path) -> None:
    """A resumed run's progress starts at the runs the folder already holds for these problems and methods."""
    assert completed_runs(tmp_path, [], parse_methods("srm")) == 0  # no results file yet
    held = [("p0", "srm"), ("p0", "lrm"), ("p1", "srm"), ("p9", "srm"), ("p1", "judge")]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps({"id": i, "method": m}) + "\n" for i, m in held)
                                            + '{"id": "p1", "meth')  # a torn last line does not count
    problems = [Problem(id=f"p{i}", question="q", gold="1", kind="generic", source="x") for i in range(3)]
    assert completed_runs(tmp_path, problems, parse_methods("srm,lrm,rankguide")) == 3
    assert completed_runs(tmp_path, problems[:1], parse_methods("lrm")) == 1


def test_bench_run_resume_and_report(tiny_gguf, tmp_path) -> None:
    out = tmp_path / "run"
    args = ["bench", "run", "--data", str(_data(tmp_path)), "--methods", "srm,lrm,random", "--srm", str(tiny_gguf),
            "--lrm", str(tiny_gguf), "--max-tokens", "16", "--n-ctx", "256", "--threads", "1", "--out", str(out)]
    res = CliRunner().invoke(main, args + ["--limit", "2"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 6
    # interleaved: the method order rotates per problem
    assert [r["method"] for r in recs[:3]] == ["srm", "lrm", "random"]
    assert [r["method"] for r in recs[3:]] == ["lrm", "random", "srm"]
    by = {(r["id"], r["method"]): r for r in recs}
    assert by[("p0", "srm")]["lrm_steps"] == 0 and by[("p0", "lrm")]["lrm_steps"] == by[("p0", "lrm")]["n_steps"]
    # no rankguide method to match: random routes with the fallback probability
    assert by[("p0", "random")]["random_p"] == RANDOM_FALLBACK_P
    assert set(by[("p0", "lrm")]["counts"]) >= {"srm_decode", "srm_prefill", "lrm_decode", "lrm_prefill", "lrm_calls"}
    with open(out / "results.jsonl", "a") as fh:
        fh.write('{"id": "p2", "meth')  # torn line from a killed run
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 9 and len({(r["id"], r["method"]) for r in recs}) == 9
    # run.json: the compared settings once, one session per run, and every record names its session
    meta = json.loads((out / "run.json").read_text())
    assert meta["settings"]["max_tokens"] == 16 and meta["settings"]["lrm"] == meta["settings"]["srm"]
    assert [r["session"] for r in recs[:6]] == [meta["sessions"][0]["id"]] * 6 and len(meta["sessions"]) == 2
    assert {r["session"] for r in recs[6:]} == {meta["sessions"][1]["id"]}
    res = CliRunner().invoke(main, [*args[:-4], "--max-tokens", "24", *args[-4:]])  # other budget: refused
    assert res.exit_code == 2 and "was run with max_tokens = 16, not 24" in res.output
    assert len((out / "results.jsonl").read_text().splitlines()) == 9
    res = CliRunner().invoke(main, ["bench", "report", str(out), "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["problems"] == 3 and set(summary["methods"]) == {"srm", "lrm", "random"}
    assert summary["methods"]["lrm"]["speedup_vs_lrm"] == pytest.approx(1.0)
    assert summary["methods"]["srm"]["lrm_step_share"] == 0.0 and summary["methods"]["lrm"]["lrm_step_share"] == 1.0
    assert (out / "summary.md").read_text().startswith("3 problems")
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweeps_specdec_judge_and_matched_random(tiny_gguf, tmp_path) -> None:
    out = tmp_path / "run"
    res = CliRunner().invoke(main, [
        "bench", "run", "--data", str(_data(tmp_path, 4)), "--methods", "srm,lrm,rankguide,random,judge,specdec:3",
        "--sweep", "rankguide:0.0,1.0", "--srm", str(tiny_gguf), "--lrm", str(tiny_gguf), "--max-tokens", "24",
        "--n-ctx", "384", "--threads", "1", "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    labels = ["srm", "lrm", "rankguide", "random", "judge", "specdec:3", "rankguide:0.0", "rankguide:1.0"]
    assert len(recs) == 4 * len(labels) and {r["method"] for r in recs} == set(labels)
    by = {(r["id"], r["method"]): r for r in recs}
    # the random control routes at rankguide's LRM step share over the problems before this one (fixed before
    # the problem starts, so the methods' rotation does not change it)
    lrm_steps = steps = 0
    for i in range(4):
        rnd, rg = by[(f"p{i}", "random")], by[(f"p{i}", "rankguide")]
        assert rnd["random_p"] == pytest.approx(lrm_steps / steps if steps else RANDOM_FALLBACK_P, abs=1e-6)
        assert rnd["random_matched_to"] == "rankguide"
        lrm_steps, steps = lrm_steps + rg["lrm_steps"], steps + rg["n_steps"]
    with Model(tiny_gguf) as m:
        prompt_lens = [len(encode_prompt(m, m.chat_prompt([("user", prompt_for(f"What is {i} + 1?", "generic"))])))
                       for i in range(4)]
    for i in range(4):
        # every method meets a problem with a cold LRM cache, whatever ran before it in the rotation: the LRM
        # alone prefills its whole prompt once (and its own steps never again)
        assert by[(f"p{i}", "lrm")]["usage"]["lrm_prefill_tokens"] == prompt_lens[i]
        # threshold 0 routes every step, threshold 1 (almost) none; specdec writes the LRM's own text
        assert by[(f"p{i}", "rankguide:0.0")]["lrm_steps"] == by[(f"p{i}", "rankguide:0.0")]["n_steps"]
        spec, lrm = by[(f"p{i}", "specdec:3")], by[(f"p{i}", "lrm")]
        assert spec["text"] == lrm["text"] and spec["k"] == 3
        assert spec["usage"]["srm_discarded_tokens"] == 0  # same model drafting: every draft accepted
        assert spec["counts"]["lrm_decode"] == spec["usage"]["lrm_verify_batches"]
        judge = by[(f"p{i}", "judge")]
        assert judge["usage"]["judge_calls"] >= 1 and "judge" in judge["timing"]
        assert judge["counts"]["lrm_calls"] == judge["usage"]["lrm_calls"] + judge["usage"]["judge_calls"]
        assert judge["counts"]["lrm_prefill"] >= judge["usage"]["judge_prefill_tokens"] > 0
    profile = tmp_path / "slow.json"
    profile.write_text(json.dumps({"srm": {"decode_tok_s": 10, "prefill_tok_s": 100, "call_s": 0},
                                   "lrm": {"decode_tok_s": 5, "prefill_tok_s": 50, "call_s": 1.0}}))
    rep = tmp_path / "report"
    res = CliRunner().invoke(main, ["bench", "report", str(out), "--profile", str(profile), "--out", str(rep),
                                    "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["profile"] == "slow" and "profile_check" in summary and "fit" in summary
    assert not (out / "summary.json").exists() and (rep / "summary.json").exists()
    assert (rep / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (rep / "share.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for label in labels:
        row = summary["methods"][label]
        assert set(row["latency_s"]) == {"measured", "laptop+gpu-server", "gpu-large-ratio", "rtx4090", "slow"}
        assert {"lrm_token_share", "lrm_calls", "mean_steps", "mean_tokens", "pgr", "speedup_vs_lrm",
                "speedup_vs_lrm_by_profile"} <= set(row)
    spec_row = summary["methods"]["specdec:3"]
    assert spec_row["accuracy"] == summary["methods"]["lrm"]["accuracy"] and spec_row["k"] == 3
    assert summary["methods"]["srm"]["latency_s"]["slow"] > 0
    assert "latency s (slow)" in (rep / "summary.md").read_text()


def test_bench_bad_input(tiny_gguf, smollm2, tmp_path) -> None:
    res = CliRunner().invoke(main, ["bench", "run", "--data", str(_data(tmp_path)), "--methods", "nope",
                                    "--srm", str(tiny_gguf), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "unknown policy" in res.stderr
    res = CliRunner().invoke(main, ["bench", "run", "--data", str(_data(tmp_path)), "--methods", "srm",
                                    "--sweep", "rankguide", "--srm", str(tiny_gguf), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "bad sweep" in res.stderr
    res = CliRunner().invoke(main, ["bench", "run", "--data", str(_data(tmp_path)), "--methods", "specdec",
                                    "--srm", str(tiny_gguf), "--lrm", "http://127.0.0.1:9/v1",
                                    "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "local LRM" in res.stderr
    res = CliRunner().invoke(main, ["bench", "run", "--data", str(_data(tmp_path)), "--methods", "specdec",
                                    "--srm", str(tiny_gguf), "--lrm", str(smollm2), "--n-ctx", "256",
                                    "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "one vocabulary" in res.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(main, ["bench", "report", str(empty)])
    assert res.exit_code == 2 and "bench run" in res.stderr
    res = CliRunner().invoke(main, ["bench", "report", str(empty), "--profile", "nope"])
    assert res.exit_code == 2


def test_bench_and_trace_read_generic_files_with_named_fields(tiny_gguf, tmp_path) -> None:
    data = tmp_path / "custom.jsonl"
    data.write_text("".join(json.dumps({"key": f"k{i}", "prompt_text": f"What is {i} + 2?", "label": str(i + 2)})
                            + "\n" for i in range(2)))
    common = ["--data", str(data), "--srm", str(tiny_gguf), "--n-ctx", "256", "--max-tokens", "8"]
    res = CliRunner().invoke(main, ["bench", "run", *common, "--methods", "srm", "--out", str(tmp_path / "a")])
    assert res.exit_code == 2 and "question" in res.stderr  # the default names are not there
    fields = ["--question-field", "prompt_text", "--answer-field", "label", "--id-field", "key"]
    res = CliRunner().invoke(main, ["bench", "run", *common, *fields, "--kind", "generic", "--methods", "srm",
                                    "--out", str(tmp_path / "b")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in (tmp_path / "b" / "results.jsonl").read_text().splitlines()]
    assert [(r["id"], r["gold"]) for r in recs] == [("k0", "2"), ("k1", "3")]
    res = CliRunner().invoke(main, ["trace", *common, *fields, "--out", str(tmp_path / "t.jsonl")],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    traced = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [t["id"] for t in traced] == ["k0", "k1"] and traced[0]["question"] == "What is 0 + 2?"


def test_run_json_lets_an_lrm_and_new_vectors_join_but_not_change(tmp_path) -> None:
    from rankguide_edge.bench.settings import start_session

    base = {"srm": "s.gguf (1 bytes)", "lrm": None, "max_tokens": 768, "seed": 0, "router": "",
            "steering": {"seal": "aa"}}
    start_session(tmp_path, base, threads=2)  # SRM-only methods first: no LRM named yet
    start_session(tmp_path, {**base, "lrm": "l.gguf (2 bytes)", "steering": {"rank": "bb"}}, threads=2)
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["settings"]["lrm"] == "l.gguf (2 bytes)"
    assert meta["settings"]["steering"] == {"seal": "aa", "rank": "bb"}
    assert len(meta["sessions"]) == 2
    start_session(tmp_path, base, threads=1)  # SRM-only again: fine
    with pytest.raises(ConfigError, match="--steer seal"):
        start_session(tmp_path, {**base, "steering": {"seal": "cc"}}, threads=2)
    with pytest.raises(ConfigError, match="lrm = 'l.gguf"):
        start_session(tmp_path, {**base, "lrm": "other.gguf (3 bytes)"}, threads=2)
    assert len(json.loads((tmp_path / "run.json").read_text())["sessions"]) == 3  # refused runs add none


def test_run_json_names_the_shipped_router_by_its_content(tmp_path) -> None:
    """A run on the package's default router records that router's digest, so resuming after an upgrade that
    ships another router is refused instead of mixing records of two routers."""
    import hashlib

    from rankguide_edge.bench.settings import router_identity, start_session
    from rankguide_edge.collab.router import shipped_router_text

    shipped = router_identity(None)
    assert shipped == router_identity("") == hashlib.sha256(shipped_router_text().encode()).hexdigest()[:16]
    mine = tmp_path / "mine.json"
    mine.write_text(shipped_router_text())  # a copy of the shipped router under --router is the same router
    assert router_identity(mine) == shipped
    mine.write_text(shipped_router_text().replace("0.", "0.0", 1))
    assert router_identity(mine) != shipped
    base = {"srm": "s.gguf (1 bytes)", "lrm": None, "max_tokens": 768, "seed": 0, "router": shipped}
    start_session(tmp_path, base, threads=2)
    with pytest.raises(ConfigError, match="was run with router = '"):
        start_session(tmp_path, {**base, "router": "0123456789abcdef"}, threads=2)


def test_a_problem_that_fails_gets_an_error_record_and_the_run_goes_on(tiny_gguf, tmp_path) -> None:
    data = tmp_path / "d.jsonl"
    rows = [{"id": "ok0", "question": "What is 1 + 1?", "answer": "2"},
            {"id": "long", "question": "Add these: " + " + ".join(["1"] * 400) + "?", "answer": "400"},
            {"id": "ok1", "question": "What is 2 + 1?", "answer": "3"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    args = ["bench", "run", "--data", str(data), "--methods", "srm,lrm", "--srm", str(tiny_gguf), "--lrm",
            str(tiny_gguf), "--max-tokens", "16", "--n-ctx", "256", "--threads", "1", "--out", str(out)]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    recs = {(r["id"], r["method"]): r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert len(recs) == 6 and recs[("long", "srm")]["error"].startswith("ContextOverflowError")
    assert "error" not in recs[("ok1", "srm")] and "error" not in recs[("ok1", "lrm")]
    res = CliRunner().invoke(main, args, catch_exceptions=False)  # a rerun does not retry it
    assert res.exit_code == 0 and len((out / "results.jsonl").read_text().splitlines()) == 6
    res = CliRunner().invoke(main, ["bench", "report", str(out), "--json", "--no-plot"], catch_exceptions=False)
    summary = json.loads(res.output)
    assert summary["problems"] == 2 and summary["errors"] == {"srm": ["long"], "lrm": ["long"]}


def test_srm_with_a_plan_uses_the_lrm_once(tiny_gguf, tmp_path) -> None:
    """`srm^1`: the LRM writes the plan, the SRM the rest; the run loads an LRM for it even with no policy."""
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["bench", "run", "--data", str(_data(tmp_path, 2)), "--methods", "srm,srm^1",
                                    "--srm", str(tiny_gguf), "--lrm", str(tiny_gguf), "--max-tokens", "24",
                                    "--n-ctx", "256", "--threads", "1", "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    recs = {(r["id"], r["method"]): r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    for i in range(2):
        plan = recs[(f"p{i}", "srm^1")]
        assert plan["lrm_first"] == 1 and plan["lrm_steps"] == 1 and plan["steps"][0]["source"] == "lrm"
        assert recs[(f"p{i}", "srm")]["lrm_steps"] == 0


def test_verify_and_a_learned_router_per_method(tiny_gguf, tmp_path) -> None:
    """`rankguide~NAME` takes its thresholds from the declared router file (post 0: every step goes to the LRM),
    and `verify` meters the LRM's checks of SRM drafts as LRM calls and prefill in `counts`."""
    router = tmp_path / "learned.json"
    router.write_text(json.dumps({"format": "rankguide-edge/router", "version": 1, "policy": "rankguide",
                                  "thresholds": {"post": 0.0}}))
    out = tmp_path / "run"
    base = ["bench", "run", "--data", str(_data(tmp_path, 2)), "--srm", str(tiny_gguf), "--lrm", str(tiny_gguf),
            "--max-tokens", "24", "--n-ctx", "256", "--threads", "1", "--out", str(out)]
    res = CliRunner().invoke(main, [*base, "--methods", "rankguide~learned^1,verify:1.0,verify:0.0",
                                    "--router-file", f"learned={router}"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    recs = {(r["id"], r["method"]): r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    for i in range(2):
        learned = recs[(f"p{i}", "rankguide~learned^1")]
        assert learned["threshold"] == 0.0 and learned["router"]["file"] == str(router.resolve())
        assert all(s["source"] == "lrm" for s in learned["steps"])
        keep, rewrite = recs[(f"p{i}", "verify:1.0")], recs[(f"p{i}", "verify:0.0")]
        checks = keep["usage"]["lrm_checks"]
        assert checks == sum(s["srm_tokens"] > 0 for s in keep["steps"]) > 0
        assert keep["lrm_steps"] == 0 and keep["counts"]["lrm_calls"] == checks
        assert keep["counts"]["lrm_prefill"] == keep["usage"]["lrm_check_prefill_tokens"] > 0
        assert rewrite["lrm_steps"] == rewrite["n_steps"]
    meta = json.loads((out / "run.json").read_text())
    assert list(meta["settings"]["routers"]) == ["learned"]
    res = CliRunner().invoke(main, [*base, "--methods", "srm", "--router-file", f"learned={router}"])
    assert res.exit_code == 2 and "no method uses" in res.output
