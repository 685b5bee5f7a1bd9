"""Applying control-vector files: the reasoner, per-request reconfiguration, solve/trace/bench flags."""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np
import pytest
from click.testing import CliRunner

from rankguide_edge.bench.run import parse_methods
from rankguide_edge.cli.main import main
from rankguide_edge.collab.reasoner import Reasoner, ReasonerConfig
from rankguide_edge.config import RuntimeConfig
from rankguide_edge.engine.model import Model
from rankguide_edge.errors import ConfigError, ControlVectorError
from rankguide_edge.steering import ControlVector, save_control_vector

RT = RuntimeConfig(n_ctx=512, n_threads=1)


@pytest.fixture(scope="module")
def vec_file(tmp_path_factory, tiny_gguf):
    with Model(tiny_gguf) as m:
        n_embd = m.n_embd
    path = tmp_path_factory.mktemp("vec") / "v.gguf"
    rng = np.random.default_rng(0)
    save_control_vector(ControlVector("tiny", {1: rng.normal(size=n_embd).astype(np.float32) * 4}), path)
    return path


def _solve(r: Reasoner) -> str:
    return r.solve("Count to five.").answer_text


def test_reasoner_steering_scale_zero_and_clearing_are_identity(tiny_gguf, vec_file) -> None:
    with Model(tiny_gguf) as m:
        cfg = dict(policy="srm", max_tokens=24, max_step_tokens=8)
        with Reasoner(m, None, ReasonerConfig(**cfg), runtime=RT) as r:
            base = _solve(r)
            assert r.steering is None
            r.reconfigure(steer=str(vec_file), steer_scale=3.0)
            assert r.steering == {"file": str(vec_file), "layers": [1], "scale": 3.0, "where": "all"}
            res = r.solve("Count to five.")
            assert res.steering == r.steering and res.answer_text != base
            r.reconfigure(steer_scale=0.0)
            assert _solve(r) == base  # scale 0: bit-identical greedy text
            r.reconfigure(steer="")
            assert r.steering is None and _solve(r) == base
            r.reconfigure(steer=str(vec_file), steer_scale=3.0, steer_where="boundary")
            assert r.steering["where"] == "boundary"
            with pytest.raises(ConfigError):
                r.reconfigure(steer_where="middle")
            with pytest.raises(ConfigError, match="unknown"):
                r.reconfigure(steer_strength=2.0)
        with pytest.raises(ControlVectorError, match="does not exist"):
            Reasoner(m, None, ReasonerConfig(steer="/nonexistent.gguf", **cfg), runtime=RT)


def test_naming_the_same_file_again_rereads_it(tiny_gguf, tmp_path) -> None:
    """chat's /steer after a new `steer extract` to the same path takes the new vector, not the cached one."""
    path = tmp_path / "v.gguf"
    cfg = ReasonerConfig(policy="srm", max_tokens=24, max_step_tokens=8)
    with Model(tiny_gguf) as m:
        vecs = [np.random.default_rng(s).normal(size=m.n_embd).astype(np.float32) * 4 for s in (1, 2)]
        answers = []
        for v in vecs:  # what a fresh reasoner answers with each vector
            save_control_vector(ControlVector("tiny", {1: v}), path)
            with Reasoner(m, None, dataclasses.replace(cfg, steer=str(path)), runtime=RT) as r:
                answers.append(_solve(r))
        assert answers[0] != answers[1]
        save_control_vector(ControlVector("tiny", {1: vecs[0]}), path)
        with Reasoner(m, None, cfg, runtime=RT) as r:
            r.reconfigure(steer=str(path))
            assert _solve(r) == answers[0]
            save_control_vector(ControlVector("tiny", {1: vecs[1]}), path)
            os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # a distinct mtime on coarse clocks
            r.reconfigure(steer=str(path))
            assert _solve(r) == answers[1]


def test_a_vector_for_another_model_is_refused(smollm2, vec_file) -> None:
    with Model(smollm2) as m, pytest.raises(ControlVectorError):
        Reasoner(m, None, ReasonerConfig(policy="srm", steer=str(vec_file)), runtime=RT)


def test_solve_and_trace_take_steering_flags(tiny_gguf, vec_file, tmp_path) -> None:
    common = ["--srm", str(tiny_gguf), "--policy", "srm", "--max-tokens", "16", "--n-ctx", "256", "--json"]
    plain = CliRunner().invoke(main, ["solve", "Say hi.", *common])
    steered = CliRunner().invoke(main, ["solve", "Say hi.", *common, "--steer", str(vec_file), "--steer-scale", "3"])
    zero = CliRunner().invoke(main, ["solve", "Say hi.", *common, "--steer", str(vec_file), "--steer-scale", "0"])
    for res in (plain, steered, zero):
        assert res.exit_code == 0, res.output
    p, s, z = (json.loads(r.output) for r in (plain, steered, zero))
    assert p["steering"] is None and s["steering"]["layers"] == [1]
    assert s["text"] != p["text"] and z["text"] == p["text"]
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "q", "question": "What is 1 plus 1?", "answer": "2"}) + "\n")
    out = tmp_path / "t.jsonl"
    res = CliRunner().invoke(main, ["trace", "--data", str(data), "--out", str(out), "--srm", str(tiny_gguf),
                                    "--max-tokens", "16", "--n-ctx", "256", "--steer", str(vec_file),
                                    "--steer-where", "boundary", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["steer"] == {"file": str(vec_file), "scale": 1.0, "where": "boundary"}


def test_bench_methods_carry_steering(tiny_gguf, vec_file, tmp_path) -> None:
    ms = parse_methods("srm,srm+v*2,rankguide@early:0.4+v,srm+v*0.5/boundary,srm+v/all")
    assert [(m.steer, m.steer_scale, m.steer_where) for m in ms] == [
        (None, 1.0, None), ("v", 2.0, None), ("v", 1.0, None), ("v", 0.5, "boundary"), ("v", 1.0, "all")]
    assert ms[2].decide == "early" and ms[2].threshold == 0.4
    for bad in ("srm+", "srm+v*x", "specdec+v", "srm+v*100", "srm+v*1/middle", "srm+v/", "srm+/boundary"):
        with pytest.raises(ConfigError):
            parse_methods(bad)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i} plus 1?", "answer": str(i + 1)})
                            + "\n" for i in range(2)))
    out = tmp_path / "run"
    args = ["bench", "run", "--data", str(data), "--methods", "srm,srm+v*3,srm+v*0,srm+v*3/boundary",
            "--srm", str(tiny_gguf), "--max-tokens", "16", "--n-ctx", "256", "--threads", "1", "--out", str(out)]
    res = CliRunner().invoke(main, [*args, "--steer", f"v={vec_file}"])
    assert res.exit_code == 0, res.output
    recs = {(r["id"], r["method"]): r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    for q in ("q0", "q1"):
        assert recs[(q, "srm+v*0")]["text"] == recs[(q, "srm")]["text"]
        assert recs[(q, "srm+v*3")]["steer"]["scale"] == 3.0 and "steer" not in recs[(q, "srm")]
        # the method's own /boundary beats the run's --steer-where (all by default)
        assert recs[(q, "srm+v*3")]["steer"]["where"] == "all"
        assert recs[(q, "srm+v*3/boundary")]["steer"]["where"] == "boundary"
    assert any(recs[(q, "srm+v*3")]["text"] != recs[(q, "srm")]["text"] for q in ("q0", "q1"))  # it did steer
    res = CliRunner().invoke(main, [*args[:-2], "--out", str(tmp_path / "run2")])
    assert res.exit_code == 2 and "--steer NAME=FILE" in res.output
    # a declared vector that no method uses is an error, not a silently unsteered run
    res = CliRunner().invoke(main, [*args[:-2], "--out", str(tmp_path / "run3"), "--steer", f"v={vec_file}",
                                    "--steer", f"w={vec_file}"])
    assert res.exit_code == 2 and "vector(s) w declared but no method uses them" in res.output
    assert not (tmp_path / "run3" / "results.jsonl").exists()
