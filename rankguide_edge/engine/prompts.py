"""The prompt pipeline, written once: a task's question -> the user message (:func:`prompt_for`) -> the model's
chat template (:func:`chat_text`, ChatML when llama.cpp does not know the model's template, with a warning)
-> token ids with the model's BOS exactly once (:func:`encode_prompt`, :func:`chat_tokens`).

Every SRM path (reasoner, trace, replay, label, steering extraction, the server's prompt count, the tap
benchmark) and every local LRM path (backends, speculative decoding) tokenises through here, so a template that
writes its own BOS gives both models the same single BOS. The remote LRM sends :func:`chat_text`'s text and
leaves tokenising to the server.
"""

from __future__ import annotations

import os
import warnings
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import ConfigError
from . import _native

if TYPE_CHECKING:
    from .model import Model

Messages = Sequence[tuple[str, str]]

#: every answer kind the project's prompts and answer checker understand
KINDS: tuple[str, ...] = ("gsm8k", "math", "svamp", "generic")
_KIND_ALIASES = {"math500": "math", "MATH": "math", "MATH500": "math"}

_NUMERIC_INSTRUCTION = (
    "Solve the problem step by step, separating the steps with a blank line. "
    "End with 'The answer is N.' where N is the final number."
)
_MATH_INSTRUCTION = (
    "Solve the problem step by step, separating the steps with a blank line. "
    "Put the final answer in \\boxed{}."
)

# models already warned about the ChatML fallback (one warning per loaded model)
_warned: weakref.WeakSet[Model] = weakref.WeakSet()


def normalize_kind(kind: str) -> str:
    """Return the canonical kind name (``math500`` -> ``math``); raise ConfigError for an unknown kind."""
    k = _KIND_ALIASES.get(kind, kind)
    if k not in KINDS:
        raise ConfigError(f"unknown answer kind {kind!r}; use one of {', '.join(KINDS)}")
    return k


def instruction_for(kind: str) -> str:
    """The instruction appended to a question so the solver ends with an answer the answer checker finds."""
    return _MATH_INSTRUCTION if normalize_kind(kind) == "math" else _NUMERIC_INSTRUCTION


def prompt_for(question: str, kind: str) -> str:
    """``question`` followed by a blank line and :func:`instruction_for` ``(kind)``."""
    return f"{question.strip()}\n\n{instruction_for(kind)}"


def chatml(messages: Messages, *, add_assistant: bool = True) -> str:
    """ChatML text of ``(role, content)`` messages, ending with an open assistant turn when asked."""
    text = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in messages)
    return text + ("<|im_start|>assistant\n" if add_assistant else "")


def chat_text(model: Model, messages: Messages | str, *, add_assistant: bool = True) -> str:
    """``model``'s chat template applied to ``(role, content)`` messages (a str is one user message).

    A model without a template, or with one llama.cpp does not know, gets ChatML and one warning per model
    (its answers may suffer: ChatML may not be the format it was trained on).
    """
    msgs = [("user", messages)] if isinstance(messages, str) else list(messages)
    if model.chat_template:
        out = _native.apply_chat_template(model.chat_template, msgs, add_assistant)
        if out is not None:
            return out
        why = "has a chat template llama.cpp does not know"
    else:
        why = "has no chat template"
    if model not in _warned:
        _warned.add(model)
        warnings.warn(f"model {os.path.basename(model.path)} {why}; prompts are written as ChatML, which may not be "
                      "the format it was trained on (use a GGUF whose template llama.cpp knows)", stacklevel=3)
    return chatml(msgs, add_assistant=add_assistant)


def encode_prompt(model: Model, text: str) -> list[int]:
    """Token ids of a prompt text with the model's BOS (when it wants one), never doubled when the template
    already wrote it."""
    toks = model.tokenize(text, add_special=True)
    if len(toks) >= 2 and toks[0] == toks[1] == model.bos:
        del toks[0]
    return toks


def chat_tokens(model: Model, messages: Messages | str, prefix: str = "") -> list[int]:
    """Token ids of the chat prompt for ``messages`` (open assistant turn), followed by ``prefix`` (assistant
    text already written): :func:`chat_text` then :func:`encode_prompt`."""
    return encode_prompt(model, chat_text(model, messages) + prefix)


__all__ = ["KINDS", "chat_text", "chat_tokens", "chatml", "encode_prompt", "instruction_for", "normalize_kind",
           "prompt_for"]
