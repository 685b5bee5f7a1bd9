"""Which step signals predict that the small model ends wrong? An honest, length-controlled analysis.

:func:`analyze` reads the JSONL written by ``rankguide-edge trace`` and, for every signal key of
docs/SIGNALS.md, measures the trace-level AUROC for "the trace ends wrong" of three aggregations over the
trace's steps (max, mean, last value), plus, for the ``fail.*`` scores, the relative position of the first
step whose score exceeds a threshold. Every AUROC is raw (below 0.5 means *low* values go with failure)
and comes with a seeded, stratified bootstrap 95% CI. The bootstrap resamples are shared by every
feature, so differences between features (combined score vs entropy) are paired.

Trace length alone predicts failure, so every feature is also scored on finished traces only and within
length quintiles (fewer bins for small files). A feature "keeps" its signal when its length-stratified CI
still excludes 0.5 on the same side. Step labels, when present, give step-level AUROCs. Cross-validated
logistic regressions compare entropy features with entropy + rank (+ length) features.

Outputs in the chosen directory (each written to a temporary name, then renamed): ``analysis.json``,
``report.md``, ``roc.png`` and ``trajectories.png``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import stats as st
from ..config import RuntimeConfig, bounded, same_as, validate
from ..errors import ConfigError, InvalidInputError
from ..files import write_text_atomic
from ._analyze_load import TraceTable, load_traces

__all__ = ["AnalyzeConfig", "AnalysisResult", "TraceTable", "analyze", "load_traces", "run_analysis"]

#: keys of the entropy-only logistic feature set (``signal:aggregation``)
ENTROPY_FEATURES = ("text.entropy_max:max", "text.entropy_max:mean", "text.entropy_mean:max",
                    "text.entropy_mean:mean")
_AGGS = ("max", "mean", "last")
#: bootstrap resamples used for step-level CIs at most (there are many more steps than traces)
_STEP_BOOTSTRAP = 200
_RANK_RE = re.compile(r"^rank\.eff_norm\.L(\d+)\.win$")


@dataclasses.dataclass(frozen=True)
class AnalyzeConfig:
    """Knobs of :func:`analyze` (build from a mapping with ``config.from_mapping(AnalyzeConfig, ...)``)."""

    min_traces: int = bounded(10, lo=4, hi=10**8, help="fewer usable traces than this is an error")
    bootstrap: int = bounded(500, lo=20, hi=100_000, help="bootstrap resamples for the 95% CIs")
    seed: int = same_as(RuntimeConfig, "seed", help="seed of the bootstrap and of the CV folds")
    threshold_quantiles: tuple[float, ...] = bounded(
        (0.5, 0.75), help="fail.* first-crossing thresholds: these quantiles of the score pooled over all steps")
    thresholds: tuple[float, ...] = bounded((), flag="--threshold", unset="each score's pooled median and 75th "
                                            "percentile (threshold_quantiles)",
                                            help="absolute fail.* threshold for the first-crossing features "
                                                 "(repeatable); given, they replace the quantiles")
    length_bins: int = bounded(5, lo=1, hi=20, help="length strata (quantiles of n_tokens) at most")
    min_bin_traces: int = bounded(20, lo=2, hi=10**6, help="fewer strata when a stratum would hold fewer traces")
    folds: int = bounded(5, lo=2, hi=20, help="cross-validation folds of the logistic regressions")
    l2: float = bounded(1.0, lo=1e-6, hi=1e6, help="L2 penalty of the logistic regressions (standardised features)")
    strict: bool = bounded(False, help="stop at the first malformed line instead of skipping it")
    plots: bool = bounded(True, aliases=("--no-plot",), help="write roc.png and trajectories.png")
    top_roc: int = bounded(8, lo=1, hi=30, help="signals drawn in roc.png besides route, entropy and length")
    trajectory_steps: int = bounded(15, lo=2, hi=500, help="step indices drawn in trajectories.png")

    def __post_init__(self) -> None:
        validate(self)
        for q in self.threshold_quantiles:
            if not isinstance(q, (int, float)) or isinstance(q, bool) or not 0.0 <= q <= 1.0:
                raise ConfigError(f"AnalyzeConfig.threshold_quantiles entry {q!r} is not a quantile in [0, 1]")
        for t in self.thresholds:
            if not isinstance(t, (int, float)) or isinstance(t, bool) or not np.isfinite(t):
                raise ConfigError(f"AnalyzeConfig.thresholds entry {t!r} is not a finite number")


@dataclasses.dataclass
class AnalysisResult:
    """Everything :func:`analyze` measured; :meth:`to_dict` is the content of ``analysis.json``.

    ``features`` holds one row per (signal, aggregation), sorted by ``|auroc - 0.5|``, with keys
    ``name, signal, agg, kind, auroc, ci, direction, significant, n, n_wrong, auroc_finished, n_finished,
    auroc_length_strat, ci_length_strat, length_control`` (and ``threshold`` for first crossings).
    ``reading`` is the plain-language summary; ``files`` the paths written.
    """

    source: str
    counts: dict[str, int]
    config: dict[str, Any]
    features: list[dict[str, Any]]
    length: dict[str, Any]
    step_level: dict[str, Any]
    combined: dict[str, Any]
    logistic: dict[str, Any]
    trajectories: dict[str, Any]
    roc: list[dict[str, Any]]
    reading: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    #: one line per figure that could not be drawn (why); the text and JSON outputs are written regardless
    plot_notes: list[str] = dataclasses.field(default_factory=list)

    def feature(self, name: str) -> dict[str, Any] | None:
        """The row of feature ``signal:agg`` (e.g. ``"fail.route:max"``, ``"n_tokens"``), None if absent."""
        return next((r for r in self.features if r["name"] == name), None)

    def summary(self, top: int = 10) -> dict[str, Any]:
        """A short JSON-ready digest: counts, files, reading, the ``top`` features, combined verdicts and
        the logistic out-of-fold AUROCs (the full result is :meth:`to_dict`)."""
        cb = self.combined
        models = self.logistic.get("models", {})
        return _clean({
            "source": self.source, "counts": self.counts, "files": self.files, "reading": self.reading,
            "top": self.features[:top],
            "length": {k: self.length[k]["auroc"] for k in ("n_tokens", "n_steps")},
            "combined": {"route_auroc": (cb.get("route") or {}).get("auroc"), "entropy_best": cb.get("entropy_best"),
                         "verdict": cb.get("verdict"), "verdict_length_strat": cb.get("verdict_length_strat")},
            "logistic": {k: v.get("auroc") for k, v in models.items()},
            "step_level": self.step_level.get("available", False),
            "warnings": self.warnings, "plot_notes": self.plot_notes, "seconds": self.seconds})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict without NaN or infinity (anything not finite becomes null)."""
        return _clean(dataclasses.asdict(self))


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


# --------------------------------------------------------------------------------------------- features


@dataclasses.dataclass
class _Feature:
    """One trace-level number per trace: ``values`` float64 ``(n,)``, NaN where the trace lacks it."""

    signal: str
    agg: str
    kind: str
    values: np.ndarray
    threshold: float | None = None

    @property
    def name(self) -> str:
        return self.signal if self.agg == "trace" else f"{self.signal}:{self.agg}"


def _aggregates(t: TraceTable) -> dict[str, np.ndarray]:
    """Per-trace max, mean and last present value of every key: float64 ``(n, K)`` each, NaN if absent."""
    v = t.values
    n_rows, n_keys = v.shape
    present = np.isfinite(v)
    count = np.add.reduceat(present.astype(np.int64), t.starts, axis=0)
    total = np.add.reduceat(np.where(present, v, 0.0), t.starts, axis=0)
    mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    mx = np.fmax.reduceat(v, t.starts, axis=0)
    rows = np.where(present, np.arange(n_rows)[:, None], -1)
    last_row = np.maximum.reduceat(rows, t.starts, axis=0)
    last = np.where(last_row >= 0, v[np.maximum(last_row, 0), np.arange(n_keys)[None, :]], np.nan)
    return {"max": mx, "mean": mean, "last": last}


def _first_crossing(t: TraceTable, col: int, threshold: float) -> np.ndarray:
    """Steps before the first step whose score exceeds ``threshold``, over the trace's steps (float64
    ``(n,)``); 1.0 when no step does. Lower = earlier = more suspicious."""
    x = t.values[:, col]
    crossed = np.zeros(x.size, dtype=bool)
    np.greater(x, threshold, out=crossed, where=np.isfinite(x))
    big = np.iinfo(np.int64).max
    first = np.minimum.reduceat(np.where(crossed, t.position, big), t.starts)
    return np.where(first < big, first / t.steps_per_trace, 1.0)


def _thresholds(t: TraceTable, col: int, cfg: AnalyzeConfig) -> list[tuple[float, str]]:
    """(threshold, label) pairs of one fail.* column: the configured absolute values, else pooled quantiles."""
    if cfg.thresholds:
        return [(float(x), f"first>{x:g}") for x in cfg.thresholds]
    pooled = t.values[:, col]
    pooled = pooled[np.isfinite(pooled)]
    if pooled.size == 0:
        return []
    out: list[tuple[float, str]] = []
    for q in cfg.threshold_quantiles:
        thr = float(np.quantile(pooled, q))
        label = f"first>q{100 * q:g}"
        if all(label != lab for _, lab in out):
            out.append((thr, label))
    return out


#: per-step keys that only count positions or sizes: reported with the length features, never as signals
LENGTH_KEYS = frozenset({"step.index", "step.partial", "rank.rows.step", "rank.rows.win", "tucker.rows",
                         "text.n_tokens", "text.n_chars"})


def _features(t: TraceTable, cfg: AnalyzeConfig) -> list[_Feature]:
    feats = [_Feature("n_tokens", "trace", "length", t.n_tokens), _Feature("n_steps", "trace", "length", t.n_steps)]
    aggs = _aggregates(t)
    for k, key in enumerate(t.keys):
        kind = "length" if key in LENGTH_KEYS else "signal"
        for agg in _AGGS:
            feats.append(_Feature(key, agg, kind, aggs[agg][:, k]))
        if key.startswith("fail."):
            for thr, label in _thresholds(t, k, cfg):
                feats.append(_Feature(key, label, "first_cross", _first_crossing(t, k, thr), thr))
    return feats


def primary_layer(keys: list[str]) -> int | None:
    """The highest layer with a ``rank.eff_norm.L{l}.win`` key (the "last layer" of the probe), or None."""
    layers = [int(m.group(1)) for k in keys if (m := _RANK_RE.match(k))]
    return max(layers) if layers else None


# --------------------------------------------------------------------------------------------- scoring


def _direction(value: float | None) -> str:
    if value is None or value == 0.5:
        return "none"
    return "high" if value > 0.5 else "low"


def _excludes_half(ci: tuple[float, float] | None, side: str) -> bool:
    if ci is None:
        return False
    return ci[0] > 0.5 if side == "high" else ci[1] < 0.5 if side == "low" else False


def _score_features(t: TraceTable, feats: list[_Feature], w: np.ndarray, bins: np.ndarray,
                    ) -> tuple[list[dict[str, Any]], dict[str, tuple[st.Estimate, st.Estimate]]]:
    """Table rows (sorted by |AUROC - 0.5|) and, by feature name, the (raw, length-stratified) estimates."""
    rows: list[dict[str, Any]] = []
    ests: dict[str, tuple[st.Estimate, st.Estimate]] = {}
    fin = t.finished
    for f in feats:
        est = st.estimate(f.values, t.wrong, w)
        strat = st.stratified_estimate(f.values, t.wrong, bins, w)
        ests[f.name] = (est, strat)
        fin_vals = f.values[fin]
        fin_auc = st.auroc(fin_vals, t.wrong[fin])
        side = _direction(est.value)
        ci, sci = est.ci, strat.ci
        significant = _excludes_half(ci, side)
        if not significant:
            control = "n.s."
        elif strat.value is None:
            control = "untestable"
        else:
            control = "kept" if _excludes_half(sci, side) else "lost"
        row = {"name": f.name, "signal": f.signal, "agg": f.agg, "kind": f.kind,
               "auroc": 0.5 if est.value is None else est.value, "ci": ci, "direction": side,
               "significant": significant, "n": est.n, "n_wrong": est.n_pos,
               "auroc_finished": fin_auc, "n_finished": int(np.isfinite(fin_vals).sum()),
               "auroc_length_strat": strat.value, "ci_length_strat": sci, "length_control": control}
        if f.threshold is not None:
            row["threshold"] = f.threshold
        rows.append(row)
    rows.sort(key=lambda r: (-abs(r["auroc"] - 0.5), r["name"]))
    return rows, ests


def _step_level(t: TraceTable, w: np.ndarray) -> dict[str, Any]:
    labelled = np.isfinite(t.step_label)
    if not labelled.any():
        return {"available": False, "note": "no step carries a label; step-level AUROC not computed"}
    y = t.step_label[labelled] == 1.0
    if y.all() or not y.any():
        return {"available": False, "n_labelled": int(labelled.sum()),
                "note": "step labels hold one class only; step-level AUROC not computed"}
    ws = w[:_STEP_BOOTSTRAP, t.owner[labelled]]
    rows: list[dict[str, Any]] = []
    for k, key in enumerate(t.keys):
        est = st.estimate(t.values[labelled, k], y, ws)
        rows.append({"signal": key, "auroc": 0.5 if est.value is None else est.value, "ci": est.ci,
                     "direction": _direction(est.value), "n": est.n, "n_wrong": est.n_pos})
    rows.sort(key=lambda r: (-abs(r["auroc"] - 0.5), r["signal"]))
    return {"available": True, "n_labelled": int(labelled.sum()), "n_wrong_steps": int(y.sum()),
            "n_traces": int(np.unique(t.owner[labelled]).size),
            "bootstrap": int(ws.shape[0]),
            "note": "CIs resample whole traces (steps of one trace are not independent)", "signals": rows}


def _paired_diff(a: st.Estimate, b: st.Estimate) -> dict[str, Any]:
    diff = None if a.value is None or b.value is None else a.value - b.value
    return {"diff": diff, "ci": None if diff is None else st.ci95(a.samples - b.samples)}


def _verdict(d: dict[str, Any]) -> str | None:
    ci = d["ci"]
    if d["diff"] is None:
        return None
    return ("beats" if ci and ci[0] > 0 else "is worse than" if ci and ci[1] < 0
            else "does not significantly beat" if d["diff"] > 0 else "does not beat")


def _combined(rows: list[dict[str, Any]], ests: dict[str, tuple[st.Estimate, st.Estimate]],
              prim: int | None) -> dict[str, Any]:
    """fail.route (max over steps) against entropy alone (raw and within length strata, paired bootstrap
    differences), and the strongest rank feature next to the strongest entropy feature."""
    by = {r["name"]: r for r in rows}
    out: dict[str, Any] = {"route": by.get("fail.route:max"), "entropy_max": by.get("text.entropy_max:max"),
                           "entropy_mean": by.get("text.entropy_max:mean"), "primary_layer": prim}
    ent = {n: v for n in ("text.entropy_max:max", "text.entropy_max:mean")
           if n in ests and (v := ests[n][0].value) is not None}
    route = ests.get("fail.route:max")
    if route is not None and route[0].value is not None and ent:
        best = max(ent, key=ent.__getitem__)  # both scores are meant as "high = failure"
        d = _paired_diff(route[0], ests[best][0])
        ds = _paired_diff(route[1], ests[best][1])
        out.update({"entropy_best": best, "route_minus_entropy": d, "verdict": _verdict(d),
                    "route_minus_entropy_length_strat": ds, "verdict_length_strat": _verdict(ds)})
    rank_rows = [r for r in rows if r["kind"] == "signal" and r["signal"].startswith(("rank.", "tucker."))]
    if rank_rows:
        out["best_rank"] = rank_rows[0]
        strat = [r for r in rank_rows if r["auroc_length_strat"] is not None]
        if strat:
            out["best_rank_length_strat"] = max(strat, key=lambda r: abs(r["auroc_length_strat"] - 0.5))
    ent_rows = [r for r in rows if r["kind"] == "signal" and r["signal"].startswith("text.entropy")]
    if ent_rows:
        out["best_entropy"] = ent_rows[0]
    return out


def _feature_sets(t: TraceTable, feats: list[_Feature], prim: int | None) -> dict[str, list[str]]:
    names = {f.name for f in feats}
    ent = [n for n in ENTROPY_FEATURES if n in names]
    rank: list[str] = []
    if prim is not None:
        rank = [f"rank.eff_norm.L{prim}.win:mean", f"rank.eff_norm.L{prim}.win:last",
                f"rank.stable_norm.L{prim}.win:mean", f"rank.num_norm.L{prim}.win:mean",
                f"rank.novelty.L{prim}:mean", "tucker.eff_norm.mode0:mean"]
    rank = [n for n in rank if n in names]
    return {"entropy": ent, "entropy+rank": ent + rank, "entropy+rank+length": ent + rank + ["log_n_tokens"]}


def _logistic(t: TraceTable, feats: list[_Feature], prim: int | None, w: np.ndarray,
              cfg: AnalyzeConfig) -> dict[str, Any]:
    n_pos, n_neg = int(t.wrong.sum()), int((~t.wrong).sum())
    folds_n = min(cfg.folds, n_pos, n_neg)
    if folds_n < 2:
        return {"available": False, "note": "fewer than 2 traces in a class; cross-validation not possible"}
    cols = {f.name: f.values for f in feats}
    cols["log_n_tokens"] = np.log1p(t.n_tokens)
    folds = st.stratified_folds(t.wrong, folds_n, cfg.seed)
    models: dict[str, Any] = {}
    ests: dict[str, st.Estimate] = {}
    for label, names in _feature_sets(t, feats, prim).items():
        names = [n for n in names if np.isfinite(cols[n]).mean() >= 0.5]
        if not names or (label != "entropy" and names == models.get("entropy", {}).get("features")):
            models[label] = {"available": False, "features": names,
                             "note": "no usable features" if not names else "same features as entropy only"}
            continue
        x = np.column_stack([cols[n] for n in names])
        oof = st.cross_validated_scores(x, t.wrong, folds, cfg.l2)
        est = st.estimate(oof, t.wrong, w)
        ests[label] = est
        coef = st.standardised_coefficients(x, t.wrong, cfg.l2)
        models[label] = {"available": True, "features": names, "auroc": est.value, "ci": est.ci,
                         "coefficients": dict(zip(names, coef.tolist(), strict=True))}
    out: dict[str, Any] = {"available": True, "folds": folds_n, "l2": cfg.l2, "seed": cfg.seed,
                           "note": "out-of-fold AUROC; features standardised and NaN-imputed per training fold",
                           "models": models}
    if "entropy" in ests:
        for label in ("entropy+rank", "entropy+rank+length"):
            if label in ests:
                out[f"{label}_minus_entropy"] = _paired_diff(ests[label], ests["entropy"])
    return out


def _trajectories(t: TraceTable, prim: int | None, cfg: AnalyzeConfig) -> dict[str, Any]:
    keys = ["fail.route", "text.entropy_mean"] + ([f"rank.eff_norm.L{prim}.win"] if prim is not None else [])
    keys = [k for k in keys if k in t.keys]
    steps = cfg.trajectory_steps
    out: dict[str, Any] = {"steps": list(range(steps)), "signals": {}}
    cls = t.wrong[t.owner]
    for key in keys:
        col = t.values[:, t.keys.index(key)]
        entry: dict[str, Any] = {}
        for name, mask in (("correct", ~cls), ("wrong", cls)):
            mean, se, cnt = [], [], []
            for s in range(steps):
                v = col[mask & (t.position == s)]
                v = v[np.isfinite(v)]
                cnt.append(int(v.size))
                mean.append(float(v.mean()) if v.size else None)
                se.append(float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else (0.0 if v.size else None))
            entry[name] = {"mean": mean, "se": se, "n": cnt}
        out["signals"][key] = entry
    return out


def _roc_curves(t: TraceTable, feats: list[_Feature], rows: list[dict[str, Any]], cfg: AnalyzeConfig,
                ) -> list[dict[str, Any]]:
    by_name = {f.name: f for f in feats}
    chosen: list[str] = []
    seen: set[str] = set()
    for r in rows:
        if r["kind"] == "signal" and r["signal"] not in seen and r["auroc"] != 0.5:
            seen.add(r["signal"])
            chosen.append(r["name"])
        if len(chosen) >= cfg.top_roc:
            break
    for extra in ("fail.route:max", "text.entropy_max:max", "n_tokens"):
        if extra in by_name and extra not in chosen:
            chosen.append(extra)
    curves = []
    row_of = {r["name"]: r for r in rows}
    for name in chosen:
        r = row_of[name]
        low = r["direction"] == "low"
        fpr, tpr = st.roc_curve(-by_name[name].values if low else by_name[name].values, t.wrong)
        curves.append({"name": name, "flipped": low, "auroc_oriented": 1 - r["auroc"] if low else r["auroc"],
                       "fpr": fpr.tolist(), "tpr": tpr.tolist()})
    return curves


def run_analysis(table: TraceTable, config: AnalyzeConfig | None = None) -> AnalysisResult:
    """Every measurement of :func:`analyze` on loaded traces (no file is written).

    Raises InvalidInputError when fewer than ``min_traces`` traces are usable or one class is absent.
    """
    cfg = config or AnalyzeConfig()
    t0 = time.perf_counter()
    t = table
    detail = f"{t.n_errors} error records, {t.n_malformed} malformed lines, {t.n_no_steps} without steps"
    if t.n < cfg.min_traces:
        raise InvalidInputError(f"only {t.n} usable traces in {t.path} ({detail}); need at least "
                                f"{cfg.min_traces}: trace more problems or lower --min-traces")
    n_wrong = int(t.wrong.sum())
    if n_wrong in (0, t.n):
        which = "wrong" if n_wrong else "correct"
        raise InvalidInputError(f"all {t.n} usable traces in {t.path} are {which}; AUROC needs both correct "
                                "and wrong traces: trace more (or harder/easier) problems")
    w = st.bootstrap_weights(t.wrong, cfg.bootstrap, cfg.seed)
    n_bins = max(1, min(cfg.length_bins, t.n // cfg.min_bin_traces))
    bins = st.length_bins(t.n_tokens, n_bins)
    feats = _features(t, cfg)
    rows, ests = _score_features(t, feats, w, bins)
    prim = primary_layer(t.keys)
    counts = {"lines": t.n_lines, "traces": t.n, "wrong": n_wrong, "correct": t.n - n_wrong,
              "errors": t.n_errors, "malformed": t.n_malformed, "no_steps": t.n_no_steps,
              "unfinished": t.n_unfinished, "finished": int(t.finished.sum()), "steps": int(t.values.shape[0]),
              "wrong_unfinished": int((t.wrong & ~t.finished).sum()),
              "signal_keys": len(t.keys), "labelled_steps": int(np.isfinite(t.step_label).sum())}
    length = {"n_tokens": next(r for r in rows if r["name"] == "n_tokens"),
              "n_steps": next(r for r in rows if r["name"] == "n_steps"),
              "bins": n_bins, "bin_sizes": np.bincount(bins, minlength=n_bins).tolist(),
              "bin_wrong": np.bincount(bins, weights=t.wrong, minlength=n_bins).astype(int).tolist(),
              "bin_max_tokens": [float(t.n_tokens[bins == b].max()) if (bins == b).any() else None
                                 for b in range(n_bins)]}
    res = AnalysisResult(
        source=t.path, counts=counts, config=dataclasses.asdict(cfg), features=rows, length=length,
        step_level=_step_level(t, w), combined=_combined(rows, ests, prim),
        logistic=_logistic(t, feats, prim, w, cfg), trajectories=_trajectories(t, prim, cfg),
        roc=_roc_curves(t, feats, rows, cfg), warnings=list(t.warnings))
    from ._analyze_report import reading

    res.reading = reading(res)
    res.seconds = time.perf_counter() - t0
    return res


# --------------------------------------------------------------------------------------------- output


def write_outputs(result: AnalysisResult, out_dir: str | os.PathLike[str], *, plots: bool = True) -> dict[str, str]:
    """Write analysis.json, report.md (and roc.png, trajectories.png) into ``out_dir``; return their paths."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"output path {str(out)!r} is a file; pass a directory name to --out")
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    if plots:  # a figure that cannot be drawn is named in plot_notes; the report and JSON are written anyway
        from ..figures import draw_png
        from ._analyze_plots import plot_roc, plot_trajectories

        for key, draw in (("roc", plot_roc), ("trajectories", plot_trajectories)):
            png = out / f"{key}.png"
            note = draw_png(functools.partial(draw, result), png)
            if note is None:
                files[key] = str(png)
            else:
                result.plot_notes.append(note)
    from ._analyze_report import render_report

    files = {"analysis": str(out / "analysis.json"), "report": str(out / "report.md"), **files}
    result.files = files
    text = render_report(result)
    write_text_atomic(out / "report.md", text)
    doc = json.dumps(result.to_dict(), indent=1, allow_nan=False)
    write_text_atomic(out / "analysis.json", doc + "\n")
    return files


def analyze(traces_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
            min_traces: int | None = None, thresholds: tuple[float, ...] | list[float] | None = None,
            strict: bool | None = None, plots: bool | None = None,
            config: AnalyzeConfig | None = None) -> AnalysisResult:
    """Analyse a trace JSONL file and write the results into ``out_dir`` (created if needed).

    Keyword arguments other than ``config`` override its fields (None keeps them). ``thresholds`` are
    absolute fail.* thresholds for the first-crossing features (default: pooled median and 75th
    percentile of each score). Raises InvalidInputError for a missing/empty file, a malformed line under
    ``strict``, too few usable traces or a single class. A figure that cannot be drawn is left out and
    named in ``plot_notes``; it never fails the analysis.
    """
    cfg = config or AnalyzeConfig()
    over: dict[str, Any] = {"min_traces": min_traces, "strict": strict, "plots": plots,
            "thresholds": None if thresholds is None else tuple(thresholds)}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in over.items() if v is not None})
    table = load_traces(traces_path, strict=cfg.strict)
    result = run_analysis(table, cfg)
    write_outputs(result, out_dir, plots=cfg.plots)
    return result
