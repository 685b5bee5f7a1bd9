"""Files: writing so that a reader never sees half of one, and reading the project's config files.

:func:`atomic_path` is the one place that writes through a temporary name in the same folder, then a rename;
:func:`write_text_atomic` and :func:`write_bytes_atomic` are its two common cases. Writers that produce the
file themselves (a GGUF writer, matplotlib) write to the path it yields. :func:`read_toml` is the one TOML
reader (tomllib, or tomli on Python 3.10) and :func:`read_mapping` reads a JSON or TOML file of keys.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import ConfigError, DependencyError

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


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The TOML file at ``path`` as a dict. DependencyError on Python 3.10 without tomli; OSError and
    ValueError (a malformed file) propagate for the caller to name."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise DependencyError("reading TOML on Python 3.10 needs tomli: run `pip install tomli`") from None
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def read_mapping(path: str | os.PathLike[str], what: str = "config file") -> dict[str, Any]:
    """A JSON or TOML (by its ``.toml`` suffix) file holding an object of keys; ConfigError naming ``what``
    when it cannot be read or parsed, or holds something else."""
    try:
        if str(path).lower().endswith(".toml"):
            data: Any = read_toml(path)
        else:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold an object (a table) of keys")
    return data
