"""Failure-mode scorer: overconfidence, uncertainty and heavy revalidation per step, and a routing score.

Each input signal ``x`` is squashed by a logistic ``s(x) = 1 / (1 + exp(-(x - centre) / scale))``. A
negative ``scale`` flips the direction (the component rises as ``x`` falls). A mode score is the weighted
mean of its components' squashes, so it lies in [0, 1] and is monotone in every input; components whose
input is unavailable (e.g. rank of a step too short for a window) are left out of the mean, and a mode
with no available component scores 0. Defaults encode hypotheses, not measurements: the fitting layer (``analyze``)
measures each signal's direction, and any centre, scale or weight can be changed here.

* uncertainty: high mean and max entropy, low top-1 probability, high normalised effective rank,
  uncertainty words;
* overconfidence: collapsed (low) normalised effective rank, low mean entropy, high minimum top-1 margin,
  confident words;
* revalidation: revalidation words, repetition of earlier steps, recomputed arithmetic, low subspace
  novelty (the step adds few directions to the previous step's hidden-state span).

The routing score is ``max_m(w_m * s_m)`` (``route_rule="max"``) or ``1 - prod_m(1 - w_m * s_m)``
(``"noisy_or"``) over the three mode scores and a streak term ``s((streak - streak_centre) / streak_scale)``,
where *streak* counts consecutive steps whose revalidation score reached ``revalidation_threshold``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TypedDict

from ..config import bounded, validate
from ..errors import ConfigError


class _Bounds(TypedDict):
    """The ``lo``/``hi`` keywords of :func:`bounded`, typed so that ``**_W`` is checked like spelled-out ones."""

    lo: float
    hi: float


_W: _Bounds = {"lo": 0.0, "hi": 100.0}
_C: _Bounds = {"lo": -1e6, "hi": 1e6}
_S: _Bounds = {"lo": -1e6, "hi": 1e6}


@dataclass(frozen=True)
class FailureConfig:
    """Centres, scales (negative = falling direction) and weights of the failure-mode scorer."""

    # uncertainty
    unc_entropy_mean_centre: float = bounded(0.6, **_C, help="nats; entropy above it raises uncertainty")
    unc_entropy_mean_scale: float = bounded(0.2, **_S, help="nats")
    unc_entropy_mean_weight: float = bounded(1.0, **_W)
    unc_entropy_max_centre: float = bounded(2.5, **_C, help="nats")
    unc_entropy_max_scale: float = bounded(0.75, **_S, help="nats")
    unc_entropy_max_weight: float = bounded(1.0, **_W)
    unc_top1_centre: float = bounded(0.75, **_C, help="mean top-1 probability below it raises uncertainty")
    unc_top1_scale: float = bounded(-0.08, **_S, help="negative: falling top-1 raises uncertainty")
    unc_top1_weight: float = bounded(0.5, **_W)
    unc_rank_centre: float = bounded(0.6, **_C, help="normalised effective rank (primary layer, window)")
    unc_rank_scale: float = bounded(0.1, **_S)
    unc_rank_weight: float = bounded(1.0, **_W)
    unc_kw_centre: float = bounded(0.5, **_C, help="uncertainty-word count")
    unc_kw_scale: float = bounded(0.5, **_S)
    unc_kw_weight: float = bounded(1.0, **_W)
    # overconfidence
    over_rank_centre: float = bounded(0.35, **_C, help="normalised effective rank below it = collapse")
    over_rank_scale: float = bounded(-0.08, **_S, help="negative: falling rank raises overconfidence")
    over_rank_weight: float = bounded(1.0, **_W)
    over_entropy_centre: float = bounded(0.15, **_C, help="nats; mean entropy below it")
    over_entropy_scale: float = bounded(-0.08, **_S)
    over_entropy_weight: float = bounded(1.0, **_W)
    over_margin_centre: float = bounded(0.5, **_C, help="minimum top1-top2 margin above it")
    over_margin_scale: float = bounded(0.15, **_S)
    over_margin_weight: float = bounded(0.5, **_W)
    over_kw_centre: float = bounded(0.5, **_C, help="confident-word count")
    over_kw_scale: float = bounded(0.5, **_S)
    over_kw_weight: float = bounded(1.0, **_W)
    # revalidation
    reval_kw_centre: float = bounded(0.5, **_C, help="revalidation-word count")
    reval_kw_scale: float = bounded(0.5, **_S)
    reval_kw_weight: float = bounded(1.5, **_W)
    reval_rep_centre: float = bounded(0.5, **_C, help="max(rep.max_jaccard, rep.ngram_containment)")
    reval_rep_scale: float = bounded(0.1, **_S)
    reval_rep_weight: float = bounded(1.0, **_W)
    reval_arith_centre: float = bounded(0.5, **_C, help="recomputed arithmetic expressions")
    reval_arith_scale: float = bounded(0.5, **_S)
    reval_arith_weight: float = bounded(0.5, **_W)
    reval_novelty_centre: float = bounded(0.3, **_C, help="subspace novelty below it (nothing new)")
    reval_novelty_scale: float = bounded(-0.1, **_S)
    reval_novelty_weight: float = bounded(0.5, **_W)
    # combination
    route_rule: str = bounded("max", choices=("max", "noisy_or"), help="how mode scores combine")
    route_weight_overconfidence: float = bounded(1.0, lo=0.0, hi=1.0)
    route_weight_uncertainty: float = bounded(1.0, lo=0.0, hi=1.0)
    route_weight_revalidation: float = bounded(1.0, lo=0.0, hi=1.0)
    route_weight_streak: float = bounded(1.0, lo=0.0, hi=1.0)
    revalidation_threshold: float = bounded(0.5, lo=0.0, hi=1.0, help="a step at/above it extends the streak")
    streak_centre: float = bounded(2.5, lo=0.0, hi=1e6, help="consecutive revalidation steps")
    streak_scale: float = bounded(0.5, lo=1e-6, hi=1e6)

    def __post_init__(self) -> None:
        validate(self)
        for f in dataclasses.fields(self):
            if f.name.endswith("_scale") and getattr(self, f.name) == 0:
                raise ConfigError(f"FailureConfig.{f.name} is 0; use a non-zero scale (negative flips direction)")


@dataclass(frozen=True)
class FailureInputs:
    """What the scorer reads for one step. ``None`` marks an unavailable input (left out of the means).

    Units: entropies in nats; probabilities and ranks in [0, 1]; keyword and expression counts >= 0.
    """

    entropy_mean: float | None = None
    entropy_max: float | None = None
    top1_mean: float | None = None
    margin_min: float | None = None
    rank_eff_norm: float | None = None
    novelty: float | None = None
    kw_revalidation: float = 0.0
    kw_uncertainty: float = 0.0
    kw_confident: float = 0.0
    repetition: float = 0.0
    arith_repeats: float = 0.0


def squash(x: float, centre: float, scale: float) -> float:
    """Logistic ``1 / (1 + exp(-(x - centre) / scale))`` in [0, 1], overflow-safe; NaN ``x`` gives 0.5."""
    if x != x:  # NaN
        return 0.5
    z = (x - centre) / scale
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-min(z, 700.0)))
    e = math.exp(max(z, -700.0))
    return e / (1.0 + e)


def _mode(parts: list[tuple[float | None, float, float, float]]) -> float:
    num = den = 0.0
    for x, centre, scale, weight in parts:
        if x is None or weight <= 0:
            continue
        num += weight * squash(float(x), centre, scale)
        den += weight
    return num / den if den > 0 else 0.0


def mode_scores(inp: FailureInputs, cfg: FailureConfig) -> dict[str, float]:
    """The three mode scores in [0, 1]: ``{"overconfidence", "uncertainty", "revalidation"}``."""
    c = cfg
    unc = _mode([
        (inp.entropy_mean, c.unc_entropy_mean_centre, c.unc_entropy_mean_scale, c.unc_entropy_mean_weight),
        (inp.entropy_max, c.unc_entropy_max_centre, c.unc_entropy_max_scale, c.unc_entropy_max_weight),
        (inp.top1_mean, c.unc_top1_centre, c.unc_top1_scale, c.unc_top1_weight),
        (inp.rank_eff_norm, c.unc_rank_centre, c.unc_rank_scale, c.unc_rank_weight),
        (inp.kw_uncertainty, c.unc_kw_centre, c.unc_kw_scale, c.unc_kw_weight),
    ])
    over = _mode([
        (inp.rank_eff_norm, c.over_rank_centre, c.over_rank_scale, c.over_rank_weight),
        (inp.entropy_mean, c.over_entropy_centre, c.over_entropy_scale, c.over_entropy_weight),
        (inp.margin_min, c.over_margin_centre, c.over_margin_scale, c.over_margin_weight),
        (inp.kw_confident, c.over_kw_centre, c.over_kw_scale, c.over_kw_weight),
    ])
    reval = _mode([
        (inp.kw_revalidation, c.reval_kw_centre, c.reval_kw_scale, c.reval_kw_weight),
        (inp.repetition, c.reval_rep_centre, c.reval_rep_scale, c.reval_rep_weight),
        (inp.arith_repeats, c.reval_arith_centre, c.reval_arith_scale, c.reval_arith_weight),
        (inp.novelty, c.reval_novelty_centre, c.reval_novelty_scale, c.reval_novelty_weight),
    ])
    return {"overconfidence": over, "uncertainty": unc, "revalidation": reval}


def route_score(scores: dict[str, float], streak: int, cfg: FailureConfig) -> float:
    """Combine mode scores and the revalidation streak into one routing score in [0, 1]."""
    terms = [
        cfg.route_weight_overconfidence * scores["overconfidence"],
        cfg.route_weight_uncertainty * scores["uncertainty"],
        cfg.route_weight_revalidation * scores["revalidation"],
        cfg.route_weight_streak * squash(float(streak), cfg.streak_centre, cfg.streak_scale) if streak > 0 else 0.0,
    ]
    if cfg.route_rule == "max":
        return float(min(1.0, max(0.0, max(terms))))
    prod = 1.0
    for t in terms:
        prod *= 1.0 - min(1.0, max(0.0, t))
    return float(1.0 - prod)


class FailureScorer:
    """Stateful per-trace scorer: mode scores, routing score and the consecutive-revalidation streak."""

    def __init__(self, config: FailureConfig | None = None) -> None:
        self.config = config or FailureConfig()
        self.streak = 0

    def reset(self) -> None:
        """Start a new trace (streak back to 0)."""
        self.streak = 0

    def score(self, inp: FailureInputs, *, commit: bool = True) -> dict[str, float]:
        """Score one step. Keys: ``overconfidence``, ``uncertainty``, ``revalidation``, ``route``,
        ``revalidation_streak``. With ``commit=False`` (partial steps) the streak is read but not advanced:
        the streak reported is the one the step would reach if it ended now."""
        scores = mode_scores(inp, self.config)
        streak = self.streak + 1 if scores["revalidation"] >= self.config.revalidation_threshold else 0
        if commit:
            self.streak = streak
        out = dict(scores)
        out["route"] = route_score(scores, streak, self.config)
        out["revalidation_streak"] = float(streak)
        return out
