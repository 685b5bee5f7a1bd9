"""Every ctypes declaration and native call of rankguide-edge lives here.

Two native libraries are reached:

* llama.cpp, through llama-cpp-python's low-level bindings (``llama_cpp.llama_cpp``), pinned to one exact
  version (:data:`rankguide_edge.LLAMA_CPP_PYTHON_VERSION`) and imported lazily, on first use;
* our tap library ``librgtap`` (native/tap.c), built by CMake at ``pip install`` and installed next to this
  module. When it is missing, a pure-Python ctypes callback with the same behaviour takes its place (with a
  warning); both fill the same buffer layout.

Above this module everything speaks numpy. Handles returned here are raw pointers wrapped by the owning
objects of :mod:`rankguide_edge.engine.model` and :mod:`rankguide_edge.engine.context`.

Layer-index convention (written once, here and in docs/DESIGN.md): llama.cpp names the residual-stream output
of layer ``N`` (0-based) ``l_out-N``; that is what the tap copies. A control vector's ``direction.K`` is added
by llama.cpp to that same layer output with ``K == N`` — see :func:`cvec_direction_for_layer` — so the vector
for tapped layer N sits at offset ``(N - 1) * n_embd`` of the buffer given to ``llama_set_adapter_cvec`` (the
buffer starts at layer 1; layer 0's output cannot be steered).
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import logging
import os
import pathlib
import sys
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import LLAMA_CPP_PYTHON_VERSION
from ..errors import DependencyError, NativeError

_log = logging.getLogger(__name__)

_LOCK = threading.Lock()
_STATE: dict[str, Any] = {}

#: tensor-name prefix of the residual-stream output of a layer in llama.cpp graphs
L_OUT_PREFIX = "l_out-"


def cvec_direction_for_layer(layer: int) -> int:
    """The control-vector ``direction.K`` index that llama.cpp adds to the tapped output ``l_out-<layer>``."""
    return layer


def layer_for_cvec_direction(direction: int) -> int:
    """The tapped layer whose output ``l_out-N`` llama.cpp's ``direction.<direction>`` is added to."""
    return direction


# --------------------------------------------------------------------------------------------------------------
# llama-cpp-python: version check, lazy import, backend init, logging
# --------------------------------------------------------------------------------------------------------------


def check_llama_cpp_version() -> str:
    """Return the installed llama-cpp-python version, or raise DependencyError naming the fix."""
    try:
        installed = importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        raise DependencyError(
            f"llama-cpp-python is not installed: pip install llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"
        ) from None
    if installed != LLAMA_CPP_PYTHON_VERSION:
        raise DependencyError(
            f"llama-cpp-python {installed} is installed but rankguide-edge needs exactly "
            f"{LLAMA_CPP_PYTHON_VERSION}: pip install llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"
        )
    return installed


def lib() -> Any:
    """The ``llama_cpp.llama_cpp`` bindings module (version-checked, backend initialised, logs silenced)."""
    mod = _STATE.get("llama")
    if mod is not None:
        return mod
    with _LOCK:
        if "llama" not in _STATE:
            check_llama_cpp_version()
            try:
                import llama_cpp.llama_cpp as ll  # noqa: PLC0415 - deliberate lazy import
            except OSError as exc:  # the shared library failed to load
                raise DependencyError(
                    f"llama-cpp-python failed to load its native library ({exc}): "
                    f"reinstall with pip install --force-reinstall llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"
                ) from exc
            ll.llama_backend_init()
            _install_log_filter(ll)
            _STATE["llama"] = ll
    return _STATE["llama"]


def _install_log_filter(ll: Any) -> None:
    """Route llama.cpp's log to nowhere unless RANKGUIDE_EDGE_LLAMA_LOG=1 (the thunk is kept for the process)."""
    if os.environ.get("RANKGUIDE_EDGE_LLAMA_LOG") == "1":
        return

    def _quiet(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:  # noqa: ARG001
        return None

    thunk = ll.llama_log_callback(_quiet)
    _STATE["log_thunk"] = thunk  # must outlive every llama.cpp call
    ll.llama_log_set(thunk, ctypes.c_void_p(0))


# --------------------------------------------------------------------------------------------------------------
# ggml accessors (handed to the tap as function pointers)
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GgmlFns:
    """ggml functions used by both taps, bound from the very libggml-base that libllama uses."""

    get_name: Any
    nelements: Any
    nbytes: Any
    tensor_get: Any

    def addresses(self) -> tuple[int, int, int, int]:
        return tuple(ctypes.cast(f, ctypes.c_void_p).value for f in  # type: ignore[return-value]
                     (self.get_name, self.nelements, self.nbytes, self.tensor_get))


def ggml() -> GgmlFns:
    fns = _STATE.get("ggml")
    if fns is not None:
        return fns
    # Resolve the symbols through libllama's own handle so that they come from the very libggml-base
    # instance libllama was linked against (wheels ship copies, not symlinks, of libggml-base.so*).
    ll = lib()
    base = ctypes.CDLL(ll._lib._name)
    base.ggml_get_name.argtypes = [ctypes.c_void_p]
    base.ggml_get_name.restype = ctypes.c_char_p
    base.ggml_nelements.argtypes = [ctypes.c_void_p]
    base.ggml_nelements.restype = ctypes.c_int64
    base.ggml_nbytes.argtypes = [ctypes.c_void_p]
    base.ggml_nbytes.restype = ctypes.c_size_t
    base.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    base.ggml_backend_tensor_get.restype = None
    fns = GgmlFns(base.ggml_get_name, base.ggml_nelements, base.ggml_nbytes, base.ggml_backend_tensor_get)
    _STATE["ggml_lib"] = base
    _STATE["ggml"] = fns
    return fns


_DEVICE_TYPES = {0: "CPU", 1: "GPU", 2: "integrated GPU", 3: "accelerator"}


def build_info() -> dict[str, Any]:
    """What this llama.cpp build can do: versions, the ggml backends compiled in (CPU, CUDA, Metal, Vulkan...),
    the devices they found, whether layers can be offloaded, and llama.cpp's system-info line."""
    ll = lib()
    h = ctypes.CDLL(ll._lib._name)  # libllama's handle also finds libggml's symbols (see ggml())
    vp, text = ctypes.c_void_p, ctypes.c_char_p

    def call(name: str, restype: Any, *args: Any, argtypes: tuple[Any, ...] = ()) -> Any:
        fn = getattr(h, name)
        fn.restype, fn.argtypes = restype, list(argtypes)
        return fn(*args)

    def version(name: str) -> str:
        try:
            return (call(name, text) or b"").decode()
        except AttributeError:  # symbol absent in this build
            return ""

    regs = [call("ggml_backend_reg_name", text, call("ggml_backend_reg_get", vp, i, argtypes=(ctypes.c_size_t,)),
                 argtypes=(vp,)).decode()
            for i in range(call("ggml_backend_reg_count", ctypes.c_size_t))]
    devices = []
    for i in range(call("ggml_backend_dev_count", ctypes.c_size_t)):
        dev = call("ggml_backend_dev_get", vp, i, argtypes=(ctypes.c_size_t,))
        kind = int(call("ggml_backend_dev_type", ctypes.c_int, dev, argtypes=(vp,)))
        devices.append({"name": call("ggml_backend_dev_name", text, dev, argtypes=(vp,)).decode(),
                        "description": call("ggml_backend_dev_description", text, dev, argtypes=(vp,)).decode(),
                        "type": _DEVICE_TYPES.get(kind, f"type {kind}")})
    return {"llama_cpp_python": check_llama_cpp_version(), "llama_cpp": version("llama_version"),
            "ggml": version("ggml_version"), "ggml_commit": version("ggml_commit"), "backends": regs,
            "devices": devices, "gpu_offload": bool(ll.llama_supports_gpu_offload()),
            "system_info": ll.llama_print_system_info().decode(errors="replace").strip()}


# --------------------------------------------------------------------------------------------------------------
# the native tap library
# --------------------------------------------------------------------------------------------------------------

_TAP_ABI = 1


def _tap_library_path() -> pathlib.Path | None:
    override = os.environ.get("RANKGUIDE_EDGE_TAP_LIB")
    if override:
        return pathlib.Path(override)
    here = pathlib.Path(__file__).parent
    names = {"linux": "librgtap.so", "darwin": "librgtap.dylib", "win32": "rgtap.dll"}
    name = names.get(sys.platform, "librgtap.so")
    path = here / name
    return path if path.exists() else None


def tap_library() -> Any | None:
    """The loaded ``librgtap`` with its prototypes declared, or None when it is not installed."""
    if "tap" in _STATE:
        return _STATE["tap"]
    with _LOCK:
        if "tap" in _STATE:
            return _STATE["tap"]
        path = _tap_library_path()
        tl = None
        if path is not None:
            try:
                tl = ctypes.CDLL(str(path))
            except OSError as exc:
                warnings.warn(f"native tap {path} failed to load ({exc}); using the slow Python tap", stacklevel=3)
                tl = None
        if tl is not None:
            vp, i32, i64 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64
            tl.rg_tap_new.argtypes = [vp, vp, vp, vp, i32, i32, ctypes.POINTER(i32), i32, i32]
            tl.rg_tap_new.restype = vp
            tl.rg_tap_free.argtypes = [vp]
            tl.rg_tap_free.restype = None
            tl.rg_tap_reset.argtypes = [vp]
            tl.rg_tap_reset.restype = None
            tl.rg_tap_set_enabled.argtypes = [vp, i32]
            tl.rg_tap_set_enabled.restype = None
            tl.rg_tap_buffer.argtypes = [vp]
            tl.rg_tap_buffer.restype = ctypes.POINTER(ctypes.c_float)
            tl.rg_tap_rows.argtypes = [vp]
            tl.rg_tap_rows.restype = ctypes.POINTER(i32)
            tl.rg_tap_overflow.argtypes = [vp]
            tl.rg_tap_overflow.restype = i64
            tl.rg_tap_errors.argtypes = [vp]
            tl.rg_tap_errors.restype = i64
            tl.rg_tap_abi_version.argtypes = []
            tl.rg_tap_abi_version.restype = i32
            if tl.rg_tap_abi_version() != _TAP_ABI:
                warnings.warn(f"native tap {path} has another ABI version; using the slow Python tap", stacklevel=3)
                tl = None
        _STATE["tap"] = tl
        return tl


def tap_info() -> dict[str, Any]:
    """The tap a context gets by default: ``{"kind": "native" | "python", "library": path or None}``."""
    path = _tap_library_path()
    return {"kind": "native" if tap_library() is not None else "python", "library": str(path) if path else None}


class NativeTap:
    """An ``rg_tap`` owned from Python: buffer ``(n_slots, max_rows, n_embd)`` float32, rows ``(n_slots,)`` int32.

    The arrays are views on C memory and are valid until :meth:`close`.
    """

    kind = "native"

    def __init__(self, n_embd: int, n_layer: int, layers: list[int], max_rows: int) -> None:
        tl = tap_library()
        if tl is None:
            raise NativeError("the native tap library is not installed: reinstall rankguide-edge with pip install .")
        g = ggml()
        layer_arr = (ctypes.c_int32 * len(layers))(*layers)
        ptr = tl.rg_tap_new(*g.addresses(), n_embd, n_layer, layer_arr, len(layers), max_rows)
        if not ptr:
            raise NativeError(f"rg_tap_new failed for layers {layers} of a {n_layer}-layer model")
        self._tl = tl
        self._ptr: int | None = ptr
        self.layers = list(layers)
        self.n_embd, self.max_rows = n_embd, max_rows
        self.buffer = np.ctypeslib.as_array(tl.rg_tap_buffer(ptr), shape=(len(layers), max_rows, n_embd))
        self.rows = np.ctypeslib.as_array(tl.rg_tap_rows(ptr), shape=(len(layers),))
        self.cb_eval = lib().ggml_backend_sched_eval_callback(ctypes.cast(tl.rg_tap_eval_cb, ctypes.c_void_p).value)
        self.user_data = ctypes.c_void_p(ptr)

    def reset(self) -> None:
        self._tl.rg_tap_reset(self._ptr)

    def set_enabled(self, enabled: bool) -> None:
        self._tl.rg_tap_set_enabled(self._ptr, 1 if enabled else 0)

    @property
    def overflow(self) -> int:
        return int(self._tl.rg_tap_overflow(self._ptr))

    @property
    def errors(self) -> int:
        return int(self._tl.rg_tap_errors(self._ptr))

    def close(self) -> None:
        if self._ptr is not None:
            self.buffer = self.rows = None  # type: ignore[assignment]
            self._tl.rg_tap_free(self._ptr)
            self._ptr = None


class PythonTap:
    """The same contract as :class:`NativeTap`, as a ctypes callback written in Python (slow: it runs for
    every graph node). Used when ``librgtap`` is missing, and by tests and the capture benchmark."""

    kind = "python"

    def __init__(self, n_embd: int, n_layer: int, layers: list[int], max_rows: int) -> None:
        g = ggml()
        if len(set(layers)) != len(layers) or any(not 0 <= il < n_layer for il in layers):
            raise NativeError(f"bad tap layers {layers} for a {n_layer}-layer model")
        self.layers = list(layers)
        self.n_embd, self.max_rows = n_embd, max_rows
        self.buffer = np.zeros((len(layers), max_rows, n_embd), dtype=np.float32)
        self.rows = np.zeros(len(layers), dtype=np.int32)
        self._slot = {f"{L_OUT_PREFIX}{il}".encode(): k for k, il in enumerate(layers)}
        self._enabled = True
        self._overflow = 0
        self._errors = 0
        self._g = g
        self.cb_eval = lib().ggml_backend_sched_eval_callback(self._callback)  # thunk kept alive by self
        self.user_data = ctypes.c_void_p(0)

    def _callback(self, tensor: int, ask: bool, user_data: int) -> bool:  # noqa: ARG002
        try:
            slot = self._slot.get(self._g.get_name(tensor))
            if ask:
                return self._enabled and slot is not None
            if slot is None:
                return True
            nel = int(self._g.nelements(tensor))
            if nel == 0:  # e.g. the last layer of a chunk decoded without any logits row
                return True
            if nel < 0 or nel % self.n_embd or int(self._g.nbytes(tensor)) != nel * 4:
                self._errors += 1
                return True
            n_rows = nel // self.n_embd
            room = self.max_rows - int(self.rows[slot])
            if n_rows > room:
                self._overflow += n_rows - room
                n_rows = room
            if n_rows > 0:
                start = int(self.rows[slot])
                dst = self.buffer[slot, start:start + n_rows]
                self._g.tensor_get(tensor, dst.ctypes.data, 0, n_rows * self.n_embd * 4)
                self.rows[slot] += n_rows
            return True
        except Exception:  # never let an exception cross the C boundary
            self._errors += 1
            return True

    def reset(self) -> None:
        self.rows[:] = 0
        self._overflow = self._errors = 0

    def set_enabled(self, enabled: bool) -> None:
        self._enabled = bool(enabled)

    @property
    def overflow(self) -> int:
        return self._overflow

    @property
    def errors(self) -> int:
        return self._errors

    def close(self) -> None:
        self.buffer = self.rows = None  # type: ignore[assignment]


def make_tap(kind: str, n_embd: int, n_layer: int, layers: list[int], max_rows: int) -> NativeTap | PythonTap:
    """``kind``: "native", "python", or "auto" (native when installed, else Python with a warning)."""
    if kind == "auto":
        if tap_library() is None:
            warnings.warn("native tap library not found; hidden states are read by a slow Python callback",
                          stacklevel=2)
            kind = "python"
        else:
            kind = "native"
    if kind == "native":
        return NativeTap(n_embd, n_layer, layers, max_rows)
    if kind == "python":
        return PythonTap(n_embd, n_layer, layers, max_rows)
    raise NativeError(f"unknown tap kind {kind!r}: use native, python or auto")


# --------------------------------------------------------------------------------------------------------------
# llama.cpp calls used by the runtime
# --------------------------------------------------------------------------------------------------------------


def load_model(path: str, n_gpu_layers: int, extra_buffers: bool = False) -> tuple[int, dict[str, Any]]:
    """Load a GGUF: the model pointer (0 on failure) and the load parameters as llama.cpp received them.

    ``n_gpu_layers`` layers go to the first GPU backend, ``-1`` all of them; a build without a GPU backend
    keeps every layer on the CPU whatever the value. ``extra_buffers`` enables llama.cpp's extra CPU buffer
    types (AMX, repacked weights): off by default because with llama-cpp-python 0.3.36 built natively on an
    AMX CPU they crash in ``ggml_backend_amx_mul_mat`` (seen on this project's machines, with and without an
    eval callback)."""
    ll = lib()
    params = ll.llama_model_default_params()
    params.n_gpu_layers = n_gpu_layers
    params.use_extra_bufts = extra_buffers
    sent = {"n_gpu_layers": int(params.n_gpu_layers), "use_extra_bufts": bool(params.use_extra_bufts)}
    _log.debug("llama_model_load_from_file(%s, n_gpu_layers=%d, use_extra_bufts=%s)", path, sent["n_gpu_layers"],
               sent["use_extra_bufts"])
    ptr = ll.llama_model_load_from_file(os.fsencode(path), params)
    return ptr or 0, sent


def free_model(ptr: int) -> None:
    lib().llama_model_free(ptr)


def model_info(ptr: int) -> dict[str, Any]:
    ll = lib()
    vocab = ll.llama_model_get_vocab(ptr)
    buf = ctypes.create_string_buffer(256)
    ll.llama_model_desc(ptr, buf, len(buf))
    arch = ctypes.create_string_buffer(64)
    n = ll.llama_model_meta_val_str(ptr, b"general.architecture", arch, len(arch))
    tmpl = ll.llama_model_chat_template(ptr, None)
    return {
        "vocab": vocab,
        "n_layer": int(ll.llama_model_n_layer(ptr)),
        "n_embd": int(ll.llama_model_n_embd(ptr)),
        "n_vocab": int(ll.llama_vocab_n_tokens(vocab)),
        "n_ctx_train": int(ll.llama_model_n_ctx_train(ptr)),
        "desc": buf.value.decode("utf-8", "replace"),
        "arch": arch.value.decode() if n >= 0 else "",
        "chat_template": tmpl.decode("utf-8", "replace") if tmpl else None,
        "bos": int(ll.llama_vocab_bos(vocab)),
        "eos": int(ll.llama_vocab_eos(vocab)),
        "add_bos": bool(ll.llama_vocab_get_add_bos(vocab)),
    }


def tokenize(vocab: int, text: str, add_special: bool, parse_special: bool) -> list[int]:
    ll = lib()
    raw = text.encode("utf-8")
    cap = len(raw) + 8
    buf = (ll.llama_token * cap)()
    n = ll.llama_tokenize(vocab, raw, len(raw), buf, cap, add_special, parse_special)
    if n < 0:
        cap = -n
        buf = (ll.llama_token * cap)()
        n = ll.llama_tokenize(vocab, raw, len(raw), buf, cap, add_special, parse_special)
    if n < 0:
        raise NativeError(f"llama_tokenize failed ({n}) on a text of {len(raw)} bytes")
    return list(buf[:n])


def token_piece(vocab: int, token: int, special: bool) -> bytes:
    ll = lib()
    buf = ctypes.create_string_buffer(64)
    n = ll.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = ll.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
    return buf.raw[:max(n, 0)]


def is_eog(vocab: int, token: int) -> bool:
    return bool(lib().llama_vocab_is_eog(vocab, token))


def apply_chat_template(template: str, messages: list[tuple[str, str]], add_assistant: bool) -> str | None:
    """Format ``(role, content)`` messages with a llama.cpp built-in template; None if llama.cpp does not know it."""
    ll = lib()
    keep = [(r.encode(), c.encode()) for r, c in messages]
    arr = (ll.llama_chat_message * len(keep))()
    for i, (r, c) in enumerate(keep):
        arr[i].role = r
        arr[i].content = c
    size = sum(len(c) for _, c in keep) * 2 + 512
    for _ in range(2):
        buf = ctypes.create_string_buffer(size)
        n = ll.llama_chat_apply_template(template.encode(), arr, len(keep), add_assistant, buf, size)
        if n < 0:
            return None
        if n <= size:
            return buf.raw[:n].decode("utf-8", "replace")
        size = n + 1
    return None


def new_context(model_ptr: int, *, n_ctx: int, n_batch: int, n_threads: int, seed: int,  # noqa: ARG001
                cb_eval: Any = None, user_data: ctypes.c_void_p | None = None) -> int:
    ll = lib()
    p = ll.llama_context_default_params()
    p.n_ctx = n_ctx
    p.n_batch = n_batch
    p.n_ubatch = n_batch
    p.n_threads = n_threads
    p.n_threads_batch = n_threads
    p.no_perf = True
    if cb_eval is not None:
        p.cb_eval = cb_eval
        p.cb_eval_user_data = user_data
    ptr = ll.llama_init_from_model(model_ptr, p)
    return ptr or 0


def free_context(ptr: int) -> None:
    lib().llama_free(ptr)


def context_size(ptr: int) -> int:
    return int(lib().llama_n_ctx(ptr))


def context_batch(ptr: int) -> int:
    """The most tokens one ``llama_decode`` may take: llama.cpp clamps the asked ``n_batch`` to the asked
    ``n_ctx`` (before rounding the context up), so it can be smaller than both."""
    return int(lib().llama_n_batch(ptr))


class Batch:
    """An owned ``llama_batch`` of capacity ``n`` for sequence 0."""

    def __init__(self, n: int) -> None:
        ll = lib()
        self._ll = ll
        self.capacity = n
        self._b = ll.llama_batch_init(n, 0, 1)
        self._alive = True

    def fill(self, tokens: list[int] | np.ndarray, first_pos: int, logits: str = "last") -> None:
        """``logits``: "last" (only the final token), "all" or "none"."""
        b = self._b
        n = len(tokens)
        b.n_tokens = n
        for i, t in enumerate(tokens):
            b.token[i] = int(t)
            b.pos[i] = first_pos + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = 1 if logits == "all" else 0
        if logits == "last" and n:
            b.logits[n - 1] = 1

    def decode(self, ctx: int) -> int:
        return int(self._ll.llama_decode(ctx, self._b))

    def close(self) -> None:
        if self._alive:
            self._ll.llama_batch_free(self._b)
            self._alive = False


def logits_row(ctx: int, i: int, n_vocab: int) -> np.ndarray:
    """Copy of the logits of output row ``i`` (-1: the last), float32 ``(n_vocab,)``."""
    ptr = lib().llama_get_logits_ith(ctx, i)
    if not ptr:
        raise NativeError(f"llama_get_logits_ith({i}) returned NULL: that position was decoded without logits")
    return np.ctypeslib.as_array(ptr, shape=(n_vocab,)).copy()


def memory_seq_rm(ctx: int, p0: int, p1: int) -> bool:
    ll = lib()
    return bool(ll.llama_memory_seq_rm(ll.llama_get_memory(ctx), 0, p0, p1))


def memory_clear(ctx: int) -> None:
    ll = lib()
    ll.llama_memory_clear(ll.llama_get_memory(ctx), True)


def set_cvec(ctx: int, data: np.ndarray | None, n_embd: int, il_start: int, il_end: int) -> int:
    """``data``: float32 C-contiguous ``(n_layer - 1, n_embd)`` starting at layer 1, or None to clear."""
    ll = lib()
    if data is None:
        return int(ll.llama_set_adapter_cvec(ctx, None, 0, n_embd, -1, -1))
    ptr = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    return int(ll.llama_set_adapter_cvec(ctx, ptr, data.size, n_embd, il_start, il_end))
