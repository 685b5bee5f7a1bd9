"""Two small server benchmarks for the figures.

* :func:`bench_overhead` -- the same chat request through the Python API and through the HTTP server, on the
  *same* solver (the server's only worker), alternating the two ``n`` times; reports medians and the ratio.
* :func:`bench_concurrency` -- ``clients`` streaming clients at once against a server with ``parallel``
  workers; reports total throughput (completion tokens / wall second) and p50/p95 latency (first chunk and
  whole request);
* :func:`bench_load` -- the sizing table: for each ``--parallel`` and each number of concurrent clients, every
  client sends ``requests`` streamed requests one after another, and a refused one (503) waits its
  ``Retry-After`` and tries again, as the ``openai`` client does; requests per minute, p50/p95 time to the first
  token and to the end, the 503s, and the process's peak resident memory.

Run them: ``rankguide-edge bench serve --srm NAME --lrm NAME [--only load] [--json]`` (``--help`` for the
options).
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import statistics
import threading
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

from ..config import bounded, validate
from ..errors import ConfigError
from ..stats import quantile
from .settings import ServerConfig

#: the default benchmark question (a short GSM8K-style problem)
QUESTION = ("A baker makes 12 trays of 8 muffins and sells 75 of them. How many muffins are left? "
            "Think step by step.")


@dataclasses.dataclass(frozen=True)
class ServeBenchConfig:
    """What ``bench serve`` measures (the served solver's settings are a :class:`ServerConfig`)."""

    n: int = bounded(5, lo=1, hi=1000, help="alternations of the overhead benchmark (Python API vs HTTP, same "
                                              "solver)")
    clients: int = bounded(8, lo=1, hi=256, help="concurrent streaming clients")
    only: str | None = bounded(None, choices=(None, "overhead", "concurrency", "load"),
                               help="run only this benchmark", unset="overhead and concurrency; load only when named")
    load_clients: tuple[int, ...] = bounded((1, 2, 4, 8, 16), lo=1, sep=",",
                                            help="load: concurrent client counts, comma-separated")
    load_parallel: tuple[int, ...] = bounded((1, 2), lo=1, sep=",",
                                             help="load: --parallel values (one server each), comma-separated")
    requests: int = bounded(2, lo=1, hi=1000, help="load: requests each client sends one after another")

    def __post_init__(self) -> None:
        validate(self)


def _connection(base_url: str, timeout: float) -> http.client.HTTPConnection:
    u = urllib.parse.urlsplit(base_url)
    if not u.hostname:
        raise ConfigError(f"server URL {base_url!r} names no host; use http://HOST:PORT")
    return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)


def _post(base_url: str, path: str, body: dict[str, Any], api_key: str = "", timeout: float = 600.0
          ) -> tuple[int, bytes]:
    conn = _connection(base_url, timeout)
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    try:
        conn.request("POST", path, body=json.dumps(body), headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def stream_chat(base_url: str, body: dict[str, Any], api_key: str = "", timeout: float = 600.0
                ) -> dict[str, Any]:
    """POST a streamed chat request and read its SSE to the end.

    Returns ``{"status", "text", "chunks", "first_chunk_s", "seconds", "completion_tokens", "done"}``
    (``first_chunk_s``: time to the first content delta; ``completion_tokens`` from the usage chunk); a refused
    request adds ``error`` (the body) and ``retry_after`` (the header, or None).
    """
    conn = _connection(base_url, timeout)
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    payload = {**body, "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    out: dict[str, Any] = {"status": 0, "text": "", "chunks": 0, "first_chunk_s": None, "seconds": 0.0,
                           "completion_tokens": 0, "done": False, "rankguide": None}
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps(payload), headers=headers)
        resp = conn.getresponse()
        out["status"] = resp.status
        if resp.status != 200:
            out["retry_after"] = resp.getheader("Retry-After")
            out["error"] = json.loads(resp.read() or b"{}")
            return out
        parts = []
        while True:
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data: "):
                continue
            data = line[6:]
            if data == b"[DONE]":
                out["done"] = True
                break
            chunk = json.loads(data)
            if "error" in chunk:
                out["error"] = chunk
                break
            out["chunks"] += 1
            for choice in chunk.get("choices", []):
                text = choice.get("delta", {}).get("content")
                if text:
                    if out["first_chunk_s"] is None:
                        out["first_chunk_s"] = time.perf_counter() - t0
                    parts.append(text)
                if choice.get("finish_reason"):
                    out["rankguide"] = chunk.get("rankguide")
            if chunk.get("usage"):
                out["completion_tokens"] = chunk["usage"]["completion_tokens"]
        out["text"] = "".join(parts)
    finally:
        conn.close()
        out["seconds"] = time.perf_counter() - t0
    return out


class _Borrowed:
    """A caller's solver lent to the server: everything but close() goes through."""

    def __init__(self, solver: Any) -> None:
        self._solver = solver

    def __getattr__(self, name: str) -> Any:
        return getattr(self._solver, name)

    def close(self) -> None:
        return None


def bench_overhead(settings: ServerConfig, *, n: int = 5, question: str = QUESTION, max_tokens: int = 64,
                   solver: Any = None) -> dict[str, Any]:
    """Median seconds of one chat request through the Python API and through the server, alternating.

    ``solver``: the solver to use (default: one made from ``settings`` with shared models); it becomes the
    server's only worker, so both paths run on the same context. Greedy decoding: both paths must give the
    same text (``same_text``). A caller's ``solver`` is not closed.
    """
    from .app import create_app
    from .runner import BackgroundServer
    from .solvers import SharedModelSolvers

    factory = None
    if solver is None:
        factory = SharedModelSolvers(dataclasses.replace(settings, parallel=1))
        solver = factory(0)
        worker = solver
    else:
        worker = _Borrowed(solver)
    solver.reconfigure(max_tokens=max_tokens)
    app = create_app(dataclasses.replace(settings, parallel=1, port=0, max_tokens=max_tokens),
                     solver_factory=lambda i: worker)
    messages = [("user", question)]
    body = {"model": settings.model_name, "messages": [{"role": "user", "content": question}],
            "max_tokens": max_tokens}
    api_s: list[float] = []
    http_s: list[float] = []
    same = True
    try:
        with BackgroundServer(app) as srv:
            _post(srv.base_url, "/v1/chat/completions", body, settings.api_key)  # warm-up, both paths
            solver.chat(messages)
            for _ in range(n):
                t0 = time.perf_counter()
                ref = solver.chat(messages)
                api_s.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                status, raw = _post(srv.base_url, "/v1/chat/completions", body, settings.api_key)
                http_s.append(time.perf_counter() - t0)
                if status != 200:
                    raise RuntimeError(f"server answered {status}: {raw[:200]!r}")
                same = same and json.loads(raw)["choices"][0]["message"]["content"] == ref.answer_text
    finally:
        if factory is not None:
            factory.close()
    api_med, http_med = statistics.median(api_s), statistics.median(http_s)
    return {"n": n, "max_tokens": max_tokens, "api_median_s": round(api_med, 4),
            "server_median_s": round(http_med, 4), "ratio": round(http_med / api_med, 4) if api_med else None,
            "overhead_ms": round((http_med - api_med) * 1000, 2), "same_text": same,
            "api_s": [round(x, 4) for x in api_s], "server_s": [round(x, 4) for x in http_s]}


def _run_all(threads: Sequence[threading.Thread]) -> float:
    """Start every client thread, wait for all; the wall seconds."""
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def _served(results: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[float], list[float]]:
    """The streamed results that were served to the end, their times to the first content delta, and their
    whole-request times."""
    ok = [r for r in results if r.get("status") == 200 and r.get("done")]
    return ok, [r["first_chunk_s"] for r in ok if r["first_chunk_s"] is not None], [r["seconds"] for r in ok]


def bench_concurrency(settings: ServerConfig, *, clients: int = 8, question: str = QUESTION,
                      max_tokens: int = 64) -> dict[str, Any]:
    """``clients`` streaming chat requests at once (each a different variant of ``question``) against a fresh
    server for ``settings``; throughput in completion tokens per wall second and p50/p95 latencies."""
    from .app import create_app
    from .runner import BackgroundServer

    app = create_app(dataclasses.replace(settings, port=0, queue_size=max(settings.queue_size, clients)))
    results: list[dict[str, Any]] = [{} for _ in range(clients)]
    with BackgroundServer(app) as srv:
        warm = {"model": settings.model_name, "messages": [{"role": "user", "content": question}], "max_tokens": 8}
        _post(srv.base_url, "/v1/chat/completions", warm, settings.api_key)
        barrier = threading.Barrier(clients)

        def client(i: int) -> None:
            body = {"model": settings.model_name, "max_tokens": max_tokens,
                    "messages": [{"role": "user", "content": f"({i + 1}) {question}"}]}
            barrier.wait()
            results[i] = stream_chat(srv.base_url, body, settings.api_key)

        wall = _run_all([threading.Thread(target=client, args=(i,)) for i in range(clients)])
    ok, first, lat = _served(results)
    tokens = sum(r["completion_tokens"] for r in ok)
    return {"clients": clients, "parallel": settings.parallel, "max_tokens": max_tokens, "ok": len(ok),
            "wall_s": round(wall, 4), "completion_tokens": tokens,
            "throughput_tok_s": round(tokens / wall, 2) if wall else None,
            "latency_p50_s": round(quantile(lat, 0.5), 4), "latency_p95_s": round(quantile(lat, 0.95), 4),
            "first_chunk_p50_s": round(quantile(first, 0.5), 4),
            "first_chunk_p95_s": round(quantile(first, 0.95), 4)}


def _rss_bytes() -> int | None:
    """This process's resident memory (Linux ``/proc``; None elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class _PeakMemory:
    """Samples :func:`_rss_bytes` every ``every`` seconds in a thread, keeping the maximum (None off Linux)."""

    def __init__(self, every: float = 0.05) -> None:
        self.every, self.peak = every, _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            now = _rss_bytes()
            if now is not None and (self.peak is None or now > self.peak):
                self.peak = now

    def __enter__(self) -> _PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


#: a refused client waits at most this long before it tries again, whatever Retry-After says
MAX_RETRY_WAIT_S = 120.0


def _load_client(base_url: str, settings: ServerConfig, i: int, requests: int, max_tokens: int, question: str,
                 barrier: threading.Barrier, out: list[dict[str, Any]]) -> None:
    barrier.wait()
    for r in range(requests):
        body = {"model": settings.model_name, "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": f"({i + 1}.{r + 1}) {question}"}]}
        refused: list[str | None] = []
        while True:
            res = stream_chat(base_url, body, settings.api_key)
            if res["status"] != 503 or len(refused) >= 100:
                break
            refused.append(res.get("retry_after"))
            try:
                wait = float(res.get("retry_after") or 1.0)
            except ValueError:
                wait = 1.0
            time.sleep(min(MAX_RETRY_WAIT_S, wait))
        res["refused"] = refused
        out.append(res)


def bench_load(settings: ServerConfig, *, clients: tuple[int, ...] = (1, 2, 4, 8, 16),
               parallel: tuple[int, ...] = (1, 2), requests: int = 2, queue_size: int = 8, max_tokens: int = 64,
               question: str = QUESTION, on_row: Any = None) -> dict[str, Any]:
    """The sizing table: one server per ``parallel`` value (``queue_size`` waiting places), and for each count
    of ``clients`` a closed loop of ``requests`` streamed requests per client (503s retried after their
    ``Retry-After``, capped at :data:`MAX_RETRY_WAIT_S`). ``on_row(row)`` is called as each row is done."""
    from .app import create_app
    from .runner import BackgroundServer

    rows: list[dict[str, Any]] = []
    for par in parallel:
        app = create_app(dataclasses.replace(settings, port=0, parallel=par, queue_size=queue_size))
        with BackgroundServer(app) as srv:
            warm = {"model": settings.model_name, "messages": [{"role": "user", "content": question}],
                    "max_tokens": 8}
            _post(srv.base_url, "/v1/chat/completions", warm, settings.api_key)
            for n in clients:
                results: list[dict[str, Any]] = []
                barrier = threading.Barrier(n)
                threads = [threading.Thread(target=_load_client, args=(srv.base_url, settings, i, requests,
                                                                       max_tokens, question, barrier, results))
                           for i in range(n)]
                with _PeakMemory() as mem:
                    wall = _run_all(threads)
                ok, first, lat = _served(results)
                refused = [h for r in results for h in r["refused"]]
                row = {"parallel": par, "clients": n, "requests": len(results), "ok": len(ok),
                       "wall_s": round(wall, 3), "requests_per_min": round(60 * len(ok) / wall, 2) if wall else None,
                       "first_token_p50_s": round(quantile(first, 0.5), 3),
                       "first_token_p95_s": round(quantile(first, 0.95), 3),
                       "total_p50_s": round(quantile(lat, 0.5), 3), "total_p95_s": round(quantile(lat, 0.95), 3),
                       "refused_503": len(refused), "refused_with_retry_after": sum(h is not None for h in refused),
                       "peak_rss_mib": None if mem.peak is None else round(mem.peak / 2**20, 1)}
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    return {"queue_size": queue_size, "requests_per_client": requests, "max_tokens": max_tokens, "rows": rows}


def load_table(report: dict[str, Any]) -> list[str]:
    """The load report as a markdown table."""
    head = ["| --parallel | clients | requests/min | first token p50 / p95 (s) | total p50 / p95 (s) | 503s "
            "(with Retry-After) | peak RSS (MiB) |", "|---|---|---|---|---|---|---|"]
    return head + [f"| {r['parallel']} | {r['clients']} | {r['requests_per_min']} | {r['first_token_p50_s']} / "
                   f"{r['first_token_p95_s']} | {r['total_p50_s']} / {r['total_p95_s']} | {r['refused_503']} "
                   f"({r['refused_with_retry_after']}) | {r['peak_rss_mib']} |" for r in report["rows"]]


def report_lines(report: dict[str, Any]) -> list[str]:
    """A short human reading of a ``{"overhead": ..., "concurrency": ..., "load": ...}`` report (lists left out;
    the load report as its table)."""
    out = []
    for name, part in report.items():
        if name == "load":
            out += [f"load (queue {part['queue_size']}, {part['requests_per_client']} requests per client, "
                    f"max_tokens {part['max_tokens']}):", *load_table(part)]
        else:
            out.append(f"{name}: " + ", ".join(f"{k} {v}" for k, v in part.items() if not isinstance(v, list)))
    return out
