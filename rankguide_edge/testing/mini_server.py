"""A minimal but real OpenAI-compatible HTTP server backed by this project's runtime, for tests and demos.

It serves ``GET /v1/models``, ``POST /v1/completions`` (raw prompt) and ``POST /v1/chat/completions`` (the
model's chat template; a final assistant message is continued) over :mod:`http.server`, one request at a
time on a single loaded GGUF. Sampling is greedy at temperature 0 (seeded otherwise); stop strings are cut
from the text as the OpenAI API does, and llama-server's extra fields (``stop_type``, ``stopping_word``,
``timings.prompt_n``) are added unless ``llama_extras`` is False.

Fault modes let tests exercise clients: ``completions=False`` answers 404 on ``/v1/completions``; ``mode``
"error" answers 500 to every POST, "slow" waits ``delay`` seconds before answering, "empty" answers an empty
text cut by the length limit, "done" an empty text ended by end-of-generation (the answer is complete),
"busy" answers the first ``busy_count`` POSTs with 429 and a ``Retry-After: <retry_after>`` header (none when
``retry_after`` is None), then serves normally. Every request is recorded in :attr:`MiniServer.requests` as
``(method, path, status)``. Connections are HTTP/1.1 and kept alive, as a production server's are;
:attr:`MiniServer.connections` counts the TCP connections accepted.

Usage::

    with MiniServer(path_to_gguf, RuntimeConfig(n_ctx=512)) as server:
        backend = RemoteBackend(server.url)
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..collab.backends import find_stop
from ..config import RuntimeConfig, SamplingConfig
from ..engine.context import generate_text
from ..engine.model import Model
from ..engine.prompts import encode_prompt
from ..errors import ContextOverflowError, InvalidInputError, RankGuideError

#: the fault modes of :class:`MiniServer`
MODES = ("ok", "error", "slow", "empty", "done", "busy")


class MiniServer:
    """An OpenAI-compatible server on ``host:port`` (port 0 picks a free one) running in a daemon thread.

    ``model``: a GGUF path or a loaded :class:`Model` (borrowed, not closed). ``api_key``: when set, requests
    must carry ``Authorization: Bearer <api_key>`` (else 401).
    """

    def __init__(self, model: str | os.PathLike[str] | Model, config: RuntimeConfig | None = None, *,
                 model_name: str = "mini", completions: bool = True, mode: str = "ok", delay: float = 0.0,
                 llama_extras: bool = True, api_key: str | None = None, host: str = "127.0.0.1",
                 port: int = 0, busy_count: int = 1, retry_after: str | None = "1") -> None:
        if mode not in MODES:
            raise InvalidInputError(f"unknown MiniServer mode {mode!r}: use one of {', '.join(MODES)}")
        self.config = config or RuntimeConfig(n_ctx=1024)
        if isinstance(model, Model):
            self.model, self._owns_model = model, False
        else:
            self.model, self._owns_model = Model(model), True
        self.model_name = model_name
        self.completions = completions
        self.mode = mode
        self.delay = delay
        self.llama_extras = llama_extras
        self.api_key = api_key
        self.busy_left = busy_count
        self.retry_after = retry_after
        self.requests: list[tuple[str, str, int]] = []
        self.connections = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._release = threading.Event()
        self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The API root, ``http://host:port/v1``."""
        # typeshed types a server address's host as str | bytes (bytes for AF_UNIX); an AF_INET server's is str
        return f"http://{self._httpd.server_address[0]}:{self.port}/v1"  # type: ignore[str-bytes-safe]

    def start(self) -> MiniServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="mini-server", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving (waking slow handlers), free the socket and, when owned, the model."""
        self._release.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()
        for sock in list(self._open):  # kept-alive connections: their handlers must stop serving too
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self._lock:
            if self._owns_model:
                self.model.close()

    def __enter__(self) -> MiniServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- generation -----------------------------------------------------------------------------------------

    def complete(self, prompt: str, body: dict[str, Any]) -> dict[str, Any]:
        """Run one generation for a request body; return the reply's choice fields and usage."""
        max_tokens = body.get("max_tokens", 16)
        temperature = body.get("temperature", 0.0)
        seed = body.get("seed", self.config.seed)
        stop = body.get("stop") or []
        stops = [stop] if isinstance(stop, str) else list(stop)
        if not isinstance(max_tokens, int) or not isinstance(temperature, (int, float)) or not isinstance(seed, int):
            raise InvalidInputError("max_tokens and seed must be integers and temperature a number")
        if not all(isinstance(s, str) for s in stops):
            raise InvalidInputError("stop must be a string or a list of strings")
        with self._lock:
            tokens = encode_prompt(self.model, prompt)
            cfg = dataclasses.replace(self.config, seed=max(0, min(seed, 2**31 - 1)))
            with self.model.context(cfg) as ctx:
                room = ctx.n_ctx - len(tokens)
                if room < 1:
                    raise ContextOverflowError(f"the prompt of {len(tokens)} tokens does not fit the context "
                                               f"of {ctx.n_ctx}")
                sampling = SamplingConfig(temperature=float(temperature), max_tokens=max(1, min(max_tokens, room)),
                                          stop=tuple(s for s in stops if s))
                text, events = generate_text(ctx, tokens, sampling)
        full = "".join(e.text for e in events)
        hit = find_stop(full, sampling.stop)
        if hit is not None:
            finish, stop_type, word = "stop", "word", hit[1]
        elif events and events[-1].eog:
            finish, stop_type, word = "stop", "eos", ""
        else:
            finish, stop_type, word = "length", "limit", ""
        if self.mode == "empty":
            text, finish, stop_type = "", "length", "limit"
        elif self.mode == "done":  # ends the answer at once, as a model that emits end-of-generation first
            text, finish, stop_type, word = "", "stop", "eos", ""
        generated = [e for e in events if not e.eog]
        return {"text": text, "finish_reason": finish, "stop_type": stop_type, "stopping_word": word,
                "events": generated, "prompt_tokens": len(tokens)}


# ------------------------------------------------------------------------------------------------- HTTP


def _logprobs_completions(model: Model, events: list[Any], n: int) -> dict[str, Any]:
    pieces = [model.detokenize([e.id]) for e in events]
    offsets, pos = [], 0
    for p in pieces:
        offsets.append(pos)
        pos += len(p)
    top = [{model.detokenize([int(t)]): float(lp) for t, lp in zip(e.top_ids[:n], e.top_logprobs[:n], strict=True)}
           for e in events]
    return {"tokens": pieces, "token_logprobs": [e.logprob for e in events], "top_logprobs": top,
            "text_offset": offsets}


def _logprobs_chat(model: Model, events: list[Any], n: int) -> dict[str, Any]:
    return {"content": [
        {"token": model.detokenize([e.id]), "logprob": e.logprob,
         "top_logprobs": [{"token": model.detokenize([int(t)]), "logprob": float(lp)}
                          for t, lp in zip(e.top_ids[:n], e.top_logprobs[:n], strict=True)]}
        for e in events]}


def _make_handler(server: MiniServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: every reply carries its Content-Length
        # headers and body leave in two writes: with Nagle's algorithm on, the body of a reply on a kept-alive
        # connection waits for the client's delayed ACK (~40 ms on Linux). Production servers set TCP_NODELAY.
        disable_nagle_algorithm = True

        def setup(self) -> None:
            super().setup()
            with server._count_lock:
                server.connections += 1
            server._open.add(self.connection)

        def finish(self) -> None:
            server._open.discard(self.connection)
            super().finish()

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            server.requests.append((self.command, self.path, status))
            data = json.dumps(payload).encode("utf-8")
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up (timeout) before the answer
                pass

        def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
            self._send(status, {"error": {"message": message, "type": "invalid_request_error"
                                          if status < 500 else "server_error", "code": status}}, headers)

        def _authorised(self) -> bool:
            if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                self._error(401, "missing or wrong API key")
                return False
            return True

        def do_GET(self) -> None:
            if not self._authorised():
                return
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [
                    {"id": server.model_name, "object": "model", "created": 0, "owned_by": "rankguide-edge"}]})
            else:
                self._error(404, f"no route GET {self.path}")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if not self._authorised():
                return
            path = self.path.rstrip("/")
            if path not in ("/v1/completions", "/v1/chat/completions") or (
                    path == "/v1/completions" and not server.completions):
                self._error(404, f"no route POST {self.path}")
                return
            if server.mode == "error":
                self._error(500, "simulated server failure")
                return
            if server.mode == "busy" and server.busy_left > 0:
                server.busy_left -= 1
                self._error(429, "simulated rate limit", {} if server.retry_after is None else
                            {"Retry-After": server.retry_after})
                return
            if server.mode == "slow" and server._release.wait(server.delay):
                return  # shutting down
            try:
                body = json.loads(raw.decode("utf-8") or "{}")
                if not isinstance(body, dict):
                    raise InvalidInputError("the request body must be a JSON object")
                payload = self._chat(body) if path.endswith("chat/completions") else self._completion(body)
            except (ValueError, UnicodeDecodeError) as exc:
                self._error(400, f"bad JSON body: {exc}")
                return
            except RankGuideError as exc:
                self._error(exc.http_status, str(exc))
                return
            self._send(200, payload)

        def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
            prompt = body.get("prompt")
            if isinstance(prompt, list) and len(prompt) == 1:
                prompt = prompt[0]
            if not isinstance(prompt, str):
                raise InvalidInputError("prompt must be a string")
            out = server.complete(prompt, body)
            choice: dict[str, Any] = {"index": 0, "text": out["text"], "finish_reason": out["finish_reason"],
                                      "logprobs": None}
            n = body.get("logprobs")
            if isinstance(n, int) and not isinstance(n, bool) and n > 0:
                choice["logprobs"] = _logprobs_completions(server.model, out["events"], n)
            return self._wrap("text_completion", choice, out)

        def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
            msgs = body.get("messages")
            if not isinstance(msgs, list) or not msgs or not all(
                    isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                    for m in msgs):
                raise InvalidInputError("messages must be a non-empty list of {role, content} strings")
            pairs = [(m["role"], m["content"]) for m in msgs]
            if pairs[-1][0] == "assistant" and body.get("add_generation_prompt") is not True:
                prompt = server.model.chat_prompt(pairs[:-1]) + pairs[-1][1]
            else:
                prompt = server.model.chat_prompt(pairs)
            out = server.complete(prompt, body)
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": out["text"]},
                                      "finish_reason": out["finish_reason"], "logprobs": None}
            n = body.get("top_logprobs", 0) if body.get("logprobs") else 0
            if body.get("logprobs"):
                choice["logprobs"] = _logprobs_chat(server.model, out["events"], int(n or 1))
            return self._wrap("chat.completion", choice, out)

        def _wrap(self, kind: str, choice: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
            n_gen = len(out["events"])
            if server.llama_extras:
                choice["stop_type"] = out["stop_type"]
                choice["stopping_word"] = out["stopping_word"]
            reply: dict[str, Any] = {
                "id": f"mini-{time.monotonic_ns()}", "object": kind, "created": int(time.time()),
                "model": server.model_name, "choices": [choice],
                "usage": {"prompt_tokens": out["prompt_tokens"], "completion_tokens": n_gen,
                          "total_tokens": out["prompt_tokens"] + n_gen}}
            if server.llama_extras:
                reply["timings"] = {"prompt_n": out["prompt_tokens"], "predicted_n": n_gen}
            return reply

    return Handler
