"""Reading a ``rankguide-edge trace`` JSONL file into flat arrays for the analysis.

One record per line (the trace schema of :mod:`rankguide_edge.records`, read by its one reader): trace fields
``correct``, ``finished``, ``n_tokens``, ``n_steps`` and ``steps``, each step holding a ``signals`` object of
floats and optionally a boolean ``label`` (true = the step is wrong). Records carrying ``"error"`` are counted
and skipped; so are records without steps. A malformed line (bad JSON, missing ``correct``, a non-numeric
signal, ...) stops the load with its ``file:line`` when ``strict``, else it is skipped and counted.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..records import load_record_file

_log = logging.getLogger(__name__)

_MAX_WARNINGS = 20


class _Malformed(Exception):
    """A record that cannot be used (the message says why)."""


@dataclasses.dataclass
class TraceTable:
    """Usable traces of one file, flattened. ``n`` traces, ``S`` steps in all, ``K`` signal keys.

    * ``wrong`` bool ``(n,)``: the trace's final answer is wrong (``correct`` is false);
    * ``finished`` bool ``(n,)``: the model stopped by itself before the token cap (unknown counts False);
    * ``n_tokens`` float64 ``(n,)``, ``n_steps`` float64 ``(n,)``: trace length;
    * ``starts`` int64 ``(n,)``: first row of each trace in the step arrays; ``steps_per_trace`` int64 ``(n,)``;
    * ``values`` float64 ``(S, K)``: signal values by step row and key, NaN where a step lacks the key;
    * ``owner`` int64 ``(S,)``: trace of each step row; ``position`` int64 ``(S,)``: its 0-based index;
    * ``step_label`` float64 ``(S,)``: 1.0 wrong step, 0.0 right step, NaN unlabelled.
    """

    path: str
    ids: list[str]
    wrong: np.ndarray
    finished: np.ndarray
    n_tokens: np.ndarray
    n_steps: np.ndarray
    starts: np.ndarray
    steps_per_trace: np.ndarray
    keys: list[str]
    values: np.ndarray
    owner: np.ndarray
    position: np.ndarray
    step_label: np.ndarray
    n_lines: int = 0
    n_errors: int = 0
    n_malformed: int = 0
    n_no_steps: int = 0
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.wrong.size)

    @property
    def n_unfinished(self) -> int:
        return int((~self.finished).sum())


def _number(value: Any, what: str) -> float | None:
    """A finite float, None for null/NaN/inf (missing); anything else makes the record malformed."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Malformed(f"{what} is {type(value).__name__} {value!r}, not a number")
    v = float(value)
    return v if math.isfinite(v) else None


def _parse_record(rec: Any, key_index: dict[str, int]) -> dict[str, Any] | str:
    """The usable parts of one record, or ``"error"`` / ``"no_steps"`` for records to count and skip."""
    if not isinstance(rec, dict):
        raise _Malformed(f"record is {type(rec).__name__}, not a JSON object")
    if rec.get("error") not in (None, "", False):
        return "error"
    correct = rec.get("correct")
    if not isinstance(correct, bool):
        raise _Malformed(f"field 'correct' is {correct!r}, not true/false")
    steps = rec.get("steps")
    if not isinstance(steps, list):
        raise _Malformed("field 'steps' is missing or not a list")
    if not steps:
        return "no_steps"
    rows: list[dict[int, float]] = []
    labels: list[float] = []
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or not isinstance(step.get("signals"), dict):
            raise _Malformed(f"step {i} has no 'signals' object")
        row: dict[int, float] = {}
        for key, raw in step["signals"].items():
            v = _number(raw, f"step {i} signal {key!r}")
            if v is not None:
                row[key_index.setdefault(str(key), len(key_index))] = v
        rows.append(row)
        label = step.get("label")
        labels.append(float(label) if isinstance(label, bool) else math.nan)
    n_tokens = _number(rec.get("n_tokens"), "field 'n_tokens'")
    if n_tokens is None:
        ends = [s.get("token_end") for s in steps]
        counts = [s.get("n_tokens") for s in steps]
        if isinstance(ends[-1], (int, float)) and not isinstance(ends[-1], bool):
            n_tokens = float(ends[-1])
        elif all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in counts):
            n_tokens = float(sum(counts))
        else:
            raise _Malformed("field 'n_tokens' is missing and the steps do not give it")
    n_steps = _number(rec.get("n_steps"), "field 'n_steps'")
    finished = rec.get("finished")
    if not isinstance(finished, bool):
        finished = steps[-1].get("ended_by") == "eog" if isinstance(steps[-1], dict) else False
    return {"id": str(rec.get("id", "")), "wrong": not correct, "finished": bool(finished),
            "n_tokens": n_tokens, "n_steps": float(len(steps)) if n_steps is None else n_steps,
            "rows": rows, "labels": labels}


def load_traces(path: str | os.PathLike[str], *, strict: bool = False) -> TraceTable:
    """Read a trace JSONL file (:func:`rankguide_edge.records.load_record_file`) into a :class:`TraceTable`.

    Raises InvalidInputError when the file is missing or empty, and, with ``strict``, at the first
    malformed line (naming ``file:line``). Otherwise malformed lines are skipped, counted in
    ``n_malformed`` and described (the first few) in ``warnings``.
    """
    f = load_record_file(path, "trace", skip_malformed=True)
    p = Path(f.path)
    if f.n_lines == 0:
        raise InvalidInputError(f"trace file {str(p)!r} is empty; write traces into it with `rankguide-edge trace`")
    key_index: dict[str, int] = {}
    parsed: list[dict[str, Any]] = []
    n_errors = n_no_steps = 0
    bad: list[tuple[int, str]] = list(f.skipped)
    for number, rec in zip(f.numbers, f.records, strict=True):
        try:
            out = _parse_record(rec, key_index)
        except _Malformed as exc:
            bad.append((number, str(exc)))
            continue
        if out == "error":
            n_errors += 1
        elif out == "no_steps":
            n_no_steps += 1
        else:
            parsed.append(out)  # type: ignore[arg-type]
    bad.sort()
    if bad and strict:
        number, why = bad[0]
        raise InvalidInputError(f"{p}:{number}: {why}; fix or remove that line, or drop --strict to skip it")
    warnings: list[str] = []
    for number, why in bad:
        msg = f"{p}:{number}: {why}"
        if len(warnings) < _MAX_WARNINGS:
            warnings.append(msg)
        _log.warning("skipping malformed trace record %s", msg)
    return _flatten(str(p), parsed, key_index, n_lines=f.n_lines, n_errors=n_errors,
                    n_malformed=len(bad), n_no_steps=n_no_steps, warnings=warnings)


def _flatten(path: str, parsed: list[dict[str, Any]], key_index: dict[str, int], **counts: Any) -> TraceTable:
    """Stack parsed records into the arrays of a TraceTable."""
    n = len(parsed)
    per = np.array([len(r["rows"]) for r in parsed], dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(per)[:-1])).astype(np.int64) if n else np.zeros(0, np.int64)
    total = int(per.sum())
    values = np.full((total, len(key_index)), np.nan)
    row = 0
    for r in parsed:
        for step in r["rows"]:
            if step:
                values[row, list(step.keys())] = list(step.values())
            row += 1
    owner = np.repeat(np.arange(n, dtype=np.int64), per)
    position = np.arange(total, dtype=np.int64) - np.repeat(starts, per)
    return TraceTable(
        path=path, ids=[r["id"] for r in parsed],
        wrong=np.array([r["wrong"] for r in parsed], dtype=bool),
        finished=np.array([r["finished"] for r in parsed], dtype=bool),
        n_tokens=np.array([r["n_tokens"] for r in parsed], dtype=np.float64),
        n_steps=np.array([r["n_steps"] for r in parsed], dtype=np.float64),
        starts=starts, steps_per_trace=per, keys=list(key_index), values=values, owner=owner,
        position=position,
        step_label=np.array([x for r in parsed for x in r["labels"]], dtype=np.float64),
        **counts,
    )
