"""A loaded GGUF model over llama.cpp's low-level API: its description, tokenizer and chat template.

:class:`Model` owns a ``llama_model``. It is a context manager with ``close()``; the decoding contexts made
from it (:class:`~.context.Context`) keep it alive and are closed first by ``Model.close``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..config import RuntimeConfig
from ..errors import ModelLoadError, NativeError
from . import _native
from .context import Context
from .layers import parse_layer_spec
from .prompts import chat_text


class Model:
    """A loaded GGUF model. ``n_layer``, ``n_embd``, ``n_vocab``, ``arch``, ``chat_template`` describe it;
    ``load_params`` holds the load parameters as llama.cpp received them (``n_gpu_layers``, ``use_extra_bufts``)."""

    def __init__(self, path: str | os.PathLike[str], *, n_gpu_layers: int = 0, extra_buffers: bool = False) -> None:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ModelLoadError(f"model file {path} does not exist: pull it with `rankguide-edge models pull`")
        from .models import check_gguf

        check_gguf(Path(path))
        ptr, self.load_params = _native.load_model(path, n_gpu_layers, extra_buffers)
        if not ptr:
            raise ModelLoadError(f"llama.cpp could not load {path} (corrupt or unsupported GGUF): "
                                 "re-pull it with `rankguide-edge models pull NAME --force`")
        self._ptr: int | None = ptr
        self.path = path
        info = _native.model_info(ptr)
        self._vocab = info.pop("vocab")
        self.n_layer: int = info["n_layer"]
        self.n_embd: int = info["n_embd"]
        self.n_vocab: int = info["n_vocab"]
        self.n_ctx_train: int = info["n_ctx_train"]
        self.arch: str = info["arch"]
        self.desc: str = info["desc"]
        self.chat_template: str | None = info["chat_template"]
        self.bos, self.eos, self.add_bos = info["bos"], info["eos"], info["add_bos"]
        self._contexts: list[Context] = []
        self._piece_cache: dict[int, bytes] = {}

    @property
    def ptr(self) -> int:
        if self._ptr is None:
            raise NativeError("the model is closed")
        return self._ptr

    # -- text ---------------------------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        """Token ids of ``text``; ``add_special`` prepends BOS where the model wants one."""
        self.ptr  # noqa: B018 - raises when closed
        return _native.tokenize(self._vocab, text, add_special, parse_special)

    def piece(self, token: int) -> bytes:
        """Raw bytes of one token (special tokens rendered)."""
        p = self._piece_cache.get(token)
        if p is None:
            p = _native.token_piece(self._vocab, token, True)
            self._piece_cache[token] = p
        return p

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.piece(int(t)) for t in tokens).decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        return _native.is_eog(self._vocab, token)

    def chat_prompt(self, messages: Sequence[tuple[str, str]] | str, *, add_assistant: bool = True) -> str:
        """The model's chat template applied to ``(role, content)`` messages (a str is one user message):
        :func:`.prompts.chat_text` (ChatML, with a warning, when llama.cpp does not know the template). Token
        ids: :func:`.prompts.chat_tokens`."""
        return chat_text(self, messages, add_assistant=add_assistant)

    def check_layers(self, layers: Sequence[int]) -> list[int]:
        """Validate 0-based layer indices (negative counts from the end); return them sorted, normalised."""
        return parse_layer_spec(list(layers), self.n_layer)

    def context(self, config: RuntimeConfig | None = None, **kw: object) -> Context:
        """A new decoding context on this model (see :class:`Context`)."""
        return Context(self, config, **kw)  # type: ignore[arg-type]

    def close(self) -> None:
        for c in list(self._contexts):
            c.close()
        if self._ptr is not None:
            _native.free_model(self._ptr)
            self._ptr = None

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # last resort; prefer close()
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
