"""Request bodies (pydantic) and response bodies (plain dicts) of the OpenAI-compatible endpoints.

Top-level OpenAI fields the reasoner cannot honour are either accepted and ignored (``user``,
``frequency_penalty``, ``presence_penalty``, ``logit_bias``, ``metadata``, ``store``, ``service_tier``,
``parallel_tool_calls`` and any unknown key: clients send new fields all the time) or refused with a 400
when ignoring them would change the meaning of the answer (``n`` > 1, ``logprobs``/``top_logprobs``,
``tools``/``functions``, a non-text ``response_format``, ``echo``, ``suffix``, ``best_of`` > 1, non-text
message parts). The ``rankguide`` object is strict: an unknown key is an error.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..collab.reasoner import ReasonerConfig
from ..config import field_help
from ._workers import Outcome


class RequestError(Exception):
    """Private: a request the server refuses before queueing it (rendered as an OpenAI error body)."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")
        self.headers = headers or {}


def _reasoner_field(name: str) -> Any:
    """A request field that is ``ReasonerConfig.name``: documented by that field (its value is checked by
    ReasonerConfig, as a config file's is; unset: the server's default)."""
    return Field(None, description=field_help(ReasonerConfig, name))


class RankGuideOptions(BaseModel):
    """Per-request routing settings (``rankguide`` in the body); values are checked by ReasonerConfig."""

    model_config = ConfigDict(extra="forbid")

    policy: str | None = _reasoner_field("policy")
    threshold: float | None = _reasoner_field("threshold")
    decide: str | None = _reasoner_field("decide")
    steer: str | None = Field(None, description="the name of a control vector the server offers (GET /v1/models "
                                                "lists them), not a path; unset: no steering")
    steer_scale: float | None = _reasoner_field("steer_scale")
    steer_where: str | None = _reasoner_field("steer_where")
    max_lrm_share: float | None = _reasoner_field("max_lrm_share")
    lrm_first: int | None = _reasoner_field("lrm_first")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class _Common(BaseModel):
    """Fields shared by chat and text completions."""

    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = _reasoner_field("max_tokens")
    temperature: float | None = _reasoner_field("temperature")
    top_p: float | None = _reasoner_field("top_p")
    seed: int | None = _reasoner_field("seed")
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    logprobs: Any = None
    rankguide: RankGuideOptions | None = None

    def check_supported(self) -> None:
        """Refuse OpenAI features whose absence would silently change the answer."""
        if self.n not in (None, 1):
            raise RequestError(400, "n > 1 is not supported: send one request per choice", param="n")
        if self.logprobs not in (None, False, 0):
            raise RequestError(400, "logprobs are not supported by the collaborative reasoner", param="logprobs")

    def budget(self) -> int | None:
        return self.max_tokens

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        if len(stops) > 4:
            raise RequestError(400, "at most 4 stop strings are allowed", param="stop")
        return tuple(s for s in stops if s)

    def changes(self) -> dict[str, Any]:
        """ReasonerConfig fields this request sets (only those it gives)."""
        out: dict[str, Any] = {}
        budget = self.budget()
        if budget is not None:
            out["max_tokens"] = budget
        for key in ("temperature", "top_p", "seed"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.rankguide is not None:
            out.update(self.rankguide.model_dump(exclude_none=True))
        return out


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None

    def as_pair(self, index: int) -> tuple[str, str]:
        """``(role, text)``; ``developer`` becomes ``system``; only text parts are allowed."""
        role = "system" if self.role == "developer" else self.role
        if self.content is None:
            return role, ""
        if isinstance(self.content, str):
            return role, self.content
        texts = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise RequestError(400, f"message {index} has a {part.type!r} part: only text is supported",
                                   param=f"messages.{index}.content")
            texts.append(part.text)
        return role, "".join(texts)


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None

    def check_supported(self) -> None:
        super().check_supported()
        if self.top_logprobs:
            raise RequestError(400, "top_logprobs is not supported", param="top_logprobs")
        if self.tools or self.functions:
            raise RequestError(400, "tools and functions are not supported", param="tools")
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise RequestError(400, "only the text response_format is supported", param="response_format")

    def budget(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def pairs(self) -> list[tuple[str, str]]:
        return [m.as_pair(i) for i, m in enumerate(self.messages)]


class CompletionRequest(_Common):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    def check_supported(self) -> None:
        super().check_supported()
        if self.echo:
            raise RequestError(400, "echo is not supported", param="echo")
        if self.suffix:
            raise RequestError(400, "suffix (insertion) is not supported", param="suffix")
        if self.best_of not in (None, 1):
            raise RequestError(400, "best_of > 1 is not supported", param="best_of")

    def pairs(self) -> list[tuple[str, str]]:
        """The prompt as one user message (the reasoner always speaks through the chat template)."""
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise RequestError(400, "give exactly one prompt (batched prompts are not supported)",
                                   param="prompt")
            return [("user", self.prompt[0])]
        return [("user", self.prompt)]


# ------------------------------------------------------------------------------------------------ responses


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage_dict(out: Outcome) -> dict[str, int]:
    """OpenAI's usage object: completion tokens are the kept ones, whoever wrote them."""
    return {"prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens,
            "total_tokens": out.prompt_tokens + out.completion_tokens}


def rankguide_summary(out: Outcome) -> dict[str, Any]:
    """The ``rankguide`` object of a response: routing per step and the usage split SRM/LRM.

    ``degraded`` is true when an LRM call failed and the SRM's step was kept instead.
    """
    u = out.usage
    steps = [{"index": s.index, "source": s.source, "routed": s.routed or bool(s.lrm_error),
              "score": None if s.score is None else round(float(s.score), 4), "reason": s.reason,
              "srm_tokens": s.srm_tokens, "discarded_tokens": s.discarded_tokens, "lrm_tokens": s.lrm_tokens,
              "lrm_error": s.lrm_error, "seconds": round(s.seconds, 4)} for s in out.steps]
    n_lrm = sum(1 for s in out.steps if s.source == "lrm")
    failures = int(u.get("lrm_failures", 0))
    summary: dict[str, Any] = {
        "policy": out.policy, "threshold": out.threshold, "decide": out.decide,
        "lrm_available": out.lrm_available,
        "steps": steps,
        "n_steps": len(steps), "lrm_steps": n_lrm,
        "lrm_share": round(n_lrm / len(steps), 4) if steps else 0.0,
        "usage": {"srm_tokens": out.srm_kept_tokens, "lrm_tokens": int(u.get("lrm_tokens", 0)),
                  "srm_drafted_tokens": int(u.get("srm_tokens", 0)),
                  "srm_discarded_tokens": int(u.get("srm_discarded_tokens", 0)),
                  "lrm_calls": int(u.get("lrm_calls", 0)), "lrm_failures": failures,
                  "srm_reused_tokens": int(u.get("srm_reused_tokens", 0)),
                  "srm_prefill_tokens": int(u.get("srm_prefill_tokens", 0))},
        "lrm_failures": failures,
        "degraded": failures > 0,
        "finished": out.finished,
        "queue_seconds": out.queue_seconds,
        "timing": out.timing,
    }
    if out.steering:  # the vector's name, as the request gave it, not the server's path
        steering = {k: v for k, v in out.steering.items() if k != "file"}
        summary["steering"] = {"vector": os.path.basename(out.steering["file"]).removesuffix(".gguf"), **steering}
    return summary


def chat_response(rid: str, model: str, out: Outcome, created: int | None = None) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion", "created": created or int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": out.text},
                         "logprobs": None, "finish_reason": out.finish_reason}],
            "usage": usage_dict(out), "rankguide": rankguide_summary(out)}


def completion_response(rid: str, model: str, out: Outcome, created: int | None = None) -> dict[str, Any]:
    return {"id": rid, "object": "text_completion", "created": created or int(time.time()), "model": model,
            "choices": [{"index": 0, "text": out.text, "logprobs": None, "finish_reason": out.finish_reason}],
            "usage": usage_dict(out), "rankguide": rankguide_summary(out)}


class ChunkMaker:
    """Builds the SSE chunks of one streamed response (``chat`` or text ``completion``)."""

    def __init__(self, kind: str, rid: str, model: str) -> None:
        self.kind, self.rid, self.model = kind, rid, model
        self.created = int(time.time())

    def _base(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return {"id": self.rid, "object": obj, "created": self.created, "model": self.model, "choices": choices}

    def _choice(self, text: str | None, finish: str | None, role: bool = False) -> dict[str, Any]:
        if self.kind == "chat":
            delta: dict[str, Any] = {}
            if role:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}

    def first(self) -> dict[str, Any] | None:
        """The opening chunk (chat only: the assistant role with empty content)."""
        return self._base([self._choice("", None, role=True)]) if self.kind == "chat" else None

    def delta(self, text: str, info: dict[str, Any]) -> dict[str, Any]:
        """A chunk of answer text; ``rankguide`` says which step and model it came from."""
        return {**self._base([self._choice(text, None)]), "rankguide": info}

    def last(self, out: Outcome) -> dict[str, Any]:
        """The closing chunk: the finish reason and the routing summary."""
        choice = self._choice(None if self.kind == "chat" else "", out.finish_reason)
        return {**self._base([choice]), "rankguide": rankguide_summary(out)}

    def usage(self, out: Outcome) -> dict[str, Any]:
        """The extra usage chunk of ``stream_options.include_usage`` (empty choices)."""
        return {**self._base([]), "usage": usage_dict(out)}


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | int | None = None) -> dict[str, Any]:
    """OpenAI's error body."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}
