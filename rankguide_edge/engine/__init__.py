"""The engine: llama.cpp models (``model``) and their contexts with a hidden-state tap (``context``), model
manifests and the cache (``models``). Only :mod:`._native` touches ctypes."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import RuntimeConfig
    from .model import Model


def load_model(name_or_path: str | os.PathLike[str], config: RuntimeConfig | None = None, *,
               pull: bool = True, progress: bool = True) -> Model:
    """Resolve a model name (pulling it if needed) or GGUF path, and load it with ``config``'s model options."""
    from ..config import RuntimeConfig
    from .model import Model
    from .models import resolve_model

    cfg = config or RuntimeConfig()
    path = resolve_model(os.fspath(name_or_path), pull=pull, progress=progress)
    return Model(path, n_gpu_layers=cfg.n_gpu_layers, extra_buffers=cfg.extra_buffers)


__all__ = ["load_model"]
