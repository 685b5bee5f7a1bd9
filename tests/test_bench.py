"""`bench run` / `bench report` on the tiny model: interleaving, resume, summary, bad input."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rankguide_edge.cli.main import main
from rankguide_edge.errors import ConfigError
from rankguide_edge.evaluation.bench import Method, parse_methods


def test_parse_methods() -> None:
    ms = parse_methods("srm,lrm,rankguide@early:0.4,random")
    assert ms[0] == Method("srm", "srm", "post", 0.46)
    assert ms[1] == Method("lrm", "lrm", "pre", 0.46)
    assert ms[2] == Method("rankguide@early:0.4", "rankguide", "early", 0.4)
    for bad in ("", "nope", "rankguide@later", "entropy:x", "entropy:1.5", "srm,srm"):
        with pytest.raises(ConfigError):
            parse_methods(bad)


def _data(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)})
                            + "\n" for i in range(3)))
    return path


def test_bench_run_resume_and_report(tiny_gguf, tmp_path) -> None:
    out = tmp_path / "run"
    args = ["bench", "run", "--data", str(_data(tmp_path)), "--methods", "srm,lrm,random", "--srm", str(tiny_gguf),
            "--lrm", str(tiny_gguf), "--max-tokens", "16", "--n-ctx", "256", "--out", str(out)]
    res = CliRunner().invoke(main, args + ["--limit", "2"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 6
    # interleaved: the method order rotates per problem
    assert [r["method"] for r in recs[:3]] == ["srm", "lrm", "random"]
    assert [r["method"] for r in recs[3:]] == ["lrm", "random", "srm"]
    by = {(r["id"], r["method"]): r for r in recs}
    assert by[("p0", "srm")]["lrm_steps"] == 0 and by[("p0", "lrm")]["lrm_steps"] == by[("p0", "lrm")]["n_steps"]
    with open(out / "results.jsonl", "a") as fh:
        fh.write('{"id": "p2", "meth')  # torn line from a killed run
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 9 and len({(r["id"], r["method"]) for r in recs}) == 9
    res = CliRunner().invoke(main, ["bench", "report", str(out), "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["problems"] == 3 and set(summary["methods"]) == {"srm", "lrm", "random"}
    assert summary["methods"]["lrm"]["speedup_vs_lrm"] == pytest.approx(1.0)
    assert summary["methods"]["srm"]["lrm_step_share"] == 0.0 and summary["methods"]["lrm"]["lrm_step_share"] == 1.0
    assert (out / "summary.md").read_text().startswith("3 problems")


def test_bench_bad_input(tiny_gguf, tmp_path) -> None:
    res = CliRunner().invoke(main, ["bench", "run", "--data", str(_data(tmp_path)), "--methods", "nope",
                                    "--srm", str(tiny_gguf), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "unknown policy" in res.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(main, ["bench", "report", str(empty)])
    assert res.exit_code == 2 and "bench run" in res.stderr
