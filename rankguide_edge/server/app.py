"""The FastAPI application: OpenAI-compatible chat and text completions over the collaborative reasoner.

:func:`create_app` builds the app and its :class:`~rankguide_edge.server._workers.WorkerPool`; nothing is loaded
until the app starts (its lifespan) or ``app.state.pool.start()`` is called. Streams send one delta per kept
reasoning step (never a draft the LRM then replaced), as OpenAI-format SSE chunks ending with ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import time
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..config import from_mapping
from ..errors import ContextOverflowError, RankGuideError
from ._workers import Job, Outcome, QueueFull, SolverFactory, WorkerPool
from .metrics import Metrics
from .roles import ModelRoles
from .schemas import (
    ChatCompletionRequest,
    ChunkMaker,
    CompletionRequest,
    RequestError,
    chat_response,
    completion_response,
    error_body,
    new_id,
)
from .settings import ServerConfig, check_reasoner_config

log = logging.getLogger("rankguide_edge.server")

#: endpoints with their own metrics label; anything else is "other"
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")
#: how often a waiting request checks whether its client is still there (seconds)
POLL_SECONDS = 0.2


def _code(exc: RankGuideError) -> str:
    if isinstance(exc, ContextOverflowError):
        return "context_length_exceeded"
    name = type(exc).__name__.removesuffix("Error") or "rankguide"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def error_response(status: int, message: str, *, type: str | None = None, param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    kind = type or ("invalid_request_error" if status < 500 else "server_error")
    return JSONResponse(error_body(message, kind, param, code), status_code=status, headers=headers)


def exception_response(exc: BaseException) -> JSONResponse:
    """An OpenAI error response for any exception: library errors by class (``http_status``), others 500."""
    if isinstance(exc, RequestError):
        return error_response(exc.status, exc.message, type=exc.type, param=exc.param, code=exc.code,
                              headers=exc.headers)
    if isinstance(exc, RankGuideError):
        return error_response(exc.http_status, str(exc), code=_code(exc))
    return error_response(500, f"internal error: {type(exc).__name__}: {exc}", code="internal_error")


def _error_payload(exc: BaseException) -> dict[str, Any]:
    return json.loads(bytes(exception_response(exc).body))


def _sse(obj: dict[str, Any] | str) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


class _EdgeMiddleware:
    """Pure ASGI middleware: the API key check on /v1/* and request metrics (status, duration).

    A response that never completed (the client left mid-stream) counts as status 499.
    """

    def __init__(self, app: Any, metrics: Metrics, api_key: str) -> None:
        self.app, self.metrics, self.api_key = app, metrics, api_key

    def _authorised(self, scope: dict[str, Any]) -> bool:
        if not self.api_key or not scope["path"].startswith("/v1"):
            return True
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = auth.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_key.encode())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"].rstrip("/") or "/"
        endpoint = path if path in ENDPOINTS else ("/v1/models" if path.startswith("/v1/models/") else "other")
        t0 = time.perf_counter()
        state: dict[str, Any] = {"status": None, "done": False}

        async def send_wrapper(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                state["done"] = True
            await send(message)

        try:
            if not self._authorised(scope):
                resp = error_response(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                      code="invalid_api_key")
                await resp(scope, receive, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            status = state["status"] if state["done"] else (499 if state["status"] else 500)
            self.metrics.inc("requests_total", endpoint=endpoint, status=status)
            self.metrics.observe("request_duration_seconds", time.perf_counter() - t0, endpoint=endpoint)


class _Gone(Exception):
    """Private: the client disconnected while its request waited."""


def create_app(settings: ServerConfig | None = None, solver_factory: SolverFactory | None = None, *,
               metrics: Metrics | None = None) -> FastAPI:
    """The server app for ``settings``.

    ``solver_factory(index)`` makes worker ``index``'s solver (anything with ``config``, ``chat``,
    ``reconfigure``, ``close``; see :class:`~rankguide_edge.server._workers.SolverLike`); it is called
    ``settings.parallel`` times when the app starts. Default: :class:`~rankguide_edge.server.solvers.
    SharedModelSolvers` (loads ``settings.srm``/``settings.lrm`` once, shared by the workers). The pool is
    ``app.state.pool``, the metrics ``app.state.metrics``.
    """
    settings = settings or ServerConfig()
    if solver_factory is None:
        from .solvers import SharedModelSolvers

        solver_factory = SharedModelSolvers(settings)
    metrics = metrics or Metrics()
    pool = WorkerPool(solver_factory, parallel=settings.parallel, queue_size=settings.queue_size, metrics=metrics)
    started = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not pool.started:
            await anyio.to_thread.run_sync(pool.start)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(pool.close)

    app = FastAPI(title="rankguide-edge", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings, app.state.pool, app.state.metrics = settings, pool, metrics
    app.add_middleware(_EdgeMiddleware, metrics=metrics, api_key=settings.api_key)

    # -- errors ---------------------------------------------------------------------------------------------

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first: dict[str, Any] = errors[0] if errors else {"type": "", "loc": (), "msg": "invalid request"}
        if first.get("type") == "json_invalid":
            return error_response(400, f"malformed JSON body: {first.get('ctx', {}).get('error', first['msg'])}",
                                  code="invalid_json")
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        return error_response(422, f"{param or 'body'}: {first['msg']}", param=param, code="invalid_type")

    @app.exception_handler(RequestError)
    async def _refused(request: Request, exc: RequestError) -> JSONResponse:
        return exception_response(exc)

    @app.exception_handler(RankGuideError)
    async def _library(request: Request, exc: RankGuideError) -> JSONResponse:
        return exception_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None,
                              headers=getattr(exc, "headers", None))

    # -- plumbing -------------------------------------------------------------------------------------------

    def roles() -> ModelRoles:
        return ModelRoles(settings.model_name, settings.srm, settings.lrm if pool.lrm_available else "")

    def submit(body: ChatCompletionRequest | CompletionRequest) -> tuple[Job, asyncio.Queue[Any]]:
        body.check_supported()
        changes = roles().changes(body.model, body.changes())  # 404 for an unknown id
        messages = body.pairs()
        if changes.get("steer"):  # a name from the server's steering folder, never a client's path
            changes["steer"] = settings.steering_file(changes["steer"])
        if changes:
            from ..collab.reasoner import ReasonerConfig

            check_reasoner_config(from_mapping(ReasonerConfig, {**pool.defaults, **changes}))  # 400 now
        changes = {k: v for k, v in changes.items() if pool.defaults.get(k, object()) != v}
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def sink(kind: str, payload: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone (server shutting down)
                loop.call_soon_threadsafe(queue.put_nowait, (kind, payload))

        timeout = settings.request_timeout
        job = Job(messages=messages, changes=changes, stop=body.stops(), sink=sink,
                  deadline=time.monotonic() + timeout if timeout else None)
        try:
            pool.submit(job)
        except QueueFull:
            raise RequestError(503, f"all {pool.parallel} workers are busy and {pool.queue_size} requests wait: "
                                    "retry later", type="server_error", code="queue_full",
                               headers={"Retry-After": str(pool.retry_after())}) from None
        return job, queue

    async def next_item(request: Request, job: Job, queue: asyncio.Queue[Any]) -> tuple[str, Any]:
        """The worker's next report, watching for a client that leaves and for the request deadline."""
        while True:
            try:
                return await asyncio.wait_for(queue.get(), POLL_SECONDS)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    pool.cancel(job, "disconnect")
                    raise _Gone() from None
                if job.deadline is not None and time.monotonic() > job.deadline:
                    pool.cancel(job, "timeout")

    def timeout_response() -> JSONResponse:
        return error_response(504, f"the request took longer than {settings.request_timeout:g} s: raise "
                                   "request_timeout or lower max_tokens", code="timeout")

    async def complete(request: Request, body: ChatCompletionRequest | CompletionRequest, kind: str) -> Response:
        job, queue = submit(body)
        rid = new_id("chatcmpl" if kind == "chat" else "cmpl")
        handed_over = False  # a started stream owns the job from then on
        try:
            if body.stream:
                resp = await _stream(request, body, kind, rid, job, queue)
                handed_over = isinstance(resp, StreamingResponse)
                return resp
            while True:
                what, payload = await next_item(request, job, queue)
                if what == "done":
                    make = chat_response if kind == "chat" else completion_response
                    return JSONResponse(make(rid, body.model, payload))
                if what == "error":
                    return exception_response(payload)
                if what == "cancelled":
                    return timeout_response() if payload == "timeout" else Response(status_code=499)
        except _Gone:
            return Response(status_code=499)
        finally:
            if not handed_over:  # no-op for a finished job; stops one whose handler was cancelled
                pool.cancel(job, "disconnect")

    async def _stream(request: Request, body: ChatCompletionRequest | CompletionRequest, kind: str, rid: str,
                      job: Job, queue: asyncio.Queue[Any]) -> Response:
        # headers wait for the first sign of life, so a refused prompt still gets its HTTP status
        first = await next_item(request, job, queue)
        if first[0] == "error":
            return exception_response(first[1])
        if first[0] == "cancelled":
            return timeout_response() if first[1] == "timeout" else Response(status_code=499)
        chunks = ChunkMaker(kind, rid, body.model)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        async def events() -> AsyncIterator[bytes]:
            finished = False
            try:
                opening = chunks.first()
                if opening is not None:
                    yield _sse(opening)
                item = first
                while True:
                    what, payload = item
                    if what == "delta":
                        yield _sse(chunks.delta(*payload))
                    elif what == "done":
                        out: Outcome = payload
                        yield _sse(chunks.last(out))
                        if include_usage:
                            yield _sse(chunks.usage(out))
                        break
                    elif what == "error":
                        yield _sse(_error_payload(payload))
                        break
                    elif what == "cancelled":
                        yield _sse(json.loads(bytes(timeout_response().body)) if payload == "timeout"
                                   else error_body("the request was cancelled", "server_error", code="cancelled"))
                        break
                    item = await queue.get()
                finished = True
                yield _sse("[DONE]")
            finally:
                if not finished:  # the client went away (the response task was cancelled)
                    pool.cancel(job, "disconnect")

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # -- routes ---------------------------------------------------------------------------------------------

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, body: ChatCompletionRequest) -> Response:
        return await complete(request, body, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request, body: CompletionRequest) -> Response:
        return await complete(request, body, "completion")

    def model_card(model_id: str) -> dict[str, Any]:
        known = roles()
        cid = known.canonical(model_id)  # 404 for an unknown id
        card = {"id": cid, "object": "model", "created": started, "owned_by": "rankguide-edge"}
        if cid != settings.model_name:
            return {**card, "rankguide": {"role": cid, "model": known.card_model(cid)}}
        return {**card, "rankguide": {"role": "router", "srm": settings.srm,
                                      "lrm": settings.lrm if pool.lrm_available else None,
                                      "defaults": {k: pool.defaults.get(k) for k in ("policy", "threshold", "decide",
                                                                                      "router", "max_tokens")},
                                      "steering_vectors": settings.steering_vectors()}}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(i) for i in roles().ids()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        return model_card(model_id)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok" if pool.started else "starting", "model": settings.model_name,
                "workers": pool.parallel, "busy": pool.busy, "queued": pool.queued,
                "queue_size": pool.queue_size, "lrm_available": pool.lrm_available}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


def _version() -> str:
    from .. import __version__

    return __version__


__all__ = ["create_app", "error_response", "exception_response"]
