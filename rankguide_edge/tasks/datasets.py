"""Benchmark problems read from JSONL or JSON-array files (GSM8K, MATH500, SVAMP, or any question/answer set).

The benchmark files the commands name (GSM8K train and test_public, MATH500 test_public, SVAMP) ship inside
the package, gzip-compressed, with their licences and ``provenance.json`` (source sha256, upstream, record
counts) in ``rankguide_edge/data``. A short name (``gsm8k-test``, ``gsm8k-train``, ``math500``, ``svamp``)
resolves there, unless ``$RANKGUIDE_EDGE_DATA`` names another folder of the same layout. Any ``.jsonl``,
``.json`` or gzip-compressed ``.jsonl.gz``/``.json.gz`` file can also be given by path.

Formats understood (``kind="auto"`` recognises them from the first record, then from the file name):

* ``gsm8k``: JSONL with ``question`` and ``answer`` whose last line is ``#### <number>``; ``id`` is
  optional (the train split has none: ``gsm8k-train-<line number>``, 1-based, stable).
* ``math``: JSONL with ``problem``, ``answer`` (LaTeX), ``solution``, ``subject``, ``level``, ``unique_id``.
* ``svamp``: one JSON array of objects with ``ID``, ``Body``, ``Question``, ``Equation``, ``Answer``.
* ``generic``: JSONL (or a JSON array) of objects with a question field (``question``, ``problem``,
  ``prompt`` or ``input``) and an answer field (``answer``, ``gold``, ``target`` or ``output``); the names
  can be given explicitly.

``offset`` and ``limit`` select records by their position in the file (blank lines do not count), so a
window such as "records 0-99" names the same problems whatever ``on_error`` is.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import logging
import os
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from ..config import bounded, validate
from ..errors import ConfigError, DatasetError
from ..jsonl import read_lines
from .answers import KINDS, format_number, normalize_kind, parse_number

_log = logging.getLogger(__name__)

#: environment variable naming the benchmark data directory
DATA_ENV = "RANKGUIDE_EDGE_DATA"

#: short names of the bundled benchmark files, relative to the data directory
DATASET_ALIASES: dict[str, str] = {
    "gsm8k": "gsm8k/test_public.jsonl",
    "gsm8k-test": "gsm8k/test_public.jsonl",
    "gsm8k-train": "gsm8k/train.jsonl",
    "math500": "math500/test_public.jsonl",
    "svamp": "svamp/SVAMP.json",
}

_QUESTION_FIELDS = ("question", "problem", "prompt", "input")
_ANSWER_FIELDS = ("answer", "gold", "target", "output")
_MAX_ERRORS_KEPT = 20


@dataclasses.dataclass(frozen=True)
class Problem:
    """One benchmark problem.

    ``gold`` is the reference final answer: a canonical number text (``"72"``, ``"0.5"``) for gsm8k and
    svamp, LaTeX for math, the given text for generic. ``source`` is ``<path>:<line>`` (JSONL) or
    ``<path>[<index>]`` (JSON array). ``meta`` holds the remaining fields (solution, subject, level, ...).
    """

    id: str
    question: str
    gold: str
    kind: str
    source: str
    meta: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False)


@dataclasses.dataclass
class LoadReport:
    """What a load did: records seen in the window, problems loaded, records skipped and why."""

    path: str = ""
    kind: str = ""
    records: int = 0
    loaded: int = 0
    skipped: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """Which problems of which file to load (the ``dataset`` section of a bench/analyze config)."""

    path: str = bounded("", flag="--data", help="dataset file (GSM8K/MATH500 JSONL, SVAMP JSON, generic JSONL) or "
                                                "a short name: " + ", ".join(DATASET_ALIASES))
    kind: str = bounded("auto", choices=("auto", *KINDS, "math500"),
                        help="record format and answer kind (auto: detected from the first record)")
    limit: int | None = bounded(None, lo=1, hi=10**9, help="use at most this many problems (file order)")
    offset: int = bounded(0, lo=0, hi=10**9, help="skip this many records first")
    question_field: str | None = bounded(None, metavar="NAME", unset="question, problem, prompt or input",
                                         help="field holding the question in a generic JSONL file")
    answer_field: str | None = bounded(None, metavar="NAME", unset="answer, gold, target or output",
                                       help="field holding the gold answer in a generic JSONL file")
    id_field: str | None = bounded(None, metavar="NAME", unset="id, else file and line",
                                   help="field holding the record id (the resume key)")
    on_error: str = bounded("stop", choices=("stop", "skip"),
                            help="a malformed dataset record stops the run, or is skipped with a warning")

    def __post_init__(self) -> None:
        validate(self)

    def load(self, report: LoadReport | None = None) -> list[Problem]:
        """:func:`load_problems` with this config (``path`` resolved by :func:`resolve_dataset_path`)."""
        if not self.path:
            raise ConfigError("DatasetConfig.path is empty; set it to a dataset file or one of "
                              + ", ".join(DATASET_ALIASES))
        return load_problems(
            resolve_dataset_path(self.path), kind=self.kind, limit=self.limit, offset=self.offset,
            question_field=self.question_field, answer_field=self.answer_field, id_field=self.id_field,
            on_error=self.on_error, report=report,
        )


# --------------------------------------------------------------------------------------------- locating


def packaged_data_dir() -> Path:
    """The folder of the benchmark files shipped inside the package (``rankguide_edge/data``)."""
    return Path(str(resources.files("rankguide_edge").joinpath("data")))


def default_data_dir() -> Path:
    """Where short names resolve: ``$RANKGUIDE_EDGE_DATA`` when set, else :func:`packaged_data_dir`."""
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser().resolve() if env else packaged_data_dir()


def _in_data_dir(root: Path, rel: str) -> Path | None:
    """``root/rel`` or its gzip-compressed ``root/rel.gz``, whichever exists first; None if neither."""
    for candidate in (root / rel, root / (rel + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def resolve_dataset_path(name_or_path: str | os.PathLike[str]) -> Path:
    """An existing file path as is, or a short name (``gsm8k-test``, ``gsm8k-train``, ``math500``, ``svamp``)
    resolved in :func:`default_data_dir` (plain or ``.gz``); raise DatasetError if neither exists."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    alias = DATASET_ALIASES.get(str(name_or_path))
    if alias is not None:
        root = default_data_dir()
        found = _in_data_dir(root, alias)
        if found is not None:
            return found
        if os.environ.get(DATA_ENV):
            raise DatasetError(f"dataset {name_or_path!r} not found: ${DATA_ENV} is {root}, which has no {alias} "
                               f"(or {alias}.gz); unset {DATA_ENV} to use the packaged copy or pass a file path")
        raise DatasetError(f"dataset {name_or_path!r} ({alias}.gz) is missing from the installed package at "
                           f"{root}; reinstall rankguide-edge (pip install --force-reinstall .) or pass a file path")
    raise DatasetError(f"dataset file {str(name_or_path)!r} not found; pass an existing .jsonl/.json file "
                       f"or one of {', '.join(DATASET_ALIASES)}")


@dataclasses.dataclass(frozen=True)
class PackagedFile:
    """One benchmark file shipped in the package, as ``provenance.json`` describes it and as found on disk."""

    name: str  #: path under :func:`packaged_data_dir`, e.g. ``gsm8k/train.jsonl.gz``
    aliases: tuple[str, ...]
    records: int
    licence: str
    present: bool
    intact: bool  #: the packaged file's sha256 is the recorded one


def packaged_files() -> list[PackagedFile]:
    """Every file ``provenance.json`` lists, checked against its recorded sha256 (reads ~1.7 MB); raise
    DatasetError when the provenance note itself is missing or unreadable."""
    import hashlib

    root = packaged_data_dir()
    try:
        entries = json.loads((root / "provenance.json").read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{root / 'provenance.json'} is missing or unreadable ({exc}); reinstall rankguide-edge "
                           "(pip install --force-reinstall .)") from None
    out = []
    for name, e in entries.items():
        path = root / name
        present = path.is_file()
        intact = present and hashlib.sha256(path.read_bytes()).hexdigest() == e.get("gz_sha256")
        aliases = tuple(a for a, rel in DATASET_ALIASES.items() if rel + ".gz" == name)
        out.append(PackagedFile(name, aliases, int(e.get("records", 0)), str(e.get("licence", "")), present, intact))
    return out


def _open_binary(path: Path) -> io.BufferedIOBase:
    """The file's bytes, decompressed when its name ends in ``.gz``."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def _base_name(path: Path) -> Path:
    """``path`` without a ``.gz`` suffix: what ids and format detection look at."""
    return path.with_suffix("") if path.suffix == ".gz" else path


# --------------------------------------------------------------------------------------------- records


class _BadRecord(Exception):
    """A record that cannot become a Problem (message says why)."""


def _field_name(rec: Mapping[str, Any], explicit: str | None, candidates: tuple[str, ...]) -> str | None:
    """The explicit field name, or the first candidate present (and not null) in ``rec``; None if absent."""
    for n in (explicit,) if explicit else candidates:
        if n in rec and rec[n] is not None:
            return n
    return None


def _pick(rec: Mapping[str, Any], explicit: str | None, candidates: tuple[str, ...], what: str) -> Any:
    """The value of the field :func:`_field_name` finds; a missing field makes the record malformed."""
    name = _field_name(rec, explicit, candidates)
    if name is None:
        raise _BadRecord(f"no {what} field ({' or '.join((explicit,) if explicit else candidates)})")
    return rec[name]


def _text(value: Any, what: str) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise _BadRecord(f"{what} is empty or not text")
    return value.strip()


def _number_text(value: Any, what: str) -> str:
    v = parse_number(value)
    if v is None:
        raise _BadRecord(f"{what} {value!r} is not a number")
    return format_number(v)


def _detect_kind(path: Path, first: Mapping[str, Any] | None) -> str:
    """Record format from the first record; the file name breaks ties for plain question/answer files."""
    name = str(_base_name(path)).lower()
    if first is not None:
        if "Body" in first and "Question" in first:
            return "svamp"
        if "problem" in first and "answer" in first:
            return "math"
        ans = first.get("answer")
        if isinstance(ans, str) and "####" in ans:
            return "gsm8k"
    for hint in ("gsm8k", "math"):
        if hint in Path(name).name or hint in Path(name).parent.name:
            return hint
    return "generic"


def _make_problem(rec: Any, kind: str, path: Path, where: str, pos: int, fields: dict[str, str | None]) -> Problem:
    """Build one Problem; ``where`` is ``:<line>`` or ``[<index>]``; ``pos`` the 1-based line/record number."""
    if not isinstance(rec, dict):
        raise _BadRecord(f"record is a {type(rec).__name__}, not a JSON object")
    qf, af, idf = fields["question"], fields["answer"], fields["id"]
    source = f"{path}{where}"
    stem = _base_name(path).stem
    meta: dict[str, Any]
    if kind == "svamp":
        # SVAMP splits the problem into a context ("Body") and the asked question ("Question")
        body = "" if qf else _text(_pick(rec, None, ("Body",), "Body"), "Body")
        q = _text(_pick(rec, qf, ("Question",), "Question"), "Question")
        question = f"{body} {q}".strip()
        gold = _number_text(_pick(rec, af, ("Answer",), "Answer"), "Answer")
        pid = rec.get(idf or "ID")
        meta = {k: rec[k] for k in ("Equation", "Type") if k in rec}
        meta["body"], meta["question_only"] = body, q
        default_id = f"svamp-{pos}"
    elif kind == "gsm8k":
        question = _text(_pick(rec, qf, ("question",), "question"), "question")
        answer = _text(_pick(rec, af, ("answer",), "answer"), "answer")
        final = answer.rsplit("####", 1)[1] if "####" in answer else answer
        gold = _number_text(final.strip(), "final answer after ####")
        pid = rec.get(idf or "id")
        meta = {"solution": answer}
        default_id = f"gsm8k-{stem.replace('_public', '')}-{pos}"
    elif kind == "math":
        question = _text(_pick(rec, qf, ("problem", "question"), "problem"), "problem")
        gold = _text(_pick(rec, af, ("answer",), "answer"), "answer")
        pid = rec.get(idf) if idf else (rec.get("id") or rec.get("unique_id"))
        meta = {k: rec[k] for k in ("solution", "subject", "level", "unique_id") if k in rec}
        default_id = f"math-{stem}-{pos}"
    else:
        question = _text(_pick(rec, qf, _QUESTION_FIELDS, "question"), "question")
        raw = _pick(rec, af, _ANSWER_FIELDS, "answer")
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            gold = _number_text(raw, "answer")
        else:
            gold = _text(raw, "answer")
        pid = rec.get(idf or "id")
        used = {_field_name(rec, qf, _QUESTION_FIELDS), _field_name(rec, af, _ANSWER_FIELDS), idf or "id"}
        meta = {k: v for k, v in rec.items() if k not in used}
        default_id = f"{stem}-{pos}"
    if idf and pid is None:
        raise _BadRecord(f"no id field {idf!r}")
    pid_text = default_id if pid is None or (isinstance(pid, str) and not pid.strip()) else str(pid).strip()
    return Problem(id=pid_text, question=question, gold=gold, kind=kind, source=source, meta=meta)


def _unreadable(path: Path, exc: Exception) -> DatasetError:
    return DatasetError(f"{path}: cannot read the file ({exc}); replace it with an intact copy")


def _jsonl_records(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """(line number, parsed record or None, error or None) for every complete non-blank line."""
    return ((line.number, line.value, line.error) for line in read_lines(path, error=DatasetError))


def _is_json_array(path: Path) -> bool:
    try:
        with _open_binary(path) as fh:
            head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except (OSError, EOFError) as exc:
        raise _unreadable(path, exc) from None
    return head.startswith(b"[")


def _read_array(path: Path) -> list[Any]:
    try:
        with _open_binary(path) as fh:
            data = json.loads(fh.read().decode("utf-8-sig"))
    except (OSError, EOFError) as exc:
        raise _unreadable(path, exc) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not a valid JSON array ({exc}); fix the file or convert it to JSONL") from exc
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON array of records; fix the file or convert it to JSONL")
    return data


def _check_args(kind: str, limit: int | None, offset: int, on_error: str) -> str:
    if on_error not in ("stop", "skip"):
        raise ConfigError(f"on_error={on_error!r} is not one of stop, skip")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit={limit!r} must be a positive integer or None")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ConfigError(f"offset={offset!r} must be a non-negative integer")
    return "auto" if kind == "auto" else normalize_kind(kind)


def iter_problems(
    path: str | os.PathLike[str],
    *,
    kind: str = "auto",
    limit: int | None = None,
    offset: int = 0,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
    on_error: str = "stop",
    report: LoadReport | None = None,
) -> Iterator[Problem]:
    """Yield the problems of records ``offset .. offset+limit-1`` of a dataset file, in file order.

    A malformed record raises DatasetError naming ``file:line`` (``on_error="stop"``) or is skipped with a
    logged warning and counted in ``report`` (``on_error="skip"``). A missing file, a file without records,
    an empty window or a window with no usable record raises DatasetError. ``report`` (if given) is
    filled in as records are read.
    """
    want = _check_args(kind, limit, offset, on_error)
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"dataset file {str(p)!r} not found; check the path, or use a short name "
                           f"({', '.join(DATASET_ALIASES)})")
    rep = report if report is not None else LoadReport()
    rep.path = str(p)
    fields = {"question": question_field, "answer": answer_field, "id": id_field}

    is_array = _is_json_array(p)
    if is_array:
        array = _read_array(p)
        records: Iterator[tuple[int, Any, str | None]] = ((i + 1, r, None) for i, r in enumerate(array))
        first = next((r for r in array if isinstance(r, dict)), None)
        total: int | None = len(array)
    else:
        first = next((r for _, r, e in _jsonl_records(p) if e is None and isinstance(r, dict)), None)
        records = _jsonl_records(p)
        total = None
    resolved = _detect_kind(p, first) if want == "auto" else want
    rep.kind = resolved

    seen = 0
    for pos, rec, err in records:
        seen += 1
        if seen <= offset:
            continue
        if limit is not None and rep.records >= limit:
            break
        rep.records += 1
        where = f"[{pos - 1}]" if is_array else f":{pos}"
        try:
            if err is not None:
                raise _BadRecord(err)
            problem = _make_problem(rec, resolved, p, where, pos, fields)
        except _BadRecord as exc:
            label = f"{p}{where}" if not is_array else f"{p} record {pos - 1}"
            msg = f"{label}: {exc}"
            if on_error == "stop":
                raise DatasetError(f"{msg}; fix the record, or skip malformed records (--on-error skip, "
                                   "on_error=\"skip\" in Python)") from None
            rep.skipped += 1
            if len(rep.errors) < _MAX_ERRORS_KEPT:
                rep.errors.append(msg)
            _log.warning("skipping malformed record %s", msg)
            continue
        rep.loaded += 1
        yield problem

    if seen == 0:
        raise DatasetError(f"{p}: the dataset has no records; point to a non-empty file")
    if rep.records == 0:
        count = total if total is not None else seen
        raise DatasetError(f"{p}: offset {offset} is past the last record ({count} records); lower --offset")
    if rep.loaded == 0:
        first_error = rep.errors[0] if rep.errors else "no detail"
        raise DatasetError(f"{p}: none of the {rep.records} records could be read (first: {first_error}); "
                           "fix the file or choose another --kind/--question-field/--answer-field")


def load_problems(
    path: str | os.PathLike[str],
    *,
    kind: str = "auto",
    limit: int | None = None,
    offset: int = 0,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
    on_error: str = "stop",
    report: LoadReport | None = None,
) -> list[Problem]:
    """All problems of :func:`iter_problems` as a list (same arguments, same errors).

    Pass a :class:`LoadReport` as ``report`` to learn how many malformed records were skipped.
    """
    return list(iter_problems(
        path, kind=kind, limit=limit, offset=offset, question_field=question_field,
        answer_field=answer_field, id_field=id_field, on_error=on_error, report=report,
    ))


__all__ = [
    "DATASET_ALIASES",
    "DATA_ENV",
    "DatasetConfig",
    "LoadReport",
    "PackagedFile",
    "Problem",
    "default_data_dir",
    "iter_problems",
    "load_problems",
    "packaged_data_dir",
    "packaged_files",
    "resolve_dataset_path",
]
