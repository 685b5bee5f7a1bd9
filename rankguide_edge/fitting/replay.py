"""Replaying a trace through the SRM by teacher forcing: what each decision point would have seen.

A trace (``rankguide-edge trace``) stores each step's finished signals, which is what ``post`` scores and what
``pre`` scores one step later. ``early`` scores partial drafts (the first ``early_tokens`` tokens, then every
``early_every``), which a trace does not store. Replaying feeds the prompt and then each step's text as given
(:meth:`Context.teacher_force`, one prefill batch per step, ~10x cheaper than generating it) and recomputes
the partial signals at every checkpoint and the full signals of every step, exactly as the reasoner does.

Traces record each step's token ids, which are fed as generated (a token holding a step's delimiter belongs
to the step it ends, while its text after the delimiter opens the next step, exactly as when tracing). Older
traces without ids are re-tokenized from their text, so token boundaries may differ slightly there.
"""

from __future__ import annotations

import codecs
import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..engine.context import Context
from ..engine.model import Model
from ..engine.prompts import chat_tokens, prompt_for
from ..errors import InvalidInputError
from ..signals.step import SignalConfig, StepSignalComputer
from ..signals.text import TokenStats


@dataclass
class ReplayedStep:
    """One step of a replayed trace: its full signals and the partial signals at each early checkpoint
    (``partial[i]`` after ``checkpoints[i]`` tokens)."""

    index: int
    n_tokens: int
    signals: dict[str, float]
    checkpoints: list[int] = field(default_factory=list)
    partial: list[dict[str, float]] = field(default_factory=list)
    partial_text: list[str] = field(default_factory=list)  # the draft's text at each checkpoint


def early_checkpoints(n_tokens: int, early_tokens: int, early_every: int, ended_by: str = "delimiter") -> list[int]:
    """Token counts at which ``early`` checks a draft of ``n_tokens`` tokens. A draft that a delimiter (or the
    step cap) ended stops on its last token before the check; one that ended at end-of-generation or the
    budget was still checked after its last token, as the reasoner does."""
    last = n_tokens + 1 if ended_by in ("eog", "budget") else n_tokens
    return list(range(early_tokens, last, early_every))


def replay_record(model: Model, ctx: Context, computer: StepSignalComputer, record: dict[str, Any], *,
                  early_tokens: int = 8, early_every: int = 4) -> list[ReplayedStep]:
    """Teacher-force one trace record (``question``, ``kind``, ``steps[].text``) through ``ctx`` (tapped on the
    signal layers) and return every step's signals, full and partial."""
    steps = record.get("steps") or []
    if not isinstance(steps, list):
        raise InvalidInputError(f"trace record {record.get('id')!r} has no steps list: re-run trace")
    question, kind = record.get("question"), record.get("kind") or "generic"
    if not isinstance(question, str) or not question:
        raise InvalidInputError(f"trace record {record.get('id')!r} has no question: re-run trace")
    ctx.reset()
    computer.reset()
    segmenter = computer.config.segmenter()  # as the reasoner's: text carried from a delimiter token opens a step
    prompt = chat_tokens(model, prompt_for(question, kind))
    ctx.eval(prompt, hidden=False)
    out: list[ReplayedStep] = []
    for i, st in enumerate(steps):
        text = st.get("text", "") if isinstance(st, dict) else ""
        ids = st.get("token_ids") if isinstance(st, dict) else None
        toks = [int(t) for t in ids] if isinstance(ids, list) else (model.tokenize(text) if text else [])
        if not toks:
            continue
        if ctx.n_past + len(toks) >= ctx.n_ctx:
            break
        ent, top, hidden = ctx.teacher_force(toks)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")  # one per drafted step, as in generation
        pieces = tuple(decoder.decode(model.piece(t)) for t in toks)
        stats = TokenStats(ent, top, pieces)
        rs = ReplayedStep(index=i, n_tokens=len(toks), signals={})
        checks = set(early_checkpoints(len(toks), early_tokens, early_every, str(st.get("ended_by", "delimiter"))))
        for n, piece in enumerate(pieces, 1):
            ended = segmenter.feed(piece)
            if n in checks and not ended:
                part = {il: h[:n] for il, h in hidden.items()}
                rs.checkpoints.append(n)
                rs.partial_text.append(segmenter.text)
                rs.partial.append(computer.compute_partial(part, stats.head(n), rs.partial_text[-1]))
        rs.signals = computer.compute(hidden, stats, text)
        out.append(rs)
    return out


def replay_traces(model: Model, records: Iterable[dict[str, Any]], *, layers: list[int],
                  signal_cfg: SignalConfig | None = None, n_ctx: int = 4096, n_threads: int = 0,
                  early_tokens: int = 8, early_every: int = 4) -> Iterator[tuple[dict[str, Any], list[ReplayedStep]]]:
    """Replay each record (skipping ones that errored when traced); yields ``(record, steps)``.

    Each record is replayed under the signal config it was traced with (``signal_config``, written by
    ``trace``; ``signal_cfg`` or the default for older traces) and with its steering (``steer``) applied, so
    the recomputed signals are those the traced run saw."""
    import json

    from ..config import RuntimeConfig
    from ..steering.apply import apply_steering

    computers: dict[str, StepSignalComputer] = {}
    with model.context(RuntimeConfig(n_ctx=n_ctx, n_threads=n_threads), tap_layers=layers) as ctx:
        for rec in records:
            if rec.get("error") or not rec.get("steps"):
                continue
            traced = rec.get("signal_config")
            cfg = SignalConfig.from_mapping(traced) if isinstance(traced, dict) else (signal_cfg or SignalConfig())
            key = json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str)
            computer = computers.setdefault(key, StepSignalComputer(cfg))
            steer = rec.get("steer") or {}
            apply_steering(ctx, steer.get("file") or None, float(steer.get("scale", 1.0)),
                           str(steer.get("where", "all")), cfg.delimiter)
            yield rec, replay_record(model, ctx, computer, rec, early_tokens=early_tokens, early_every=early_every)
