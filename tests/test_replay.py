"""Replay (teacher forcing a trace) must show each early checkpoint what the live reasoner's early check saw:
the same checkpoints, the same draft text (with text carried over from the previous delimiter token) and the
same entropies (an 80-token step fed as one batch rounded differently from generation)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rankguide_edge.collab import policies
from rankguide_edge.collab.backends_local import LocalBackend
from rankguide_edge.collab.policies import StepView, register_policy
from rankguide_edge.collab.reasoner import Reasoner, ReasonerConfig
from rankguide_edge.config import RuntimeConfig
from rankguide_edge.engine.layers import parse_layer_spec
from rankguide_edge.engine.model import Model
from rankguide_edge.fitting.replay import early_checkpoints, replay_traces
from rankguide_edge.fitting.trace import TraceConfig, trace_problem
from rankguide_edge.signals.step import SignalConfig, StepSignalComputer
from rankguide_edge.tasks.answers import prompt_for
from rankguide_edge.tasks.datasets import Problem

RT = RuntimeConfig(n_ctx=512, n_threads=1)
QUESTION = "A shop sells 4 boxes of 6 pens and 3 loose pens. How many pens is that?"


class _Probe:
    """A policy that never routes and remembers every early view it was shown."""

    name = "probe"
    points = ("post", "early", "pre")

    def __init__(self) -> None:
        self.early: list[tuple[int, int, str, dict[str, float]]] = []

    def score(self, view: StepView) -> float:
        if view.decide == "early":
            self.early.append((view.step_index, view.n_tokens, view.text, dict(view.signals)))
        return 0.0

    def reset(self) -> None:
        pass


@pytest.fixture
def probe() -> Any:
    p = _Probe()
    register_policy("probe", lambda **_: p)
    yield p
    policies._REGISTRY.pop("probe", None)


def test_replay_sees_what_the_live_early_check_saw(smollm2, probe: _Probe) -> None:
    with Model(smollm2) as m:
        with LocalBackend(m, RT, progress=False) as lrm:
            cfg = ReasonerConfig(policy="probe", decide="early", threshold=0.5, max_tokens=80)
            with Reasoner(m, lrm, cfg, runtime=RT) as r:
                live = r.solve(prompt_for(QUESTION, "gsm8k"))
        assert all(s.source == "srm" for s in live.steps) and probe.early
        tcfg = TraceConfig(layers="auto", max_tokens=80, n_ctx=512, n_threads=1)
        layers = parse_layer_spec("auto", m.n_layer)
        with m.context(tcfg.runtime(), tap_layers=layers) as ctx:
            rec = trace_problem(m, ctx, StepSignalComputer(SignalConfig()),
                                Problem(id="a", question=QUESTION, gold="27", kind="gsm8k", source="test"),
                                tcfg, SignalConfig(), "smollm2")
        rec = json.loads(json.dumps(rec))  # as read back from a traces file
        assert rec["text"] == live.answer_text  # the same greedy steps, live and traced
        assert rec["signal_config"]["window"] == 32  # the trace says how its signals were computed
        [(_, steps)] = list(replay_traces(m, [rec], layers=rec["layers"], n_ctx=512, n_threads=1))
    replayed = {(st.index, n): (text, sig) for st in steps
                for n, text, sig in zip(st.checkpoints, st.partial_text, st.partial, strict=True)}
    assert sorted(replayed) == sorted((i, n) for i, n, _, _ in probe.early)
    for i, n, text, sig in probe.early:
        got_text, got = replayed[(i, n)]
        assert got_text == text, (i, n)
        assert got["text.n_chars"] == sig["text.n_chars"], (i, n)
        # the same numbers too: replay feeds tokens in chunks small enough to round like generation
        for key in ("text.entropy_max", "text.entropy_mean"):
            assert got[key] == pytest.approx(sig[key], abs=1e-4), (i, n, key)
    # a step that ran to end-of-generation is checked at its end
    for st, traced in zip(steps, rec["steps"], strict=True):
        assert st.checkpoints == early_checkpoints(st.n_tokens, 8, 4, traced["ended_by"])
