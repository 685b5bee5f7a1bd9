"""The remote LRM backend: an OpenAI-compatible server (llama-server, llama-cpp-python's server, vLLM).

Requests use the raw-prompt endpoint ``POST {base}/completions`` with the chat template applied here, on the
client (by a local :class:`~rankguide_edge.engine.model.Model`'s template when one is given, else ChatML), so
the step continues the assistant text exactly. A server that answers 404 or 400 there is asked
``POST {base}/chat/completions`` instead, with the prefix as a final assistant message to continue; the
endpoint that worked is remembered.

Stop strings. OpenAI servers strip the stop string from the text. When ``finish_reason`` is "stop", the rule
is, first match wins:

1. llama-server's ``stop_type``: "word" means a stop string was hit (``stopping_word`` names it), "eos"
   means the model ended its answer;
2. vLLM's ``stop_reason``: a string is the stop string hit; ``None`` or a token id means the model ended;
3. otherwise (plain OpenAI fields only): when the request had stop strings, a delimiter is assumed to have
   been hit (the first stop string, when several were sent).

A hit delimiter is appended to the text; an end of answer sets ``finished``. ``finish_reason`` "length"
means the budget ran out.

Transport. One :class:`httpx.Client` per backend keeps its connection alive between steps (every routed step
is a call: a new TCP, and over https TLS, handshake each time is pure latency). Network trouble never raises:
connection errors, timeouts, 429 (too many requests) and 5xx answers are retried ``retries`` times, then
reported as ``StepReply(ok=False, error=...)``. Before a retry the backend waits what the server's
``Retry-After`` asks (seconds or an HTTP date; this project's own server sends it with its 503), at most
``MAX_RETRY_WAIT``, else ``backoff`` seconds doubling each retry. Other 4xx answers are not retried.
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..config import bounded, from_mapping, validate
from ..engine.prompts import chatml
from ..errors import ConfigError
from .backends import RATE_PROMPT, StepReply, StepRequest, digit_of, rating_text

if TYPE_CHECKING:
    import httpx

    from ..engine.model import Model

#: sent as ``logprobs`` when rating (the largest value every OpenAI-compatible server accepts)
RATE_LOGPROBS = 5
#: the longest wait before a retry, in seconds, whatever a server's Retry-After asks
MAX_RETRY_WAIT = 60.0
#: the first wait before a retry, in seconds, when the server sends no Retry-After (it doubles each retry)
DEFAULT_BACKOFF = 0.5
#: statuses that are retried: the server is busy or failing, the request itself may be fine
RETRIED_STATUSES = frozenset({429}) | frozenset(range(500, 600))


@dataclasses.dataclass(frozen=True)
class RemoteConfig:
    """How a remote OpenAI-compatible server is called."""

    timeout: float = bounded(60.0, lo=0.1, hi=3600.0, help="seconds per attempt of a call to a remote LRM "
                             "(connect, send, each read)")
    retries: int = bounded(2, lo=0, hi=20, help="retries of a remote LRM call after a connection error, timeout, "
                           f"429 or 5xx; each waits the server's Retry-After (at most {MAX_RETRY_WAIT:g} s), else a "
                           f"backoff doubling from {DEFAULT_BACKOFF:g} s. The connection is kept alive between calls")
    backoff: float = bounded(DEFAULT_BACKOFF, lo=0.0, hi=60.0,
                             help="first retry delay in seconds without a Retry-After; doubles each retry")
    model: str | None = bounded(None, help="model name sent to a remote LRM", unset="the server's default model")

    def __post_init__(self) -> None:
        validate(self)


class _Failure(Exception):
    """A request that failed: ``status`` is the HTTP status (None for network trouble)."""

    def __init__(self, message: str, status: int | None, retries: int) -> None:
        super().__init__(message)
        self.status = status
        self.retries = retries


@dataclasses.dataclass
class _Answer:
    """One parsed choice of a server reply."""

    text: str
    finish_reason: str | None
    stop_hit: str | None  # the stop string that ended the text, when known
    ended: bool | None  # True: the model ended its answer; None: the server did not say
    n_tokens: int | None
    prefill_tokens: int | None
    logprobs: Any


class RemoteBackend:
    """An LRM behind an OpenAI-compatible HTTP API.

    ``base_url``: the API root, e.g. ``http://127.0.0.1:8080/v1``. ``api_key`` is sent as a Bearer token.
    ``template_model``: a local Model whose chat template formats the messages (typically the SRM's, which
    shares the LRM's template); without it ChatML is used.
    """

    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None,
                 timeout: float = RemoteConfig.timeout, retries: int = RemoteConfig.retries,
                 backoff: float = RemoteConfig.backoff, *,
                 template_model: Model | None = None, name: str | None = None) -> None:
        url = base_url.strip().rstrip("/")
        if not url.lower().startswith(("http://", "https://")):
            raise ConfigError(f"bad LRM server URL {base_url!r}: use http(s)://host:port/v1")
        self.base_url = url
        self.config = from_mapping(RemoteConfig, {"timeout": timeout, "retries": retries, "backoff": backoff,
                                                  "model": model})
        self._api_key = api_key
        self.template_model = template_model
        self.name = name or f"remote:{model or url}"
        #: "completions" until the server refuses it, then "chat" once that worked
        self.endpoint = "completions"
        #: the waits before each retry so far, in seconds (a server's Retry-After, or the backoff), newest last
        self.retry_waits: list[float] = []
        self._client: httpx.Client | None = None

    def _http(self) -> httpx.Client:
        """The backend's one HTTP client (made on first use), whose pooled connection stays open between calls."""
        if self._client is None:
            import httpx

            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            if self._api_key:
                headers["Authorization"] = f"Bearer {self._api_key}"
            self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(self.config.timeout),
                                        limits=httpx.Limits(max_connections=4, max_keepalive_connections=4))
        return self._client

    # -- HTTP -----------------------------------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """POST JSON with bounded retries; return the decoded reply and the retries used, or raise _Failure."""
        import httpx

        cfg = self.config
        data = json.dumps(body).encode("utf-8")
        url = f"{self.base_url}/{path}"
        last, wait = "", 0.0
        for attempt in range(cfg.retries + 1):
            if attempt:
                self.retry_waits.append(wait)
                time.sleep(wait)
            wait = cfg.backoff * 2 ** attempt  # the next wait, unless the server names one
            try:
                resp = self._http().post(url, content=data)
                raw = resp.content
            except httpx.RequestError as exc:  # refused, reset, timed out, a broken reply
                last = f"cannot reach {url}: {exc or type(exc).__name__}"
                continue
            if resp.status_code >= 400:
                last = f"HTTP {resp.status_code} from {url}{_error_detail(raw)}"
                if resp.status_code in RETRIED_STATUSES:
                    asked = retry_after_seconds(resp.headers.get("Retry-After"))
                    wait = min(asked, MAX_RETRY_WAIT) if asked is not None else wait
                    continue
                raise _Failure(last, resp.status_code, attempt)
            try:
                reply = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise _Failure(f"{url} answered with invalid JSON", resp.status_code, attempt) from None
            if not isinstance(reply, dict):
                raise _Failure(f"{url} answered with a JSON {type(reply).__name__}, not an object",
                               resp.status_code, attempt)
            return reply, attempt
        raise _Failure(f"{last} (after {cfg.retries + 1} attempts)", None, cfg.retries)

    def _request(self, prompt: str, messages: list[tuple[str, str]], prefix: str, fields: dict[str, Any]
                 ) -> tuple[_Answer, int]:
        """Ask the remembered endpoint (falling back from completions to chat on 404/400)."""
        retries = 0
        if self.endpoint == "completions":
            try:
                reply, used = self._post("completions", self._body({"prompt": prompt}, fields))
                return _parse(reply, chat=False), used
            except _Failure as exc:
                if exc.status not in (400, 404):
                    raise
                retries = exc.retries
                first = str(exc)
        else:
            first = ""
        chat_msgs = [{"role": r, "content": c} for r, c in messages]
        extra: dict[str, Any] = {}
        if isinstance(fields.get("logprobs"), int):  # the chat API takes a flag plus a count
            fields = {**fields, "logprobs": True, "top_logprobs": fields["logprobs"]}
        if prefix:
            chat_msgs.append({"role": "assistant", "content": prefix})
            extra = {"continue_final_message": True, "add_generation_prompt": False}
        try:
            reply, used = self._post("chat/completions", self._body({"messages": chat_msgs, **extra}, fields))
        except _Failure as exc:
            message = f"{first}; chat fallback: {exc}" if first else str(exc)
            raise _Failure(message, exc.status, retries + exc.retries) from None
        self.endpoint = "chat"
        return _parse(reply, chat=True), retries + used

    def _body(self, head: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
        body = dict(head)
        if self.config.model:
            body["model"] = self.config.model
        body.update(fields)
        return body

    def _prompt(self, messages: Sequence[tuple[str, str]]) -> str:
        if self.template_model is not None:
            return self.template_model.chat_prompt(list(messages))
        return chatml(messages)

    # -- LRMBackend -----------------------------------------------------------------------------------------

    def write_step(self, req: StepRequest) -> StepReply:
        """Ask the server for the step after ``req.prefix`` (rule for stop strings: see the module doc)."""
        t0 = time.perf_counter()
        fields: dict[str, Any] = {"max_tokens": req.max_tokens, "temperature": req.temperature, "seed": req.seed,
                                  "stream": False}
        if req.stop:
            fields["stop"] = list(req.stop)
        try:
            answer, retries = self._request(self._prompt(req.messages) + req.prefix, list(req.messages),
                                            req.prefix, fields)
        except _Failure as exc:
            return StepReply(text="", n_tokens=0, finished=False, prefill_tokens=0,
                             seconds=time.perf_counter() - t0, ok=False, error=str(exc), retries=exc.retries)
        text, finished = _close_step(answer, req.stop)
        reply = StepReply(text=text, n_tokens=answer.n_tokens if answer.n_tokens is not None else 0,
                          finished=finished,
                          prefill_tokens=answer.prefill_tokens if answer.prefill_tokens is not None else 0,
                          seconds=time.perf_counter() - t0, retries=retries)
        if not answer.text:
            reply.ok, reply.error, reply.text = False, "empty reply", ""
        return reply

    def rate(self, messages: Sequence[tuple[str, str]], prefix: str, step: str, prompt: str = RATE_PROMPT
             ) -> int | None:
        """One greedy token after the judge prompt: its digit, else the most likely digit among the
        returned top log-probabilities; None when neither gives one or the server fails."""
        text = rating_text(self._prompt(messages), prefix, step, prompt)
        judge_prefix = text[len(self._prompt(messages)):]
        fields = {"max_tokens": 1, "temperature": 0.0, "logprobs": RATE_LOGPROBS, "stream": False}
        try:
            answer, _ = self._request(text, list(messages), judge_prefix, fields)
        except _Failure:
            return None
        digit = digit_of(answer.text)
        return digit if digit is not None else _best_digit(answer.logprobs)

    def close(self) -> None:
        """Close the kept-alive connection (idempotent; a later call opens a new one)."""
        if self._client is not None:
            self._client.close()
            self._client = None


# ---------------------------------------------------------------------------------------------- replies


def _error_detail(body: bytes) -> str:
    """``": <the server's error message>"`` from an error reply's body, or "" when it has none."""
    try:
        text = body[:2000].decode("utf-8", "replace")
        msg = json.loads(text).get("error", text)
        if isinstance(msg, dict):
            msg = msg.get("message", "")
        msg = " ".join(str(msg).split())[:200]
    except Exception:  # noqa: BLE001 - the status alone is enough
        return ""
    return f": {msg}" if msg else ""


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """The wait a ``Retry-After`` header asks for, in seconds (``"3"``, or an HTTP date such as ``"Wed, 21 Oct
    2026 07:28:00 GMT"``, counted from ``now``, default the current time); None when absent or unreadable, 0
    for a date already past."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _mapping(value: Any) -> dict[str, Any]:
    """``value`` if the reply gave an object there, else an empty one (a missing or malformed field)."""
    return value if isinstance(value, dict) else {}


def _parse(reply: dict[str, Any], *, chat: bool) -> _Answer:
    """Read the first choice of a completions or chat reply (missing fields become None/"")."""
    choices = reply.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    if chat:
        text = _mapping(choice.get("message")).get("content") or ""
    else:
        text = choice.get("text") or ""
    if not isinstance(text, str):
        text = ""
    stop_hit: str | None = None
    ended: bool | None = None
    stop_type = reply.get("stop_type", choice.get("stop_type"))
    if isinstance(stop_type, str):  # llama-server
        if stop_type == "word":
            word = reply.get("stopping_word", choice.get("stopping_word"))
            stop_hit, ended = (word if isinstance(word, str) and word else ""), False
        elif stop_type == "eos":
            ended = True
        else:
            ended = False
    elif "stop_reason" in choice:  # vLLM
        reason = choice["stop_reason"]
        if isinstance(reason, str) and reason:
            stop_hit, ended = reason, False
        else:
            ended = True
    usage, timings = _mapping(reply.get("usage")), _mapping(reply.get("timings"))
    prefill = _int_or_none(timings.get("prompt_n"))  # llama-server: tokens actually processed
    if prefill is None:
        prefill = _int_or_none(usage.get("prompt_tokens"))
    return _Answer(text=text, finish_reason=choice.get("finish_reason"), stop_hit=stop_hit, ended=ended,
                   n_tokens=_int_or_none(usage.get("completion_tokens")), prefill_tokens=prefill,
                   logprobs=choice.get("logprobs"))


def _close_step(answer: _Answer, stops: Sequence[str]) -> tuple[str, bool]:
    """Apply the stop rule of the module doc: ``(text with the delimiter re-appended, finished)``."""
    text = answer.text
    if answer.finish_reason != "stop":
        return text, False
    if answer.ended is True:
        return text, True
    if answer.stop_hit is not None:  # told which stop string (or only that one was hit)
        hit = answer.stop_hit or (stops[0] if stops else "")
        return (text if text.endswith(hit) else text + hit), False
    if stops:
        return (text if text.endswith(stops[0]) else text + stops[0]), False
    return text, True


def _best_digit(logprobs: Any) -> int | None:
    """The most likely single digit among a reply's top log-probabilities (completions or chat layout)."""
    candidates: dict[str, float] = {}
    if isinstance(logprobs, dict):
        top = logprobs.get("top_logprobs")
        if isinstance(top, list) and top and isinstance(top[0], dict):  # completions: [{token: logprob}]
            candidates = {k: float(v) for k, v in top[0].items() if isinstance(v, (int, float))}
        content = logprobs.get("content")
        if isinstance(content, list) and content and isinstance(content[0], dict):  # chat
            for item in content[0].get("top_logprobs") or []:
                if isinstance(item, dict) and isinstance(item.get("logprob"), (int, float)):
                    candidates[str(item.get("token", ""))] = float(item["logprob"])
    best: tuple[float, int] | None = None
    for token, lp in candidates.items():
        d = digit_of(token)
        if d is not None and token.strip() == str(d) and (best is None or lp > best[0]):
            best = (lp, d)
    return best[1] if best else None
