"""The server under concurrent clients: eight streams at once give the serial greedy answers (no cross-talk,
per-request settings never leak), a client that leaves mid-stream frees its worker, a full queue answers 503
with Retry-After, a request past its deadline answers 504. Slow work comes from a real remote LRM that waits
before answering (:class:`~rankguide_edge.testing.mini_server.MiniServer` in ``slow`` mode)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import openai
import pytest
from _exposition import samples as parse_exposition

from rankguide_edge.server import BackgroundServer, ServerConfig, create_app
from rankguide_edge.server.bench import stream_chat
from rankguide_edge.testing.mini_server import MiniServer

MODEL = "rankguide-edge"
#: per-client routing settings of the concurrent test: each request differs from its neighbours
VARIANTS: list[dict[str, Any]] = [
    {}, {"threshold": 0.0}, {"policy": "srm"}, {"policy": "lrm"}, {"threshold": 1.0},
    {"decide": "early", "threshold": 0.5}, {"threshold": 0.0, "max_lrm_share": 0.5}, {"policy": "entropy"},
]


def _body(i: int, **kw: Any) -> dict[str, Any]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"Question {i}: what is {i} plus {i + 3}?"}]}
    if VARIANTS[i % len(VARIANTS)]:
        body["rankguide"] = VARIANTS[i % len(VARIANTS)]
    return {**body, **kw}


def _create(client: openai.OpenAI, body: dict[str, Any]) -> Any:
    """A chat completion through the official client (``rankguide`` goes in ``extra_body``)."""
    body = dict(body)
    extra = {"rankguide": body.pop("rankguide")} if "rankguide" in body else None
    return client.chat.completions.create(**body, extra_body=extra)


def _metrics(srv: BackgroundServer) -> dict[str, float]:
    u = urllib.parse.urlsplit(srv.base_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        return parse_exposition(conn.getresponse().read().decode())
    finally:
        conn.close()


def _health(srv: BackgroundServer) -> dict[str, Any]:
    u = urllib.parse.urlsplit(srv.base_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request("GET", "/health")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def _wait_for(cond: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting for the server"
        time.sleep(0.05)


class OpenStream:
    """A streamed chat request on a raw connection, read by hand, that can be dropped mid-stream."""

    def __init__(self, srv: BackgroundServer, body: dict[str, Any]) -> None:
        u = urllib.parse.urlsplit(srv.base_url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        self.conn.request("POST", "/v1/chat/completions", body=json.dumps({**body, "stream": True}),
                          headers={"Content-Type": "application/json"})
        self.sock = self.conn.sock
        self.resp = self.conn.getresponse()

    def next_event(self) -> str:
        while True:
            line = self.resp.readline()
            assert line, "the stream ended early"
            if line.startswith(b"data: "):
                return line[6:].strip().decode()

    def drop(self) -> None:
        """Vanish like a killed client: close the socket without reading the rest."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.resp.close()
        self.conn.close()


# -------------------------------------------------------------------------------------- no cross-talk


@pytest.fixture(scope="module")
def pooled(tiny_gguf: Path):
    settings = ServerConfig(srm=str(tiny_gguf), lrm=str(tiny_gguf), n_ctx=512, max_tokens=32, max_step_tokens=8,
                            parallel=2, queue_size=16, port=0, n_threads=1)
    with BackgroundServer(create_app(settings)) as srv:
        yield srv


def test_eight_concurrent_streams_match_serial_answers(pooled: BackgroundServer) -> None:
    client = openai.OpenAI(base_url=pooled.url, api_key="unused", max_retries=0, timeout=300)
    serial = []
    for i in range(8):
        resp = _create(client, _body(i))
        serial.append((resp.choices[0].message.content, [s["source"] for s in resp.model_extra["rankguide"]["steps"]],
                       resp.model_extra["rankguide"]["policy"], resp.model_extra["rankguide"]["threshold"]))
    assert len({s[0] for s in serial}) == 8  # eight different answers, so a mix-up would show
    results: list[dict[str, Any]] = [{} for _ in range(8)]
    barrier = threading.Barrier(8)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = stream_chat(pooled.base_url, _body(i))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for i, r in enumerate(results):
        assert r["status"] == 200 and r["done"], r
        rg = r["rankguide"]
        assert (r["text"], [s["source"] for s in rg["steps"]], rg["policy"], rg["threshold"]) == serial[i]
    after = _create(client, _body(0))
    assert after.choices[0].message.content == serial[0][0]


# ------------------------------------------------------------------------------- slow work: cancel, 503, 504


@pytest.fixture(scope="module")
def slow_lrm(tiny_gguf: Path):
    with MiniServer(tiny_gguf, mode="slow", delay=0.3) as lrm:
        yield lrm


@pytest.fixture(scope="module")
def single(tiny_gguf: Path, slow_lrm: MiniServer):
    """One worker, one waiting place; requests with policy lrm take ~0.3 s per step."""
    settings = ServerConfig(srm=str(tiny_gguf), lrm=slow_lrm.url, lrm_timeout=10.0, lrm_retries=0, n_ctx=512,
                            max_tokens=32, max_step_tokens=4, parallel=1, queue_size=1, port=0, n_threads=1)
    with BackgroundServer(create_app(settings)) as srv:
        yield srv


SLOW = {"rankguide": {"policy": "lrm"}, "max_tokens": 400}  # ~100 steps of 0.3 s: never finishes in a test
FAST = {"rankguide": {"policy": "srm"}, "max_tokens": 16}


def test_a_client_that_leaves_mid_stream_frees_its_worker(single: BackgroundServer) -> None:
    before = _metrics(single)
    stream = OpenStream(single, _body(1, **SLOW))
    assert stream.resp.status == 200
    first = json.loads(stream.next_event())
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert json.loads(stream.next_event())["choices"][0]["delta"]["content"]
    assert _health(single)["busy"] == 1
    stream.drop()
    client = openai.OpenAI(base_url=single.url, api_key="unused", max_retries=0, timeout=60)
    resp = _create(client, _body(2, **FAST))  # that the dropped request stopped early: its LRM calls, below
    assert resp.choices[0].message.content

    def cancelled() -> float:
        return _metrics(single).get('rankguide_requests_cancelled_total{reason="disconnect"}', 0.0)

    _wait_for(lambda: cancelled() >= before.get('rankguide_requests_cancelled_total{reason="disconnect"}', 0) + 1)
    key = 'rankguide_requests_total{endpoint="/v1/chat/completions",status="499"}'
    _wait_for(lambda: _metrics(single).get(key, 0) - before.get(key, 0) == 1)
    # the dropped request stopped early: far fewer LRM calls than its ~100 steps
    assert _metrics(single)["rankguide_lrm_calls_total"] - before.get("rankguide_lrm_calls_total", 0) < 20
    _wait_for(lambda: _health(single)["busy"] == 0)


def test_a_non_streaming_client_that_leaves_is_cancelled_too(single: BackgroundServer) -> None:
    before = _metrics(single)
    u = urllib.parse.urlsplit(single.base_url)
    sock = socket.create_connection((u.hostname, u.port), timeout=30)
    payload = json.dumps(_body(7, **SLOW)).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    _wait_for(lambda: _health(single)["busy"] == 1)
    sock.close()
    key = 'rankguide_requests_cancelled_total{reason="disconnect"}'
    _wait_for(lambda: _metrics(single).get(key, 0) == before.get(key, 0) + 1)
    _wait_for(lambda: _health(single)["busy"] == 0, timeout=5)
    status = 'rankguide_requests_total{endpoint="/v1/chat/completions",status="499"}'
    _wait_for(lambda: _metrics(single).get(status, 0) == before.get(status, 0) + 1)


def test_a_full_queue_answers_503_with_retry_after(single: BackgroundServer) -> None:
    running = OpenStream(single, _body(3, **SLOW))
    assert running.resp.status == 200 and running.next_event()
    waiting_result: dict[str, Any] = {}

    def wait_in_queue() -> None:
        client = openai.OpenAI(base_url=single.url, api_key="unused", max_retries=0, timeout=60)
        resp = _create(client, _body(4, **FAST))
        waiting_result["text"] = resp.choices[0].message.content

    waiter = threading.Thread(target=wait_in_queue)
    waiter.start()
    _wait_for(lambda: _health(single)["queued"] == 1)
    u = urllib.parse.urlsplit(single.base_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(_body(5, **FAST)),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    body = json.loads(resp.read())
    conn.close()
    assert resp.status == 503 and int(resp.getheader("Retry-After")) >= 1
    assert body["error"]["code"] == "queue_full" and body["error"]["type"] == "server_error"
    with pytest.raises(openai.InternalServerError):  # the official client sees it too
        _create(openai.OpenAI(base_url=single.url, api_key="unused", max_retries=0), _body(6, **FAST))
    running.drop()  # frees the worker: the waiting request is served next
    waiter.join(timeout=60)
    assert waiting_result.get("text")
    _wait_for(lambda: _health(single)["busy"] == 0 and _health(single)["queued"] == 0)


def test_a_request_past_its_deadline_is_a_504(tiny_gguf: Path, slow_lrm: MiniServer) -> None:
    settings = ServerConfig(srm=str(tiny_gguf), lrm=slow_lrm.url, lrm_timeout=10.0, lrm_retries=0, n_ctx=512,
                            max_tokens=400, max_step_tokens=4, request_timeout=1.0, port=0, n_threads=1)
    with BackgroundServer(create_app(settings)) as srv:
        client = openai.OpenAI(base_url=srv.url, api_key="unused", max_retries=0, timeout=60)
        with pytest.raises(openai.APIStatusError) as info:  # ~100 LRM steps of 0.3 s: only the deadline ends it
            _create(client, _body(1, rankguide={"policy": "lrm"}))
        assert info.value.status_code == 504 and info.value.body["code"] == "timeout"
        # a stream that already started ends with an error event instead (one that had not, a plain 504)
        result = stream_chat(srv.base_url, _body(1, rankguide={"policy": "lrm"}))
        assert result["status"] in (200, 504) and result["error"]["error"]["code"] == "timeout"
        assert result["chunks"] > 0 if result["status"] == 200 else result["chunks"] == 0
        assert _metrics(srv)['rankguide_requests_cancelled_total{reason="timeout"}'] == 2
