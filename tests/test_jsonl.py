"""The one JSONL module: its torn-last-line policy on real files, the appender's repair, atomic whole-file writes,
and the callers that read a file another process is still writing without changing it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from rankguide_edge.errors import DatasetError, InvalidInputError
from rankguide_edge.files import atomic_path, write_text_atomic
from rankguide_edge.jsonl import append_jsonl, read_lines, read_records, write_jsonl_atomic


def test_a_torn_last_line_is_skipped_by_readers_and_left_in_place(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    data = b'{"id": 1}\n\n{"id": 2}\n{"id": 3, "te'
    path.write_bytes(data)
    assert read_records(path) == [{"id": 1}, {"id": 2}]
    assert [line.number for line in read_lines(path)] == [1, 3]  # blank line 2 skipped, numbers kept
    assert path.read_bytes() == data  # a reader never changes the file: its writer may still be writing


def test_a_last_line_without_newline_that_parses_is_a_record(tmp_path: Path) -> None:
    path = tmp_path / "hand.jsonl"
    path.write_text('{"id": 1}\n{"id": 2}')  # as editors often save a file
    assert read_records(path) == [{"id": 1}, {"id": 2}]


def test_a_line_cut_inside_a_utf8_character_is_torn_too(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes('{"q": "a"}\n{"q": "\u00e9'.encode()[:-1])
    assert read_records(path) == [{"q": "a"}]


def test_a_malformed_middle_line_is_an_error_naming_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"id": 1}\n{"id": \n{"id": 3}\n\xff\xfe\n')
    lines = list(read_lines(path))
    assert [(line.number, line.error is None) for line in lines] == [(1, True), (2, False), (3, True), (4, False)]
    assert lines[1].error.startswith("not valid JSON") and lines[3].error.startswith("not UTF-8")
    with pytest.raises(DatasetError, match=r"bad\.jsonl:2 is not valid JSON .*: fix or remove that line"):
        read_records(path, error=DatasetError)


def test_missing_files(tmp_path: Path) -> None:
    assert read_records(tmp_path / "none.jsonl", missing_ok=True) == []
    with pytest.raises(InvalidInputError, match="cannot read the file"):
        read_records(tmp_path / "none.jsonl")


def test_the_appender_cuts_a_torn_line_and_ends_a_complete_one(tmp_path: Path) -> None:
    torn = tmp_path / "torn.jsonl"
    torn.write_text('{"id": 1}\n{"id": 2, "te')
    with append_jsonl(torn) as sink:
        assert not sink.empty
        sink.write({"id": 2, "text": "caf\u00e9"})
    assert torn.read_text(encoding="utf-8") == '{"id": 1}\n{"id": 2, "text": "caf\u00e9"}\n'

    open_end = tmp_path / "open.jsonl"
    open_end.write_text('{"id": 1}')
    with append_jsonl(open_end) as sink:
        sink.write({"id": 2})
    assert read_records(open_end) == [{"id": 1}, {"id": 2}]

    only_torn = tmp_path / "only.jsonl"
    only_torn.write_text('{"id"')
    with append_jsonl(only_torn) as sink:
        assert sink.empty  # what was there was no record: a header-first file writes its header again
        sink.write({"id": 1})
    assert only_torn.read_text() == '{"id": 1}\n'


def test_the_appender_finds_the_last_newline_beyond_one_chunk(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    long_record = json.dumps({"text": "x" * 200_000})
    path.write_text(long_record + "\n" + long_record[:150_000])
    with append_jsonl(path) as sink:
        sink.write({"id": 2})
    assert read_records(path) == [json.loads(long_record), {"id": 2}]


def test_appending_to_a_gzip_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot be appended"), append_jsonl(tmp_path / "r.jsonl.gz"):
        pass


def test_atomic_whole_file_writes_plain_and_gzip(tmp_path: Path) -> None:
    records = [{"id": i, "q": "\u00e9"} for i in range(3)]
    plain = write_jsonl_atomic(tmp_path / "r.jsonl", records)
    packed = write_jsonl_atomic(tmp_path / "r.jsonl.gz", records)
    assert read_records(plain) == read_records(packed) == records
    assert gzip.decompress(packed.read_bytes()) == plain.read_bytes()
    first = packed.read_bytes()
    write_jsonl_atomic(packed, records)
    assert packed.read_bytes() == first  # no timestamp in the gzip header
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl", "r.jsonl.gz"]  # no temporary left


def test_a_failed_atomic_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = write_text_atomic(tmp_path / "a.json", "old\n")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("killed")
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_damaged_gzip_is_one_error_naming_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"id": 1}\n' * 1000)[:40])
    with pytest.raises(InvalidInputError, match="replace it with an intact copy"):
        read_records(path)


def test_label_and_bench_readers_leave_a_file_being_written_alone(tmp_path: Path) -> None:
    """``router fit`` (load_labels) and ``bench report`` read files a running job appends to: they skip its
    half-written line and must not cut it off under the writer."""
    from rankguide_edge.bench.report import load_results
    from rankguide_edge.fitting.label import FORMAT, load_labels

    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"format": FORMAT, "settings": {}}) + "\n" + '{"id": "p1", "steps": [')
    before = labels.read_bytes()
    head, recs = load_labels(labels)
    assert head["format"] == FORMAT and recs == [] and labels.read_bytes() == before

    results = tmp_path / "results.jsonl"
    rec = {"id": "p0", "method": "srm", "correct": True, "seconds": 1.0, "n_steps": 1, "lrm_steps": 0,
           "usage": {}, "timing": {}}
    results.write_text(json.dumps(rec) + "\n" + '{"id": "p1", "meth')
    before = results.read_bytes()
    assert load_results(results) == [rec] and results.read_bytes() == before
