"""Layer lists as users write them (``auto``, ``all``, ``last``, ``0,5,-1``, ``20-23``) -> 0-based layer
indices. The index convention itself is documented in docs/DESIGN.md."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..config import bounded, validate
from ..errors import LayerIndexError

_LAYER_WORDS = ("auto", "all", "last")


@dataclasses.dataclass(frozen=True)
class TapConfig:
    """Which layers a context taps when a command reads hidden states directly (``generate``, ``bench capture``)."""

    layers: str = bounded("all", help="tapped layers: all, last, 0,5,-1 or 20-23")

    def __post_init__(self) -> None:
        validate(self)


def _layer_ranges(spec: str) -> list[tuple[int, int]]:
    """``"0,5,-1"`` / ``"20-23"`` -> inclusive ``(first, last)`` pairs, not expanded; LayerIndexError on bad
    syntax or when no layer is named."""
    bad = f"bad layer list {spec!r}: use auto, all, last, 0,5,-1 or 20-23"
    pairs: list[tuple[int, int]] = []
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                a, b = part[0] + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1]
                pairs.append((int(a), int(b)))
            elif part:
                pairs.append((int(part), int(part)))
        except ValueError:
            raise LayerIndexError(bad) from None
    if all(a > b for a, b in pairs):  # nothing named (an empty list, or only reversed ranges)
        raise LayerIndexError(bad)
    return pairs


def check_layer_spec(spec: str, extra_words: Sequence[str] = ()) -> str:
    """``spec`` if its syntax is that of :func:`parse_layer_spec` (or one of ``extra_words``, e.g. ``none``),
    checked before a model is loaded; the range is checked against the model by :func:`parse_layer_spec`."""
    if spec.strip().lower() not in (*_LAYER_WORDS, *extra_words):
        _layer_ranges(spec)
    return spec


def parse_layer_spec(spec: str | Sequence[int], n_layer: int) -> list[int]:
    """``"all"``, ``"last"``, ``"auto"`` (four evenly spaced layers ending at the last, e.g. 5,11,17,23 of 24),
    ``"0,5,-1"`` or ``"20-23"`` (inclusive ranges) -> sorted 0-based layer indices."""
    word = spec.strip().lower() if isinstance(spec, str) else None
    if word == "auto":
        return sorted({max(0, round(n_layer * k / 4) - 1) for k in range(1, 5)})
    if word == "all":
        return list(range(n_layer))
    if word == "last":
        return [n_layer - 1]

    def valid(il: int) -> bool:
        return 0 <= (il + n_layer if il < 0 else il) < n_layer

    pairs = _layer_ranges(spec) if isinstance(spec, str) else [(int(x), int(x)) for x in spec]
    out: set[int] = set()
    for a, b in pairs:
        if a > b:
            continue
        if not (valid(a) and valid(b)):  # the first index of range(a, b + 1) out of range, without expanding it
            il = a if not valid(a) else n_layer
            raise LayerIndexError(f"layer {il} is out of range for a {n_layer}-layer model: "
                                  f"use 0..{n_layer - 1} or negative indices from the end")
        out.update(j + n_layer if j < 0 else j for j in range(a, b + 1))
    return sorted(out)


__all__ = ["TapConfig", "check_layer_spec", "parse_layer_spec"]
