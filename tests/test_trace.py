"""Drafting steps and the `trace` command on real GGUF models (the generated tiny one and SmolLM2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from rankguide_edge.cli.main import main
from rankguide_edge.collab.stepping import draft_step
from rankguide_edge.config import RuntimeConfig, SamplingConfig
from rankguide_edge.engine.context import generate_text
from rankguide_edge.engine.layers import parse_layer_spec
from rankguide_edge.engine.model import Model
from rankguide_edge.fitting.trace import done_ids
from rankguide_edge.signals.step import SignalConfig


def test_auto_layers_are_four_evenly_spaced_ending_at_the_last() -> None:
    assert parse_layer_spec("auto", 24) == [5, 11, 17, 23]
    assert parse_layer_spec("auto", 3) == [0, 1, 2]
    assert parse_layer_spec("last", 28) == [27]


def test_steps_concatenate_to_the_plain_generation(smollm2) -> None:
    """Cutting generation into steps changes nothing: same tokens, same text, one hidden row per token."""
    with Model(smollm2) as m:
        prompt = m.tokenize(m.chat_prompt("Compute 17 * 23 step by step, with a blank line between steps."),
                            add_special=True)
        cfg = RuntimeConfig(n_ctx=1024)
        with m.context(cfg) as ctx:
            ref_text, ref_events = generate_text(ctx, prompt, SamplingConfig(max_tokens=120))
        with m.context(cfg, tap_layers=[3, 29]) as ctx:
            ctx.eval(prompt, hidden=False)
            seg = SignalConfig(max_step_tokens=40).segmenter()
            steps, used = [], 0
            while used < 120:
                st = draft_step(ctx, seg, SamplingConfig(), 120 - used)
                steps.append(st)
                used += st.n_tokens
                if st.ended_by in ("eog", "budget"):
                    break
    assert "".join(s.text for s in steps) == ref_text
    assert [t for s in steps for t in s.token_ids] == [e.id for e in ref_events if not e.eog]
    assert len(steps) >= 2
    for s in steps[:-1]:
        assert s.ended_by in ("delimiter", "max_step_tokens")
        assert s.n_tokens <= 40
    for s in steps:
        for il in (3, 29):
            assert s.hidden[il].shape == (s.n_tokens, 576) and s.hidden[il].dtype == np.float32
        assert s.stats.entropy.shape == (s.n_tokens,)


def _dataset(tmp_path, n: int = 4, bad_line: bool = False):
    path = tmp_path / "mini.jsonl"
    lines = [json.dumps({"id": f"q{i}", "question": f"What is {i} plus {i}?", "answer": str(2 * i)})
             for i in range(n)]
    if bad_line:
        lines.insert(2, "{not json")
    path.write_text("\n".join(lines) + "\n")
    return path


def _trace(*args: str):
    return CliRunner().invoke(main, ["trace", *args], catch_exceptions=False)


def test_trace_writes_records_and_resumes(tiny_gguf, tmp_path) -> None:
    data, out = _dataset(tmp_path), tmp_path / "traces.jsonl"
    common = ["--data", str(data), "--out", str(out), "--srm", str(tiny_gguf), "--max-tokens", "24",
              "--max-step-tokens", "8", "--n-ctx", "256", "--json"]
    res = _trace(*common, "--limit", "2")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["traced"] == 2
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in recs] == ["q0", "q1"]
    for r in recs:
        assert set(r) >= {"id", "question", "gold", "prediction", "correct", "finished", "n_tokens", "steps"}
        assert r["n_tokens"] == 24 and not r["finished"]  # the tiny model never ends on its own
        assert r["layers"] == [0, 1, 2]
        starts = [s["token_start"] for s in r["steps"]]
        ends = [s["token_end"] for s in r["steps"]]
        assert starts[0] == 0 and starts[1:] == ends[:-1] and ends[-1] == 24
        assert all(s["n_tokens"] <= 8 for s in r["steps"])
        sig = r["steps"][-1]["signals"]
        assert "fail.route" in sig and 0.0 <= sig["fail.route"] <= 1.0
        assert any(k.startswith("rank.eff_norm.L2") for k in sig)
    # a torn last line (killed mid-write) is cut off and that problem is traced again
    with open(out, "a") as fh:
        fh.write('{"id": "q2", "kind": "gen')
    assert done_ids(out) == {"q0", "q1"}
    res = _trace(*common)
    assert json.loads(res.output)["traced"] == 2
    assert json.loads(res.output)["skipped_existing"] == 2
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == ["q0", "q1", "q2", "q3"]


def test_trace_bad_input(tiny_gguf, tmp_path) -> None:
    data, out = _dataset(tmp_path, bad_line=True), tmp_path / "t.jsonl"
    common = ["--data", str(data), "--out", str(out), "--srm", str(tiny_gguf), "--max-tokens", "8",
              "--n-ctx", "256"]
    res = _trace(*common)
    assert res.exit_code == 2 and "mini.jsonl:3" in res.stderr and "--on-error skip" in res.stderr
    assert not out.exists()
    res = _trace(*common, "--on-error", "skip", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["skipped_malformed"] == 1
    res = _trace(*common, "--on-error", "skip", "--layers", "9")
    assert res.exit_code == 2 and "out of range" in res.stderr
    res = _trace("--data", str(tmp_path / "missing.jsonl"), "--out", str(out), "--srm", str(tiny_gguf))
    assert res.exit_code == 2 and "missing.jsonl" in res.stderr


@pytest.mark.parametrize("window", [2, 64])
def test_trace_signals_never_nan_for_short_steps(tiny_gguf, tmp_path, window: int) -> None:
    data, out = _dataset(tmp_path, n=1), tmp_path / f"w{window}.jsonl"
    res = _trace("--data", str(data), "--out", str(out), "--srm", str(tiny_gguf), "--max-tokens", "9",
                 "--max-step-tokens", "1", "--window", str(window), "--n-ctx", "256")
    assert res.exit_code == 0, res.output
    rec = json.loads(out.read_text())
    assert rec["n_steps"] == 9
    for s in rec["steps"]:
        assert all(v is not None for v in s["signals"].values()), s["signals"]
