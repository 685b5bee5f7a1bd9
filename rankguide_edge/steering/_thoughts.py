"""Thoughts of a chain of thought: splitting, keyword classes, the rank-signal band filter (pure Python/numpy).

A *thought* is a piece of generated text ended by the step delimiter (``"\\n\\n"``), cut with the same rules
as the signals layer's steps (:func:`rankguide_edge.signals.segment.split_steps`): the last, unterminated
piece of a trace is not a thought (it has no delimiter token to read a state from).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..signals.segment import split_steps
from ..signals.text import REVALIDATION_WORDS, compile_keywords, count_keywords

EXECUTION = "execution"
REFLECTION = "reflection"
TRANSITION = "transition"
#: thought classes, in report order
CLASSES: tuple[str, ...] = (EXECUTION, REFLECTION, TRANSITION)

#: default reflection phrases: the signals layer's revalidation words (re-checking earlier work) plus a few
#: phrasings of self-assessment
REFLECTION_WORDS: tuple[str, ...] = tuple(dict.fromkeys(REVALIDATION_WORDS + (
    "make sure", "let me re-check", "let me recheck", "let me re-evaluate", "re-evaluate", "think again",
    "is that right", "is this correct", "that doesn't seem right", "that seems wrong", "seems correct",
    "mistake", "oops", "sanity check",
)))
#: default transition phrases: abandoning the current line of attack for another one
TRANSITION_WORDS: tuple[str, ...] = (
    "alternatively", "another approach", "another way", "another method", "another strategy",
    "a different approach", "a different way", "a different method", "different strategy", "other approach",
    "let me try another", "let's try another", "let me try a different", "let's try a different",
    "on second thought", "start over", "let me start over", "let's start over", "think differently",
    "instead, let", "or maybe we", "approach it differently",
)


@dataclass(frozen=True)
class Thought:
    """One delimited thought of a trace: its text and character span ``[start, end)`` in the trace text.

    ``end`` is just past the delimiter that ends it; ``kind`` is one of :data:`CLASSES`.
    """

    index: int
    text: str
    start: int
    end: int
    kind: str


class Classifier:
    """Keyword classes of thoughts: transition if any transition phrase occurs, else reflection if any
    reflection phrase occurs, else execution. ``head_chars > 0`` looks only at a thought's first characters
    (where a model announces what the thought is); 0 looks at the whole thought."""

    def __init__(self, reflection_words: Sequence[str] = REFLECTION_WORDS,
                 transition_words: Sequence[str] = TRANSITION_WORDS, head_chars: int = 0) -> None:
        self._refl = compile_keywords(reflection_words)
        self._trans = compile_keywords(transition_words)
        self.head_chars = int(head_chars)

    def __call__(self, text: str) -> str:
        body = text.strip()
        if self.head_chars > 0:
            body = body[: self.head_chars]
        if count_keywords(body, self._trans):
            return TRANSITION
        if count_keywords(body, self._refl):
            return REFLECTION
        return EXECUTION


def split_thoughts(text: str, delimiter: str, classify: Classifier) -> list[Thought]:
    """The delimited thoughts of ``text`` (the trailing unterminated piece is left out), classified."""
    out: list[Thought] = []
    pos = 0
    for piece in split_steps(text, delimiter):
        start, pos = pos, pos + len(piece)
        if piece.endswith(delimiter) and piece.strip():
            out.append(Thought(index=len(out), text=piece, start=start, end=pos, kind=classify(piece)))
    return out


@dataclass(frozen=True)
class Bands:
    """Thresholds of the rank filter: execution thoughts are kept when their failure score is ``<= keep_below``,
    reflection/transition thoughts when it is ``>= keep_above`` (scores oriented so that high = failure)."""

    keep_below: float
    keep_above: float
    n_scored: int


def failure_bands(scores: np.ndarray, band: float) -> Bands:
    """Quantile bands over the oriented failure scores of all thoughts (NaN = unscored, ignored).

    ``scores``: float64 ``(n,)``; ``band`` in (0, 1]: ``keep_below = q(band)``, ``keep_above = q(1 - band)``.
    With ``band = 0.5`` both are the median; ``band = 1`` keeps every scored thought.
    """
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return Bands(keep_below=float("nan"), keep_above=float("nan"), n_scored=0)
    return Bands(keep_below=float(np.quantile(s, band)), keep_above=float(np.quantile(s, 1.0 - band)),
                 n_scored=int(s.size))


def band_keep(kinds: Sequence[str], scores: np.ndarray, bands: Bands) -> np.ndarray:
    """bool ``(n,)``: which thoughts the rank filter keeps (an unscored thought is dropped)."""
    s = np.asarray(scores, dtype=np.float64)
    keep = np.zeros(len(kinds), dtype=bool)
    for i, kind in enumerate(kinds):
        if not np.isfinite(s[i]):
            continue
        keep[i] = s[i] <= bands.keep_below if kind == EXECUTION else s[i] >= bands.keep_above
    return keep


def mean_difference(states: np.ndarray, kinds: Sequence[str], keep: np.ndarray) -> np.ndarray:
    """``mean(states[kept execution]) - mean(states[kept reflection or transition])``.

    ``states``: float32 ``(n, n_embd)``; returns float32 ``(n_embd,)`` (accumulated in float64). The caller
    makes sure both groups are non-empty.
    """
    kinds_arr = np.asarray(kinds)
    keep = np.asarray(keep, dtype=bool)
    ex = keep & (kinds_arr == EXECUTION)
    other = keep & (kinds_arr != EXECUTION)
    h = np.asarray(states, dtype=np.float64)
    return (h[ex].mean(axis=0) - h[other].mean(axis=0)).astype(np.float32)
