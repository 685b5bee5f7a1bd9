"""Test helpers that need no downloads: a generator of tiny random-weight GGUF models.

Importing this package does no work; :mod:`gguf` and :mod:`numpy` are imported only when a model is written.
"""

from __future__ import annotations

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

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "IM_END_ID",
    "IM_START_ID",
    "SUPPORTED_ARCHS",
    "TINY_CHAT_TEMPLATE",
    "UNK_ID",
    "TinyGGUFSpec",
    "TinyVocab",
    "tiny_model_path",
    "tiny_vocab",
    "write_tiny_gguf",
]
