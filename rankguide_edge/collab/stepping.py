"""Drafting one reasoning step with the SRM: tokens, their statistics and hidden states, cut by the segmenter.

The trace (SRM alone) and the collaborative reasoner both call :func:`draft_step` in a loop. It speaks the
runtime's numpy API only (no ctypes).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..config import SamplingConfig
from ..engine.context import Context
from ..signals.segment import StepSegmenter
from ..signals.text import TokenStats


@dataclass
class DraftStep:
    """One step the SRM wrote.

    ``hidden``: tapped layer -> float32 ``(n_tokens, n_embd)``; ``stats``: the tokens' entropies and top-k
    log-probabilities; ``ended_by``: "delimiter", "max_step_tokens", "eog" (the model ended), "budget" (token
    budget exhausted) or "early" (the ``early`` check stopped the draft). ``token_ids`` excludes an
    end-of-generation token, which is never fed to the context.
    """

    text: str
    token_ids: list[int]
    hidden: dict[int, np.ndarray]
    stats: TokenStats
    ended_by: str
    seconds: float

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


#: an early check receives the partial draft and returns True to stop it
EarlyCheck = Callable[["DraftStep"], bool]


def draft_step(ctx: Context, segmenter: StepSegmenter, sampling: SamplingConfig, budget: int, *,
               early: EarlyCheck | None = None, early_from: int = 8, early_every: int = 4,
               on_token: Callable[[str], None] | None = None, shown: int = 0) -> DraftStep:
    """Generate from the context's current state until the step ends, the model ends, or ``budget`` tokens.

    The context must hold logits (its last eval fed at least one token). ``segmenter`` carries text across
    steps (a delimiter inside a token leaves the rest of the token's text for the next step). With ``early``,
    the partial draft is checked after ``early_from`` tokens and every ``early_every`` tokens after that; a
    True answer stops drafting with ``ended_by="early"`` (the segmenter then still holds the partial text:
    reset it if the draft is discarded). ``on_token`` receives the text the step gains with each token, so the
    pieces spell the step's text: text carried over from the previous step's last token comes first, and a
    token that ends the step gives only its part up to the step's end (the rest opens the next step).
    ``shown``: characters of the segmenter's current text already given to ``on_token`` (continuing a draft
    stopped early).
    """
    t0 = time.perf_counter()
    ids: list[int] = []
    rows: dict[int, list[np.ndarray]] = {il: [] for il in ctx.layers}
    ent: list[float] = []
    tops: list[np.ndarray] = []
    pieces: list[str] = []
    ended_by = "budget"
    text = ""
    if budget > 0:
        step_sampling = SamplingConfig(temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=budget)
        for ev in ctx.generate(None, step_sampling):
            if ev.eog:
                ended_by = "eog"
                break
            ids.append(ev.id)
            ent.append(ev.entropy)
            tops.append(ev.top_logprobs)
            pieces.append(ev.text)
            for il, h in ev.hidden.items():
                rows[il].append(h)
            ended = segmenter.feed(ev.text)
            if on_token is not None:
                current = segmenter.last_step if ended else segmenter.text
                if len(current) > shown:
                    on_token(current[shown:])
                    shown = len(current)
            if ended:
                text = segmenter.last_step
                ended_by = "delimiter" if text.endswith(segmenter.delimiter) else "max_step_tokens"
                break
            n = len(ids)
            if early is not None and n >= early_from and (n - early_from) % early_every == 0:
                c0 = time.perf_counter()
                partial = _pack(ctx, segmenter.text, ids, rows, ent, tops, pieces, "early", t0)
                stop = early(partial)
                t0 += time.perf_counter() - c0  # the check's time is the caller's (signals), not drafting
                if stop:
                    partial.seconds = time.perf_counter() - t0
                    return partial
    if ended_by in ("eog", "budget"):
        text = segmenter.flush()
        if on_token is not None and len(text) > shown:
            on_token(text[shown:])
    return _pack(ctx, text, ids, rows, ent, tops, pieces, ended_by, t0)


def _pack(ctx: Context, text: str, ids: list[int], rows: dict[int, list[np.ndarray]], ent: list[float],
          tops: list[np.ndarray], pieces: list[str], ended_by: str, t0: float) -> DraftStep:
    k = ctx.config.top_logprobs
    hidden = {il: (np.stack(r) if r else np.zeros((0, ctx.model.n_embd), np.float32)) for il, r in rows.items()}
    stats = TokenStats(entropy=np.asarray(ent, np.float32),
                       top_logprobs=np.stack(tops) if tops else np.zeros((0, k), np.float32),
                       pieces=tuple(pieces))
    return DraftStep(text=text, token_ids=list(ids), hidden=hidden, stats=stats, ended_by=ended_by,
                     seconds=time.perf_counter() - t0)


def join_drafts(first: DraftStep, rest: DraftStep) -> DraftStep:
    """One step from a draft stopped early and its continuation (token rows concatenated)."""
    hidden = {il: np.concatenate([first.hidden[il], rest.hidden[il]]) for il in first.hidden}
    stats = TokenStats(entropy=np.concatenate([first.stats.entropy, rest.stats.entropy]),
                       top_logprobs=np.concatenate([first.stats.top_logprobs, rest.stats.top_logprobs]),
                       pieces=first.stats.pieces + rest.stats.pieces)
    return DraftStep(text=rest.text, token_ids=first.token_ids + rest.token_ids, hidden=hidden, stats=stats,
                     ended_by=rest.ended_by, seconds=first.seconds + rest.seconds)
