"""Control-vector files in llama.cpp's GGUF layout: write, read, validate.

Layout (what llama.cpp's loader, ``cvector-generator`` and repeng agree on):

* ``general.architecture = "controlvector"``;
* ``controlvector.model_hint``: a string, by convention the architecture of the model the vector is for;
* ``controlvector.layer_count``: the number of direction tensors (``cvector-generator`` stores it as int32,
  repeng as uint32; llama.cpp's loader ignores it, so any integer type is accepted on read);
* one F32 tensor per steered layer named ``direction.N`` with ``N >= 1``, ``n_embd`` values each. llama.cpp
  counts dimensions the ggml way (trailing dimensions of size 1 do not count), so a ``(1, n_embd)`` array is
  one-dimensional to it, and to us.

Layer meaning: llama.cpp adds ``direction.N`` to ``l_out-N``, the output of 0-based layer N, which is exactly
what the hidden-state tap copies for layer N (docs/DESIGN.md, "Layer-index convention"). Our extraction writes
the vector measured at ``l_out-L`` as ``direction.L`` (:func:`direction_for_layer`). Files written by
``cvector-generator`` were measured one layer lower (``l_out-(N-1)`` saved as ``direction.N``); they load
unchanged and act where llama.cpp would apply them.

Extra metadata (``rankguide.*`` keys: source model, layers, filter, counts) rides along as ordinary GGUF
key/values; llama.cpp ignores them.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ControlVectorError, DependencyError
from ..files import atomic_path

#: ``general.architecture`` of a control-vector file
ARCH = "controlvector"
KEY_ARCH = "general.architecture"
KEY_MODEL_HINT = f"{ARCH}.model_hint"
KEY_LAYER_COUNT = f"{ARCH}.layer_count"
#: tensor-name prefix; the suffix is the 1-based direction index N (applied to ``l_out-N``)
TENSOR_PREFIX = "direction."
_RESERVED = {KEY_ARCH, KEY_MODEL_HINT, KEY_LAYER_COUNT}
_NAME_RE = re.compile(r"direction\.(\d+)")


def direction_for_layer(layer: int) -> int:
    """The ``direction.N`` index that llama.cpp adds to the tapped output of 0-based ``layer``."""
    from ..engine._native import cvec_direction_for_layer

    return cvec_direction_for_layer(int(layer))


def layer_for_direction(direction: int) -> int:
    """The 0-based layer whose output ``l_out-N`` llama.cpp's ``direction.<direction>`` is added to."""
    from ..engine._native import layer_for_cvec_direction

    return layer_for_cvec_direction(int(direction))


def _as_vector(n: Any, vec: Any) -> np.ndarray:
    arr = np.asarray(vec)
    if arr.dtype.kind != "f":
        raise ControlVectorError(f"direction.{n} has dtype {arr.dtype}; control vectors hold floats (float32)")
    if arr.ndim != 1:
        raise ControlVectorError(f"direction.{n} has shape {arr.shape}; each direction is a 1-D (n_embd,) vector")
    if arr.shape[0] == 0:
        raise ControlVectorError(f"direction.{n} is empty; each direction holds n_embd values")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        raise ControlVectorError(f"direction.{n} holds NaN or infinite values; recompute the vector")
    return out


@dataclass
class ControlVector:
    """Steering directions for one model.

    ``directions`` maps the direction index N (``>= 1``; added by llama.cpp to the output of 0-based layer N)
    to a float32 ``(n_embd,)`` vector; every vector has the same ``n_embd``. ``model_hint`` is free text, by
    convention the model architecture (``"qwen2"``, ``"llama"``). ``meta`` holds other scalar GGUF key/values
    (``rankguide.*`` provenance; ``controlvector.layer_count`` as declared by a loaded file). Validated on
    construction (:class:`ControlVectorError`).
    """

    model_hint: str
    directions: dict[int, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.model_hint, str):
            raise ControlVectorError(f"model_hint must be a string, got {type(self.model_hint).__name__}")
        if not isinstance(self.directions, Mapping) or not self.directions:
            raise ControlVectorError("a control vector needs at least one direction.N (N >= 1)")
        clean: dict[int, np.ndarray] = {}
        for n, vec in self.directions.items():
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < 1:
                raise ControlVectorError(f"direction index {n!r} is invalid; use integers N >= 1 "
                                         "(layer 0's output cannot be steered)")
            clean[int(n)] = _as_vector(n, vec)
        widths = {v.shape[0] for v in clean.values()}
        if len(widths) != 1:
            raise ControlVectorError(f"directions have different lengths {sorted(widths)}; all must be n_embd long")
        self.directions = dict(sorted(clean.items()))
        self.meta = dict(self.meta)

    @property
    def n_embd(self) -> int:
        """Length of every direction vector."""
        return int(next(iter(self.directions.values())).shape[0])

    def layers(self, *, nonzero: bool = False) -> list[int]:
        """Direction indices N, ascending (with ``nonzero=True``, only those whose vector is not all zeros)."""
        return [n for n, v in self.directions.items() if not nonzero or bool(np.any(v))]

    def norms(self) -> dict[int, float]:
        """Euclidean norm of each direction, keyed by direction index."""
        return {n: float(np.linalg.norm(v.astype(np.float64))) for n, v in self.directions.items()}

    def as_layers(self) -> dict[int, np.ndarray]:
        """``{0-based layer: (n_embd,) float32}`` as :meth:`Context.set_control_vector` takes it."""
        return {layer_for_direction(n): v for n, v in self.directions.items()}


def check_against(cv: ControlVector, n_embd: int | None = None, n_layer: int | None = None) -> None:
    """Raise ControlVectorError unless ``cv`` fits a model with ``n_embd`` width and ``n_layer`` layers
    (steerable directions are ``1..n_layer-1``). ``None`` skips a check."""
    if n_embd is not None and cv.n_embd != int(n_embd):
        raise ControlVectorError(f"control vector is {cv.n_embd} wide but the model's n_embd is {n_embd}: "
                                 "use a vector extracted from this model")
    if n_layer is not None:
        bad = [n for n in cv.directions if not 1 <= n <= int(n_layer) - 1]
        if bad:
            raise ControlVectorError(f"direction(s) {bad} do not exist in a {n_layer}-layer model "
                                     f"(steerable: 1..{int(n_layer) - 1}): use a vector made for this model")


def _gguf() -> Any:
    try:
        import gguf  # noqa: PLC0415 - imported on use only
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DependencyError("the gguf package is missing: pip install gguf") from exc
    return gguf


def _add_meta(writer: Any, key: str, value: Any) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, (int, np.integer)):
        v = int(value)
        if -(2**31) <= v < 2**31:
            writer.add_int32(key, v)
        else:
            writer.add_int64(key, v)
    elif isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            raise ControlVectorError(f"metadata {key}={value!r} is not finite; store finite numbers only")
        writer.add_float64(key, float(value))
    elif isinstance(value, str):
        writer.add_string(key, value)
    else:
        raise ControlVectorError(f"metadata {key} has type {type(value).__name__}; store str, int, float or bool")


def save_control_vector(cv: ControlVector, path: str | os.PathLike[str]) -> Path:
    """Write ``cv`` to ``path`` in llama.cpp's control-vector layout, atomically (``files.atomic_path``: an
    interrupted save never leaves a half-written file). Returns the path."""
    if not isinstance(cv, ControlVector):
        raise ControlVectorError(f"expected a ControlVector, got {type(cv).__name__}")
    ControlVector(cv.model_hint, cv.directions, cv.meta)  # re-validate (the dict may have been mutated)
    gguf = _gguf()
    target = Path(path).expanduser()
    if target.is_dir():
        raise ControlVectorError(f"{target} is a directory: give a file name such as vec.gguf")
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        writer = gguf.GGUFWriter(str(tmp), ARCH)
        try:
            writer.add_string(KEY_MODEL_HINT, cv.model_hint)
            writer.add_uint32(KEY_LAYER_COUNT, len(cv.directions))
            for key, value in sorted(cv.meta.items()):
                if key not in _RESERVED and not key.startswith("GGUF."):
                    _add_meta(writer, key, value)
            for n, vec in sorted(cv.directions.items()):
                writer.add_tensor(f"{TENSOR_PREFIX}{n}", np.ascontiguousarray(vec, dtype=np.float32))
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
    return target


def _field_value(fld: Any) -> Any:
    try:
        value = fld.contents()
    except (ValueError, IndexError, UnicodeDecodeError):
        return None
    if isinstance(value, (np.generic,)):
        return value.item()
    return value


def load_control_vector(path: str | os.PathLike[str], *, n_embd: int | None = None,
                        n_layer: int | None = None) -> ControlVector:
    """Read a control-vector GGUF (ours, llama.cpp ``cvector-generator``'s or repeng's) and validate it.

    Checks: the file is GGUF, ``general.architecture`` is ``controlvector``, every tensor is named
    ``direction.N`` with ``N >= 1`` (no duplicates), is F32 and one-dimensional (ggml rule), all have the same
    length; with ``n_embd``/``n_layer``, that the vector fits the model (:func:`check_against`). Zero vectors
    (``cvector-generator`` writes them for layers it left alone) are kept. Any failure is one
    :class:`ControlVectorError` line naming the file.
    """
    gguf = _gguf()
    p = Path(path).expanduser()
    if not p.is_file():
        raise ControlVectorError(f"control-vector file {p} does not exist: give the path of a .gguf file "
                                 "(rankguide-edge steer extract writes one)")
    try:
        reader = gguf.GGUFReader(str(p), "r")
    except Exception as exc:  # noqa: BLE001 - gguf raises ValueError/IndexError/struct errors on bad files
        raise ControlVectorError(f"{p} is not a readable GGUF file ({exc}): give a control-vector .gguf") from None
    try:
        fields = {name: fld for name, fld in reader.fields.items()}
        arch = _field_value(fields[KEY_ARCH]) if KEY_ARCH in fields else None
        if arch != ARCH:
            raise ControlVectorError(f"{p} has general.architecture={arch!r}, not {ARCH!r}: it is not a control "
                                     "vector (a model file?); give a control-vector .gguf")
        hint = _field_value(fields[KEY_MODEL_HINT]) if KEY_MODEL_HINT in fields else ""
        meta: dict[str, Any] = {}
        for name, fld in fields.items():
            if name.startswith("GGUF.") or name in (KEY_ARCH, KEY_MODEL_HINT):
                continue
            value = _field_value(fld)
            if value is not None:
                meta[name] = value
        directions: dict[int, np.ndarray] = {}
        if not reader.tensors:
            raise ControlVectorError(f"{p} holds no direction.N tensors: it steers nothing")
        for t in reader.tensors:
            m = _NAME_RE.fullmatch(t.name)
            if m is None or int(m.group(1)) < 1:
                raise ControlVectorError(f"{p}: tensor {t.name!r} is not named direction.N with N >= 1 "
                                         "(layer 0 cannot be steered); fix or regenerate the file")
            n = int(m.group(1))
            if n in directions:
                raise ControlVectorError(f"{p}: direction.{n} appears twice; keep one tensor per layer")
            type_name = getattr(t.tensor_type, "name", str(t.tensor_type))
            if type_name != "F32":
                raise ControlVectorError(f"{p}: {t.name} is {type_name}, llama.cpp needs F32: re-save it as float32")
            ne = [int(d) for d in t.shape]
            while len(ne) > 1 and ne[-1] == 1:
                ne.pop()
            if len(ne) != 1:
                raise ControlVectorError(f"{p}: {t.name} has shape {tuple(reversed(ne))}, llama.cpp needs a 1-D "
                                         "(n_embd,) vector per layer: re-save it flat")
            directions[n] = np.array(t.data, dtype=np.float32).reshape(-1)
    except ControlVectorError:
        raise
    except Exception as exc:  # noqa: BLE001 - a truncated tensor region etc.
        raise ControlVectorError(f"{p} is a damaged GGUF file ({exc}): regenerate it") from None
    finally:
        del reader
    try:
        cv = ControlVector(str(hint) if hint is not None else "", directions, meta)
    except ControlVectorError as exc:
        raise ControlVectorError(f"{p}: {exc}") from None
    try:
        check_against(cv, n_embd, n_layer)
    except ControlVectorError as exc:
        raise ControlVectorError(f"{p}: {exc}") from None
    return cv


def describe(cv: ControlVector, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """A JSON-ready summary: model hint, n_embd, directions with the layer each acts on and its norm, meta.

    ``relative_norm`` is the norm over the median norm of the thought states at that layer during extraction
    (our files record it as ``rankguide.state_norm.N``; None for files from other tools): at scale ``a`` the vector adds
    ``a * relative_norm`` of a typical hidden state's size, which is what makes scales comparable across files.
    """
    norms = cv.norms()

    def relative(n: int) -> float | None:
        state = cv.meta.get(f"rankguide.state_norm.{n}")
        return norms[n] / float(state) if isinstance(state, (int, float)) and state > 0 else None

    return {
        "path": os.fspath(path) if path is not None else None,
        "model_hint": cv.model_hint,
        "n_embd": cv.n_embd,
        "n_directions": len(cv.directions),
        "directions": [{"direction": n, "acts_on": f"l_out-{layer_for_direction(n)}", "norm": norms[n],
                        "relative_norm": relative(n), "zero": norms[n] == 0.0} for n in cv.layers()],
        "meta": {k: v for k, v in cv.meta.items()},
    }
