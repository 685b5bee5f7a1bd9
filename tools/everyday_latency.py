"""Maintainer tool: what a user waits for, measured on the installed version.

Two measurements on the default pair with the shipped router:

* ``ttft``: time to the first visible answer text, through the Python API's event stream (what ``chat``
  prints: the first ``token`` or ``step`` event with text) and through the server (the first streamed content
  delta, over loopback HTTP), for a few different questions; also the total time of each answer;
* ``turns``: a 6-turn conversation through ``Solver.chat`` (each turn's answer is appended to the history, as
  ``chat`` does): the wall time, the SRM prefill tokens and the prompt tokens the SRM kept of every turn.

It is a pytest file so that machines which pause background jobs while pytest runs give it the cores; run it
with each installed version alternately (the environment variable picks the measurement) and compare:

    RG_MEASURE=ttft  .venv/bin/pytest -q -s tools/everyday_latency.py
    RG_MEASURE=turns .venv/bin/pytest -q -s tools/everyday_latency.py
    RG_MEASURE=turns RG_POLICY=srm RG_LRM_FIRST=0 .venv/bin/pytest -q -s tools/everyday_latency.py

Each run prints one JSON line (``RESULT {...}``).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

QUESTIONS = [
    "A baker makes 12 trays of 8 muffins and sells 75. How many muffins are left?",
    "Tom has 5 boxes of 24 pencils and gives away 37. How many pencils does he have now?",
    "A train travels 60 km per hour for 3 hours and then 45 km per hour for 2 hours. How far does it go?",
]
TURNS = [
    "A baker makes 12 trays of 8 muffins and sells 75. How many muffins are left?",
    "And if she bakes 3 more trays?",
    "How many trays would she need for 200 muffins?",
    "She sells each muffin for 2 dollars. How much did she earn from the 75?",
    "What if the price goes up by 25 percent?",
    "Summarise the whole calculation in two sentences.",
]
MAX_TOKENS = int(os.environ.get("RG_MAX_TOKENS", "96"))
#: ``turns`` only: the policy and plan length (the shipped router hands a short turn's whole answer to the LRM
#: as its plan, so the SRM reads nothing after turn 1; ``RG_POLICY=srm RG_LRM_FIRST=0`` is the SRM alone)
POLICY = os.environ.get("RG_POLICY", "rankguide")
LRM_FIRST = int(os.environ["RG_LRM_FIRST"]) if os.environ.get("RG_LRM_FIRST") else None
PREFIX_REUSE = os.environ.get("RG_PREFIX_REUSE", "exact")  # turns only: exact, all or off


def _ttft() -> dict[str, Any]:
    import httpx

    from rankguide_edge import Solver
    from rankguide_edge.collab.reasoner import ReasonerConfig
    from rankguide_edge.server import BackgroundServer, ServerConfig, create_app

    out: dict[str, Any] = {"api_first": [], "api_total": [], "server_first": [], "server_total": []}
    with Solver(config=ReasonerConfig(max_tokens=MAX_TOKENS), progress=False) as solver:
        for q in QUESTIONS:
            t0 = time.perf_counter()
            first: list[float] = []

            def on_event(kind: str, payload: Any, t0: float = t0, first: list[float] = first) -> None:
                text = payload if isinstance(payload, str) else getattr(payload, "text", "")
                if kind in ("token", "step") and text and not first:
                    first.append(time.perf_counter() - t0)

            solver.chat([("user", q)], on_event=on_event)
            out["api_first"].append(first[0] if first else None)
            out["api_total"].append(time.perf_counter() - t0)
    settings = ServerConfig(port=0, max_tokens=MAX_TOKENS)
    with BackgroundServer(create_app(settings)) as srv, httpx.Client(timeout=600) as http:
        for q in QUESTIONS:
            body = {"model": settings.model_name, "stream": True, "max_tokens": MAX_TOKENS,
                    "messages": [{"role": "user", "content": q}]}
            t0 = time.perf_counter()
            got: float | None = None
            with http.stream("POST", srv.url + "/chat/completions", json=body) as resp:
                for line in resp.iter_lines():
                    if got is None and line.startswith("data: {"):
                        chunk = json.loads(line[6:])
                        if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                            got = time.perf_counter() - t0
            out["server_first"].append(got)
            out["server_total"].append(time.perf_counter() - t0)
    return out


def _turns() -> dict[str, Any]:
    from rankguide_edge import Solver
    from rankguide_edge.collab.reasoner import ReasonerConfig

    out: dict[str, Any] = {"policy": POLICY, "lrm_first": LRM_FIRST, "prefix_reuse": PREFIX_REUSE, "seconds": [],
                           "srm_prefill_tokens": [], "srm_reused_tokens": [], "answers": []}
    history: list[tuple[str, str]] = []
    cfg = ReasonerConfig(max_tokens=MAX_TOKENS, policy=POLICY, lrm_first=LRM_FIRST, prefix_reuse=PREFIX_REUSE)
    with Solver(config=cfg, progress=False) as solver:
        for q in TURNS:
            history.append(("user", q))
            t0 = time.perf_counter()
            result = solver.chat(history)
            out["seconds"].append(round(time.perf_counter() - t0, 3))
            out["srm_prefill_tokens"].append(result.usage["srm_prefill_tokens"])
            out["srm_reused_tokens"].append(result.usage.get("srm_reused_tokens", 0))  # 0 before prefix reuse
            history.append(("assistant", result.answer_text))
            out["answers"].append(result.answer_text)
    return out


def test_measure() -> None:
    what = os.environ.get("RG_MEASURE", "ttft")
    result = _ttft() if what == "ttft" else _turns()
    print("RESULT " + json.dumps({"measure": what, "max_tokens": MAX_TOKENS, **result}))
