"""Steering-vector extraction: thought splitting and classes, the band filter, and the whole extraction on real
GGUF models (the generated tiny one and SmolLM2), checked against states tapped independently here."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from rankguide_edge.cli.main import main
from rankguide_edge.config import RuntimeConfig
from rankguide_edge.engine.model import Model
from rankguide_edge.errors import ConfigError, InvalidInputError, LayerIndexError
from rankguide_edge.steering._thoughts import (
    EXECUTION,
    REFLECTION,
    TRANSITION,
    Classifier,
    band_keep,
    failure_bands,
    split_thoughts,
)
from rankguide_edge.steering.cvec_io import load_control_vector
from rankguide_edge.steering.extract import (
    ExtractConfig,
    extract_steering_vector,
    read_traces,
    steering_layers,
)
from rankguide_edge.tasks.answers import prompt_for

STEPS = [
    "First we add 2 and 3 to get 5.\n\n",
    "Wait, let me check that again: 2 + 3 = 5.\n\n",
    "Then 5 times 4 is 20.\n\n",
    "Alternatively, we could multiply first and add later.\n\n",
    "So the total is 20.\n\n",
    "The answer is 20.",
]
KINDS = [EXECUTION, REFLECTION, EXECUTION, TRANSITION, EXECUTION]


def _records(n: int = 3, scores: list[list[float]] | None = None) -> list[dict]:
    recs = []
    for i in range(n):
        steps = []
        for j, text in enumerate(STEPS):
            step = {"index": j, "text": text}
            if scores is not None:
                step["signals"] = {"fail.route": scores[i][j], "rank.eff_norm.L1.win": 1.0 - scores[i][j]}
            steps.append(step)
        recs.append({"id": f"q{i}", "kind": "gsm8k", "question": f"What is (2 + 3) * {i + 4}?", "model": "tiny",
                     "layers": [0, 1, 2], "steps": steps, "text": "".join(STEPS)})
    return recs


def _write_traces(path, recs) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def _step_ends(rec: dict) -> list[int]:
    """Character offsets just past each step but the unterminated tail (each such step is one thought here)."""
    return list(np.cumsum([len(s["text"]) for s in rec["steps"][:-1]]))


def _independent_states(model: Model, rec: dict, layers: list[int],
                        ends: list[int] | None = None) -> dict[int, np.ndarray]:
    """The state at each thought's delimiter token, found by growing the detokenized text token by token
    until it reaches the thought's end; the prompt's last row is appended as row -1 of a second dict entry."""
    text = "".join(s["text"] for s in rec["steps"])
    ends = _step_ends(rec) if ends is None else ends
    prompt = model.tokenize(model.chat_prompt(prompt_for(rec["question"], rec["kind"])), add_special=True)
    gen = model.tokenize(text)
    with model.context(RuntimeConfig(n_ctx=512), tap_layers=layers) as ctx:
        before = ctx.eval(prompt)
        states = ctx.eval(gen, logits="all")
    rows = [next(k for k in range(len(gen)) if len(model.detokenize(gen[: k + 1])) >= e) for e in ends]
    out = {il: states[il][rows] for il in layers}
    out.update({-1 - il: before[il][-1] for il in layers})  # -1 - layer: the prompt's last row of that layer
    return out


# ------------------------------------------------------------------------------------------------ pure parts


def test_thoughts_are_split_at_blank_lines_and_classified() -> None:
    text = "".join(STEPS)
    thoughts = split_thoughts(text, "\n\n", Classifier())
    assert [t.kind for t in thoughts] == KINDS  # the unterminated tail is not a thought
    assert [t.text for t in thoughts] == STEPS[:-1]
    assert all(text[t.start:t.end] == t.text for t in thoughts)
    # blank-line runs join the next thought; a whitespace-only piece is never a thought
    assert [t.text for t in split_thoughts("a\n\n\n\nb\n\nc", "\n\n", Classifier())] == ["a\n\n", "\n\nb\n\n"]
    # transition wins over reflection; head_chars limits where keywords count
    assert Classifier()("Wait, alternatively we could divide.\n\n") == TRANSITION
    late = "We now multiply the two numbers, and we verify.\n\n"
    assert Classifier()(late) == REFLECTION and Classifier(head_chars=20)(late) == EXECUTION
    assert Classifier(reflection_words=("hmm",), transition_words=())("Wait.\n\n") == EXECUTION


def test_bands_and_keep_follow_the_quantiles() -> None:
    kinds = [EXECUTION, EXECUTION, EXECUTION, REFLECTION, TRANSITION, REFLECTION]
    scores = np.array([0.1, 0.5, 0.9, 0.2, 0.8, np.nan])
    bands = failure_bands(scores, 0.5)
    assert bands.keep_below == bands.keep_above == pytest.approx(0.5) and bands.n_scored == 5
    assert band_keep(kinds, scores, bands).tolist() == [True, True, False, False, True, False]
    wide = failure_bands(scores, 1.0)  # keeps every scored thought
    assert band_keep(kinds, scores, wide).tolist() == [True, True, True, True, True, False]
    narrow = failure_bands(scores, 0.25)
    assert band_keep(kinds, scores, narrow).tolist() == [True, False, False, False, True, False]


def test_steering_layers_and_config_checks() -> None:
    assert steering_layers("mid", 24) == [12] and steering_layers("mid", 3) == [1]
    assert steering_layers("10-12", 24) == [10, 11, 12] and steering_layers("-1", 24) == [23]
    with pytest.raises(LayerIndexError, match="layer 0 cannot be steered"):
        steering_layers("0,5", 24)
    with pytest.raises(LayerIndexError):
        steering_layers("24", 24)
    with pytest.raises(ConfigError, match="unknown ExtractConfig key"):
        ExtractConfig.from_mapping({"bands": 0.3})
    with pytest.raises(ConfigError, match="below its minimum"):
        ExtractConfig(band=0.0)
    with pytest.raises(ConfigError, match="is not one of"):
        ExtractConfig(filter="pca")


def test_read_traces_filters_and_tolerates_a_torn_last_line(tmp_path) -> None:
    path = tmp_path / "t.jsonl"
    recs = _records(3)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"id": "q9", "ste')
    assert [r["id"] for r in read_traces(path)] == ["q0", "q1", "q2"]
    assert [r["id"] for r in read_traces(path, ids=["q2", "q0"])] == ["q0", "q2"]
    assert [r["id"] for r in read_traces(path, offset=1, limit=1)] == ["q1"]
    path.write_text("{broken\n" + json.dumps(recs[0]) + "\n")
    with pytest.raises(InvalidInputError, match=":1 is not valid JSON"):
        read_traces(path)


# ----------------------------------------------------------------------------------------- on a real model


def test_filter_none_is_the_plain_mean_difference(tiny_gguf) -> None:
    recs = _records(3)
    with Model(tiny_gguf) as model:
        # logits_chunk 512: one decode per trace like the reference below (llama.cpp's float results depend
        # slightly on how a sequence is cut into batches: ~1e-3 here between chunks of 64 and 512)
        res = extract_steering_vector(model, recs, ExtractConfig(filter="none", layers="1,2", logits_chunk=512),
                                      model_name="tiny")
        chunked = extract_steering_vector(model, recs, ExtractConfig(filter="none", layers="1,2"))
        ref = [_independent_states(model, r, [1, 2]) for r in recs]
    rep = res.report
    assert rep.problems == 3 and rep.skipped == {}
    assert rep.thoughts == {"execution": {"total": 9, "kept": 9, "dropped": 0},
                            "reflection": {"total": 3, "kept": 3, "dropped": 0},
                            "transition": {"total": 3, "kept": 3, "dropped": 0}}
    assert res.vector.layers() == [1, 2] and res.vector.model_hint == "llama"
    kinds = np.array(KINDS * 3)
    for il in (1, 2):  # layer 2 is the last one: its rows need every row's logits, the other path
        states = np.concatenate([s[il] for s in ref])
        expected = states[kinds == EXECUTION].mean(0) - states[kinds != EXECUTION].mean(0)
        got = res.vector.directions[il]
        assert got.shape == (64,) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
        assert rep.norms[il] == pytest.approx(float(np.linalg.norm(expected)), rel=1e-4)
        # the median norm of the states the vector came from, recorded so scales mean the same across files
        assert rep.state_norms[il] == pytest.approx(float(np.median(np.linalg.norm(states, axis=1))), rel=1e-4)
        assert res.vector.meta[f"rankguide.state_norm.{il}"] == pytest.approx(rep.state_norms[il])
        np.testing.assert_allclose(chunked.vector.directions[il], expected, rtol=0.0, atol=0.02)


def test_rank_filter_keeps_healthy_execution_and_failing_reflection(tiny_gguf) -> None:
    # fail.route per step (the tail's value is irrelevant): median over the 15 thoughts is 0.5
    scores = [[0.1, 0.9, 0.7, 0.2, 0.3, 0.0], [0.6, 0.8, 0.2, 0.5, 0.4, 0.0], [0.55, 0.3, 0.9, 0.95, 0.5, 0.0]]
    recs = _records(3, scores)
    thought_scores = np.array([s[:5] for s in scores]).ravel()
    kinds = np.array(KINDS * 3)
    median = float(np.median(thought_scores))
    expected_keep = np.where(kinds == EXECUTION, thought_scores <= median, thought_scores >= median)
    with Model(tiny_gguf) as model:
        res = extract_steering_vector(model, recs, ExtractConfig(signal="fail.route"), model_name="tiny")
        low = extract_steering_vector(model, recs, ExtractConfig(signal="rank.eff_norm.L1.win", fail_side="low"))
        # the default reads the last signal layer's windowed effective rank, low = failure
        last1 = [dict(r, layers=[0, 1]) for r in recs]
        default = extract_steering_vector(model, last1, ExtractConfig())
        states = np.concatenate([_independent_states(model, r, [1])[1] for r in recs])
    rep = res.report
    assert rep.signal_sources == {"trace": 3, "computed": 0}
    assert rep.threshold_execution == pytest.approx(median) == rep.threshold_other
    assert [r.kept for r in res.table] == expected_keep.tolist()
    assert [r.score for r in res.table] == pytest.approx(thought_scores.tolist())
    for cls in (EXECUTION, REFLECTION, TRANSITION):
        sel = kinds == cls
        assert rep.thoughts[cls] == {"total": int(sel.sum()), "kept": int((expected_keep & sel).sum()),
                                     "dropped": int((~expected_keep & sel).sum())}
    ex, other = expected_keep & (kinds == EXECUTION), expected_keep & (kinds != EXECUTION)
    np.testing.assert_allclose(res.vector.directions[1], states[ex].mean(0) - states[other].mean(0),
                               rtol=1e-4, atol=1e-5)
    assert rep.fail_side == "high"  # auto: high for a non-rank signal
    # a rank signal where low means failure (here 1 - fail.route) keeps the same thoughts
    assert [r.kept for r in low.table] == expected_keep.tolist()
    assert (default.report.signal, default.report.fail_side) == ("rank.eff_norm.L1.win", "low")
    assert [r.kept for r in default.table] == expected_keep.tolist()
    assert default.report.signal_sources == {"trace": 3, "computed": 0}
    assert low.report.threshold_execution == pytest.approx(1.0 - median)


def test_missing_trace_signals_are_recomputed_from_the_teacher_forced_pass(tiny_gguf) -> None:
    recs = _records(2)  # no signals in the steps
    with Model(tiny_gguf) as model:
        res = extract_steering_vector(model, recs, ExtractConfig(band=1.0, logits_chunk=512), model_name="tiny")
        only_trace = extract_steering_vector(model, recs, ExtractConfig(filter="none"))
        with pytest.raises(InvalidInputError, match="0 execution and 0 reflection/transition"):
            extract_steering_vector(model, recs, ExtractConfig(signal_source="trace"))
        with pytest.raises(ConfigError, match="rank.eff_norm.L9.win"):
            extract_steering_vector(model, recs, ExtractConfig(signal="rank.eff_norm.L9.win"))
    assert res.report.signal_sources == {"trace": 0, "computed": 2}
    scores = [r.score for r in res.table]
    assert len(scores) == 10 and all(s is not None and 0.0 <= s <= 1.0 for s in scores)
    assert all(r.kept for r in res.table)  # band 1.0 keeps every scored thought ...
    np.testing.assert_allclose(res.vector.directions[1], only_trace.vector.directions[1], rtol=1e-5, atol=1e-6)


def test_anchor_start_reads_the_delimiter_before_the_thought(tiny_gguf) -> None:
    recs = _records(2)
    with Model(tiny_gguf) as model:
        end = extract_steering_vector(model, recs, ExtractConfig(filter="none"))
        start = extract_steering_vector(model, recs, ExtractConfig(filter="none", anchor="start"))
        ref = [_independent_states(model, r, [1]) for r in recs]
    # "start" states: the prompt's last token for thought 0, then the previous thought's delimiter token
    states = np.concatenate([np.vstack([s[-2], s[1][:-1]]) for s in ref])
    kinds = np.array(KINDS * 2)
    np.testing.assert_allclose(start.vector.directions[1],
                               states[kinds == EXECUTION].mean(0) - states[kinds != EXECUTION].mean(0),
                               rtol=1e-4, atol=1e-5)
    assert not np.allclose(start.vector.directions[1], end.vector.directions[1])


def test_unusable_records_are_skipped_and_counted(tiny_gguf) -> None:
    recs = _records(2) + [{"id": "e", "error": "context overflow", "steps": []},
                          {"id": "t", "kind": "gsm8k", "question": "Q?", "steps": [{"text": "no delimiter here"}]},
                          {"id": "n", "steps": [{"text": "one\n\n"}, {"text": "Wait, two\n\n"}]}]
    with Model(tiny_gguf) as model:
        res = extract_steering_vector(model, recs, ExtractConfig(filter="none"))
        with pytest.raises(InvalidInputError, match="use more problems, --filter none or a wider --band"):
            extract_steering_vector(model, [_records(1)[0] | {"steps": [{"text": "2 + 2 = 4.\n\n"}]}],
                                    ExtractConfig(filter="none"))
    assert res.report.problems == 2
    assert res.report.skipped == {"trace_error": 1, "no_thoughts": 1, "no_question": 1}


def test_smollm2_bpe_delimiters_merge_with_text(smollm2) -> None:
    """SmolLM2's BPE vocabulary has multi-newline tokens; a run of three newlines ends the thought after two and
    the third starts the next thought. Delimiter tokens and states match the independent search."""
    steps = ["We need 3 + 4 = 7 apples.\n\n", "Hmm, wait: is 3 + 4 really 7? Let me verify.\n\n\n",
             "Another approach: count them one by one.\n\n", "So there are 7 apples in total.\n\n", "Done."]
    text = "".join(steps)
    ends = [text.index(s.rstrip("\n")) + len(s.rstrip("\n")) + 2 for s in steps[:-1]]
    recs = [{"id": f"s{i}", "kind": "gsm8k", "question": f"Tom has 3 apples and gets {4 + i} more. How many?",
             "steps": [{"text": s} for s in steps]} for i in range(2)]
    with Model(smollm2) as model:
        layer = model.n_layer // 2
        res = extract_steering_vector(model, recs, ExtractConfig(filter="none", layers="mid"))
        gen = model.tokenize(text)
        pieces = {bytes(model.piece(gen[r.token])) for r in res.table}
        for r, e in zip(res.table[:4], ends, strict=True):
            assert len(model.detokenize(gen[: r.token])) < e <= len(model.detokenize(gen[: r.token + 1]))
        ref = [_independent_states(model, r, [layer], ends)[layer] for r in recs]
    assert all(b"\n" in p for p in pieces)
    assert [r.kind for r in res.table] == [EXECUTION, REFLECTION, TRANSITION, EXECUTION] * 2
    kinds = np.array([EXECUTION, REFLECTION, TRANSITION, EXECUTION] * 2)
    states = np.concatenate(ref)
    np.testing.assert_allclose(res.vector.directions[layer],
                               states[kinds == EXECUTION].mean(0) - states[kinds != EXECUTION].mean(0),
                               rtol=1e-3, atol=1e-4)


# ------------------------------------------------------------------------------------------------------ CLI


def _cli(*args: str):
    return CliRunner().invoke(main, ["steer", *args], catch_exceptions=False)


def test_cli_extract_from_traces(tiny_gguf, tmp_path) -> None:
    traces, out = tmp_path / "t.jsonl", tmp_path / "vec.gguf"
    _write_traces(traces, _records(3, [[0.1, 0.9, 0.7, 0.2, 0.3, 0.0]] * 3))
    res = _cli("extract", "--traces", str(traces), "--srm", str(tiny_gguf), "--out", str(out), "--json",
               "--signal", "fail.route")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["signal"] == "fail.route" and rep["fail_side"] == "high"
    assert rep["out"] == str(out) and rep["layers"] == [1] and rep["directions"] == [1]
    assert rep["thoughts"]["execution"] == {"total": 9, "kept": 6, "dropped": 3}
    assert rep["thoughts"]["reflection"] == {"total": 3, "kept": 3, "dropped": 0}
    assert rep["thoughts"]["transition"] == {"total": 3, "kept": 0, "dropped": 3}
    cv = load_control_vector(out, n_embd=64, n_layer=3)
    assert cv.layers() == [1] and cv.meta["rankguide.kept.execution"] == 6
    assert cv.norms()[1] == pytest.approx(rep["norms"]["1"], rel=1e-6)
    res = _cli("inspect", str(out), "--json")
    assert res.exit_code == 0, res.output
    rel = json.loads(res.output)["directions"][0]["relative_norm"]
    assert rel == pytest.approx(rep["norms"]["1"] / rep["state_norms"]["1"], rel=1e-5)
    assert "of a typical state" in _cli("inspect", str(out)).output
    res = _cli("extract", "--traces", str(traces), "--srm", str(tiny_gguf), "--out", str(out), "--filter", "none",
               "--limit", "2", "--layers", "2")
    assert res.exit_code == 0, res.output
    assert "execution   kept     6 of     6" in res.output and "direction.2 (l_out-2)" in res.output
    assert load_control_vector(out).layers() == [2]


def test_cli_extract_errors(tiny_gguf, tmp_path) -> None:
    out = tmp_path / "vec.gguf"
    res = CliRunner().invoke(main, ["steer", "extract", "--srm", str(tiny_gguf), "--out", str(out)])
    assert res.exit_code == 2 and "give --data" in res.output
    res = CliRunner().invoke(main, ["steer", "extract", "--traces", str(tmp_path / "none.jsonl"), "--srm",
                                    str(tiny_gguf), "--out", str(out)])
    assert res.exit_code == 2 and "not found" in res.output
    traces = tmp_path / "t.jsonl"
    _write_traces(traces, _records(1))
    res = CliRunner().invoke(main, ["steer", "extract", "--traces", str(traces), "--srm", str(tiny_gguf), "--out",
                                    str(out), "--layers", "0"])
    assert res.exit_code == 2 and "layer 0 cannot be steered" in res.output
    res = CliRunner().invoke(main, ["steer", "extract", "--traces", str(traces), "--srm", str(tiny_gguf), "--out",
                                    str(out), "--band", "0.001"])
    assert res.exit_code == 2  # click's range check
    assert not out.exists()


def test_cli_extract_with_data_traces_first_and_keeps_the_traces(tiny_gguf, tmp_path) -> None:
    """--data runs the SRM first and writes the traces next to the output; the tiny random model writes no
    blank lines, so no thoughts exist and nothing but the traces is left behind."""
    data = tmp_path / "mini.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i} plus {i}?", "answer": str(2 * i)})
                            + "\n" for i in range(2)))
    out = tmp_path / "vec.gguf"
    res = CliRunner().invoke(main, ["steer", "extract", "--data", str(data), "--srm", str(tiny_gguf), "--out",
                                    str(out), "--max-tokens", "16", "--n-ctx", "256", "--json"])
    assert res.exit_code == 2 and "use more problems, --filter none or a wider --band" in res.output
    traces = tmp_path / "vec.traces.jsonl"
    assert [r["id"] for r in read_traces(traces)] == ["q0", "q1"]
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mini.jsonl", "vec.traces.jsonl"]
