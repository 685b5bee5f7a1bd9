"""Token- and text-space signals of one reasoning step: entropy, top-1 confidence, keywords, repetition.

Everything here is cheap (microseconds per step) and needs only the token statistics the runtime records
per generated token and the step's text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidInputError

#: default revalidation phrases (re-checking earlier work)
REVALIDATION_WORDS: tuple[str, ...] = (
    "wait", "hold on", "let me check", "let me verify", "let me double-check", "let's check",
    "let us check", "let's verify", "verify", "double-check", "double check", "re-check", "recheck",
    "check again", "re-examine", "reconsider", "recalculate", "recompute", "actually", "hmm", "confirm",
)
#: the ``keywords`` routing policy's triggers (Speculative-Thinking style: a step that opens with one goes to the
#: LRM): reflection phrases, mostly revalidation words above, plus "alternatively" and the prefix "let me re"
TRIGGER_WORDS: tuple[str, ...] = (
    "wait", "hmm", "hold on", "alternatively", "let me check", "let me verify", "let me re", "double-check",
    "double check", "actually", "but wait", "verify", "re-check", "recheck",
)
#: default uncertainty phrases
UNCERTAINTY_WORDS: tuple[str, ...] = (
    "maybe", "perhaps", "alternatively", "not sure", "i think", "might", "possibly", "probably", "i guess",
    "unclear", "uncertain", "not certain", "could be", "seems", "i wonder", "confused",
)
#: default confident-claim phrases
CONFIDENT_WORDS: tuple[str, ...] = (
    "clearly", "obviously", "definitely", "certainly", "of course", "therefore", "so the answer is",
    "the answer is", "thus", "hence", "must be", "undoubtedly", "without a doubt", "for sure", "trivially",
)


@dataclass(frozen=True, eq=False)
class TokenStats:
    """Per-token statistics of one step (or of its first tokens).

    ``entropy``: ``(T,)`` float32, entropy of the full next-token distribution in nats.
    ``top_logprobs``: ``(T, k)`` float32, the k largest log-probabilities, descending (k may be 0).
    ``pieces``: ``T`` token text pieces.
    Lists are accepted and converted; shapes are checked (:class:`InvalidInputError`).
    """

    entropy: np.ndarray
    top_logprobs: np.ndarray
    pieces: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        ent = np.asarray(self.entropy, dtype=np.float32).reshape(-1)
        top = np.asarray(self.top_logprobs, dtype=np.float32)
        if top.ndim == 1 and top.size == 0:
            top = top.reshape(ent.shape[0], 0)
        if top.ndim != 2 or top.shape[0] != ent.shape[0]:
            raise InvalidInputError(
                f"top_logprobs has shape {top.shape} but entropy has {ent.shape[0]} tokens; pass (T, k) rows"
            )
        pieces = tuple(self.pieces)
        if pieces and len(pieces) != ent.shape[0]:
            raise InvalidInputError(
                f"{len(pieces)} pieces for {ent.shape[0]} tokens; pass one piece per token (or none)"
            )
        object.__setattr__(self, "entropy", ent)
        object.__setattr__(self, "top_logprobs", top)
        object.__setattr__(self, "pieces", pieces)

    def __len__(self) -> int:
        return int(self.entropy.shape[0])

    @classmethod
    def empty(cls, k: int = 0) -> TokenStats:
        """A step with no tokens (``T = 0``) and ``k`` log-probability columns."""
        return cls(np.zeros(0, np.float32), np.zeros((0, k), np.float32), ())

    def head(self, n: int) -> TokenStats:
        """The first ``n`` tokens (all of them when ``n >= T``)."""
        return TokenStats(self.entropy[:n], self.top_logprobs[:n], self.pieces[:n])

    @property
    def text(self) -> str:
        """The pieces joined."""
        return "".join(self.pieces)


def token_features(stats: TokenStats) -> dict[str, float]:
    """Step-level summaries of token statistics.

    Keys: ``n_tokens``; ``entropy_mean``, ``entropy_max`` (nats); ``top1_mean`` (mean top-1 probability);
    ``margin_min`` (smallest top-1 minus top-2 probability). Missing columns fall back to lower bounds:
    with k = 1 the top-2 probability is bounded by ``min(p1, 1 - p1)``; with k = 0, ``p1 >= exp(-entropy)``.
    An empty step gives all zeros. Non-finite entropies count as 0; non-finite log-probs as -inf.
    """
    n = len(stats)
    if n == 0:
        return {"n_tokens": 0.0, "entropy_mean": 0.0, "entropy_max": 0.0, "top1_mean": 0.0, "margin_min": 0.0}
    ent = np.nan_to_num(stats.entropy.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    ent = np.maximum(ent, 0.0)
    top = stats.top_logprobs.astype(np.float64)
    top = np.where(np.isfinite(top), top, -np.inf)
    if top.shape[1] >= 1:
        p1 = np.exp(np.minimum(top[:, 0], 0.0))
    else:
        p1 = np.exp(-ent)
    if top.shape[1] >= 2:
        p2 = np.exp(np.minimum(top[:, 1], 0.0))
    else:
        p2 = np.minimum(p1, 1.0 - p1)
    return {
        "n_tokens": float(n),
        "entropy_mean": float(ent.mean()),
        "entropy_max": float(ent.max()),
        "top1_mean": float(p1.mean()),
        "margin_min": float(np.clip(p1 - p2, 0.0, 1.0).min()),
    }


def compile_keywords(words: Iterable[str]) -> re.Pattern[str] | None:
    """One case-insensitive, word-boundary-aware pattern for a phrase list (None for an empty list).

    Phrases are matched whole (``"wait"`` does not match ``"waiter"``), longest first, so overlapping phrases
    (``"the answer is"`` / ``"so the answer is"``) count once; spaces inside a phrase match any whitespace.
    """
    phrases = sorted({w.strip().lower() for w in words if w and w.strip()}, key=len, reverse=True)
    if not phrases:
        return None
    alts = [r"\s+".join(re.escape(part) for part in p.split()) for p in phrases]
    return re.compile(r"(?<!\w)(?:" + "|".join(alts) + r")(?!\w)", re.IGNORECASE)


def _normalise_text(text: str) -> str:
    return text.replace("\u2019", "'").replace("\u2018", "'")


def count_keywords(text: str, pattern: re.Pattern[str] | None) -> int:
    """Non-overlapping phrase occurrences of ``pattern`` (from :func:`compile_keywords`) in ``text``."""
    if pattern is None or not text:
        return 0
    return len(pattern.findall(_normalise_text(text)))


_WORD = re.compile(r"[a-z]+|\d+(?:\.\d+)?")
_NUM = r"\d+(?:\.\d+)?"
_OP = r"(?:\*\*|[+\-\u2212*/\u00d7\u00f7\u00b7^]|\\times|\\cdot|\\div)"
_ARITH = re.compile(rf"(?<![\w.])({_NUM}(?:\s*{_OP}\s*{_NUM})+)\s*=")
_ARITH_TOKEN = re.compile(rf"{_NUM}|{_OP}")
_OP_CANON = {"\u00d7": "*", "\\times": "*", "\u00b7": "*", "\\cdot": "*", "\u00f7": "/", "\\div": "/",
             "\u2212": "-", "**": "^"}


def _canon_number(tok: str) -> str:
    value = float(tok)
    return str(int(value)) if value.is_integer() else repr(value)


def arithmetic_expressions(text: str) -> list[str]:
    """Canonical left-hand sides of ``a op b [op c ...] = ...`` patterns in ``text``, in order.

    Operators are unified (``x``-like symbols and ``\\times``/``\\cdot`` become ``*``, ``\\div`` becomes
    ``/``), numbers are normalised (``2.50`` -> ``2.5``), and the operands of a single ``+`` or ``*`` are
    sorted, so ``3 x 4 =`` and ``4*3=`` are the same expression.
    """
    out = []
    for m in _ARITH.finditer(text):
        toks = _ARITH_TOKEN.findall(m.group(1))
        canon = [(_OP_CANON.get(t, t) if not t[0].isdigit() else _canon_number(t)) for t in toks]
        if len(canon) == 3 and canon[1] in ("+", "*"):
            a, b = sorted((canon[0], canon[2]))
            canon = [a, canon[1], b]
        out.append(" ".join(canon))
    return out


def word_set(text: str) -> frozenset[str]:
    """Lower-cased alphabetic words and numbers of ``text``."""
    return frozenset(_WORD.findall(text.lower()))


def char_ngrams(text: str, n: int) -> set[str]:
    """Character ``n``-grams of ``text`` lower-cased with whitespace runs collapsed to one space."""
    norm = " ".join(text.lower().split())
    return {norm[i:i + n] for i in range(len(norm) - n + 1)}


class RepetitionTracker:
    """Does a step restate earlier steps of the same trace?

    ``measure(text)`` compares ``text`` with the steps added so far without changing state; ``add(text)``
    records a finished step. Signals (all NaN-free, 0 for the first step):

    * ``max_jaccard``: max over earlier steps of the Jaccard index of word sets; steps with fewer than
      ``min_words`` distinct words are too short to be restatements and give / take part as 0;
    * ``ngram_containment``: share of this step's character ``ngram``-grams already seen earlier in the trace;
    * ``arith_total`` / ``arith_repeats``: arithmetic expressions in the step, and how many of them were
      already computed (earlier in the trace or earlier in this step).
    """

    def __init__(self, ngram: int = 8, min_words: int = 3) -> None:
        self.ngram = int(ngram)
        self.min_words = int(min_words)
        self.reset()

    def reset(self) -> None:
        """Forget all earlier steps."""
        self._sizes: list[int] = []  # distinct words of each earlier step
        self._vocab: dict[str, int] = {}  # word -> row of the incidence matrix
        self._incidence = np.zeros((64, 64), dtype=np.uint8)  # (words, steps): 1 where a step has the word
        self._ngrams: set[str] = set()
        self._exprs: set[str] = set()

    @property
    def n_steps(self) -> int:
        """Steps added so far."""
        return len(self._sizes)

    def measure(self, text: str) -> dict[str, float]:
        """Repetition signals of ``text`` against the recorded steps (keys above)."""
        words = word_set(text)
        best = 0.0
        n_w = len(words)
        n_prev = len(self._sizes)
        if n_w >= self.min_words and n_prev:
            ids = [self._vocab[w] for w in words if w in self._vocab]
            if ids:
                inter = self._incidence[ids, :n_prev].sum(axis=0, dtype=np.float64)
                sizes = np.asarray(self._sizes, dtype=np.float64)
                jac = inter / np.maximum(n_w + sizes - inter, 1.0)
                jac[sizes < self.min_words] = 0.0
                best = float(jac.max())
        grams = char_ngrams(text, self.ngram)
        contain = len(grams & self._ngrams) / len(grams) if grams and self._ngrams else 0.0
        exprs = arithmetic_expressions(text)
        seen = set(self._exprs)
        repeats = 0
        for e in exprs:
            if e in seen:
                repeats += 1
            seen.add(e)
        return {"max_jaccard": float(best), "ngram_containment": float(contain),
                "arith_total": float(len(exprs)), "arith_repeats": float(repeats)}

    def snapshot(self) -> tuple[Any, ...]:
        """The recorded steps, for :meth:`restore` (copies; later :meth:`add` calls do not change it)."""
        return (list(self._sizes), dict(self._vocab), self._incidence.copy(), set(self._ngrams), set(self._exprs))

    def restore(self, state: tuple[Any, ...]) -> None:
        """Go back to a :meth:`snapshot` (the state is copied again, so it can be restored twice)."""
        sizes, vocab, incidence, ngrams, exprs = state
        self._sizes, self._vocab, self._incidence = list(sizes), dict(vocab), incidence.copy()
        self._ngrams, self._exprs = set(ngrams), set(exprs)

    def add(self, text: str) -> None:
        """Record a finished step."""
        all_words = word_set(text)
        words = all_words if len(all_words) >= self.min_words else frozenset()
        step = len(self._sizes)
        self._sizes.append(len(all_words))
        for w in words:
            if w not in self._vocab:
                self._vocab[w] = len(self._vocab)
        rows, cols = self._incidence.shape
        if len(self._vocab) > rows or step >= cols:
            grown = np.zeros((max(rows, 2 * len(self._vocab)), max(cols, 2 * (step + 1))), dtype=np.uint8)
            grown[:rows, :cols] = self._incidence
            self._incidence = grown
        if words:
            self._incidence[[self._vocab[w] for w in words], step] = 1
        self._ngrams |= char_ngrams(text, self.ngram)
        self._exprs.update(arithmetic_expressions(text))
