"""The step signals computed straight from their definitions in docs/SIGNALS.md, as the oracle of the tests.

Independent of how :mod:`rankguide_edge.signals.rank` and :mod:`rankguide_edge.signals.step` compute them:

* spectra are float64 SVDs of the prepared windows (the library: eigenvalues of float32 or float64 Gram
  matrices, batched);
* Tucker mode ranks are SVDs of the three explicit unfoldings (the library: Grams derived from one stacked
  Gram);
* novelty is ``1 - sum_i w_i ||B v_i||^2 / ||B||_F^2`` over the right singular vectors ``v_i`` of the previous
  step's rows, ``w_i = s_i^2 / (s_i^2 + delta)`` (the library: a linear solve with the ridged Gram);
* windows are cut from the whole history of fed rows kept as a list (the library: fixed-size tails).

Two things are taken from the definitions of the computed values, not from the maths: preparation starts
from the input cast to the Gram precision (``prepare_rows`` returns an array of that dtype), and singular
values with ``s^2 <= 8 eps(dtype) s_1^2`` count as zero (round-off of the Gram product; the module docstring
of rank.py). Keyword counting, the repetition tracker and the failure scorer are the library's own (tested
in tests/test_signals_text.py and tests/test_signals_failure.py): what is checked through them is which
values the step hands them.

Besides each value the oracle gives ``(low, high)`` bounds for the keys that sit on a discontinuity
(:attr:`Ranks.bounds`, :attr:`StepOracle.bounds`): a numerical rank with a singular value within ``margin`` of
``eps * s_1``, or an effective or stable rank with a singular value within a factor ``floor_band`` of the
round-off floor, can differ by the Gram's rounding; the tests check those keys against their bounds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from rankguide_edge.signals.failure import FailureInputs, FailureScorer, mode_scores, route_score
from rankguide_edge.signals.step import SignalConfig
from rankguide_edge.signals.text import RepetitionTracker, TokenStats, compile_keywords, count_keywords

RANK_VALUES = ("num", "num_norm", "eff", "eff_norm", "stable", "stable_norm")
FLOOR_ULPS = 8.0


def prepare(h: np.ndarray, *, centre: bool = True, row_normalise: bool = False,
            dtype: type[np.floating] = np.float32) -> np.ndarray:
    """Float64 rows: the input in ``dtype``, non-finite entries 0, optionally L2-normalised, token mean off."""
    x = np.asarray(h).astype(dtype).astype(np.float64)
    x[~np.isfinite(x)] = 0.0
    if row_normalise:
        norms = np.sqrt((x * x).sum(axis=-1, keepdims=True))
        x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    if centre and x.shape[-2]:
        x = x - x.mean(axis=-2, keepdims=True)
    return x


def svd_values(x: np.ndarray) -> np.ndarray:
    return np.linalg.svd(x, compute_uv=False) if x.size else np.zeros(0)


@dataclass
class Ranks:
    """The six rank values of one spectrum, and ``(low, high)`` bounds for those the Gram's rounding can move."""

    values: dict[str, float]
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)


def _eff_stable(s: np.ndarray) -> tuple[float, float]:
    p = s / s.sum()
    return float(np.exp(-(p * np.log(p)).sum())), float((s * s).sum() / (s[0] * s[0]))


def ranks(sv: np.ndarray, eps: float, denom: int, dtype: type[np.floating], *, margin: float = 1e-3,
          floor_band: float = 4.0) -> Ranks:
    """Ranks of singular values ``sv`` with normaliser ``denom``, the round-off floor of ``dtype`` applied.

    Loose, with bounds: ``num`` when a singular value lies within ``margin`` (relative) of ``eps * s_1``;
    ``eff`` and ``stable`` when one lies within a factor ``floor_band`` (in ``s^2``) of the floor, between
    the values without and with every such singular value."""
    sv = np.sort(np.asarray(sv, dtype=np.float64))[::-1]
    if denom <= 0 or sv.size == 0 or sv[0] <= 0:
        return Ranks(dict.fromkeys(RANK_VALUES, 0.0))
    floor = FLOOR_ULPS * float(np.finfo(dtype).eps)
    ratio2 = (sv / sv[0]) ** 2
    s = sv[ratio2 > floor]
    num = float(np.count_nonzero(s > eps * s[0]))
    eff, stable = _eff_stable(s)
    out = Ranks({"num": num, "eff": eff, "stable": stable})
    num_lo = float(np.count_nonzero(s > eps * s[0] * (1 + margin)))
    num_hi = float(np.count_nonzero(sv > eps * sv[0] * (1 - margin)))
    if num_lo != num_hi:
        out.bounds["num"] = (num_lo, num_hi)
    if np.any((ratio2 > floor / floor_band) & (ratio2 <= floor * floor_band)):
        ends = [_eff_stable(sv[ratio2 > floor * floor_band]), _eff_stable(sv[ratio2 > floor / floor_band])]
        out.bounds["eff"] = (min(e for e, _ in ends), max(e for e, _ in ends))
        out.bounds["stable"] = (min(t for _, t in ends), max(t for _, t in ends))
    for v in ("num", "eff", "stable"):
        out.values[f"{v}_norm"] = out.values[v] / denom
        if v in out.bounds:
            out.bounds[f"{v}_norm"] = (out.bounds[v][0] / denom, out.bounds[v][1] / denom)
    out.values = {v: out.values[v] for v in RANK_VALUES}
    return out


def window(h: np.ndarray, *, eps: float = 1e-2, centre: bool = True, row_normalise: bool = False,
           dtype: type[np.floating] = np.float32) -> Ranks:
    """Ranks of one ``(n, d)`` window, normalised by ``min(n - 1, d)`` (centred) or ``min(n, d)``."""
    n, d = np.asarray(h).shape
    denom = max(0, min(n - 1 if centre else n, d))
    x = prepare(h, centre=centre, row_normalise=row_normalise, dtype=dtype)
    return ranks(svd_values(x), eps, denom, dtype)


def tucker(slices: np.ndarray, *, eps: float = 1e-2, centre: bool = True, row_normalise: bool = False,
           balance_layers: bool = True, dtype: type[np.floating] = np.float32) -> list[Ranks]:
    """Mode ranks of ``X[t, l, :] = slices[l][t]`` from SVDs of the three unfoldings."""
    p = prepare(np.asarray(slices), centre=centre, row_normalise=row_normalise, dtype=dtype)
    n_layers, n, d = p.shape
    c = 1 if centre else 0
    if n_layers == 0 or n - c <= 0 or d == 0:
        return [ranks(np.zeros(0), eps, 0, dtype)] * 3
    if balance_layers:
        fro = np.sqrt((p * p).sum(axis=(1, 2)))
        p = p / np.where(fro > 0, fro, 1.0)[:, None, None]
    t = np.transpose(p, (1, 0, 2))  # tokens x layers x hidden
    unfold = (t.reshape(n, n_layers * d), p.reshape(n_layers, n * d), np.transpose(t, (2, 0, 1)).reshape(d, -1))
    denoms = (min(n - c, n_layers * d), min(n_layers, n * d), min(d, n_layers * (n - c)))
    return [ranks(svd_values(u), eps, den, dtype) for u, den in zip(unfold, denoms, strict=True)]


def novelty(a: np.ndarray | None, b: np.ndarray, *, eps: float, dtype: type[np.floating]) -> float:
    """Share of prepared rows ``b``'s energy outside the ridge-weighted span of prepared rows ``a``."""
    eb = float((b * b).sum())
    if b.shape[0] == 0 or eb <= 0:
        return 0.0
    if a is None or a.shape[0] == 0 or float((a * a).sum()) <= 0:
        return 1.0
    _, s, vt = np.linalg.svd(a, full_matrices=False)
    delta = max(eps * eps, FLOOR_ULPS * float(np.finfo(dtype).eps)) * float((s * s).sum())
    weights = s * s / (s * s + delta)
    inside = float((weights * ((b @ vt.T) ** 2).sum(axis=0)).sum())
    return min(1.0, max(0.0, 1.0 - inside / eb))


def subspace_novelty(prev: np.ndarray | None, cur: np.ndarray, *, eps: float = 1e-2, centre: bool = True,
                     row_normalise: bool = False, dtype: type[np.floating] = np.float32) -> float:
    b = prepare(cur, centre=centre, row_normalise=row_normalise, dtype=dtype)
    a = None if prev is None else prepare(prev, centre=centre, row_normalise=row_normalise, dtype=dtype)
    return novelty(a, b, eps=eps, dtype=dtype)


@dataclass
class StepOracle:
    """What :class:`~rankguide_edge.signals.step.StepSignalComputer` should return, step after step.

    After each call, :attr:`bounds` holds ``(low, high)`` for the keys the Gram's rounding can move (see
    :func:`ranks`), propagated to the deltas and the failure scores that read them."""

    config: SignalConfig
    history: dict[int, list[np.ndarray]] = field(default_factory=dict)
    prev_step: dict[int, Ranks] = field(default_factory=dict)
    prev_rows: np.ndarray | None = None
    n_steps: int = 0
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        c = self.config
        self.dtype = c.gram_dtype
        self.layers: tuple[int, ...] | None = None
        self.primary = 0
        self.rep = RepetitionTracker(ngram=c.ngram, min_words=c.min_words)
        self.scorer = FailureScorer(c.failure)
        self.patterns = [("revalidation", compile_keywords(c.revalidation_words)),
                         ("uncertainty", compile_keywords(c.uncertainty_words)),
                         ("confident", compile_keywords(c.confident_words))]

    def _use(self, layers: Sequence[int]) -> tuple[tuple[int, ...], int]:
        c = self.config
        if c.layers == "all":
            used = tuple(sorted(layers))
        elif c.layers == "last":
            used = (max(layers),)
        else:
            used = tuple(c.layers)  # type: ignore[arg-type]
        return used, (max(used) if c.primary_layer is None else c.primary_layer)

    def _recent(self, layer: int, h: np.ndarray, size: int) -> np.ndarray:
        """The last ``size`` rows of the trace so far (only this step's without ``window_carry``)."""
        rows = [*self.history.get(layer, []), h] if self.config.window_carry else [h]
        joined = np.concatenate(rows, axis=0)
        return joined[max(0, joined.shape[0] - size):]

    def _put(self, out: dict[str, float], prefix: str, suffix: str, r: Ranks) -> None:
        for v in RANK_VALUES:
            out[f"{prefix}.{v}{suffix}"] = r.values[v]
            if v in r.bounds:
                self.bounds[f"{prefix}.{v}{suffix}"] = r.bounds[v]

    def _window(self, h: np.ndarray) -> Ranks:
        c = self.config
        return window(h, eps=c.eps, centre=c.centre, row_normalise=c.row_normalise, dtype=self.dtype)

    def _text(self, stats: TokenStats, text: str) -> dict[str, float]:
        n = len(stats)
        out = {"text.n_tokens": float(n), "text.n_chars": float(len(text)), "text.entropy_mean": 0.0,
               "text.entropy_max": 0.0, "text.top1_mean": 0.0, "text.margin_min": 0.0}
        if n:
            ent = np.asarray(stats.entropy, dtype=np.float64)
            p = np.exp(np.asarray(stats.top_logprobs, dtype=np.float64))
            out |= {"text.entropy_mean": float(ent.mean()), "text.entropy_max": float(ent.max()),
                    "text.top1_mean": float(p[:, 0].mean()), "text.margin_min": float((p[:, 0] - p[:, 1]).min())}
        for name, pat in self.patterns:
            out[f"kw.{name}"] = float(count_keywords(text, pat))
        out |= {f"rep.{k}": v for k, v in self.rep.measure(text).items()}
        return out

    def _fail(self, out: dict[str, float], n_tokens: int, rank_eff: float | None,
              rank_bounds: tuple[float, float] | None, nov: float | None, commit: bool) -> None:
        has = n_tokens > 0

        def inputs(eff: float | None) -> FailureInputs:
            return FailureInputs(
                entropy_mean=out["text.entropy_mean"] if has else None,
                entropy_max=out["text.entropy_max"] if has else None,
                top1_mean=out["text.top1_mean"] if has else None,
                margin_min=out["text.margin_min"] if has else None,
                rank_eff_norm=eff, novelty=nov, kw_revalidation=out["kw.revalidation"],
                kw_uncertainty=out["kw.uncertainty"], kw_confident=out["kw.confident"],
                repetition=max(out["rep.max_jaccard"], out["rep.ngram_containment"]),
                arith_repeats=out["rep.arith_repeats"])

        streak = self.scorer.streak
        scored = self.scorer.score(inputs(rank_eff), commit=commit)
        out |= {f"fail.{k}": v for k, v in scored.items()}
        if rank_bounds is None or rank_eff is None:
            return
        # the mode scores are monotone in the rank input and the route in the mode scores: bound both by
        # the ends of the rank's interval (rank_eff does not reach revalidation, so the streak is exact)
        ends = [mode_scores(inputs(x), self.config.failure) for x in rank_bounds]
        lo = {k: min(e[k] for e in ends) for k in ends[0]}
        hi = {k: max(e[k] for e in ends) for k in ends[0]}
        for k in ("overconfidence", "uncertainty"):
            self.bounds[f"fail.{k}"] = (lo[k], hi[k])
        self.bounds["fail.route"] = (route_score(lo, int(scored["revalidation_streak"]), self.config.failure),
                                     route_score(hi, int(scored["revalidation_streak"]), self.config.failure))
        assert self.scorer.streak == (int(scored["revalidation_streak"]) if commit else streak)

    # -- the two calls -----------------------------------------------------------------------------------------

    def compute(self, hidden: Mapping[int, np.ndarray], stats: TokenStats, text: str) -> dict[str, float]:
        c = self.config
        self.bounds = {}
        if self.layers is None:
            self.layers, self.primary = self._use(list(hidden))
        layers, prim = self.layers, self.primary
        n = len(stats)
        out: dict[str, float] = {"step.index": float(self.n_steps), "step.partial": 0.0}
        picks = (np.unique(np.linspace(0, n - 1, c.step_max_rows).round().astype(int))
                 if n > c.step_max_rows else np.arange(n))
        step_rows = {layer: np.asarray(hidden[layer])[picks] for layer in layers}
        win_rows = {layer: self._recent(layer, np.asarray(hidden[layer]), c.window) for layer in layers}
        step_ranks = {}
        for layer in layers:
            step_ranks[layer] = self._window(step_rows[layer])
            self._put(out, "rank", f".L{layer}.step", step_ranks[layer])
            self._put(out, "rank", f".L{layer}.win", self._window(win_rows[layer]))
        out["rank.rows.step"] = float(len(picks))
        out["rank.rows.win"] = float(win_rows[layers[0]].shape[0])
        for layer in layers:
            cur, prev = step_ranks[layer], self.prev_step.get(layer)
            for v in ("num_norm", "eff_norm", "stable_norm"):
                key = f"rank.delta.{v}.L{layer}"
                out[key] = cur.values[v] - prev.values[v] if prev else 0.0
                if prev and (v in cur.bounds or v in prev.bounds):
                    (a, b), (pa, pb) = (cur.bounds.get(v, (cur.values[v],) * 2),
                                        prev.bounds.get(v, (prev.values[v],) * 2))
                    self.bounds[key] = (a - pb, b - pa)
        own = prepare(step_rows[prim], centre=c.centre, row_normalise=c.row_normalise, dtype=self.dtype)
        nov = None
        if c.novelty:
            out[f"rank.novelty.L{prim}"] = novelty(self.prev_rows, own, eps=c.eps, dtype=self.dtype)
            nov = out[f"rank.novelty.L{prim}"] if own.shape[0] >= c.min_rank_tokens else None
        if c.tucker and len(layers) >= 2:
            slices = np.stack([self._recent(layer, np.asarray(hidden[layer]), c.tucker_window) for layer in layers])
            modes = tucker(slices, eps=c.eps, centre=c.centre, row_normalise=c.row_normalise,
                           balance_layers=c.tucker_balance_layers, dtype=self.dtype)
            for m, r in enumerate(modes):
                self._put(out, "tucker", f".mode{m}", r)
            out["tucker.rows"] = float(slices.shape[1])
        out |= self._text(stats, text)
        key = f"rank.eff_norm.L{prim}.win"
        rank_eff = out[key] if out["rank.rows.win"] >= c.min_rank_tokens else None
        self._fail(out, n, rank_eff, self.bounds.get(key), nov, commit=True)
        # what the next step sees
        self.rep.add(text)
        for layer in layers:
            self.history.setdefault(layer, []).append(np.asarray(hidden[layer]))
            self.prev_step[layer] = step_ranks[layer]
        if c.novelty and own.shape[0] >= (2 if c.centre else 1):
            self.prev_rows = own
        self.n_steps += 1
        return out

    def compute_partial(self, hidden: Mapping[int, np.ndarray], stats: TokenStats, text: str) -> dict[str, float]:
        c = self.config
        self.bounds = {}
        prim = self._use(list(hidden))[1] if self.layers is None else self.primary
        out: dict[str, float] = {"step.index": float(self.n_steps), "step.partial": 1.0}
        win_rows = self._recent(prim, np.asarray(hidden[prim]), c.window)
        self._put(out, "rank", f".L{prim}.win", self._window(win_rows))
        out["rank.rows.win"] = float(win_rows.shape[0])
        out |= self._text(stats, text)
        key = f"rank.eff_norm.L{prim}.win"
        rank_eff = out[key] if win_rows.shape[0] >= c.min_rank_tokens else None
        self._fail(out, len(stats), rank_eff, self.bounds.get(key), None, commit=False)
        return out
