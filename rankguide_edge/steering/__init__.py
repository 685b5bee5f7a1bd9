"""Steering vectors: extraction from SRM traces (``extract``) and llama.cpp control-vector files (``cvec_io``).

``direction.N`` in a file is added by llama.cpp to ``l_out-N``, the output of 0-based layer N (the tapped
layer N); see docs/STEERING.md. Importing this package loads nothing: names resolve on first use.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "ControlVector": "cvec_io", "load_control_vector": "cvec_io", "save_control_vector": "cvec_io",
    "check_against": "cvec_io", "direction_for_layer": "cvec_io", "layer_for_direction": "cvec_io",
    "describe": "cvec_io",
    "ExtractConfig": "extract", "ExtractReport": "extract", "ExtractResult": "extract",
    "extract_steering_vector": "extract", "read_traces": "extract", "steering_layers": "extract",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
