"""The one reader of trace and label files: its schema checks, its malformed-line choice and the shared
torn-last-line policy (the JSONL layer's own cases are in test_jsonl)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rankguide_edge.errors import DatasetError, InvalidInputError
from rankguide_edge.records import LABEL_FORMAT, load_record_file, record_problem, trace_text

TRACE = {"id": "a", "correct": True, "steps": [{"index": 0, "text": "x\n\n", "signals": {"s": 0.5, "t": None}},
                                               {"index": 1, "text": "y", "signals": {"s": 1}}]}


def _write(path: Path, lines: list[str], tail: str = "") -> Path:
    path.write_text("".join(line + "\n" for line in lines) + tail, encoding="utf-8")
    return path


@pytest.mark.parametrize("rec, problem", [
    (TRACE, None),
    ({"id": "e", "error": "context overflow", "steps": []}, None),
    ({"id": "t", "text": "only text"}, None),
    ({"id": "l", "steps": [{"source": "lrm", "text": "plan"}]}, None),            # a label file's LRM step
    ([1], "a record must be a JSON object, not list"),
    ({"id": "n"}, "it has neither steps[] nor text"),
    ({"id": "s", "steps": 3}, "'steps' must be a list of objects"),
    ({"id": "s", "steps": [1]}, "'steps' must be a list of objects"),
    ({"id": "s", "steps": [{"index": 4, "signals": []}]}, "step 4: 'signals' must be an object"),
    ({"id": "s", "steps": [{"signals": {"a": 1.0, "b": "high"}}]}, "step 0: signal 'b' is not a number"),
    ({"id": "s", "steps": [{"signals": {"a": True}}]}, "step 0: signal 'a' is not a number"),
])
def test_record_problem(rec, problem) -> None:
    assert record_problem(rec) == problem


def test_malformed_lines_raise_or_are_skipped_and_a_torn_last_line_is_left_alone(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.jsonl", [json.dumps(TRACE), "", "{oops", json.dumps({"id": "b", "steps": 2}),
                                         json.dumps({**TRACE, "id": "c"})], tail='{"id": "d", "st')
    before = path.read_bytes()
    with pytest.raises(InvalidInputError, match=r"t\.jsonl:3 is not valid JSON .*: fix or remove that line"):
        load_record_file(path)
    with pytest.raises(DatasetError, match=r"t\.jsonl:3 is not valid JSON"):
        load_record_file(path, error=DatasetError)
    f = load_record_file(path, skip_malformed=True)
    assert [r["id"] for r in f.records] == ["a", "c"] and f.numbers == [1, 5] and f.n_lines == 4
    assert [n for n, _ in f.skipped] == [3, 4]
    assert f.skipped[1][1] == "not a trace record ('steps' must be a list of objects)"
    assert f.ids() == {"a", "c"} and f.header is None and path.read_bytes() == before


def test_missing_files_and_bench_results(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="trace file .* not found: write one with `rankguide-edge trace`"):
        load_record_file(tmp_path / "none.jsonl")
    assert load_record_file(tmp_path / "none.jsonl", missing_ok=True).records == []
    bench = {"id": "p", "method": "srm", "steps": [], "counts": {}, "correct": True}
    path = _write(tmp_path / "results.jsonl", [json.dumps(bench)])
    for skip in (False, True):  # the wrong file altogether, not a malformed line
        with pytest.raises(InvalidInputError, match="holds `bench run` results, not traces: pass its folder"):
            load_record_file(path, skip_malformed=skip)


def test_a_label_file_starts_with_its_header(tmp_path: Path) -> None:
    head = {"format": LABEL_FORMAT, "version": 1, "settings": {}}
    path = _write(tmp_path / "l.jsonl", [json.dumps(head), json.dumps(TRACE)], tail='{"id": "b"')
    f = load_record_file(path, "label")
    assert f.header == head and [r["id"] for r in f.records] == ["a"] and f.numbers == [2]
    for lines in ([json.dumps(TRACE)], [], ["[]"]):
        bad = _write(tmp_path / "bad.jsonl", lines)
        with pytest.raises(InvalidInputError, match="is not a label file .*`rankguide-edge label`"):
            load_record_file(bad, "label")
    with pytest.raises(InvalidInputError, match="label file .* not found"):
        load_record_file(tmp_path / "none.jsonl", "label")


def test_trace_text_joins_the_steps_else_takes_the_text() -> None:
    assert trace_text(TRACE) == "x\n\ny"
    assert trace_text({"text": "whole", "steps": []}) == "whole"
    assert trace_text({}) == ""
