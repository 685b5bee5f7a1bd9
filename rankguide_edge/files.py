"""Writing files so that a reader never sees half of one: a temporary name in the same folder, then a rename.

:func:`atomic_path` is the one place that does it; :func:`write_text_atomic` and :func:`write_bytes_atomic` are
its two common cases. Writers that produce the file themselves (a GGUF writer, matplotlib) write to the path it
yields.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_serial = itertools.count()


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (same suffix, so writers that go by it still work); when the block
    ends normally the file is flushed to disk and renamed onto ``path``, else it is removed and ``path`` is left
    as it was. An interrupted write therefore leaves the old file or none, never half of the new one."""
    p = Path(path)
    tmp = p.with_name(f".{p.stem}.tmp-{os.getpid()}-{next(_serial)}{p.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:  # on disk before the rename, so a crash cannot leave an empty target
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_path`)."""
    return write_bytes_atomic(path, text.encode("utf-8"))
