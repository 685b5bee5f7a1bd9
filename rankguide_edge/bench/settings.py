"""A bench folder's ``run.json``: the settings that make its records comparable, checked when a run resumes.

Records written under different models, token budgets, seeds, routers or steering files must not be mixed in
one report, so the first run of a folder writes these settings and every later run must match them (a
ConfigError names the difference). Each run also appends a session (start time, package version, threads),
and every record it writes carries that session's id, so a report can tell which records ran together.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InvalidInputError
from ..files import write_text_atomic

#: settings a resumed run must share with the folder's first run
COMPARED = ("srm", "lrm", "max_tokens", "seed", "router", "steering", "routers")
#: settings that name files per method: new names may join a folder, a name may not change its file
NAMED_FILES = ("steering", "routers")


def model_identity(path: str | os.PathLike[str]) -> str:
    """``name.gguf (N bytes)``: the same weights compare equal wherever the cache lives."""
    p = Path(path)
    try:
        return f"{p.name} ({p.stat().st_size} bytes)"
    except OSError:
        return p.name


def identity_bytes(identity: Any) -> int | None:
    """The size a :func:`model_identity` names (``"x.gguf (491400064 bytes)"`` -> 491400064); None for a URL,
    a missing model or a name without a size."""
    m = re.fullmatch(r".*\((\d+) bytes\)", str(identity or ""))
    return int(m.group(1)) if m else None


def run_model_bytes(run_dir: str | os.PathLike[str]) -> dict[str, int | None]:
    """``{"srm": bytes, "lrm": bytes}`` from a bench folder's run.json (None where unknown or no run.json)."""
    try:
        settings = json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        return {"srm": None, "lrm": None}
    return {role: identity_bytes(settings.get(role)) for role in ("srm", "lrm")}


def _digest(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()[:16]


def file_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a small file (a steering vector): a re-extracted vector under the same name differs."""
    return _digest(Path(path).read_bytes())


def router_identity(path: str | os.PathLike[str] | None) -> str:
    """The digest of the router in force, by content: ``path``'s file, or the package's default (so a resumed run
    notices an upgrade that changed the shipped router, and a copy of the old one under ``--router`` matches)."""
    from ..collab.router import shipped_router_text

    return file_digest(path) if path else _digest(shipped_router_text().encode("utf-8"))


def start_session(out: Path, settings: Mapping[str, Any], *, threads: int) -> str:
    """Check ``settings`` against ``out``/run.json (writing it on a folder's first run), append this session
    and return its id (the UTC start time). ConfigError when a compared setting differs."""
    from .. import __version__

    path = out / "run.json"
    meta: dict[str, Any] = {"settings": {k: settings.get(k) for k in COMPARED}, "sessions": []}
    if path.exists():
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            old = meta["settings"]
        except (ValueError, KeyError, TypeError):
            raise InvalidInputError(f"{path} is not a bench run.json: remove it or choose a new --out") from None
        for key in COMPARED:
            new_value, old_value = settings.get(key), old.get(key)
            if key in NAMED_FILES:  # new names may join; a name may not change its file
                new_named, old_named = new_value or {}, old_value or {}
                clash = sorted(n for n in set(new_named) & set(old_named) if new_named[n] != old_named[n])
                if clash:
                    option = "--steer" if key == "steering" else "--router-file"
                    raise ConfigError(f"{out} declared {option} {clash[0]} with file digest {old_named[clash[0]]}, "
                                      f"not {new_named[clash[0]]}: use the same file, a new name or a new --out")
                old[key] = {**old_named, **new_named}
            elif old_value is None and key == "lrm":  # a first run of SRM-only methods named no LRM
                old["lrm"] = new_value
            elif new_value != old_value and not (key == "lrm" and new_value is None):
                raise ConfigError(f"{out} was run with {key} = {old_value!r}, not {new_value!r}: rerun with the "
                                  "same setting to resume, or choose a new --out")
    session = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    meta.setdefault("sessions", []).append({"id": session, "version": __version__, "threads": threads})
    write_text_atomic(path, json.dumps(meta, indent=2))
    return session
