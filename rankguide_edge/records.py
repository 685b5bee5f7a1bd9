"""Trace and label records: their one schema and the one reader of their files.

A **trace file** (``rankguide-edge trace``, written by :mod:`rankguide_edge.fitting.trace`) holds one JSON
object per problem: ``id``, ``kind``, ``question``, ``gold``, ``prediction``, ``correct`` (bool),
``finished``, ``n_tokens``, ``n_steps``, ``seconds``, ``model``, ``layers`` (tapped), ``text``,
``signal_config``, optionally ``steer``, and ``steps``: one object per step with ``index``, ``text``,
``n_tokens``, ``token_start``, ``token_end``, ``token_ids``, ``ended_by``, ``seconds``, ``signal_ms`` and
``signals`` (signal name -> number, null when not finite). A problem that could not be traced is an *error
record*: ``id``, ``kind``, ``question``, ``gold``, ``error`` and ``"steps": []``.

A **label file** (``rankguide-edge label``, :mod:`rankguide_edge.fitting.label`) starts with a header line,
``{"format": LABEL_FORMAT, "version": 1, "settings": ..., "selection": ...}``; every later line is a problem
record of the same shape, whose steps also carry ``source`` (srm or lrm) and, for SRM steps, ``lrm`` (the
LRM's check), ``pooled``, ``cf`` (the counterfactual) and ``control``; LRM steps have no ``signals``.

What the reader checks is the shape every consumer relies on (a record is an object; ``steps``, when present,
is a list of objects; a step's ``signals``, when present, an object of numbers or nulls; a record has ``steps``
or ``text``); what a consumer needs beyond that (``analyze`` needs ``correct``, say) it checks itself.

Reading (:func:`load_record_file`): every line goes through :func:`rankguide_edge.jsonl.read_lines`, so the
torn-last-line policy is the project's one (a last line without its newline that does not parse is a write in
progress: skipped, the file never changed). Any other line that is not JSON or not a record is *malformed*:
by default it raises the caller's error class naming ``file:line``; with ``skip_malformed`` it is skipped and
listed in :attr:`RecordFile.skipped` for the caller to count and report. A ``bench run`` results file is the
wrong file altogether and always refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidInputError
from .jsonl import read_lines

#: the ``format`` of a label file's header line
LABEL_FORMAT = "rankguide-edge/labels"
#: what a file holds: its records' name in messages and the command that writes it
KINDS = {"trace": "rankguide-edge trace", "label": "rankguide-edge label"}


@dataclass
class RecordFile:
    """The records of one trace or label file, in file order.

    ``records[i]`` is the record on line ``numbers[i]``; ``header`` is a label file's header (None for a trace
    file); ``n_lines`` counts every non-blank complete line read, header and malformed ones included;
    ``skipped`` lists ``(line, why)`` for each malformed line left out (only with ``skip_malformed``).
    """

    path: str
    records: list[dict[str, Any]] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    header: dict[str, Any] | None = None
    n_lines: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def ids(self) -> set[str]:
        """The ids of the records (a resumed run skips them)."""
        return {str(r.get("id")) for r in self.records}


def is_bench_record(rec: Any) -> bool:
    """Whether ``rec`` is a ``bench run`` result (one per problem and method), not a trace record."""
    return isinstance(rec, dict) and "method" in rec and "steps" in rec and "counts" in rec


def record_problem(rec: Any) -> str | None:
    """What is wrong with one trace or label record, in a few words (None: usable)."""
    if not isinstance(rec, dict):
        return f"a record must be a JSON object, not {type(rec).__name__}"
    steps = rec.get("steps")
    if steps is None:
        return None if isinstance(rec.get("text"), str) or rec.get("error") else "it has neither steps[] nor text"
    if not isinstance(steps, list) or not all(isinstance(st, dict) for st in steps):
        return "'steps' must be a list of objects"
    for i, st in enumerate(steps):
        sig = st.get("signals")
        if sig is None:
            continue
        if not isinstance(sig, dict):
            return f"step {st.get('index', i)}: 'signals' must be an object"
        bad = next((k for k, v in sig.items()
                    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)))), None)
        if bad is not None:
            return f"step {st.get('index', i)}: signal {bad!r} is not a number"
    return None


def load_record_file(path: str | os.PathLike[str], kind: str = "trace", *, skip_malformed: bool = False,
                     missing_ok: bool = False, error: type[InvalidInputError] = InvalidInputError) -> RecordFile:
    """Read a trace (``kind="trace"``) or label (``kind="label"``) file (see the module's policy).

    Raises ``error`` when the file is missing (unless ``missing_ok``: no records), unreadable, holds ``bench
    run`` results, or, for a label file, does not start with a label header; and at the first malformed line
    unless ``skip_malformed``."""
    command = KINDS[kind]
    p = Path(path).expanduser()
    out = RecordFile(str(p))
    if not p.is_file():
        if missing_ok and not p.exists():
            return out
        raise error(f"{kind} file {p} not found: write one with `{command}`, or pass an existing .jsonl file")
    for line in read_lines(p, error=error):
        out.n_lines += 1
        if kind == "label" and out.n_lines == 1:
            if not isinstance(line.value, dict) or line.value.get("format") != LABEL_FORMAT:
                raise error(f"{p} is not a label file (its first line must be a {LABEL_FORMAT} header): "
                            f"write one with `{command}`")
            out.header = line.value
            continue
        if is_bench_record(line.value):
            raise error(f"{p} holds `bench run` results, not traces: pass its folder ({p.parent}) to read a "
                        "bench run (`calibrate DIR`, `bench report DIR`)")
        why = line.error
        if why is None:
            problem = record_problem(line.value)
            why = None if problem is None else f"not a {kind} record ({problem})"
        if why is not None:
            if not skip_malformed:
                raise error(f"{p}:{line.number} is {why}: fix or remove that line")
            out.skipped.append((line.number, why))
            continue
        out.records.append(line.value)
        out.numbers.append(line.number)
    if kind == "label" and out.header is None:
        raise error(f"{p} is not a label file (its first line must be a {LABEL_FORMAT} header): "
                    f"write one with `{command}`")
    return out


def trace_text(rec: Mapping[str, Any]) -> str:
    """A record's answer text: its steps' texts joined, else its ``text``."""
    steps = rec.get("steps") or []
    if steps:
        return "".join(str(s.get("text", "")) for s in steps)
    return str(rec.get("text") or "")


__all__ = ["KINDS", "LABEL_FORMAT", "RecordFile", "is_bench_record", "load_record_file", "record_problem",
           "trace_text"]
