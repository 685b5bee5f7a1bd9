"""Loading the benchmark files shipped in the package (gzip) and handling malformed records."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from pathlib import Path

import pytest

from rankguide_edge.config import from_mapping
from rankguide_edge.errors import ConfigError, DatasetError, InvalidInputError
from rankguide_edge.tasks.answers import check_answer, extract_answer, gold_answer
from rankguide_edge.tasks.datasets import (
    DATASET_ALIASES,
    DatasetConfig,
    LoadReport,
    Problem,
    default_data_dir,
    iter_problems,
    load_problems,
    packaged_data_dir,
    packaged_files,
    resolve_dataset_path,
)


@pytest.fixture(autouse=True)
def _packaged_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short names resolve to the installed package's copies, whatever the developer's environment says."""
    monkeypatch.delenv("RANKGUIDE_EDGE_DATA", raising=False)


@pytest.fixture(scope="module")
def data() -> Path:
    return packaged_data_dir()


@pytest.fixture(scope="module")
def gsm8k_train(data: Path) -> list[Problem]:
    return load_problems(data / "gsm8k" / "train.jsonl.gz")


# ------------------------------------------------------------------------------------ packaged files


def test_packaged_files_match_their_provenance(data: Path) -> None:
    """Every short name resolves inside the installed package, each file is intact, decompresses to the
    source bytes the provenance note records, and sits next to its licence."""
    assert default_data_dir() == data
    assert "site-packages" in str(data) or "dist-packages" in str(data)  # the installed copy, not the checkout
    prov = json.loads((data / "provenance.json").read_text(encoding="utf-8"))["files"]
    assert {rel + ".gz" for rel in DATASET_ALIASES.values()} == set(prov)
    for f in packaged_files():
        assert f.present and f.intact, f.name
        assert f.aliases and f.licence.startswith("MIT")
        raw = gzip.decompress((data / f.name).read_bytes())
        assert hashlib.sha256(raw).hexdigest() == prov[f.name]["sha256"]
        assert (data / prov[f.name]["licence_file"]).read_text(encoding="utf-8").startswith("MIT License")
    for alias, rel in DATASET_ALIASES.items():
        assert resolve_dataset_path(alias) == data / (rel + ".gz")
    counts = {f.name: f.records for f in packaged_files()}
    assert counts == {"gsm8k/train.jsonl.gz": 7473, "gsm8k/test_public.jsonl.gz": 1119,
                      "math500/test_public.jsonl.gz": 400, "svamp/SVAMP.json.gz": 1000}


def test_data_env_overrides_short_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "svamp").mkdir()
    own = tmp_path / "svamp" / "SVAMP.json"
    own.write_text(json.dumps([{"ID": "mine-1", "Body": "Tom has 3.", "Question": "How many?", "Answer": 3}]),
                   encoding="utf-8")
    monkeypatch.setenv("RANKGUIDE_EDGE_DATA", str(tmp_path))
    assert resolve_dataset_path("svamp") == own
    assert [p.id for p in DatasetConfig(path="svamp").load()] == ["mine-1"]
    # a folder without the file is an error naming the variable, not a silent fall-back to the package
    with pytest.raises(DatasetError, match="RANKGUIDE_EDGE_DATA"):
        resolve_dataset_path("math500")


def test_gzip_and_plain_copies_load_alike(tmp_path: Path, data: Path) -> None:
    plain = tmp_path / "gsm8k" / "test_public.jsonl"
    plain.parent.mkdir()
    plain.write_bytes(gzip.decompress((data / "gsm8k" / "test_public.jsonl.gz").read_bytes()))
    a = load_problems(plain, offset=3, limit=4)
    b = load_problems(data / "gsm8k" / "test_public.jsonl.gz", offset=3, limit=4)
    assert [(p.id, p.question, p.gold, p.kind) for p in a] == [(p.id, p.question, p.gold, p.kind) for p in b]


def test_damaged_gzip_is_a_dataset_error(tmp_path: Path, data: Path) -> None:
    cut = tmp_path / "train.jsonl.gz"
    cut.write_bytes((data / "gsm8k" / "train.jsonl.gz").read_bytes()[:5000])
    with pytest.raises(DatasetError, match="cannot read"):
        load_problems(cut)
    notgz = tmp_path / "svamp.json.gz"
    notgz.write_text("[]", encoding="utf-8")
    with pytest.raises(DatasetError, match="cannot read"):
        load_problems(notgz)


# ------------------------------------------------------------------------------------ real files


def test_gsm8k_train_all_records_and_gold(gsm8k_train: list[Problem], data: Path) -> None:
    assert len(gsm8k_train) == 7473
    first = gsm8k_train[0]
    assert first.kind == "gsm8k"
    assert first.id == "gsm8k-train-1"
    assert first.gold == "72"
    assert first.question.startswith("Natalia sold clips")
    assert first.source == f"{data / 'gsm8k' / 'train.jsonl.gz'}:1"
    assert first.meta["solution"].endswith("#### 72")
    assert len({p.id for p in gsm8k_train}) == 7473
    assert gsm8k_train[-1].id == "gsm8k-train-7473"
    # every gold is a canonical number (thousands commas removed), equal to the ####-line of its solution
    for p in gsm8k_train:
        raw = p.meta["solution"].rsplit("####", 1)[1].strip()
        assert p.gold == raw.replace(",", ""), p.id
        assert gold_answer(p) == p.gold
        assert extract_answer(p.meta["solution"], "gsm8k") == p.gold
        assert check_answer(p.meta["solution"], p.gold, "gsm8k")


def test_gsm8k_train_ids_are_line_numbers_stable_under_offset(gsm8k_train: list[Problem], data: Path) -> None:
    window = load_problems(data / "gsm8k" / "train.jsonl.gz", offset=100, limit=5)
    assert [p.id for p in window] == [f"gsm8k-train-{n}" for n in range(101, 106)]
    assert window == gsm8k_train[100:105]


def test_gsm8k_test_public(data: Path) -> None:
    report = LoadReport()
    probs = load_problems(data / "gsm8k" / "test_public.jsonl.gz", report=report)
    assert len(probs) == 1119
    assert report.kind == "gsm8k" and report.loaded == 1119 and report.skipped == 0
    assert probs[0].id == "gsm8k-test-472"
    assert probs[0].gold == "6"
    assert all(p.id.startswith("gsm8k-test-") for p in probs)
    assert len({p.id for p in probs}) == 1119


def test_math500(data: Path) -> None:
    probs = load_problems(data / "math500" / "test_public.jsonl.gz")
    assert len(probs) == 400
    p = probs[0]
    assert p.kind == "math"
    assert p.id == "math500-test-383"
    assert p.gold == "x \\in [-2,7]"
    assert p.question.startswith("For what values of $x$")
    assert p.meta["subject"] == "Algebra" and p.meta["level"] == 4
    assert p.meta["unique_id"] == "test/algebra/101.json"
    assert "\\boxed" in p.meta["solution"]
    assert len({q.id for q in probs}) == 400
    assert {q.meta["level"] for q in probs} <= {1, 2, 3, 4, 5}


def test_math500_first_20_solutions_check_against_gold(data: Path) -> None:
    for p in load_problems(data / "math500" / "test_public.jsonl.gz", limit=20):
        extracted = extract_answer(p.meta["solution"], "math")
        assert extracted is not None, p.id
        assert check_answer(extracted, p.gold, "math"), (p.id, extracted, p.gold)


def test_svamp(data: Path) -> None:
    probs = load_problems(data / "svamp" / "SVAMP.json.gz")
    assert len(probs) == 1000
    p = probs[0]
    assert p.kind == "svamp"
    assert p.id == "chal-1"
    assert p.gold == "51"  # 51.0 in the file
    assert p.question == (
        "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack "
        "How much do you have to pay to buy each pack?"
    )
    assert p.meta["Equation"] == "( 76.0 - 25.0 )" and p.meta["Type"] == "Subtraction"
    assert p.source.endswith("SVAMP.json.gz[0]")
    assert all("." not in q.gold or not q.gold.endswith(".0") for q in probs)
    assert len({q.id for q in probs}) == 1000


def test_limit_offset_and_iterator(data: Path) -> None:
    path = data / "svamp" / "SVAMP.json.gz"
    first5 = load_problems(path, limit=5)
    assert [p.id for p in first5] == [f"chal-{i}" for i in range(1, 6)]
    it = iter_problems(path, offset=2, limit=2)
    assert next(it).id == "chal-3"
    assert next(it).id == "chal-4"
    with pytest.raises(StopIteration):
        next(it)
    with pytest.raises(DatasetError, match="offset 5000 is past the last record"):
        load_problems(path, offset=5000)


def test_aliases_and_config(data: Path) -> None:
    assert resolve_dataset_path("math500") == data / "math500" / "test_public.jsonl.gz"
    cfg = from_mapping(DatasetConfig, {"path": "gsm8k-train", "limit": 3, "offset": 1})
    probs = cfg.load()
    assert [p.id for p in probs] == ["gsm8k-train-2", "gsm8k-train-3", "gsm8k-train-4"]
    with pytest.raises(ConfigError):
        from_mapping(DatasetConfig, {"path": "svamp", "on_error": "ignore"})
    with pytest.raises(ConfigError):
        from_mapping(DatasetConfig, {"path": "svamp", "limit": 0})
    with pytest.raises(DatasetError, match="not found"):
        resolve_dataset_path("no-such-dataset")


def test_forced_kind_overrides_detection(data: Path) -> None:
    # a GSM8K file read as generic keeps the whole worked solution as gold text
    probs = load_problems(data / "gsm8k" / "test_public.jsonl.gz", kind="generic", limit=2)
    assert probs[0].kind == "generic" and probs[0].gold.endswith("#### 6")
    assert probs[0].id == "gsm8k-test-472"


# ------------------------------------------------------------------------------------ error handling


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _good(i: int, answer: str = "5") -> str:
    return json.dumps({"question": f"What is {i}?", "answer": f"work\n#### {answer}"})


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        load_problems(tmp_path / "nope.jsonl")


def test_empty_file_raises(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="no records"):
        load_problems(empty)


def test_malformed_line_stops_with_file_and_line(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "gsm.jsonl", [_good(1), "", "{not json", _good(4)])
    with pytest.raises(DatasetError) as info:
        load_problems(path)
    msg = str(info.value)
    assert f"{path}:3" in msg and "--on-error skip" in msg and "\n" not in msg
    assert isinstance(info.value, InvalidInputError)


def test_malformed_lines_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _write_lines(tmp_path / "gsm.jsonl", [
        _good(1, "1,200"),
        "{not json",
        json.dumps({"question": "no answer"}),
        json.dumps(["a", "list"]),
        json.dumps({"question": "q", "answer": "steps\n#### seven"}),
        _good(6, "-3"),
    ])
    report = LoadReport()
    with caplog.at_level(logging.WARNING, logger="rankguide_edge.tasks.datasets"):
        probs = load_problems(path, on_error="skip", report=report)
    assert [p.id for p in probs] == ["gsm8k-gsm-1", "gsm8k-gsm-6"]
    assert [p.gold for p in probs] == ["1200", "-3"]
    assert report.kind == "gsm8k"
    assert report.records == 6 and report.loaded == 2 and report.skipped == 4
    assert len(report.errors) == 4
    assert f"{path}:2" in report.errors[0] and "not valid JSON" in report.errors[0]
    assert "no answer field" in report.errors[1]
    assert "not a JSON object" in report.errors[2]
    assert "not a number" in report.errors[3]
    assert sum("skipping malformed record" in r.getMessage() for r in caplog.records) == 4


def test_all_records_malformed_raises_even_when_skipping(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "bad.jsonl", ["{x", "{y"])
    with pytest.raises(DatasetError, match="none of the 2 records"):
        load_problems(path, on_error="skip")


def test_bad_arguments_raise_config_error(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "g.jsonl", [_good(1)])
    with pytest.raises(ConfigError):
        load_problems(path, on_error="ignore")
    with pytest.raises(ConfigError):
        load_problems(path, kind="trivia")
    with pytest.raises(ConfigError):
        load_problems(path, limit=0)
    with pytest.raises(ConfigError):
        load_problems(path, offset=-1)


def test_generic_jsonl_with_custom_fields(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "custom.jsonl", [
        json.dumps({"key": "a", "prompt_text": "What is 2+2?", "label": 4, "topic": "sums"}),
        json.dumps({"key": "b", "prompt_text": "Capital of France?", "label": "Paris"}),
    ])
    probs = load_problems(path, question_field="prompt_text", answer_field="label", id_field="key")
    assert [p.kind for p in probs] == ["generic", "generic"]
    assert [p.id for p in probs] == ["a", "b"]
    assert [p.gold for p in probs] == ["4", "Paris"]
    assert probs[0].meta == {"topic": "sums"}
    assert check_answer("The answer is 4.", probs[0].gold, "generic")
    assert check_answer("paris", probs[1].gold, "generic")
    assert not check_answer("Lyon", probs[1].gold, "generic")
    # a required custom id that is missing is a malformed record
    bad = _write_lines(tmp_path / "noid.jsonl", [json.dumps({"question": "q", "answer": "1"})])
    with pytest.raises(DatasetError, match="no id field 'key'"):
        load_problems(bad, id_field="key")


def test_generic_default_fields_and_ids(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "plain.jsonl", [
        json.dumps({"question": "1+1?", "answer": "2"}),
        json.dumps({"problem": "2+2?", "gold": 4.0, "id": 17}),
    ])
    probs = load_problems(path, kind="generic")
    assert [(p.id, p.question, p.gold) for p in probs] == [("plain-1", "1+1?", "2"), ("17", "2+2?", "4")]


def test_json_array_generic_and_broken_array(tmp_path: Path) -> None:
    arr = tmp_path / "arr.json"
    recs = [{"question": "q1", "answer": 3}, {"question": "q2", "answer": 4}]
    arr.write_text(json.dumps(recs), encoding="utf-8")
    probs = load_problems(arr)
    assert [(p.gold, p.source.endswith(f"[{i}]")) for i, p in enumerate(probs)] == [("3", True), ("4", True)]
    broken = tmp_path / "broken.json"
    broken.write_text('[{"question": "q1", "answer": 3},', encoding="utf-8")
    with pytest.raises(DatasetError, match="not a valid JSON array"):
        load_problems(broken)


def test_svamp_like_array_with_bad_answer(tmp_path: Path) -> None:
    arr = tmp_path / "svamp_small.json"
    recs = [
        {"ID": "x-1", "Body": "Tom has 3 apples.", "Question": "How many?", "Answer": 3.0},
        {"ID": "x-2", "Body": "Ann has 2.5 liters.", "Question": "How much?", "Answer": "lots"},
        {"ID": "x-3", "Body": "Bo has 2.", "Question": "Half?", "Answer": 0.5},
    ]
    arr.write_text(json.dumps(recs), encoding="utf-8")
    with pytest.raises(DatasetError, match="record 1"):
        load_problems(arr)
    report = LoadReport()
    probs = load_problems(arr, on_error="skip", report=report)
    assert [(p.id, p.gold, p.kind) for p in probs] == [("x-1", "3", "svamp"), ("x-3", "0.5", "svamp")]
    assert probs[0].question == "Tom has 3 apples. How many?"
    assert report.skipped == 1


def test_problem_is_frozen_and_hashable() -> None:
    p = Problem(id="a", question="q", gold="1", kind="generic", source="s", meta={"x": [1]})
    with pytest.raises(AttributeError):
        p.gold = "2"  # type: ignore[misc]
    assert hash(p) == hash(Problem(id="a", question="q", gold="1", kind="generic", source="s", meta={}))
