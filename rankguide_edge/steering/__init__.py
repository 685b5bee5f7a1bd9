"""Steering vectors: extraction from SRM traces (``extract``) and llama.cpp control-vector files (``cvec_io``).

``direction.N`` in a file is added by llama.cpp to ``l_out-N``, the output of 0-based layer N (the tapped
layer N); see docs/STEERING.md. Importing this package loads nothing: names resolve on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exports import lazy_exports

_EXPORTS = {
    "ControlVector": ".cvec_io",
    "ExtractConfig": ".extract",
    "ExtractReport": ".extract",
    "ExtractResult": ".extract",
    "check_against": ".cvec_io",
    "describe": ".cvec_io",
    "direction_for_layer": ".cvec_io",
    "extract_steering_vector": ".extract",
    "layer_for_direction": ".cvec_io",
    "load_control_vector": ".cvec_io",
    "read_traces": ".extract",
    "save_control_vector": ".cvec_io",
    "steering_layers": ".extract",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "ControlVector",
    "ExtractConfig",
    "ExtractReport",
    "ExtractResult",
    "check_against",
    "describe",
    "direction_for_layer",
    "extract_steering_vector",
    "layer_for_direction",
    "load_control_vector",
    "read_traces",
    "save_control_vector",
    "steering_layers",
]

if TYPE_CHECKING:
    from .cvec_io import (
        ControlVector,
        check_against,
        describe,
        direction_for_layer,
        layer_for_direction,
        load_control_vector,
        save_control_vector,
    )
    from .extract import (
        ExtractConfig,
        ExtractReport,
        ExtractResult,
        extract_steering_vector,
        read_traces,
        steering_layers,
    )
