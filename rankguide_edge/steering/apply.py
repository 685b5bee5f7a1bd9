"""Applying a control-vector file to a decoding context (the inference side of steering).

A file's ``direction.N`` is added to the tapped ``l_out-N`` (see docs/DESIGN.md, "layer indices"); this module
turns a loaded file into the ``{layer: (n_embd,) float32}`` mapping the runtime takes, and caches loaded files
by path and modification time so that per-request steering (server, chat) does not re-read them.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from ..engine.context import STEER_WHERE, Context
from ..errors import ControlVectorError
from ..signals.segment import DEFAULT_DELIMITER

_CACHE: dict[tuple[str, int, int, int], dict[int, np.ndarray]] = {}
_LOCK = threading.Lock()


def steering_vectors(path: str | os.PathLike[str], *, n_embd: int, n_layer: int) -> dict[int, np.ndarray]:
    """Load ``path`` (validated against the model's ``n_embd``/``n_layer``) as ``{layer: (n_embd,) float32}``,
    leaving out all-zero directions. Cached by (path, mtime, model shape)."""
    from .cvec_io import load_control_vector

    p = os.fspath(path)
    try:
        mtime = os.stat(p).st_mtime_ns
    except OSError:
        raise ControlVectorError(f"steering file {p} does not exist: give the path of a control-vector .gguf "
                                 "(rankguide-edge steer extract writes one)") from None
    key = (os.path.abspath(p), mtime, n_embd, n_layer)
    with _LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    cv = load_control_vector(p, n_embd=n_embd, n_layer=n_layer)
    vectors = {layer: v for layer, v in cv.as_layers().items() if np.any(v)}
    if not vectors:
        raise ControlVectorError(f"steering file {p} holds only zero vectors: it would not change anything")
    with _LOCK:
        if len(_CACHE) > 32:
            _CACHE.clear()
        _CACHE[key] = vectors
    return vectors


def apply_steering(ctx: Context, path: str | None, scale: float = 1.0, where: str = "all",
                   delimiter: str = DEFAULT_DELIMITER) -> dict[str, Any] | None:
    """Steer ``ctx`` with the file at ``path`` (None or "" clears any steering). Returns a short description
    ``{"file", "layers", "scale", "where"}`` or None."""
    if not path:
        ctx.clear_control_vector()
        return None
    if where not in STEER_WHERE:
        raise ControlVectorError(f"unknown steering placement {where!r}: use all or boundary")
    vectors = steering_vectors(path, n_embd=ctx.model.n_embd, n_layer=ctx.model.n_layer)
    ctx.set_steering(vectors, scale, where=where, delimiter=delimiter)
    return {"file": os.fspath(path), "layers": sorted(vectors), "scale": float(scale), "where": where}
