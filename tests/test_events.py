"""The one event model of a solve (collab.events) on a real model: tokens of both models stream as they are
written, final text is never withdrawn, and what a client shows adds up to the answer under every policy and
decision point, with a local and a remote LRM."""

from __future__ import annotations

from typing import Any

import pytest

from rankguide_edge.collab.backends_local import LocalBackend
from rankguide_edge.collab.backends_remote import RemoteBackend
from rankguide_edge.collab.events import FinalText, Token
from rankguide_edge.collab.reasoner import Reasoner, ReasonerConfig
from rankguide_edge.config import RuntimeConfig
from rankguide_edge.testing.mini_server import MiniServer

QUESTION = "Tom has 3 boxes of 4 apples and eats 2. How many apples are left? Think step by step."
RT = RuntimeConfig(n_ctx=1024)


def _events(srm: Any, lrm: Any, **cfg: Any) -> tuple[list[tuple[str, Any]], Any]:
    events: list[tuple[str, Any]] = []
    with Reasoner(srm, lrm, ReasonerConfig(max_tokens=48, max_step_tokens=16, **cfg), runtime=RT) as r:
        result = r.solve(QUESTION, on_event=lambda kind, payload: events.append((kind, payload)))
    return events, result


def _check(events: list[tuple[str, Any]], answer: str) -> None:
    """Final text only grows and spells the answer; a step's draft tokens end with its discard or its step."""
    shown, final = "", FinalText()
    live: list[Token] = []  # tokens of the step in progress since its last discard
    for kind, payload in events:
        shown += final.advance(kind, payload)
        assert answer.startswith(shown), (kind, payload)
        if kind == "token":
            assert isinstance(payload, Token) and payload.text
            assert not live or live[-1].step == payload.step
            live.append(payload)
        elif kind == "discard":
            assert live and not any(t.final for t in live)  # only drafts are ever withdrawn
            live = []
        else:
            if live:
                assert "".join(t.text for t in live) == payload.text and live[0].step == payload.index
            live = []
    assert shown == answer


@pytest.mark.parametrize("cfg, final_srm", [
    ({"policy": "srm"}, True),
    ({"policy": "srm", "lrm_first": 1}, True),
    ({"policy": "lrm"}, None),
    ({"policy": "rankguide", "threshold": 0.0}, False),  # post: every draft is replaced
    ({"policy": "rankguide", "threshold": 0.3}, False),
    ({"policy": "entropy", "threshold": 0.0, "decide": "early", "early_tokens": 4}, False),
    ({"policy": "random", "random_p": 0.5, "decide": "pre", "revalidation_k": 0}, True),
])
def test_tokens_stream_and_final_text_is_never_withdrawn(smol, cfg: dict[str, Any], final_srm: bool | None) -> None:
    with LocalBackend(smol, RT) as lrm:
        events, result = _events(smol, lrm, **cfg)
    _check(events, result.answer_text)
    tokens = [p for k, p in events if k == "token"]
    srm = [t for t in tokens if t.source == "srm"]
    assert {t.final for t in srm} <= ({final_srm} if final_srm is not None else set())
    assert all(t.final for t in tokens if t.source == "lrm")
    for step in result.steps:  # every LRM step arrives as many tokens, not at once
        if step.source == "lrm" and step.lrm_tokens > 1:
            assert sum(t.step == step.index and t.source == "lrm" for t in tokens) > 1
    if cfg.get("policy") == "lrm":
        assert srm == [] and tokens


def test_an_lrm_that_cannot_stream_delivers_its_steps_whole(smol) -> None:
    with MiniServer(smol, RT) as server:
        lrm = RemoteBackend(server.url, template_model=smol)
        events, result = _events(smol, lrm, policy="rankguide", threshold=0.0)
        lrm.close()
    _check(events, result.answer_text)
    assert any(s.source == "lrm" for s in result.steps)
    assert not any(k == "token" and p.source == "lrm" for k, p in events)
