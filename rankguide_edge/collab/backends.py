"""LRM backends: who writes a reasoning step when the SRM's own step is judged likely to fail.

The reasoner hands a backend a :class:`StepRequest` (the chat messages, the assistant text written so far and
the step delimiter) and gets a :class:`StepReply` back. Two kinds are built in:

* ``local`` -- a GGUF model run in-process through this project's runtime
  (:class:`~rankguide_edge.collab.backends_local.LocalBackend`), which keeps one llama context mirroring the
  conversation and only prefills what changed since the previous call;
* ``remote`` -- an OpenAI-compatible HTTP server (llama-server, llama-cpp-python's server, vLLM)
  (:class:`~rankguide_edge.collab.backends_remote.RemoteBackend`).

:func:`make_backend` picks one from a spec string; :func:`register_backend` adds further kinds. Backends also
offer :meth:`LRMBackend.rate`, a SpecReason-style judge: a single forward pass that scores the last step 0-9.

Importing this module does no work: the local and remote implementations are imported on first use.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigError, InvalidInputError
from ..signals.segment import DEFAULT_DELIMITER as STEP_DELIMITER

#: the SpecReason-style judge instruction appended after the step being rated
RATE_PROMPT = "Rate the correctness and usefulness of the last step from 0 to 9. Answer with one digit."


@dataclass
class StepRequest:
    """What the reasoner asks a backend for: the next step after ``prefix``.

    ``messages``: chat messages ``(role, content)`` holding the problem, already formatted by the caller.
    ``prefix``: the assistant text written so far (all previous steps, whoever wrote them).
    ``max_tokens``: token budget of this step. ``stop``: the step delimiter(s); the reply's text includes the
    delimiter when one was hit. ``temperature`` 0 is greedy; ``seed`` fixes sampling otherwise.
    ``on_text``: called with the text the step gains as the backend generates it, when the backend can stream
    (the local one does; a remote one does not call it); the pieces spell a prefix of the reply's text (the
    whole text when the reply is ok).
    """

    messages: list[tuple[str, str]]
    prefix: str
    max_tokens: int
    stop: tuple[str, ...] = (STEP_DELIMITER,)
    temperature: float = 0.0
    seed: int = 0
    on_text: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        if not self.messages:
            raise InvalidInputError("StepRequest.messages is empty: give at least the problem as a user message")
        if self.max_tokens < 1:
            raise InvalidInputError(f"StepRequest.max_tokens={self.max_tokens} must be at least 1")
        if self.temperature < 0:
            raise InvalidInputError(f"StepRequest.temperature={self.temperature} must be >= 0")
        self.stop = tuple(s for s in self.stop if s)


@dataclass
class StepReply:
    """A step written by a backend.

    ``text``: the step, ending with the delimiter when one was hit. ``n_tokens``: tokens generated (an
    end-of-generation token is not counted). ``finished``: the model ended its answer (end-of-generation, or a
    server's "stop" that was not a delimiter). ``prefill_tokens``: prompt tokens actually fed before generating
    (after cache reuse). ``seconds``: wall time. ``ok`` False means no usable step (``error`` says why); the
    caller then keeps its own step; an empty step is never ok (error "empty reply"). ``retries``: HTTP attempts
    repeated after a transient failure.
    """

    text: str
    n_tokens: int
    finished: bool
    prefill_tokens: int
    seconds: float
    ok: bool = True
    error: str | None = None
    retries: int = 0


@runtime_checkable
class LRMBackend(Protocol):
    """A large model that writes reasoning steps and judges them."""

    name: str

    def write_step(self, req: StepRequest) -> StepReply:
        """Write the step that follows ``req.prefix``."""
        ...

    def rate(self, messages: Sequence[tuple[str, str]], prefix: str, step: str, prompt: str = RATE_PROMPT
             ) -> int | None:
        """Score ``step`` (written after ``prefix``) from 0 to 9 with one forward pass; None on failure."""
        ...

    def close(self) -> None:
        """Release the model, context or connections."""
        ...


BackendFactory = Callable[..., LRMBackend]
_REGISTRY: dict[str, BackendFactory] = {}


def register_backend(kind: str, factory: BackendFactory) -> None:
    """Make ``make_backend("<kind>:<target>", **options)`` call ``factory(target, **options)``.

    ``kind`` is a lower-case identifier; registering an existing kind replaces its factory.
    """
    if not kind or not kind.replace("_", "").replace("-", "").isalnum() or kind != kind.lower():
        raise ConfigError(f"bad backend kind {kind!r}: use a lower-case identifier such as 'local'")
    _REGISTRY[kind] = factory


def backend_kinds() -> list[str]:
    """The registered backend kinds, sorted."""
    return sorted(_REGISTRY)


def parse_spec(spec: str) -> tuple[str, str]:
    """Split a backend spec into ``(kind, target)``.

    ``http://...`` and ``https://...`` are ``remote``; ``<kind>:<target>`` with a registered kind is that kind;
    anything else (a model name or a GGUF path) is ``local``.
    """
    text = os.fspath(spec).strip()
    if not text:
        raise ConfigError("empty backend spec: give a model name, a .gguf path or an http(s)://host:port/v1 URL")
    lowered = text.lower()
    if lowered.startswith(("http://", "https://")):
        return "remote", text
    head, sep, rest = text.partition(":")
    if sep and head.lower() in _REGISTRY and rest:
        return head.lower(), rest
    return "local", text


def make_backend(spec: str, **options: Any) -> LRMBackend:
    """A backend for ``spec``: a model name or GGUF path (local), a URL (remote) or ``<kind>:<target>``.

    ``options`` go to the factory: for ``local`` ``config`` (a RuntimeConfig), ``pull``, ``progress``; for
    ``remote`` ``model``, ``api_key``, ``timeout``, ``retries``, ``backoff``, ``template_model``.
    """
    kind, target = parse_spec(spec)
    factory = _REGISTRY.get(kind)
    if factory is None:
        raise ConfigError(f"unknown backend kind {kind!r}; known kinds: {', '.join(backend_kinds())}")
    try:
        return factory(target, **options)
    except TypeError as exc:
        raise ConfigError(f"bad options for a {kind} backend: {exc}") from None


def _local_factory(target: str, **options: Any) -> LRMBackend:
    from .backends_local import LocalBackend

    return LocalBackend(target, **options)


def _remote_factory(target: str, **options: Any) -> LRMBackend:
    from .backends_remote import RemoteBackend

    return RemoteBackend(target, **options)


register_backend("local", _local_factory)
register_backend("remote", _remote_factory)


# ------------------------------------------------------------------------------------------ shared helpers


def find_stop(text: str, stops: Sequence[str], start: int = 0) -> tuple[int, str] | None:
    """The earliest stop string in ``text`` beginning at or after ``start``: ``(end index, stop)``, else None.

    ``end index`` is just past the stop, so ``text[:end]`` keeps the delimiter. On equal positions the longer
    stop wins.
    """
    best: tuple[int, str] | None = None
    for s in stops:
        i = text.find(s, start) if s else -1
        if i >= 0 and (best is None or i < best[0] or (i == best[0] and len(s) > len(best[1]))):
            best = (i, s)
    return None if best is None else (best[0] + len(best[1]), best[1])


def rating_text(chat_prompt: str, prefix: str, step: str, prompt: str = RATE_PROMPT) -> str:
    """The judge's input: the conversation, the assistant text, the rated step, then the instruction.

    The instruction starts on a fresh paragraph and the text ends with a newline, so the judge's answer
    begins at the start of a line, where every tokenizer writes a digit without a leading space.
    """
    body = prefix + step
    sep = "" if body.endswith("\n\n") else ("\n" if body.endswith("\n") else "\n\n")
    if not body:
        sep = ""
    return chat_prompt + body + sep + prompt.strip() + "\n"


def digit_of(text: str) -> int | None:
    """The digit a judge answered (first non-blank character), else None."""
    stripped = text.lstrip()
    if stripped[:1].isdigit() and stripped[0] in "0123456789":
        return int(stripped[0])
    return None


__all__ = [
    "RATE_PROMPT",
    "STEP_DELIMITER",
    "BackendFactory",
    "LRMBackend",
    "StepReply",
    "StepRequest",
    "backend_kinds",
    "digit_of",
    "find_stop",
    "make_backend",
    "parse_spec",
    "rating_text",
    "register_backend",
]
