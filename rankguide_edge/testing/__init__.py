"""Test helpers that need no downloads: a generator of tiny random-weight GGUF models.

Importing this package does no work; :mod:`gguf` and :mod:`numpy` are imported only when a model is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exports import lazy_exports

_EXPORTS = {
    "BOS_ID": ".tiny_gguf",
    "EOS_ID": ".tiny_gguf",
    "IM_END_ID": ".tiny_gguf",
    "IM_START_ID": ".tiny_gguf",
    "SUPPORTED_ARCHS": ".tiny_gguf",
    "TINY_CHAT_TEMPLATE": ".tiny_gguf",
    "TinyGGUFSpec": ".tiny_gguf",
    "TinyVocab": ".tiny_gguf",
    "UNK_ID": ".tiny_gguf",
    "tiny_model_path": ".tiny_gguf",
    "tiny_vocab": ".tiny_gguf",
    "write_tiny_gguf": ".tiny_gguf",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "IM_END_ID",
    "IM_START_ID",
    "SUPPORTED_ARCHS",
    "TINY_CHAT_TEMPLATE",
    "TinyGGUFSpec",
    "TinyVocab",
    "UNK_ID",
    "tiny_model_path",
    "tiny_vocab",
    "write_tiny_gguf",
]

if TYPE_CHECKING:
    from .tiny_gguf import (
        BOS_ID,
        EOS_ID,
        IM_END_ID,
        IM_START_ID,
        SUPPORTED_ARCHS,
        TINY_CHAT_TEMPLATE,
        UNK_ID,
        TinyGGUFSpec,
        TinyVocab,
        tiny_model_path,
        tiny_vocab,
        write_tiny_gguf,
    )
