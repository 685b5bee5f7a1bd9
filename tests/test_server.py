"""The OpenAI-compatible server, started for real (uvicorn on a loopback port) and spoken to with the official
``openai`` client and with raw HTTP: completions streamed and not, per-request routing settings, stop strings,
errors in OpenAI's format, the API key, an unreachable LRM, metrics."""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.parse
from pathlib import Path
from typing import Any

import openai
import pytest
from _exposition import samples as parse_exposition

from rankguide_edge.collab.backends_local import LocalBackend
from rankguide_edge.collab.reasoner import Reasoner, ReasonerConfig
from rankguide_edge.config import RuntimeConfig
from rankguide_edge.engine.model import Model
from rankguide_edge.server import BackgroundServer, ServerConfig, create_app

MODEL = "rankguide-edge"
QUESTION = "Tom has 3 boxes of 4 apples and eats 2. How many apples are left?"


def _settings(model: Path, **kw: Any) -> ServerConfig:
    base = {"srm": str(model), "lrm": str(model), "n_ctx": 512, "max_tokens": 40, "max_step_tokens": 8,
            "parallel": 1, "port": 0, "n_threads": 1}
    return ServerConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def steer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of control vectors the module's server offers (empty until a test saves one)."""
    return tmp_path_factory.mktemp("vectors")


@pytest.fixture(scope="module")
def server(tiny_gguf: Path, steer_dir: Path):
    with BackgroundServer(create_app(_settings(tiny_gguf, steer_dir=str(steer_dir)))) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)


def raw(server: BackgroundServer, method: str, path: str, body: bytes | str | dict | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request with http.client: (status, headers, body)."""
    u = urllib.parse.urlsplit(server.base_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    data = json.dumps(body) if isinstance(body, dict) else body
    try:
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def error_of(status: int, payload: bytes) -> dict[str, Any]:
    body = json.loads(payload)
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"] and "\n" not in body["error"]["message"]
    assert body["error"]["type"] == ("invalid_request_error" if status < 500 else "server_error")
    return body["error"]


def chat(question: str = QUESTION, **kw: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": question}], **kw}


def sse_events(payload: bytes) -> list[str]:
    return [line[6:] for line in payload.decode().split("\n") if line.startswith("data: ")]


# ----------------------------------------------------------------------------------------------- basics


def test_models_health_and_model_card(server: BackgroundServer, client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL, "srm", "lrm"]
    assert client.models.retrieve(MODEL).id == MODEL
    assert client.models.retrieve("lrm").model_extra["rankguide"]["role"] == "lrm"
    status, _, body = raw(server, "GET", "/health")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok" and health["workers"] == 1 and health["lrm_available"]


def test_chat_equals_the_python_api(server: BackgroundServer, client: openai.OpenAI, tiny_gguf: Path) -> None:
    resp = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}])
    text = resp.choices[0].message.content
    rg = resp.model_extra["rankguide"]
    with Model(tiny_gguf) as m, LocalBackend(m, RuntimeConfig(n_ctx=512), progress=False) as lrm, \
            Reasoner(m, lrm, ReasonerConfig(max_tokens=40, max_step_tokens=8),
                     runtime=RuntimeConfig(n_ctx=512)) as r:
        ref = r.solve([("user", QUESTION)])
    assert text == ref.answer_text and text
    assert [s["source"] for s in rg["steps"]] == [s.source for s in ref.steps]
    assert resp.choices[0].finish_reason == ("stop" if ref.finished else "length")
    kept = ref.usage["srm_tokens"] - ref.usage["srm_discarded_tokens"] + ref.usage["lrm_tokens"]
    assert resp.usage.completion_tokens == kept == rg["usage"]["srm_tokens"] + rg["usage"]["lrm_tokens"]
    assert resp.usage.prompt_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert rg["usage"]["lrm_calls"] == ref.usage["lrm_calls"] and rg["degraded"] is False
    assert rg["policy"] == "rankguide" and rg["n_steps"] == len(ref.steps)


def test_stream_gives_the_same_text_in_openai_chunks(server: BackgroundServer, client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}])
    chunks = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}],
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == full.choices[0].message.content
    # each delta tagged with its step and model, in step order; an LRM step (final as it is written) arrives
    # token by token, many chunks per step; SRM drafts the policy may still replace arrive whole with their step
    deltas = [c for c in chunks if c.choices and c.choices[0].delta.content]
    steps = full.model_extra["rankguide"]["steps"]
    tags = [(d.model_extra["rankguide"]["step"], d.model_extra["rankguide"]["source"]) for d in deltas]
    assert [t for i, t in enumerate(tags) if i == 0 or tags[i - 1] != t] == [(s["index"], s["source"]) for s in steps]
    for s in steps:
        n = tags.count((s["index"], s["source"]))
        assert n == 1 if s["source"] == "srm" else (n > 1 or s["lrm_tokens"] <= 1)
    assert any(s["source"] == "lrm" and s["lrm_tokens"] > 1 for s in steps)
    last = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1]
    assert last.choices[0].finish_reason == full.choices[0].finish_reason
    assert last.model_extra["rankguide"]["usage"] == full.model_extra["rankguide"]["usage"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1
    status, headers, body = raw(server, "POST", "/v1/chat/completions", chat(stream=True))
    events = sse_events(body)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "[DONE]" and all(json.loads(e)["object"] == "chat.completion.chunk" for e in events[:-1])


def test_text_completions_wrap_the_prompt_as_one_user_message(client: openai.OpenAI) -> None:
    as_chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}])
    done = client.completions.create(model=MODEL, prompt=QUESTION)
    assert done.object == "text_completion" and done.choices[0].text == as_chat.choices[0].message.content
    streamed = "".join(c.choices[0].text for c in client.completions.create(model=MODEL, prompt=QUESTION,
                                                                             stream=True))
    assert streamed == done.choices[0].text
    assert done.usage.completion_tokens == as_chat.usage.completion_tokens


# ------------------------------------------------------------------------------------- per-request settings


def test_rankguide_options_apply_to_one_request_only(client: openai.OpenAI) -> None:
    msgs = [{"role": "user", "content": QUESTION}]
    default = client.chat.completions.create(model=MODEL, messages=msgs).model_extra["rankguide"]
    every = client.chat.completions.create(model=MODEL, messages=msgs,
                                           extra_body={"rankguide": {"threshold": 0.0}}).model_extra["rankguide"]
    never = client.chat.completions.create(model=MODEL, messages=msgs,
                                           extra_body={"rankguide": {"policy": "srm"}}).model_extra["rankguide"]
    lrm = client.chat.completions.create(model=MODEL, messages=msgs,
                                         extra_body={"rankguide": {"policy": "lrm"}}).model_extra["rankguide"]
    capped = client.chat.completions.create(
        model=MODEL, messages=msgs, extra_body={"rankguide": {"threshold": 0.0, "max_lrm_share": 0.5}}
    ).model_extra["rankguide"]
    again = client.chat.completions.create(model=MODEL, messages=msgs).model_extra["rankguide"]
    assert every["threshold"] == 0.0 and every["lrm_steps"] == every["n_steps"] > 0
    assert never["policy"] == "srm" and never["lrm_steps"] == 0 and never["usage"]["lrm_calls"] == 0
    assert lrm["decide"] == "pre" and lrm["usage"]["srm_drafted_tokens"] == 0
    assert 0 < capped["lrm_steps"] < capped["n_steps"]  # the share cap stops routing every other step
    # nothing leaked into the next request
    def key(rg: dict[str, Any]) -> tuple[Any, ...]:
        return rg["policy"], rg["threshold"], rg["decide"], [s["source"] for s in rg["steps"]], rg["usage"]

    assert key(again) == key(default) and again["threshold"] != every["threshold"]


def test_openai_sampling_fields_are_honoured(client: openai.OpenAI) -> None:
    msgs = [{"role": "user", "content": QUESTION}]
    short = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=12)
    assert short.usage.completion_tokens <= 12 and short.choices[0].finish_reason == "length"
    assert client.chat.completions.create(model=MODEL, messages=msgs, max_completion_tokens=12
                                          ).choices[0].message.content == short.choices[0].message.content
    greedy = [client.chat.completions.create(model=MODEL, messages=msgs, extra_body={"rankguide": {"policy": "srm"}})
              .choices[0].message.content for _ in range(2)]
    hot = client.chat.completions.create(model=MODEL, messages=msgs, temperature=1.5, top_p=0.95, seed=7,
                                         extra_body={"rankguide": {"policy": "srm"}})
    assert greedy[0] == greedy[1] != hot.choices[0].message.content


def test_stop_strings_cut_the_answer_even_across_steps(server: BackgroundServer, client: openai.OpenAI) -> None:
    msgs = [{"role": "user", "content": QUESTION}]
    chunks = [c for c in client.chat.completions.create(model=MODEL, messages=msgs, stream=True)
              if c.choices and c.choices[0].delta.content]
    steps = [c.choices[0].delta.content for c in chunks]
    text = "".join(steps)
    assert len(steps) >= 2
    boundary = len(steps[0])
    stop = text[boundary - 2: boundary + 2]  # spans the end of step 0 and the start of step 1
    expected = text[: text.find(stop)]
    for stream in (False, True):
        if stream:
            parts = list(client.chat.completions.create(model=MODEL, messages=msgs, stop=[stop], stream=True))
            got = "".join(c.choices[0].delta.content or "" for c in parts if c.choices)
            reason = [c.choices[0].finish_reason for c in parts if c.choices and c.choices[0].finish_reason][-1]
        else:
            resp = client.chat.completions.create(model=MODEL, messages=msgs, stop=stop)
            got, reason = resp.choices[0].message.content, resp.choices[0].finish_reason
        assert got == expected and reason == "stop"


# ------------------------------------------------------------------------------------- who answers: model


def _alone(model: Path, policy: str, question: str = QUESTION) -> Any:
    """The reference answer of one model alone (policy srm or lrm, no plan), with the server's settings."""
    with Model(model) as m, LocalBackend(m, RuntimeConfig(n_ctx=512), progress=False) as lrm, \
            Reasoner(m, lrm, ReasonerConfig(policy=policy, lrm_first=0, max_tokens=40, max_step_tokens=8),
                     runtime=RuntimeConfig(n_ctx=512)) as r:
        return r.solve([("user", question)])


@pytest.mark.parametrize("model_id, policy", [("srm", "srm"), ("lrm", "lrm")])
def test_the_model_field_picks_the_srm_or_the_lrm_alone(client: openai.OpenAI, tiny_gguf: Path, model_id: str,
                                                          policy: str) -> None:
    ref = _alone(tiny_gguf, policy)
    resp = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": QUESTION}])
    rg = resp.model_extra["rankguide"]
    assert resp.model == model_id and resp.choices[0].message.content == ref.answer_text != ""
    assert {s["source"] for s in rg["steps"]} == {policy} and rg["policy"] == policy
    assert rg["usage"]["lrm_calls"] == (0 if policy == "srm" else len(ref.steps))
    assert rg["usage"]["srm_discarded_tokens"] == 0  # no routing: nothing drafted in vain
    streamed = client.chat.completions.create(model=model_id, stream=True,
                                              messages=[{"role": "user", "content": QUESTION}])
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == ref.answer_text
    # the routed id is untouched: it still routes (the tiny model's plan is the LRM's)
    routed = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}])
    assert routed.model_extra["rankguide"]["policy"] == "rankguide"


def test_the_single_model_ids_refuse_routing_settings_and_unknown_ids_are_404(server: BackgroundServer,
                                                                              client: openai.OpenAI) -> None:
    for model_id, key, value in (("srm", "policy", "entropy"), ("lrm", "threshold", 0.5), ("lrm", "steer", "seal")):
        got, _, payload = raw(server, "POST", "/v1/chat/completions", chat(model=model_id, rankguide={key: value}))
        assert got == 400 and error_of(400, payload)["param"] == f"rankguide.{key}"
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": QUESTION}])
    assert err.value.body["code"] == "model_not_found" and "'srm'" in err.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_own_model_names_are_aliases_and_lrm_is_absent_without_an_lrm(tiny_gguf: Path, tmp_path: Path) -> None:
    from rankguide_edge.server.roles import ModelRoles

    roles = ModelRoles(MODEL, "qwen2.5-coder-0.5b-instruct", "/models/big.gguf")
    assert roles.canonical("qwen2.5-coder-0.5b-instruct") == "srm" and roles.canonical("big") == "lrm"
    assert ModelRoles(MODEL, "same", "same").ids() == [MODEL, "srm", "lrm"]  # same file: only the roles' ids
    with BackgroundServer(create_app(_settings(tiny_gguf, lrm=""))) as srv:
        client = openai.OpenAI(base_url=srv.url, api_key="unused", max_retries=0, timeout=120)
        assert [m.id for m in client.models.list().data] == [MODEL, "srm"]
        with pytest.raises(openai.NotFoundError) as err:
            client.chat.completions.create(model="lrm", messages=[{"role": "user", "content": QUESTION}])
        assert "no LRM" in err.value.body["message"]


# ----------------------------------------------------------------------------------------------- errors


def test_bad_input_gets_openai_error_bodies(server: BackgroundServer) -> None:
    cases: list[tuple[Any, int, str | None]] = [
        (b'{"model": "rankguide-edge", "messages": [', 400, "invalid_json"),
        ({"model": MODEL, "messages": "hello"}, 422, "invalid_type"),
        ({"model": MODEL}, 422, "invalid_type"),
        (chat(max_tokens="many"), 422, "invalid_type"),
        ({"model": MODEL, "messages": [{"role": "tool", "content": "x"}]}, 422, "invalid_type"),
        (chat(rankguide={"policy": "srm", "colour": "red"}), 422, "invalid_type"),
        (chat(rankguide={"threshold": 2.0}), 400, "config"),
        (chat(rankguide={"policy": "no-such-policy"}), 400, None),
        (chat(max_tokens=2), 400, "config"),
        (chat(n=2), 400, None),
        (chat(logprobs=True), 400, None),
        ({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
         400, None),
        (chat(model="gpt-4o"), 404, "model_not_found"),
    ]
    for body, status, code in cases:
        got, headers, payload = raw(server, "POST", "/v1/chat/completions", body)
        assert got == status, (body, payload)
        err = error_of(status, payload)
        if code is not None:
            assert err["code"] == code, (body, err)
        assert headers["content-type"].startswith("application/json")
    assert error_of(422, raw(server, "POST", "/v1/chat/completions", chat(rankguide={"colour": "red"}))[2]
                    )["param"] == "rankguide.colour"
    assert "threshold" in error_of(400, raw(server, "POST", "/v1/chat/completions",
                                            chat(rankguide={"threshold": 2.0}))[2])["message"]
    status, _, payload = raw(server, "GET", "/v1/nothing-here")
    assert status == 404 and error_of(404, payload)


def test_a_prompt_longer_than_the_context_is_a_400_naming_the_limit(server: BackgroundServer,
                                                                     client: openai.OpenAI) -> None:
    long_prompt = "apples and oranges " * 400
    for stream in (False, True):
        status, headers, payload = raw(server, "POST", "/v1/chat/completions", chat(long_prompt, stream=stream))
        err = error_of(400, payload)
        assert status == 400 and err["code"] == "context_length_exceeded" and "512" in err["message"]
        assert headers["content-type"].startswith("application/json")
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt=long_prompt)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])


def test_the_api_key_guards_v1_only(tiny_gguf: Path) -> None:
    with BackgroundServer(create_app(_settings(tiny_gguf, api_key="sekret", max_tokens=16))) as srv:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sekret"}):
            status, _, payload = raw(srv, "POST", "/v1/chat/completions", chat(), headers)
            assert status == 401 and error_of(401, payload)["code"] == "invalid_api_key"
        status, _, payload = raw(srv, "POST", "/v1/chat/completions", b"{not json", {})
        assert status == 401  # the key is checked before the body is read
        assert raw(srv, "GET", "/health")[0] == 200
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=srv.url, api_key="wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=srv.url, api_key="sekret", max_retries=0)
        assert good.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}]
                                            ).choices[0].message.content


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_lrm_degrades_to_the_srm_instead_of_failing(tiny_gguf: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    settings = _settings(tiny_gguf, lrm=url, lrm_retries=0, lrm_timeout=2.0, threshold=0.0)
    with BackgroundServer(create_app(settings)) as srv:
        client = openai.OpenAI(base_url=srv.url, api_key="unused", max_retries=0, timeout=120)
        msgs = [{"role": "user", "content": QUESTION}]
        resp = client.chat.completions.create(model=MODEL, messages=msgs)
        alone = client.chat.completions.create(model=MODEL, messages=msgs,
                                               extra_body={"rankguide": {"policy": "srm", "threshold": 0.5}})
        assert alone.model_extra["rankguide"]["usage"]["lrm_calls"] == 0
        rg = resp.model_extra["rankguide"]
        assert rg["degraded"] is True and rg["lrm_failures"] == rg["n_steps"] > 0
        assert all(s["source"] == "srm" and s["routed"] and s["lrm_error"] for s in rg["steps"])
        assert resp.choices[0].message.content == alone.choices[0].message.content
        samples = parse_exposition(raw(srv, "GET", "/metrics")[2].decode())
        assert samples["rankguide_lrm_failures_total"] == rg["lrm_failures"]
        assert samples["rankguide_lrm_calls_total"] == rg["usage"]["lrm_calls"]


# ---------------------------------------------------------------------------------------------- metrics


def test_metrics_count_requests_tokens_and_steps(server: BackgroundServer, client: openai.OpenAI) -> None:
    before = parse_exposition(raw(server, "GET", "/metrics")[2].decode())
    resp = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}],
                                          extra_body={"rankguide": {"threshold": 0.0}})
    raw(server, "POST", "/v1/chat/completions", chat(model="nope"))
    key = 'rankguide_requests_total{endpoint="/v1/chat/completions",status="404"}'
    deadline = time.monotonic() + 10  # a request is counted just after its last byte went out
    while True:
        status, headers, body = raw(server, "GET", "/metrics")
        after = parse_exposition(body.decode())
        if after.get(key, 0) > before.get(key, 0) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert "# TYPE rankguide_request_duration_seconds histogram" in body.decode()

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    rg = resp.model_extra["rankguide"]
    assert delta('rankguide_requests_total{endpoint="/v1/chat/completions",status="200"}') == 1
    assert delta('rankguide_requests_total{endpoint="/v1/chat/completions",status="404"}') == 1
    assert delta('rankguide_completion_tokens_total{source="lrm"}') == rg["usage"]["lrm_tokens"] > 0
    assert delta('rankguide_completion_tokens_total{source="srm"}') == rg["usage"]["srm_tokens"]
    assert delta("rankguide_prompt_tokens_total") == resp.usage.prompt_tokens
    assert delta('rankguide_steps_total{source="lrm"}') == rg["lrm_steps"]
    assert delta("rankguide_steps_routed_total") == rg["n_steps"]
    assert delta("rankguide_lrm_calls_total") == rg["usage"]["lrm_calls"]
    assert delta('rankguide_request_duration_seconds_count{endpoint="/v1/chat/completions"}') == 2
    assert after["rankguide_workers"] == 1 and after["rankguide_queue_depth"] == 0


def test_requests_sharing_a_prefix_are_not_read_twice(server: BackgroundServer, client: openai.OpenAI) -> None:
    """The worker's SRM keeps the whole prefilled blocks of the last request's prompt: a second request with the
    same system prompt reads only the rest, counts what it kept, and answers as it did from a cold start."""
    system = "You are a patient tutor for primary school arithmetic. " * 6
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": QUESTION}]
    opts = {"rankguide": {"policy": "srm"}}
    before = parse_exposition(raw(server, "GET", "/metrics")[2].decode())
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hi."}])
    cold = client.chat.completions.create(model=MODEL, messages=msgs, extra_body=opts)  # after another prompt
    warm = client.chat.completions.create(model=MODEL, messages=msgs, extra_body=opts)
    other = client.chat.completions.create(
        model=MODEL, messages=[msgs[0], {"role": "user", "content": "What is 7 plus 8?"}], extra_body=opts)
    used = [r.model_extra["rankguide"]["usage"] for r in (cold, warm, other)]
    assert used[0]["srm_reused_tokens"] == 0
    assert used[1]["srm_reused_tokens"] > 0 and used[2]["srm_reused_tokens"] > 0
    assert used[1]["srm_reused_tokens"] + used[1]["srm_prefill_tokens"] == used[0]["srm_prefill_tokens"]
    assert warm.choices[0].message.content == cold.choices[0].message.content
    key, deadline = "rankguide_prompt_reused_tokens_total", time.monotonic() + 10
    while True:  # a request is counted just after its last byte went out
        after = parse_exposition(raw(server, "GET", "/metrics")[2].decode())
        got = after.get(key, 0) - before.get(key, 0)
        if got >= used[1]["srm_reused_tokens"] + used[2]["srm_reused_tokens"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert got == sum(u["srm_reused_tokens"] for u in used)


# ------------------------------------------------------------------------------------- a real small model


def test_smollm2_through_the_server_equals_the_solver(smollm2: Path) -> None:
    from rankguide_edge import Solver

    settings = ServerConfig(srm=str(smollm2), lrm=str(smollm2), n_ctx=1024, max_tokens=48, max_step_tokens=24,
                            threshold=0.5, port=0, n_threads=1)
    msgs = [("system", "You are a careful math tutor."), ("user", QUESTION)]
    with Solver(str(smollm2), str(smollm2), config=settings.reasoner_config(), runtime=settings.runtime_config(),
                progress=False) as solver:
        ref = solver.chat(msgs)
    with BackgroundServer(create_app(settings)) as srv:
        client = openai.OpenAI(base_url=srv.url, api_key="unused", max_retries=0, timeout=300)
        messages = [{"role": r, "content": c} for r, c in msgs]
        resp = client.chat.completions.create(model=MODEL, messages=messages)
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model=MODEL, messages=messages, stream=True) if c.choices)
    assert resp.choices[0].message.content == ref.answer_text == streamed
    assert [s["source"] for s in resp.model_extra["rankguide"]["steps"]] == [s.source for s in ref.steps]


def test_per_request_steering_applies_and_never_leaks(server: BackgroundServer, client: openai.OpenAI,
                                                      tiny_gguf: Path, steer_dir: Path, tmp_path: Path) -> None:
    import numpy as np

    from rankguide_edge.steering import ControlVector, save_control_vector

    with Model(tiny_gguf) as m:
        vec = np.random.default_rng(0).normal(size=m.n_embd).astype(np.float32) * 4
    save_control_vector(ControlVector("tiny", {1: vec}), steer_dir / "v.gguf")
    outside = tmp_path / "outside.gguf"  # a valid vector the server does not offer
    save_control_vector(ControlVector("tiny", {1: vec}), outside)

    def ask(**extra: Any) -> tuple[str, dict[str, Any]]:
        resp = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}],
                                              max_tokens=24, extra_body=extra or None)
        return resp.choices[0].message.content, resp.model_extra["rankguide"]

    assert client.models.retrieve(MODEL).model_extra["rankguide"]["steering_vectors"] == ["v"]
    plain, _ = ask()
    steered, rg = ask(rankguide={"steer": "v", "steer_scale": 3.0, "policy": "srm"})
    assert rg["steering"] == {"vector": "v", "layers": [1], "scale": 3.0, "where": "all"}  # no server path
    again, _ = ask(rankguide={"steer": "v.gguf", "steer_scale": 3.0, "policy": "srm"})
    zero, _ = ask(rankguide={"steer": "v", "steer_scale": 0.0, "policy": "srm"})
    srm_plain, _ = ask(rankguide={"policy": "srm"})
    after, _ = ask()
    assert steered != srm_plain and again == steered and zero == srm_plain  # scale 0 is the identity
    assert after == plain  # the steered requests left nothing behind
    # only names of the server's folder: no paths (absolute, relative, escaping), no unknown names
    for bad in (str(outside), str(steer_dir / "v.gguf"), "../outside", "missing"):
        status, _, body = raw(server, "POST", "/v1/chat/completions", chat(rankguide={"steer": bad}))
        err = error_of(status, body)
        assert status == 400 and "offers, v (" in err["message"], bad
        assert str(tmp_path) not in err["message"] and str(steer_dir) not in err["message"], bad
