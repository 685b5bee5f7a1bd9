"""JSON Lines files: the one reader, the one appender and the one atomic whole-file write of the project.

**The torn-last-line policy** (the same for every file: traces, labels, bench results, datasets). Every line we
write ends with a newline, so a last line without one that does not parse is a *torn write*: its writer was
killed mid-line, or is writing it right now. Every reader skips it (logging that it did) and never changes the
file; :func:`append_jsonl` cuts it off before it appends, so a resumed file stays valid JSONL and the lost
record is simply written again. A last line without a newline that *does* parse is a complete record (files
written by hand often end that way): readers return it and the appender first ends it with its newline.
Any other line that is not JSON is malformed; what that means (skip and count, or fail) is the caller's choice,
made with :func:`read_lines` (each line with its error) or :func:`read_records` (the first error raises).

Files whose name ends in ``.gz`` are read and written gzip-compressed. Blank lines are skipped; the first line
may start with a UTF-8 byte-order mark.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from .errors import InvalidInputError
from .files import atomic_path

_log = logging.getLogger(__name__)

#: how far back :func:`_repair_tail` reads at a time looking for the last newline
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Line:
    """One non-blank line of a JSONL file: its 1-based number and either its JSON value or why it has none."""

    number: int
    value: Any = None
    error: str | None = None


def _open_read(path: Path) -> IO[bytes]:
    return cast(IO[bytes], gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb"))  # noqa: SIM115


def read_lines(path: str | os.PathLike[str], *, error: type[InvalidInputError] = InvalidInputError
               ) -> Iterator[Line]:
    """Every complete non-blank line of ``path``, in order, each with its value or its error (``not valid JSON
    (...)`` / ``not UTF-8 (...)``); a torn last line is skipped (see the module's policy). A file that cannot
    be read (missing, a damaged ``.gz``) raises ``error`` with a one-line message."""
    p = Path(path)
    try:
        with _open_read(p) as fh:
            for number, raw in enumerate(fh, start=1):
                torn = not raw.endswith(b"\n")  # only the last line can lack its newline
                try:
                    text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    if torn:
                        _log.info("%s:%d: skipping a torn last line (no newline, cut mid-character)", p, number)
                        return
                    yield Line(number, error=f"not UTF-8 ({exc.reason} at byte {exc.start})")
                    continue
                if not text.strip():
                    continue
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    if torn:
                        _log.info("%s:%d: skipping a torn last line (no newline, not JSON)", p, number)
                        return
                    yield Line(number, error=f"not valid JSON ({exc.msg} at column {exc.colno})")
                    continue
                yield Line(number, value)
    except (OSError, EOFError) as exc:  # missing, unreadable, or a truncated .gz
        raise error(f"{p}: cannot read the file ({exc}); replace it with an intact copy") from None


def read_records(path: str | os.PathLike[str], *, error: type[InvalidInputError] = InvalidInputError,
                 missing_ok: bool = False) -> list[Any]:
    """The values of every complete line of ``path`` (a torn last line skipped); the first malformed line
    raises ``error`` naming ``file:line``. With ``missing_ok`` a missing file holds no records (a run not
    started yet)."""
    if missing_ok and not Path(path).exists():
        return []
    out = []
    for line in read_lines(path, error=error):
        if line.error is not None:
            raise error(f"{path}:{line.number} is {line.error}: fix or remove that line")
        out.append(line.value)
    return out


def _repair_tail(path: Path) -> None:
    """Make ``path`` end at the end of a line: a torn last line is cut off, a complete one gets its newline."""
    with open(path, "rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        tail, start = b"", 0
        pos = size
        while pos > 0:
            step = min(_CHUNK, pos)
            pos -= step
            fh.seek(pos)
            chunk = fh.read(step)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                tail, start = chunk[cut + 1:] + tail, pos + cut + 1
                break
            tail = chunk + tail
        try:
            json.loads(tail.decode("utf-8-sig" if start == 0 else "utf-8"))
        except ValueError:  # JSONDecodeError and UnicodeDecodeError alike: torn
            _log.warning("%s: cutting off a torn last line (%d bytes) before appending", path, size - start)
            fh.truncate(start)
            return
        fh.seek(0, os.SEEK_END)
        fh.write(b"\n")


class JsonlAppender:
    """Writes records to an open JSONL file, one line each, flushed as it goes (see :func:`append_jsonl`)."""

    def __init__(self, fh: IO[str]) -> None:
        self._fh = fh

    def write(self, record: Any) -> None:
        """Append ``record`` as one line and flush it (a killed run loses at most the line being written)."""
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()

    @property
    def empty(self) -> bool:
        """Whether the file holds nothing yet."""
        return self._fh.tell() == 0


@contextmanager
def append_jsonl(path: str | os.PathLike[str]) -> Iterator[JsonlAppender]:
    """Open ``path`` (created if missing) for appending records, after repairing its tail per the torn-line
    policy. A ``.gz`` name is a caller's mistake (ValueError): compressed files are written whole."""
    p = Path(path)
    if p.suffix == ".gz":
        raise ValueError(f"{p}: a gzip-compressed JSONL file cannot be appended to")
    if p.exists():
        _repair_tail(p)
    with open(p, "a", encoding="utf-8") as fh:
        yield JsonlAppender(fh)


def dumps_jsonl(records: Iterable[Any]) -> str:
    """``records`` as JSONL text: one line per record, each ending with a newline."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def write_jsonl_atomic(path: str | os.PathLike[str], records: Iterable[Any]) -> Path:
    """Write ``records`` as the whole of ``path`` atomically (the old file or the new, never half); gzip for a
    ``.gz`` name (with a zero timestamp, so equal records give equal bytes)."""
    data = dumps_jsonl(records).encode("utf-8")
    p = Path(path)
    with atomic_path(p) as tmp:
        tmp.write_bytes(gzip.compress(data, mtime=0) if p.suffix == ".gz" else data)
    return p


__all__ = ["JsonlAppender", "Line", "append_jsonl", "dumps_jsonl", "read_lines", "read_records",
           "write_jsonl_atomic"]
