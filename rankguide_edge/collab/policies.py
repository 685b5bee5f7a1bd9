"""Routing policies: each turns what is known about a step into a score in [0, 1]; a threshold decides.

A policy sees a :class:`StepView` at one of three decision points:

* ``post``  — the SRM finished drafting the step; ``signals`` are the step's full signals;
* ``early`` — the SRM has drafted the step's first tokens; ``signals`` are ``compute_partial`` signals;
* ``pre``   — at a step boundary, before the SRM drafts; ``signals`` are the *previous* step's signals
  (empty for the first step).

Routing happens when ``score >= threshold``. Policies are created through the registry
(:func:`make_policy`), ours included, so a user's policy is a peer of the built-in ones.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import ConfigError
from ..signals.text import TRIGGER_WORDS

DECISION_POINTS = ("post", "early", "pre")


@dataclass
class StepView:
    """What a policy may look at. ``text`` is the draft so far ("" at ``pre``); ``judge`` rates a drafted step
    0-9 with the LRM (None when no LRM is available)."""

    decide: str
    step_index: int
    text: str
    n_tokens: int
    signals: Mapping[str, float]
    prefix: str = ""
    judge: Callable[[str], int | None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    problem: str = ""  # the question being solved (the last user message)
    #: the LRM's teacher-forced check of a drafted step: its ``lrm.*`` disagreement features (see
    #: :mod:`.disagreement`), or None when it cannot run; None when no policy of this run reads it
    check: Callable[[str], Mapping[str, float] | None] | None = None


@runtime_checkable
class Policy(Protocol):
    name: str

    @property
    def points(self) -> tuple[str, ...]:
        """Decision points at which the policy's score means something (read only: a class attribute will do)."""
        ...

    def score(self, view: StepView) -> float: ...

    def reset(self) -> None: ...


def _sig(view: StepView, key: str, default: float = 0.0) -> float:
    v = view.signals.get(key)
    return float(v) if v is not None and math.isfinite(float(v)) else default


def _squash(x: float, centre: float, scale: float) -> float:
    z = (x - centre) / scale
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


class RankGuidePolicy:
    """The failure-mode routing score of the signals layer (``fail.route``), or, with ``logistic`` (weights
    fitted by ``calibrate --fit logistic``, see :mod:`.router`), that model's probability of failure."""

    name = "rankguide"
    points = DECISION_POINTS

    def __init__(self, logistic: Any = None) -> None:
        self.logistic = logistic

    def score(self, view: StepView) -> float:
        if not view.signals:  # nothing measured yet ("pre": first step, or right after an LRM step)
            return 0.0
        if self.logistic is not None:
            return self.logistic.score(view.signals)
        return min(1.0, max(0.0, _sig(view, "fail.route")))

    def reset(self) -> None:
        pass


class EntropyPolicy:
    """Token entropy alone: a logistic squash of the step's maximum (or mean) entropy in nats."""

    name = "entropy"
    points = DECISION_POINTS

    def __init__(self, key: str = "text.entropy_max", centre: float = 2.0, scale: float = 0.5) -> None:
        self.key, self.centre, self.scale = key, centre, scale

    def score(self, view: StepView) -> float:
        if self.key not in view.signals:  # e.g. the first step at "pre"
            return 0.0
        return _squash(_sig(view, self.key), self.centre, self.scale)

    def reset(self) -> None:
        pass


class KeywordPolicy:
    """Speculative-Thinking style: 1 when the step opens with a trigger word, else 0."""

    name = "keywords"
    points = ("post", "early")

    def __init__(self, words: tuple[str, ...] = TRIGGER_WORDS, head_words: int = 6) -> None:
        self.head_words = head_words
        alts = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
        self._re = re.compile(rf"\b(?:{alts})\b", re.IGNORECASE)

    def score(self, view: StepView) -> float:
        head = " ".join(view.text.strip().split()[: self.head_words])
        return 1.0 if self._re.search(head) else 0.0

    def reset(self) -> None:
        pass


class JudgePolicy:
    """SpecReason style: the LRM rates the drafted step 0-9; score = 1 - rating/9 (a bad rating routes).

    Routing at ``score >= threshold`` equals accepting the step when ``rating >= 9 * (1 - threshold)``.
    Without an LRM (or when it fails to rate) the score is 0: keep the SRM's step.
    """

    name = "judge"
    points = ("post",)

    def score(self, view: StepView) -> float:
        if view.judge is None or not view.text.strip():
            return 0.0
        rating = view.judge(view.text)
        if rating is None:
            return 0.0
        return 1.0 - min(9, max(0, int(rating))) / 9.0

    def reset(self) -> None:
        pass


class VerifyPolicy:
    """The LRM checks each SRM draft with one teacher-forced prefill (no generation) and the step is rewritten
    when it disagrees: the score is one of the ``lrm.*`` features of :mod:`.disagreement` mapped into [0, 1]
    (a log-probability feature ``x`` scores ``1 - exp(x)``; the default, ``lrm.logprob_min``, is then one minus
    the LRM's probability of the step's least likely token: on 200 labelled GSM8K train problems it ranked the
    steps where routing helps best of the ``lrm.*`` features, docs/BENCHMARKS.md). Without a local LRM the
    score is 0."""

    name = "verify"
    points = ("post",)
    uses_lrm_check = True

    def __init__(self, key: str = "lrm.logprob_min") -> None:
        from .disagreement import FEATURES

        if key not in FEATURES:
            raise ConfigError(f"verify cannot score {key!r}: use one of {', '.join(FEATURES)}")
        self.key = key

    def score(self, view: StepView) -> float:
        if view.check is None or not view.text.strip():
            return 0.0
        feats = view.check(view.text)
        if not feats or self.key not in feats:
            return 0.0
        x = float(feats[self.key])
        if "logprob" in self.key:
            x = 1.0 - math.exp(min(0.0, x))
        elif self.key == "lrm.first_disagree":
            x = 1.0 - x
        return min(1.0, max(0.0, x))

    def reset(self) -> None:
        pass


class RandomPolicy:
    """Route with probability ``p`` (score 1 or 0); the matched-rate control of the benchmark. Each solve draws
    from its own stream seeded by ``(seed, crc32(problem))``: reproducible per problem whatever the order of
    solves (a resumed benchmark), and not the same step positions on every problem."""

    name = "random"
    points = DECISION_POINTS

    def __init__(self, p: float = 0.2, seed: int = 0) -> None:
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"random policy p={p} must lie in [0, 1]")
        self.p, self.seed = p, seed
        self._rng: np.random.Generator | None = None

    def score(self, view: StepView) -> float:
        if self._rng is None:  # first decision of a solve: a stream of its own per (seed, problem)
            self._rng = np.random.default_rng([self.seed, zlib.crc32(view.problem.encode("utf-8"))])
        return 1.0 if self._rng.random() < self.p else 0.0

    def reset(self) -> None:
        self._rng = None


class ConstantPolicy:
    """``srm`` (never route, score 0) or ``lrm`` (the LRM writes every step, score 1)."""

    points = DECISION_POINTS

    def __init__(self, name: str, value: float) -> None:
        self.name, self._value = name, value

    def score(self, view: StepView) -> float:  # noqa: ARG002
        return self._value

    def reset(self) -> None:
        pass


_REGISTRY: dict[str, Callable[..., Policy]] = {}


def register_policy(name: str, factory: Callable[..., Policy]) -> None:
    """Make ``factory(**options)`` available as ``make_policy(name, **options)``."""
    _REGISTRY[name] = factory


def available_policies() -> list[str]:
    return sorted(_REGISTRY)


def decision_points(name: str) -> tuple[str, ...]:
    """The decision points at which policy ``name`` can decide (ConfigError for an unknown name)."""
    factory = _REGISTRY.get(name)
    points = getattr(factory, "points", None)  # a policy class says so without being built
    return tuple(points) if points is not None else tuple(make_policy(name).points)


def make_policy(name: str, **options: Any) -> Policy:
    factory = _REGISTRY.get(name)
    if factory is None:
        raise ConfigError(f"unknown policy {name!r}; choose one of {', '.join(available_policies())}")
    try:
        return factory(**options)
    except TypeError as exc:
        raise ConfigError(f"bad options for policy {name!r}: {exc}") from None


register_policy("rankguide", RankGuidePolicy)
register_policy("entropy", EntropyPolicy)
register_policy("keywords", KeywordPolicy)
register_policy("judge", JudgePolicy)
register_policy("random", RandomPolicy)
register_policy("verify", VerifyPolicy)
register_policy("srm", lambda: ConstantPolicy("srm", 0.0))
register_policy("lrm", lambda: ConstantPolicy("lrm", 1.0))
