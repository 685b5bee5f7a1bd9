"""``calibrate``: choose routing thresholds (and optionally logistic weights) and write a router config.

From traces (``rankguide-edge trace`` output), for a target LRM share S of steps:

* ``post`` routes a finished SRM step when its score >= t: t_post is the (1 - S) quantile of the step scores;
* ``pre`` scores the previous SRM step, so the same distribution (over all steps but the last) gives t_pre;
* ``early`` stops a draft at its first checkpoint whose partial score >= t, i.e. when the step's *largest*
  checkpoint score >= t; those maxima are higher than finished-step scores, so one shared threshold over-routes
  at early. t_early is the (1 - S) quantile of the per-step maxima, which replaying the traces by teacher
  forcing provides (:mod:`.replay`; needs the SRM, ~1 s per problem).

Optionally (``fit="logistic"``) an L2-regularised logistic regression of "the trace ends wrong" on a fixed set
of step signals (every step of a trace gets its trace's label: a weak label, as no step labels exist) replaces
the hand-set ``fail.route`` score; thresholds are then quantiles of the fitted score.

From a bench directory (``bench run`` results with several thresholds per policy), the threshold of each
decision point is the most accurate one whose mean latency is at most R times the LRM's (``max_latency_ratio``)
or whose measured LRM step share is closest to S.

Thresholds are quantiles of the shares the traces show, not a promise: routing changes the text that follows,
so a live run's share differs; ``bench report`` measures it.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import stats
from ..collab.policies import DECISION_POINTS, StepView, make_policy
from ..collab.reasoner import ReasonerConfig
from ..collab.router import Logistic, Router, load_router
from ..config import bounded, same_as, validate
from ..errors import ConfigError, InvalidInputError
from ..records import load_record_file
from ..tasks.datasets import DatasetConfig


def logistic_features(last_layer: int) -> tuple[str, ...]:
    """Signals the logistic router uses (``last_layer``: the traces' deepest tapped layer). Whole-step and
    Tucker signals do not exist at early checkpoints; there they count as their mean."""
    return ("text.entropy_max", "text.entropy_mean", "text.top1_mean", "text.margin_min", "text.n_tokens",
            "fail.uncertainty", "fail.revalidation", "fail.overconfidence", "rep.max_jaccard",
            f"rank.eff_norm.L{last_layer}.win", f"rank.eff_norm.L{last_layer}.step", "tucker.eff_norm.mode1")


@dataclass(frozen=True)
class CalibrateConfig:
    policy: str = bounded("rankguide", choices=("rankguide", "entropy", "keywords", "judge"),
                          help="policy to calibrate")
    target_lrm_share: float | None = bounded(None, lo=0.0, hi=1.0, help="share of steps the LRM should write "
                                             "(thresholds are quantiles of the step scores)")
    max_latency_ratio: float | None = bounded(None, lo=0.01, hi=100.0, metavar="R",
                                              help="bench dir only: the most accurate threshold whose mean latency "
                                                   "is at most R x the LRM's")
    fit: str = bounded("quantile", choices=("quantile", "logistic"),
                       help="thresholds only, or also fit logistic weights of step signals to trace outcomes")
    early: bool = bounded(True, help="replay the traces with the SRM to calibrate the early decision point "
                                     "(without: early gets the post threshold)")
    early_tokens: int = same_as(ReasonerConfig, "early_tokens")
    early_every: int = same_as(ReasonerConfig, "early_every")
    l2: float = bounded(1.0, lo=0.0, hi=1e6, help="logistic: L2 penalty on standardised weights")
    holdout: float = bounded(0.0, lo=0.0, hi=0.9, help="keep this share of the traces (the last ones) out of the "
                                                       "fit and report held-out AUROCs")
    profile: str = bounded("", metavar="NAME|FILE", unset="wall seconds",
                           help="bench dir only: price latency for max_latency_ratio under this hardware profile "
                                "(measured, laptop+gpu-server, gpu-large-ratio or a TOML/JSON file; the GPU-size "
                                "profiles such as rtx4090 price runs in `bench report`)")
    lrm_first: int = same_as(ReasonerConfig, "lrm_first", default=0, help="written to the router: the LRM writes "
                             "the first N steps (the plan) before the thresholds decide (solve, chat, serve use it "
                             "unless --lrm-first is given there); a bench dir: the runs with that plan are calibrated")
    router_file: str = bounded("", path="file", unset="every run",
                               help="bench dir: calibrate only the runs that used this router file (methods "
                                    "rankguide~NAME of `bench run --router-file NAME=FILE`, e.g. a learned router); "
                                    "its weights go into the router written")
    limit: int | None = same_as(DatasetConfig, "limit", help="traces: use only the first N")

    def __post_init__(self) -> None:
        validate(self)
        if (self.target_lrm_share is None) == (self.max_latency_ratio is None):
            raise ConfigError("give exactly one of --target-lrm-share or --max-latency-ratio")


def upper_quantile_threshold(scores: Iterable[float], share: float) -> float:
    """The threshold t such that about ``share`` of ``scores`` are >= t: the ceil(share*n)-th largest score, or,
    when ties at that score would route far more, the next larger score if its share is closer to ``share``
    (binary scores such as keywords': 10 % ones and a 25 % target give t = 1, not t = 0 = route all;
    :func:`rankguide_edge.stats.threshold_for_share`). 1.0 when ``share`` is 0 (route nothing scored below 1).
    Raises InvalidInputError on no scores or all-equal ones."""
    s = np.asarray([x for x in scores if x is not None and math.isfinite(x)], dtype=np.float64)
    if s.size == 0:
        raise InvalidInputError("no step scores to calibrate on: trace more problems")
    if math.ceil(share * s.size) <= 0:
        return 1.0
    if s.min() == s.max():
        raise InvalidInputError(f"every step scores {s[0]:.4g}: this policy does not rank these steps, so no "
                                "threshold routes a share of them; calibrate another policy")
    t = stats.threshold_for_share(s, share, nearest=True)
    assert t is not None  # s holds finite scores
    return float(min(1.0, max(0.0, t)))


def fit_logistic(x: np.ndarray, y: np.ndarray, features: tuple[str, ...], l2: float = 1.0) -> Logistic:
    """L2-regularised logistic regression (:func:`rankguide_edge.stats.fit_logistic`) on the columns of ``x``
    (float ``(n, d)``, NaN = missing) standardised by :func:`rankguide_edge.stats.standardize` (the column
    mean imputed), against ``y`` (``(n,)`` 0/1); the router stores that mean and scale."""
    z = stats.standardize(x)
    w, b = stats.fit_logistic(z.fit, np.asarray(y) > 0.5, l2)
    return Logistic(features, tuple(map(float, z.mean)), tuple(map(float, z.sd)), tuple(map(float, w)), float(b))


def feature_matrix(rows: Sequence[Mapping[str, float]], features: Sequence[str]) -> np.ndarray:
    """float ``(len(rows), len(features))`` of the named signals per row; NaN where a row lacks one or it is
    not finite."""
    out = np.full((len(rows), len(features)), np.nan)
    for i, r in enumerate(rows):
        for j, f in enumerate(features):
            v = r.get(f)
            if v is not None and math.isfinite(float(v)):
                out[i, j] = float(v)
    return out


def calibrate_traces(records: list[dict[str, Any]], cfg: CalibrateConfig, *,
                     replay: Callable[[list[dict[str, Any]]], Iterable[tuple[dict[str, Any], list[Any]]]] | None = None,
                     source: str = "", command: str = "") -> Router:
    """Router thresholds (and weights) from trace records. ``replay`` (see :func:`.replay.replay_traces`)
    provides partial-draft signals for ``early``; without it ``early`` gets the ``post`` threshold."""
    assert cfg.target_lrm_share is not None
    share = cfg.target_lrm_share
    recs = [r for r in records if r.get("steps") and not r.get("error")]
    if not recs:
        raise InvalidInputError("no usable trace records (all empty or errored): run `rankguide-edge trace` first")
    held: list[dict[str, Any]] = []
    if cfg.holdout > 0:
        n_test = int(round(len(recs) * cfg.holdout))
        if n_test < 2 or n_test > len(recs) - 2:
            raise InvalidInputError(f"--holdout {cfg.holdout} leaves too few traces on one side of "
                                    f"{len(recs)}: trace more problems or change it")
        recs, held = recs[:-n_test], recs[-n_test:]
    if cfg.policy == "judge":
        raise InvalidInputError("the judge policy needs the LRM to score steps: calibrate it from a bench dir")
    logistic = None
    if cfg.fit == "logistic":
        if cfg.policy != "rankguide":
            raise InvalidInputError("--fit logistic replaces the rankguide score: use --policy rankguide")
        rows = [st.get("signals") or {} for r in recs for st in r["steps"]]
        y = np.asarray([0.0 if r.get("correct") else 1.0 for r in recs for _ in r["steps"]])
        if len(set(y.tolist())) < 2:
            raise InvalidInputError("every trace is right (or every one wrong): the logistic fit needs both")
        layers = recs[0].get("layers") or [0]
        feats = logistic_features(int(max(layers)))
        logistic = fit_logistic(feature_matrix(rows, feats), y, feats, cfg.l2)
    policy = make_policy(cfg.policy)

    def score(point: str, idx: int, text: str, n: int, sig: dict[str, float], prefix: str) -> float:
        if logistic is not None:
            return logistic.score(sig)
        return policy.score(StepView(point, idx, text, n, sig, prefix))

    post: list[float] = []
    pre: list[float] = []
    for r in recs:
        policy.reset()
        prefix = ""
        steps = r["steps"]
        for i, st in enumerate(steps):
            sig = {k: v for k, v in (st.get("signals") or {}).items() if v is not None}
            s = score("post", i, st.get("text", ""), int(st.get("n_tokens", 0)), sig, prefix)
            post.append(s)
            if i + 1 < len(steps):
                pre.append(score("pre", i + 1, "", 0, sig, prefix + st.get("text", "")))
            prefix += st.get("text", "")
    thresholds = {"post": upper_quantile_threshold(post, share),
                  "pre": upper_quantile_threshold(pre or post, share)}
    meta: dict[str, Any] = {}
    if cfg.early and replay is not None and "early" in policy.points:
        early: list[float] = []
        for _rec, steps in replay(recs):
            policy.reset()
            for st in steps:
                texts = st.partial_text or [""] * len(st.partial)  # text-reading policies (keywords) need it
                vals = [score("early", st.index, t, n, p, "")
                        for n, p, t in zip(st.checkpoints, st.partial, texts, strict=True)]
                early.append(max(vals) if vals else 0.0)  # a step too short to check never stops early
        thresholds["early"] = upper_quantile_threshold(early, share)
        meta["early_steps"] = len(early)
    else:
        thresholds["early"] = thresholds["post"]
        meta["early_note"] = "not replayed: early uses the post threshold"
    if held:
        meta["holdout"] = holdout_report(held, lambda st: score("post", int(st.get("index", 0)), st.get("text", ""),
                                                                int(st.get("n_tokens", 0)),
                                                                {k: v for k, v in (st.get("signals") or {}).items()
                                                                 if v is not None}, ""))
    meta.update({
        "target_lrm_share": share, "fit": cfg.fit,
        "fitted_on": {"source": source, "problems": len(recs), "steps": len(post),
                      "accuracy": round(sum(bool(r.get("correct")) for r in recs) / len(recs), 4),
                      "model": recs[0].get("model"),
                      "date": _dt.date.today().isoformat()},
        "command": command,
    })
    return Router(policy=cfg.policy, thresholds={k: round(v, 6) for k, v in thresholds.items()},
                  logistic=logistic, lrm_first=cfg.lrm_first, meta=meta)


def holdout_report(records: list[dict[str, Any]], router_score: Callable[[dict[str, Any]], float]
                   ) -> dict[str, Any]:
    """Trace-level AUROC for "the trace ends wrong" on held-out ``records``: the router's step score, the
    hand-set ``fail.route`` and ``text.entropy_max``, each aggregated over steps by mean and max."""
    wrong = np.asarray([not r.get("correct") for r in records])
    out: dict[str, Any] = {"n": len(records), "wrong": int(wrong.sum())}

    def sig(key: str) -> Callable[[dict[str, Any]], float]:
        return lambda st: float((st.get("signals") or {}).get(key) or 0.0)

    for name, fn in (("router", router_score), ("fail.route", sig("fail.route")),
                     ("text.entropy_max", sig("text.entropy_max"))):
        per = [[fn(st) for st in r["steps"]] for r in records]
        for agg, f in (("mean", np.mean), ("max", np.max)):
            val = stats.auroc(np.asarray([f(v) for v in per]), wrong)
            out[f"auroc.{name}.{agg}"] = None if val is None else round(float(val), 4)
    return out


def calibrate_bench(results: list[dict[str, Any]], cfg: CalibrateConfig, *, source: str = "",
                    command: str = "") -> Router:
    """Thresholds per decision point from a bench run's per-problem results (several thresholds per policy).

    Steered records (``METHOD+NAME``) are left out: a router's thresholds are for the unsteered SRM. Latency is
    each record's wall seconds, or with ``cfg.profile`` its price under that hardware profile (the ``measured``
    rates fitted on all ``results``, see :mod:`.latency`).
    """
    seconds: Callable[[dict[str, Any]], float] = lambda r: float(r.get("seconds", 0.0))  # noqa: E731
    if cfg.profile:
        from ..bench.latency import fit_measured, load_profile, record_seconds, resolve

        priced = resolve(load_profile(cfg.profile), fit_measured(results))
        seconds = lambda r: record_seconds(r, priced)  # noqa: E731
    groups: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    lrm_secs: dict[str, float] = {}  # problem id -> the LRM alone's seconds
    wanted_router = os.path.abspath(cfg.router_file) if cfg.router_file else None
    for r in results:
        if r.get("method") == "lrm":
            lrm_secs[str(r.get("id"))] = seconds(r)
        if r.get("steer") or int(r.get("lrm_first") or 0) != cfg.lrm_first:  # thresholds are for one variant
            continue
        if wanted_router and (r.get("router") or {}).get("file") != wanted_router:
            continue
        if r.get("policy") == cfg.policy and r.get("threshold") is not None:
            groups[(r.get("decide", "post"), float(r["threshold"]))].append(r)
    if not groups:
        which = f" with router {cfg.router_file}" if cfg.router_file else ""
        plan = f"^{cfg.lrm_first}" if cfg.lrm_first else ""
        raise InvalidInputError(f"the bench results hold no {cfg.policy}{plan} runs{which}: bench run with --sweep "
                                f"{cfg.policy}:0.2,0.4,...{plan} (and --lrm-first {cfg.lrm_first} here)")
    if cfg.max_latency_ratio is not None and not lrm_secs:
        raise InvalidInputError("--max-latency-ratio needs the lrm method in the same bench run")

    def ratio(rs: list[dict[str, Any]]) -> float | None:
        """Mean seconds over the LRM alone's, on the problems both ran (a sweep may cover fewer problems)."""
        both = [r for r in rs if str(r.get("id")) in lrm_secs]
        den = sum(lrm_secs[str(r.get("id"))] for r in both)
        return sum(seconds(r) for r in both) / den if both and den > 0 else None

    chosen: dict[str, float] = {}
    table: list[dict[str, Any]] = []
    for decide in DECISION_POINTS:
        cands: list[dict[str, Any]] = []
        for (d, thr), rs in sorted(groups.items()):
            if d != decide:
                continue
            acc = sum(bool(r.get("correct")) for r in rs) / len(rs)
            secs = float(np.mean([seconds(r) for r in rs]))
            steps = sum(int(r.get("n_steps", 0)) for r in rs)
            lrm_share = sum(int(r.get("lrm_steps", 0)) for r in rs) / steps if steps else 0.0
            row: dict[str, Any] = {"decide": d, "threshold": thr, "n": len(rs), "accuracy": acc, "seconds": secs,
                   "lrm_share": lrm_share, "latency_ratio": ratio(rs)}
            table.append(row)
            cands.append(row)
        if not cands:
            continue
        if cfg.max_latency_ratio is not None:
            ok = [c for c in cands if c["latency_ratio"] is not None and c["latency_ratio"] <= cfg.max_latency_ratio]
            pick = (max(ok, key=lambda c: (c["accuracy"], c["threshold"])) if ok
                    else max(cands, key=lambda c: c["threshold"]))
        else:
            assert cfg.target_lrm_share is not None
            pick = min(cands, key=lambda c: (abs(c["lrm_share"] - cfg.target_lrm_share), -c["accuracy"]))
        chosen[decide] = pick["threshold"]
    logistic = _bench_logistic([r for rs in groups.values() for r in rs])
    if "post" not in chosen:
        chosen["post"] = next(iter(chosen.values()))
    for d in ("early", "pre"):
        chosen.setdefault(d, chosen["post"])
    meta = {"target_lrm_share": cfg.target_lrm_share, "max_latency_ratio": cfg.max_latency_ratio, "fit": "bench",
            "profile": cfg.profile or "wall seconds",
            "fitted_on": {"source": source, "results": len(results), "date": _dt.date.today().isoformat()},
            "candidates": table, "command": command}
    return Router(policy=cfg.policy, thresholds=chosen, logistic=logistic, lrm_first=cfg.lrm_first, meta=meta)


def _bench_logistic(records: list[dict[str, Any]]) -> Logistic | None:
    """The logistic weights the records' thresholds were applied to: thresholds chosen on a logistic router's
    score are meaningless on ``fail.route``, so the weights travel with them. Records from several routers,
    or from a logistic router file that is gone, cannot be calibrated together."""
    files = {(r.get("router") or {}).get("file", "default") for r in records}
    logistic = {bool((r.get("router") or {}).get("logistic")) for r in records}
    if len(files) > 1:
        raise InvalidInputError(f"the runs used different routers ({', '.join(sorted(files))}): calibrate from "
                                "a bench run with one --router")
    if logistic != {True}:
        return None
    (path,) = files
    try:
        router = load_router("" if path == "default" else path)
    except ConfigError:
        raise InvalidInputError(f"the runs scored steps with the logistic router {path}, which is gone: restore "
                                "it to calibrate from this run") from None
    return router.logistic


def read_trace_records(path: str) -> list[dict[str, Any]]:
    """Trace records of a JSONL file written by ``trace`` (:func:`rankguide_edge.records.load_record_file`:
    blank lines and a torn last line skipped). A line that is not JSON or not a trace record is an error naming
    its number; a bench results file is refused with the hint to pass its folder."""
    return load_record_file(path, "trace").records
