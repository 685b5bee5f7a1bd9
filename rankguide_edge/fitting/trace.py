"""``trace``: run the SRM alone on a dataset and record every step's signals (one JSON object per problem).

Output is JSONL, appended one complete line per problem and flushed, so an interrupted run resumes: ids
already in the file are skipped, and a torn last line (the process died mid-write) is cut off first.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..collab.reasoner import ReasonerConfig
from ..config import RuntimeConfig, SamplingConfig, same_as, validate
from ..engine.layers import parse_layer_spec
from ..engine.model import Model
from ..engine.prompts import chat_tokens, prompt_for
from ..errors import ContextOverflowError
from ..jsonl import append_jsonl
from ..records import load_record_file
from ..signals.step import SignalConfig, StepSignalComputer
from ..steering.apply import apply_steering
from ..tasks.answers import grade
from ..tasks.datasets import Problem


@dataclass(frozen=True)
class TraceConfig:
    """What a trace run does besides the signals (which :class:`SignalConfig` holds)."""

    layers: str = same_as(ReasonerConfig, "layers")
    max_tokens: int = same_as(ReasonerConfig, "max_tokens", help="token budget of one answer")
    temperature: float = same_as(SamplingConfig, "temperature")
    top_p: float = same_as(SamplingConfig, "top_p")
    n_ctx: int = same_as(RuntimeConfig, "n_ctx", default=2048)
    n_threads: int = same_as(RuntimeConfig, "n_threads")
    seed: int = same_as(RuntimeConfig, "seed")
    steer: str = same_as(ReasonerConfig, "steer")
    steer_scale: float = same_as(ReasonerConfig, "steer_scale")
    steer_where: str = same_as(ReasonerConfig, "steer_where")

    def __post_init__(self) -> None:
        validate(self)

    def runtime(self) -> RuntimeConfig:
        return RuntimeConfig(n_ctx=self.n_ctx, n_threads=self.n_threads, seed=self.seed)

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens)


def _config_dict(cfg: SignalConfig) -> dict[str, Any]:
    """The signal config as JSON-ready data (``SignalConfig.from_mapping`` rebuilds it; replay uses it)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _finite(x: float) -> float | None:
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


def trace_problem(model: Model, ctx: Any, computer: StepSignalComputer, problem: Problem, cfg: TraceConfig,
                  signal_cfg: SignalConfig, model_name: str) -> dict[str, Any]:
    """Solve one problem greedily with the SRM and return its trace record."""
    from ..collab.stepping import draft_step

    t0 = time.perf_counter()
    ctx.reset()
    computer.reset()
    segmenter = signal_cfg.segmenter()
    prompt = chat_tokens(model, prompt_for(problem.question, problem.kind))
    if len(prompt) + cfg.max_tokens > ctx.n_ctx:
        raise ContextOverflowError(f"problem {problem.id}: {len(prompt)} prompt tokens + {cfg.max_tokens} to "
                                   f"generate exceed the context of {ctx.n_ctx}: raise --n-ctx")
    ctx.eval(prompt, hidden=False)
    sampling = cfg.sampling()
    steps: list[dict[str, Any]] = []
    used = 0
    finished = False
    while used < cfg.max_tokens:
        st = draft_step(ctx, segmenter, sampling, cfg.max_tokens - used)
        if st.n_tokens:
            s0 = time.perf_counter()
            signals = computer.compute(st.hidden, st.stats, st.text)
            signal_ms = 1000.0 * (time.perf_counter() - s0)
            steps.append({
                "index": len(steps), "text": st.text, "n_tokens": st.n_tokens, "token_start": used,
                "token_end": used + st.n_tokens, "token_ids": list(st.token_ids), "ended_by": st.ended_by,
                "seconds": round(st.seconds, 4),
                "signal_ms": round(signal_ms, 3),
                "signals": {k: _finite(float(v)) for k, v in signals.items()},
            })
            used += st.n_tokens
        elif st.text and steps:  # end right after a delimiter token whose text ran on: keep that text
            steps[-1]["text"] += st.text
        if st.ended_by == "eog":
            finished = True
            break
        if st.ended_by == "budget":
            break
    text = "".join(s["text"] for s in steps)
    prediction, correct = grade(text, problem)
    return {
        "id": problem.id, "kind": problem.kind, "question": problem.question, "gold": problem.gold,
        "prediction": prediction, "correct": correct,
        "finished": finished, "n_tokens": used, "n_steps": len(steps),
        "seconds": round(time.perf_counter() - t0, 3), "model": model_name, "layers": list(ctx.layers),
        "text": text, "steps": steps, "signal_config": _config_dict(signal_cfg),
        **({"steer": {"file": cfg.steer, "scale": cfg.steer_scale, "where": cfg.steer_where}} if cfg.steer else {}),
    }


def done_ids(out: Path) -> set[str]:
    """Ids already traced in ``out`` (none when it does not exist yet)."""
    return load_record_file(out, "trace", missing_ok=True).ids()


@dataclass
class TraceSummary:
    out: str
    traced: int
    skipped_existing: int
    errors: int
    correct: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_trace(model: Model, problems: Iterable[Problem], out: str | os.PathLike[str], *, cfg: TraceConfig,
              signal_cfg: SignalConfig, model_name: str,
              progress: Callable[[dict[str, Any] | None], None] | None = None) -> TraceSummary:
    """Trace every problem whose id is not yet in ``out``, appending one line each."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    seen = done_ids(out)
    layers = parse_layer_spec(cfg.layers, model.n_layer)
    computer = StepSignalComputer(signal_cfg)
    traced = skipped = errors = correct = 0
    t0 = time.perf_counter()
    with model.context(cfg.runtime(), tap_layers=layers) as ctx, append_jsonl(out) as sink:
        apply_steering(ctx, cfg.steer or None, cfg.steer_scale, cfg.steer_where, signal_cfg.delimiter)
        for problem in problems:
            if problem.id in seen:
                skipped += 1
                if progress:
                    progress(None)
                continue
            try:
                rec = trace_problem(model, ctx, computer, problem, cfg, signal_cfg, model_name)
            except ContextOverflowError as exc:
                rec = {"id": problem.id, "kind": problem.kind, "question": problem.question,
                       "gold": problem.gold, "error": str(exc), "steps": []}
                errors += 1
            else:
                traced += 1
                correct += int(rec["correct"])
            sink.write(rec)
            seen.add(problem.id)
            if progress:
                progress(rec)
    return TraceSummary(out=str(out), traced=traced, skipped_existing=skipped, errors=errors, correct=correct,
                        seconds=round(time.perf_counter() - t0, 2))
