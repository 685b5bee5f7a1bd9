"""LRM backends on real models: the local backend's cache reuse and greedy equivalence with the runtime, the
remote backend against a real OpenAI-compatible server on loopback (completions, chat fallback, failures)."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from rankguide_edge.collab.backends import (
    RATE_PROMPT,
    LRMBackend,
    StepRequest,
    backend_kinds,
    find_stop,
    make_backend,
    parse_spec,
    rating_text,
    register_backend,
)
from rankguide_edge.collab.backends_local import LocalBackend, common_prefix
from rankguide_edge.collab.backends_remote import RemoteBackend, _close_step, _parse, retry_after_seconds
from rankguide_edge.config import RuntimeConfig, SamplingConfig
from rankguide_edge.engine.context import generate_text
from rankguide_edge.engine.model import Model
from rankguide_edge.engine.prompts import encode_prompt
from rankguide_edge.errors import ConfigError, ContextOverflowError, InvalidInputError
from rankguide_edge.testing.mini_server import MiniServer

CFG = RuntimeConfig(n_ctx=512, n_batch=64, n_threads=1)
MESSAGES = [("user", "What is 12 times 7? Think step by step.")]
PREFIX = "First, 12 times 7 is 12 plus"


@pytest.fixture(scope="module")
def small(smollm2: Path) -> Model:
    m = Model(smollm2)
    yield m
    m.close()


def _runtime_text(model: Model, prefix: str, max_tokens: int, stop: tuple[str, ...] = ()) -> tuple[str, int]:
    """What the runtime generates greedily from a fresh context: (text cut at the stop, tokens generated)."""
    with model.context(CFG) as ctx:
        tokens = encode_prompt(model, model.chat_prompt(MESSAGES) + prefix)
        text, events = generate_text(ctx, tokens, SamplingConfig(max_tokens=max_tokens, stop=stop))
    return text, len([e for e in events if not e.eog])


def _stop_inside(model: Model, prefix: str) -> tuple[str, str]:
    """A 2-character stop string the greedy continuation of ``prefix`` hits after ~10 characters, and that
    continuation's text (so the stop is reached without relying on what random weights write)."""
    full, _ = _runtime_text(model, prefix, 24)
    for i in range(8, len(full) - 2):
        stop = full[i:i + 2]
        if full.find(stop) == i:
            return stop, full
    raise AssertionError(f"no usable stop string in {full!r}")


# ------------------------------------------------------------------------------------------- local backend


@pytest.mark.parametrize("prefix", ["", PREFIX])
def test_local_step_equals_runtime_greedy_text(tiny: Model, prefix: str) -> None:
    stop, full = _stop_inside(tiny, prefix)
    expected, n_expected = _runtime_text(tiny, prefix, 24, (stop,))
    assert full.startswith(expected + stop)
    with LocalBackend(tiny, CFG) as backend:
        reply = backend.write_step(StepRequest(MESSAGES, prefix, 24, stop=(stop,)))
        n_prompt = len(encode_prompt(tiny, tiny.chat_prompt(MESSAGES) + prefix))
        assert reply.ok and reply.error is None and reply.retries == 0
        assert reply.text == expected + stop  # the delimiter is kept
        assert reply.n_tokens == n_expected and not reply.finished
        assert reply.prefill_tokens == n_prompt  # a fresh context prefills everything
        assert backend.context.n_past == n_prompt + reply.n_tokens  # the step stays in the context
        # without a stop string it writes the whole budget, exactly like the runtime
        whole = backend.write_step(StepRequest(MESSAGES, prefix, 24, stop=()))
        assert whole.text == full and whole.n_tokens == 24
        assert whole.prefill_tokens == 1  # same prompt: only the last token is fed again for its logits


def test_local_steps_of_its_own_equal_one_generation(tiny: Model) -> None:
    whole, _ = _runtime_text(tiny, PREFIX, 30)
    with LocalBackend(tiny, CFG) as backend:
        text = PREFIX
        for budget in (7, 11, 12):  # steps cut at token budgets: boundaries inside words
            reply = backend.write_step(StepRequest(MESSAGES, text, budget, stop=()))
            assert reply.ok and reply.n_tokens == budget
            if text != PREFIX:
                # its own tokens and their logits are kept: nothing is fed again before it continues
                assert reply.prefill_tokens == 0
            text += reply.text
        backend.clear_cache()  # a cold start prefills the whole prompt again
        reply = backend.write_step(StepRequest(MESSAGES, text, 4, stop=()))
        assert reply.prefill_tokens == len(backend.context.tokens) - reply.n_tokens
    assert text == PREFIX + whole


@pytest.mark.parametrize("retokenize", [False, True])
def test_local_next_step_prefills_only_new_tokens(tiny: Model, retokenize: bool) -> None:
    stop, _ = _stop_inside(tiny, PREFIX)
    with LocalBackend(tiny, CFG, retokenize=retokenize) as backend, LocalBackend(tiny, CFG) as fresh:
        first = backend.write_step(StepRequest(MESSAGES, PREFIX, 24, stop=(stop,)))
        assert first.ok and first.text.endswith(stop)
        prefix2 = PREFIX + first.text
        n_full = len(encode_prompt(tiny, tiny.chat_prompt(MESSAGES) + prefix2))
        second = backend.write_step(StepRequest(MESSAGES, prefix2, 12, stop=()))
        # only the boundary is re-fed (the delimiter may sit inside a generated token), never the prompt
        assert 1 <= second.prefill_tokens <= 3 < n_full
        assert second.n_tokens == 12
        # the reused cache computes what a full prefill of the same tokens computes
        assert second.text == _replay_text(tiny, backend, second.n_tokens, 12)
        reference = fresh.write_step(StepRequest(MESSAGES, prefix2, 12, stop=()))
        assert reference.prefill_tokens == n_full
        if retokenize:  # the reply does not depend on the history
            assert second.text == reference.text
        # text the backend never saw (another model's step) costs about its own tokens
        added = " so we add 84 and stop."
        prefix3 = prefix2 + second.text + added
        third = backend.write_step(StepRequest(MESSAGES, prefix3, 8, stop=()))
        assert third.prefill_tokens <= len(tiny.tokenize(added)) + 3
        assert third.text == _replay_text(tiny, backend, third.n_tokens, 8)
        if retokenize:
            assert third.text == fresh.write_step(StepRequest(MESSAGES, prefix3, 8, stop=())).text
        # another problem: the conversation diverges early, the common prefix is still reused
        other = [("user", "What is 3 plus 4?")]
        moved = backend.write_step(StepRequest(other, "", 8, stop=()))
        assert moved.prefill_tokens < len(encode_prompt(tiny, tiny.chat_prompt(other)))
        assert moved.text == _runtime_text_for(tiny, other, 8)


def _replay_text(model: Model, backend: LocalBackend, n_generated: int, max_tokens: int) -> str:
    """Greedy text a fresh context writes from exactly the tokens the backend held before its last step."""
    held = backend.context.tokens
    with model.context(CFG) as ctx:
        text, _ = generate_text(ctx, held[: len(held) - n_generated], SamplingConfig(max_tokens=max_tokens))
    return text


def _runtime_text_for(model: Model, messages: list[tuple[str, str]], max_tokens: int) -> str:
    with model.context(CFG) as ctx:
        text, _ = generate_text(ctx, encode_prompt(model, model.chat_prompt(messages)),
                                SamplingConfig(max_tokens=max_tokens))
    return text


def test_local_sampling_is_seeded(tiny: Model) -> None:
    with LocalBackend(tiny, CFG) as backend:
        req = StepRequest(MESSAGES, PREFIX, 16, stop=(), temperature=1.5, seed=7)
        a, b = backend.write_step(req), backend.write_step(req)
        c = backend.write_step(StepRequest(MESSAGES, PREFIX, 16, stop=(), temperature=1.5, seed=8))
    assert a.text == b.text and a.n_tokens == 16
    assert c.text != a.text


def test_local_rate_is_the_best_digit_logit(tiny: Model) -> None:
    step = "12 times 7 is 84.\n\n"
    with LocalBackend(tiny, CFG) as backend:
        score = backend.rate(MESSAGES, PREFIX, step)
        assert isinstance(score, int) and 0 <= score <= 9
        # the same judgement by hand: one forward pass, compare the ten digit logits
        with tiny.context(CFG) as ctx:
            ctx.eval(encode_prompt(tiny, rating_text(tiny.chat_prompt(MESSAGES), PREFIX, step, RATE_PROMPT)))
            logits = ctx.logits()
            ids = [tiny.tokenize(str(d))[0] for d in range(10)]
            assert score == int(np.argmax(logits[ids]))
        # rating leaves the context usable: the next step is what a full prefill of its tokens gives
        after = backend.write_step(StepRequest(MESSAGES, PREFIX + step, 10, stop=()))
        assert after.ok and after.text == _replay_text(tiny, backend, after.n_tokens, 10)


def test_rating_text_layout() -> None:
    assert rating_text("<chat>", "a\n\n", "b.", "Rate it.") == "<chat>a\n\nb.\n\nRate it.\n"
    assert rating_text("<chat>", "", "b.\n\n", "Rate it.") == "<chat>b.\n\nRate it.\n"
    assert rating_text("<chat>", "", "", "Rate it.") == "<chat>Rate it.\n"


def test_local_end_of_generation_sets_finished(small: Model) -> None:
    msgs = [("user", "What is 2 + 3? Answer briefly.")]
    with LocalBackend(small, CFG) as backend:
        reply = backend.write_step(StepRequest(msgs, "", 48))
        assert reply.ok and reply.finished and 0 < reply.n_tokens < 48 and "5" in reply.text
        # asked again after its own final answer, the model ends at once: nothing usable, but finished
        done = backend.write_step(StepRequest(msgs, reply.text, 16))
        assert not done.ok and done.error == "empty reply" and done.finished and done.prefill_tokens == 0


def test_local_context_limits(tiny: Model) -> None:
    small_cfg = RuntimeConfig(n_ctx=48, n_batch=64, n_threads=1)
    with LocalBackend(tiny, small_cfg) as backend:
        n_ctx = backend.context.n_ctx  # llama.cpp may round the requested size up
        too_long = "word " * n_ctx
        with pytest.raises(ContextOverflowError, match="n_ctx"):
            backend.write_step(StepRequest(MESSAGES, too_long, 4))
        n_prompt = len(encode_prompt(tiny, tiny.chat_prompt(MESSAGES)))
        reply = backend.write_step(StepRequest(MESSAGES, "", n_ctx, stop=()))
        assert reply.ok and reply.n_tokens == n_ctx - n_prompt  # capped by the room left, not an error
        assert backend.rate(MESSAGES, too_long, "x") is None


def test_common_prefix_and_find_stop() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([], [1]) == 0
    assert find_stop("ab\n\ncd", ["\n\n"]) == (4, "\n\n")
    assert find_stop("abXYcd", ["cd", "XY", "X"]) == (4, "XY")  # earliest, longer on ties
    assert find_stop("abc", ["\n\n"]) is None
    assert find_stop("a\n\nb\n\n", ["\n\n"], start=3) == (6, "\n\n")


# ------------------------------------------------------------------------------------ registry and specs


def test_make_backend_and_registry(tiny_gguf: Path) -> None:
    assert parse_spec("http://127.0.0.1:8080/v1") == ("remote", "http://127.0.0.1:8080/v1")
    assert parse_spec("qwen2.5-coder-1.5b-instruct") == ("local", "qwen2.5-coder-1.5b-instruct")
    assert parse_spec("/models/x.gguf") == ("local", "/models/x.gguf")
    assert {"local", "remote"} <= set(backend_kinds())
    local = make_backend(str(tiny_gguf), config={"n_ctx": 256, "n_threads": 1})
    try:
        assert isinstance(local, LocalBackend) and isinstance(local, LRMBackend)
        assert local.name.startswith("local:") and local.config.n_ctx == 256
    finally:
        local.close()
    remote = make_backend("http://127.0.0.1:9/v1/", model="m", api_key="k", timeout=3, retries=1)
    assert isinstance(remote, RemoteBackend) and isinstance(remote, LRMBackend)
    assert remote.base_url == "http://127.0.0.1:9/v1" and remote.config.timeout == 3.0
    made: list[str] = []

    def factory(target: str, **options: object) -> RemoteBackend:
        made.append(target)
        return RemoteBackend("http://127.0.0.1:9/v1", **options)  # type: ignore[arg-type]

    register_backend("mirror", factory)
    assert isinstance(make_backend("mirror:anything", retries=0), RemoteBackend) and made == ["anything"]
    with pytest.raises(ConfigError, match="bad options"):
        make_backend("http://127.0.0.1:9/v1", colour="red")
    with pytest.raises(ConfigError, match="timeout"):
        RemoteBackend("http://127.0.0.1:9/v1", timeout=0)
    with pytest.raises(ConfigError, match="URL"):
        RemoteBackend("ftp://host/v1")
    with pytest.raises(ConfigError, match="kind"):
        register_backend("Bad Kind", factory)
    with pytest.raises(InvalidInputError, match="max_tokens"):
        StepRequest(MESSAGES, "", 0)


# ------------------------------------------------------------------------------------------ remote backend


def test_remote_step_equals_local_step(tiny: Model, tiny_gguf: Path) -> None:
    stop, _ = _stop_inside(tiny, PREFIX)
    req = StepRequest(MESSAGES, PREFIX, 24, stop=(stop,))
    with LocalBackend(tiny, CFG, retokenize=True) as local:  # a server tokenizes each prompt afresh
        expected = local.write_step(req)
        budget = local.write_step(StepRequest(MESSAGES, PREFIX + expected.text, 6, stop=(stop,)))
    assert expected.text.endswith(stop)
    n_prompt = len(encode_prompt(tiny, tiny.chat_prompt(MESSAGES) + PREFIX))
    for extras in (True, False):  # llama-server's stop fields, then the plain-OpenAI rule
        with MiniServer(tiny_gguf, CFG, llama_extras=extras) as server:
            remote = RemoteBackend(server.url, model="mini", timeout=10, template_model=tiny)
            reply = remote.write_step(req)
            assert reply.ok and reply.text == expected.text and not reply.finished
            assert reply.n_tokens == expected.n_tokens and reply.prefill_tokens == n_prompt
            cut = remote.write_step(StepRequest(MESSAGES, PREFIX + expected.text, 6, stop=(stop,)))
            assert cut.text == budget.text and not cut.finished  # finish_reason "length": nothing appended
            assert remote.endpoint == "completions"
            assert server.requests == [("POST", "/v1/completions", 200)] * 2


def test_remote_chat_fallback(tiny: Model, tiny_gguf: Path) -> None:
    with LocalBackend(tiny, CFG) as local:
        expected = local.write_step(StepRequest(MESSAGES, PREFIX, 12, stop=()))
        plain = local.write_step(StepRequest(MESSAGES, "", 12, stop=()))
    with MiniServer(tiny_gguf, CFG, completions=False) as server:
        remote = RemoteBackend(server.url, timeout=10)  # ChatML on the client: the tiny model's template
        reply = remote.write_step(StepRequest(MESSAGES, PREFIX, 12, stop=()))
        assert reply.ok and reply.text == expected.text and reply.n_tokens == 12
        assert remote.endpoint == "chat"
        again = remote.write_step(StepRequest(MESSAGES, "", 12, stop=()))  # no prefix: a plain chat turn
        assert again.ok and again.text == plain.text
        assert server.requests == [("POST", "/v1/completions", 404), ("POST", "/v1/chat/completions", 200),
                                   ("POST", "/v1/chat/completions", 200)]


def test_remote_server_errors_are_retried_then_reported(tiny_gguf: Path) -> None:
    with MiniServer(tiny_gguf, CFG, mode="error") as server:
        remote = RemoteBackend(server.url, timeout=5, retries=2, backoff=0.01)
        reply = remote.write_step(StepRequest(MESSAGES, PREFIX, 8))
        assert not reply.ok and reply.retries == 2 and "HTTP 500" in (reply.error or "")
        assert reply.text == "" and server.requests == [("POST", "/v1/completions", 500)] * 3
        assert remote.rate(MESSAGES, PREFIX, "step") is None


def test_remote_timeout_is_bounded(tiny_gguf: Path) -> None:
    """A server that would answer after 30 s: each attempt gives up at the timeout (were it not bounded, the
    test would wait a minute), and the failure says so."""
    with MiniServer(tiny_gguf, CFG, mode="slow", delay=30) as server:
        remote = RemoteBackend(server.url, timeout=0.3, retries=1, backoff=0.01)
        reply = remote.write_step(StepRequest(MESSAGES, PREFIX, 8))
    assert not reply.ok and reply.retries == 1 and "timed out" in (reply.error or "")
    assert remote.retry_waits == [0.01]


def test_remote_429_waits_what_retry_after_asks_then_succeeds(tiny: Model, tiny_gguf: Path) -> None:
    """The server is rate-limiting: 429 with Retry-After: 1 twice; the backend waits the 1 s it is asked (not
    its 0.01 s backoff), and the third attempt is answered, on the same kept-alive connection."""
    req = StepRequest(MESSAGES, PREFIX, 8)
    with LocalBackend(tiny, CFG, retokenize=True) as local:
        expected = local.write_step(req)
    with MiniServer(tiny_gguf, CFG, mode="busy", busy_count=2, retry_after="1") as server:
        remote = RemoteBackend(server.url, timeout=10, retries=2, backoff=0.01)
        reply = remote.write_step(req)
        assert reply.ok and reply.text == expected.text and reply.retries == 2
        assert remote.retry_waits == [1.0, 1.0]
        assert server.requests == [("POST", "/v1/completions", 429)] * 2 + [("POST", "/v1/completions", 200)]
        assert server.connections == 1
        remote.close()
    with MiniServer(tiny_gguf, CFG, mode="busy", busy_count=1, retry_after=None) as server:
        remote = RemoteBackend(server.url, timeout=10, retries=1, backoff=0.01)
        assert remote.write_step(req).ok and remote.retry_waits == [0.01]  # no Retry-After: the backoff
    with MiniServer(tiny_gguf, CFG, mode="busy", busy_count=5, retry_after="0") as server:
        remote = RemoteBackend(server.url, timeout=10, retries=1, backoff=0.01)
        reply = remote.write_step(req)
        assert not reply.ok and "HTTP 429" in (reply.error or "") and "simulated rate limit" in (reply.error or "")


def test_remote_keeps_one_connection_across_steps(tiny_gguf: Path) -> None:
    with MiniServer(tiny_gguf, CFG) as server:
        remote = RemoteBackend(server.url, timeout=10)
        for _ in range(5):
            assert remote.write_step(StepRequest(MESSAGES, PREFIX, 4)).ok
        assert server.connections == 1 and len(server.requests) == 5
        remote.close()
        remote.close()  # idempotent
        assert remote.write_step(StepRequest(MESSAGES, PREFIX, 4)).ok  # a closed backend reconnects
        assert server.connections == 2


def test_retry_after_seconds_reads_both_header_forms() -> None:
    from datetime import datetime, timezone
    from email.utils import format_datetime

    now = datetime(2026, 12, 3, 12, 0, 0, tzinfo=timezone.utc).timestamp()
    assert retry_after_seconds("3") == 3.0 and retry_after_seconds(" 120 ") == 120.0
    assert retry_after_seconds("Thu, 03 Dec 2026 12:00:30 GMT", now=now) == 30.0
    later = format_datetime(datetime(2026, 12, 3, 12, 2, 0, tzinfo=timezone.utc), usegmt=True)
    assert retry_after_seconds(later, now=now) == 120.0
    assert retry_after_seconds("Thu, 03 Dec 2026 11:00:00 GMT", now=now) == 0.0  # already past
    for bad in (None, "", "soon", "-5", "1.5e3"):
        assert retry_after_seconds(bad) is None


def test_remote_unreachable_port() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    remote = make_backend(f"http://127.0.0.1:{port}/v1", timeout=2, retries=1, backoff=0.01)
    reply = remote.write_step(StepRequest(MESSAGES, PREFIX, 8))
    assert not reply.ok and reply.retries == 1 and "cannot reach" in (reply.error or "")
    assert remote.rate(MESSAGES, PREFIX, "step") is None


def test_remote_empty_reply_and_api_key(tiny_gguf: Path) -> None:
    with MiniServer(tiny_gguf, CFG, mode="empty") as server:
        reply = RemoteBackend(server.url, timeout=10).write_step(StepRequest(MESSAGES, PREFIX, 8))
        assert not reply.ok and reply.error == "empty reply" and reply.retries == 0
    with MiniServer(tiny_gguf, CFG, api_key="s3cret") as server:
        denied = RemoteBackend(server.url, timeout=10, retries=3).write_step(StepRequest(MESSAGES, PREFIX, 4))
        assert not denied.ok and "HTTP 401" in (denied.error or "") and denied.retries == 0
        granted = RemoteBackend(server.url, api_key="s3cret", timeout=10).write_step(
            StepRequest(MESSAGES, PREFIX, 4))
        assert granted.ok and granted.n_tokens == 4
        request = urllib.request.Request(f"{server.url}/models", headers={"Authorization": "Bearer s3cret"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            listing = json.loads(resp.read())
        assert [m["id"] for m in listing["data"]] == ["mini"]


def test_remote_rate_and_finish_match_local(small: Model) -> None:
    msgs = [("user", "What is 2 + 3? Answer briefly.")]
    steps = ["2 + 3 = 5.\n\n", "2 + 3 = 7.\n\n"]
    with LocalBackend(small, CFG) as local:
        expected = local.write_step(StepRequest(msgs, "", 48))
        scores = [local.rate(msgs, "", s) for s in steps]
    assert expected.finished and all(isinstance(s, int) for s in scores)
    for completions in (True, False):
        with MiniServer(small, CFG, completions=completions) as server:
            remote = RemoteBackend(server.url, timeout=30, template_model=small)
            reply = remote.write_step(StepRequest(msgs, "", 48))
            assert reply.ok and reply.text == expected.text and reply.finished  # stop_type "eos"
            assert [remote.rate(msgs, "", s) for s in steps] == scores
            assert remote.endpoint == ("completions" if completions else "chat")


@pytest.mark.parametrize("reply, expected", [
    # llama-server: told a stop word was hit, or that the model ended
    ({"choices": [{"text": "a", "finish_reason": "stop", "stop_type": "word", "stopping_word": "\n\n"}]},
     ("a\n\n", False)),
    ({"choices": [{"text": "a", "finish_reason": "stop", "stop_type": "eos", "stopping_word": ""}]}, ("a", True)),
    # vLLM: stop_reason is the stop string, or None at end of sequence
    ({"choices": [{"text": "a", "finish_reason": "stop", "stop_reason": "END"}]}, ("aEND", False)),
    ({"choices": [{"text": "a", "finish_reason": "stop", "stop_reason": None}]}, ("a", True)),
    # plain OpenAI: "stop" with stop strings sent is taken as the first delimiter
    ({"choices": [{"text": "a", "finish_reason": "stop"}]}, ("a\n\n", False)),
    ({"choices": [{"text": "a", "finish_reason": "length"}]}, ("a", False)),
])
def test_stop_rule_for_each_server_dialect(reply: dict, expected: tuple[str, bool]) -> None:
    assert _close_step(_parse(reply, chat=False), ("\n\n", "END")) == expected


def test_server_usage_and_timings_are_read() -> None:
    answer = _parse({"choices": [{"message": {"content": "x"}, "finish_reason": "length"}],
                     "usage": {"prompt_tokens": 40, "completion_tokens": 3}, "timings": {"prompt_n": 2}},
                    chat=True)
    assert (answer.text, answer.n_tokens, answer.prefill_tokens) == ("x", 3, 2)  # cache-aware prefill count
    assert _close_step(_parse({"choices": [{"text": "a", "finish_reason": "stop"}]}, chat=False), ()) == ("a", True)
