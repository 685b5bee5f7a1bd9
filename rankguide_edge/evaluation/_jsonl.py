"""Append-only JSONL result files that survive being killed mid-write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError


def read_for_resume(path: Path) -> list[dict[str, Any]]:
    """The complete records of ``path``; a torn last line (the writer died mid-line) is cut off the file so
    that appending stays valid JSONL. A malformed complete line is an error: the file is not ours to repair."""
    if not path.exists():
        return []
    records: list[dict[str, Any]] = []
    with open(path, "rb+") as fh:
        data = fh.read()
        good = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise InvalidInputError(f"{path} holds a malformed line after byte {good}: "
                                        "move the file away or fix it before resuming") from None
            good += len(line)
        if good < len(data):
            fh.truncate(good)
    return records
