"""Frozen copy of the signal computation as it was before the speed work (commit 74f57a4).

This is the oracle of tests/test_signals_speed_equivalence.py: the optimised
:mod:`rankguide_edge.signals.rank` and :mod:`rankguide_edge.signals.step` must give the same values as this
code (within 1e-6 relative or 1e-9 absolute). It is deliberately slow and must not be edited to follow
later changes of the library; only the text, keyword, repetition and failure parts (which were not
optimised) and :class:`SignalConfig` are imported from the package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rankguide_edge.errors import InvalidInputError, LayerIndexError
from rankguide_edge.signals._blas import blas_threads
from rankguide_edge.signals.failure import FailureInputs, FailureScorer
from rankguide_edge.signals.step import SignalConfig
from rankguide_edge.signals.text import RepetitionTracker, TokenStats, compile_keywords, count_keywords, token_features

RANK_VALUES: tuple[str, ...] = ("num", "num_norm", "eff", "eff_norm", "stable", "stable_norm")
WINDOWS: tuple[str, ...] = ("step", "win")

#: round-off multiple below which Gram eigenvalues (relative to the largest) are treated as zero
_FLOOR_ULPS = 8.0

#: names of the three rank kinds, in key order
RANK_KINDS: tuple[str, ...] = ("num", "eff", "stable")


@dataclass(frozen=True)
class RankValues:
    """Three ranks of one window and their normalised versions.

    ``denom`` is the normaliser ``min(n - 1, d)`` (centred) or ``min(n, d)``; 0 for degenerate windows, in
    which case every field is 0.0.
    """

    num: float
    eff: float
    stable: float
    denom: int

    @property
    def num_norm(self) -> float:
        """Numerical rank divided by ``denom`` (0.0 when ``denom`` is 0)."""
        return self.num / self.denom if self.denom else 0.0

    @property
    def eff_norm(self) -> float:
        """Effective rank divided by ``denom`` (0.0 when ``denom`` is 0)."""
        return self.eff / self.denom if self.denom else 0.0

    @property
    def stable_norm(self) -> float:
        """Stable rank divided by ``denom`` (0.0 when ``denom`` is 0)."""
        return self.stable / self.denom if self.denom else 0.0

    def as_dict(self) -> dict[str, float]:
        """``{"num", "num_norm", "eff", "eff_norm", "stable", "stable_norm"}`` as floats."""
        return {
            "num": float(self.num), "num_norm": float(self.num_norm),
            "eff": float(self.eff), "eff_norm": float(self.eff_norm),
            "stable": float(self.stable), "stable_norm": float(self.stable_norm),
        }


ZERO_RANKS = RankValues(0.0, 0.0, 0.0, 0)


def gram_dtype_for(eps: float) -> type[np.floating]:
    """The cheapest Gram precision that resolves relative tolerance ``eps``: float32 for eps >= 5e-3."""
    return np.float32 if eps >= 5e-3 else np.float64


def rank_denominator(n: int, d: int, *, centre: bool = True) -> int:
    """Normaliser of a window of ``n`` rows of width ``d``: ``min(n - 1, d)`` centred, else ``min(n, d)``."""
    return max(0, min(n - 1 if centre else n, d))


def prepare_rows(h: np.ndarray, *, centre: bool = True, row_normalise: bool = False,
                 dtype: type[np.floating] = np.float32) -> np.ndarray:
    """Sanitise, optionally L2-normalise rows, then centre over tokens.

    ``h``: ``(..., n, d)`` any real dtype. Returns a new ``(..., n, d)`` array of ``dtype``; non-finite
    entries become 0, zero rows stay zero under normalisation, the token mean (axis -2) is subtracted.
    """
    x = np.array(h, dtype=dtype, copy=True)
    return _prepare_inplace(x, centre=centre, row_normalise=row_normalise)


def _prepare_inplace(x: np.ndarray, *, centre: bool, row_normalise: bool, check_finite: bool = True) -> np.ndarray:
    """:func:`prepare_rows` on an array the caller owns (modified and returned)."""
    if check_finite and not np.isfinite(x).all():
        np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    if row_normalise:
        norms = np.sqrt(np.einsum("...ij,...ij->...i", x, x))
        norms[norms == 0] = 1.0
        x /= norms[..., None]
    if centre and x.shape[-2] > 0:
        x -= x.mean(axis=-2, keepdims=True)
    return x


def gram(x: np.ndarray) -> np.ndarray:
    """Gram matrix of the smaller side of ``x`` (``(..., n, d)``): ``x x^T`` if ``n <= d`` else ``x^T x``."""
    xt = np.swapaxes(x, -1, -2)
    return x @ xt if x.shape[-2] <= x.shape[-1] else xt @ x


def spectrum_from_gram(g: np.ndarray, dtype: type[np.floating] = np.float32) -> np.ndarray:
    """Singular values from a (stack of) Gram matrices.

    ``g``: ``(..., m, m)`` symmetric PSD, formed in precision ``dtype`` (the eigen-solve runs in it too).
    Returns ``(..., m)`` float64, descending, with round-off eigenvalues (below
    ``_FLOOR_ULPS * eps(dtype) * lambda_max``) set to 0.
    """
    g = np.asarray(g, dtype=dtype)
    if g.shape[-1] == 0:
        return np.zeros(g.shape[:-1], dtype=np.float64)
    if not np.isfinite(g).all():
        g = np.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
    lam = np.linalg.eigvalsh(g)[..., ::-1].astype(np.float64)
    floor = _FLOOR_ULPS * float(np.finfo(dtype).eps) * lam[..., :1]
    lam = np.where(lam > floor, lam, 0.0)
    return np.sqrt(lam)


def singular_values(h: np.ndarray, *, centre: bool = True, row_normalise: bool = False,
                    dtype: type[np.floating] = np.float32, method: str = "gram") -> np.ndarray:
    """Singular values of the prepared window ``h`` (``(n, d)``) as float64 ``(min(n, d),)``, descending.

    ``method="gram"`` uses eigenvalues of the smaller Gram matrix; ``"svd"`` uses ``np.linalg.svd`` (slower,
    kept as the reference the Gram path is tested against).
    """
    x = prepare_rows(h, centre=centre, row_normalise=row_normalise, dtype=dtype)
    if x.shape[0] == 0 or x.shape[1] == 0:
        return np.zeros(0, dtype=np.float64)
    if method == "svd":
        return np.linalg.svd(x.astype(np.float64), compute_uv=False)
    return spectrum_from_gram(gram(x), dtype)


def numerical_rank(sv: np.ndarray, eps: float) -> float:
    """Count of singular values ``> eps * sv[0]``; ``sv`` float ``(m,)`` descending. 0 for an empty/zero input."""
    if sv.size == 0 or sv[0] <= 0:
        return 0.0
    return float(np.count_nonzero(sv > eps * sv[0]))


def effective_rank(sv: np.ndarray) -> float:
    """Roy-Vetterli effective rank ``exp(-sum p_i log p_i)``, ``p_i = sv_i / sum(sv)``; 0 for a zero input."""
    total = float(sv.sum()) if sv.size else 0.0
    if total <= 0:
        return 0.0
    p = sv[sv > 0] / total
    return float(np.exp(-np.dot(p, np.log(p))))


def stable_rank(sv: np.ndarray) -> float:
    """Stable rank ``||H||_F^2 / sigma_1^2 = sum sv_i^2 / sv_0^2``; 0 for a zero input."""
    if sv.size == 0 or sv[0] <= 0:
        return 0.0
    return float(np.dot(sv, sv) / (sv[0] * sv[0]))


def ranks_from_spectrum(sv: np.ndarray, eps: float, denom: int) -> RankValues:
    """All three ranks of one spectrum ``sv`` (``(m,)`` float64, descending) with normaliser ``denom``."""
    if denom <= 0 or sv.size == 0 or sv[0] <= 0:
        return ZERO_RANKS
    return RankValues(numerical_rank(sv, eps), effective_rank(sv), stable_rank(sv), int(denom))


def window_ranks(h: np.ndarray, *, eps: float = 1e-2, centre: bool = True, row_normalise: bool = False,
                 dtype: type[np.floating] | None = None, method: str = "gram") -> RankValues:
    """Ranks of one window ``h`` (``(n, d)``, float) at relative tolerance ``eps``.

    ``dtype`` defaults to :func:`gram_dtype_for` ``(eps)``. Normalised by ``min(n - 1, d)`` when centred.
    """
    h = np.asarray(h)
    if h.ndim != 2:
        raise ValueError("a window must be a 2-D (tokens, hidden) array")
    n, d = h.shape
    denom = rank_denominator(n, d, centre=centre)
    if denom <= 0:
        return ZERO_RANKS
    dt = dtype or gram_dtype_for(eps)
    sv = singular_values(h, centre=centre, row_normalise=row_normalise, dtype=dt, method=method)
    return ranks_from_spectrum(sv, eps, denom)


@dataclass(frozen=True, eq=False)
class WindowSpectrum:
    """A prepared window and what was computed from it (kept for reuse by novelty and Tucker).

    ``rows``: ``(n, d)`` prepared rows (dtype of the Gram); ``gram``: the smaller-side Gram
    (``(n, n)`` when ``n <= d``); ``ranks``: its :class:`RankValues`.
    """

    rows: np.ndarray
    gram: np.ndarray
    ranks: RankValues


def batch_window_spectra(windows: Sequence[np.ndarray], *, eps: float, centre: bool = True,
                         row_normalise: bool = False, dtype: type[np.floating] | None = None
                         ) -> list[WindowSpectrum]:
    """Prepare and rank several windows (each ``(n_i, d_i)``); equal shapes share one batched Gram
    product and one batched eigen-solve (the fast path used per step). One result per window, in order."""
    dt = dtype or gram_dtype_for(eps)
    items = [np.asarray(w) for w in windows]
    out: list[WindowSpectrum | None] = [None] * len(items)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, w in enumerate(items):
        if w.ndim != 2:
            raise ValueError("a window must be a 2-D (tokens, hidden) array")
        groups.setdefault((w.shape[0], w.shape[1]), []).append(i)
    for (n, d), idx in groups.items():
        x = np.empty((len(idx), n, d), dtype=dt)
        for j, i in enumerate(idx):
            x[j] = items[i]
        with np.errstate(invalid="ignore", over="ignore"):
            _prepare_inplace(x, centre=centre, row_normalise=row_normalise, check_finite=False)
            g = gram(x)
        if not np.isfinite(g).all():  # a non-finite input entry always reaches the Gram: redo with sanitising
            for j, i in enumerate(idx):
                x[j] = items[i]
            _prepare_inplace(x, centre=centre, row_normalise=row_normalise, check_finite=True)
            g = gram(x)
        denom = rank_denominator(n, d, centre=centre)
        sv = spectrum_from_gram(g, dt) if denom > 0 else None
        for j, i in enumerate(idx):
            rv = ranks_from_spectrum(sv[j], eps, denom) if sv is not None else ZERO_RANKS
            out[i] = WindowSpectrum(x[j], g[j], rv)
    return out  # type: ignore[return-value]


def batch_window_ranks(windows: Sequence[np.ndarray] | np.ndarray, *, eps: float, centre: bool = True,
                       row_normalise: bool = False, dtype: type[np.floating] | None = None) -> list[RankValues]:
    """:class:`RankValues` of several windows (``(B, n, d)`` or a sequence of ``(n_i, d_i)`` arrays)."""
    return [w.ranks for w in batch_window_spectra(list(windows), eps=eps, centre=centre,
                                                  row_normalise=row_normalise, dtype=dtype)]


@dataclass(frozen=True)
class TuckerRanks:
    """Mode ranks of a ``tokens x layers x hidden`` tensor: one :class:`RankValues` per mode (0, 1, 2)."""

    modes: tuple[RankValues, RankValues, RankValues]


def tucker_ranks(slices: Sequence[np.ndarray] | np.ndarray, *, eps: float = 1e-2, centre: bool = True,
                 row_normalise: bool = False, balance_layers: bool = True,
                 dtype: type[np.floating] | None = None) -> TuckerRanks:
    """Multilinear (Tucker) ranks of the 3-way tensor ``X[t, l, :] = slices[l][t]``.

    ``slices``: ``L`` arrays of shape ``(n, d)`` (or one ``(L, n, d)`` array), the same ``n`` tokens of ``L``
    layers. Each slice is prepared like a window (row-normalised if asked, centred over tokens) and, with
    ``balance_layers``, scaled to unit Frobenius norm so deep layers with large activations do not dominate.

    Mode unfoldings and their normalisers (``c = 1`` when centred, else 0):

    * mode 0 (tokens), ``n x (L d)``: Gram ``sum_l H_l H_l^T``; normaliser ``min(n - c, L d)``;
    * mode 1 (layers), ``L x (n d)``: Gram ``<H_l, H_m>_F``; normaliser ``min(L, n d)``;
    * mode 2 (hidden), ``d x (n L)``: singular values of the stacked ``(L n) x d`` rows;
      normaliser ``min(d, L (n - c))``.

    All three Grams come from the single stacked Gram ``S = X_s X_s^T`` (``(L n) x (L n)``): mode 0 sums its
    diagonal blocks, mode 1 takes the traces of its blocks, mode 2 is ``S`` itself.
    """
    x = np.asarray(slices)
    if x.ndim != 3:
        raise ValueError("tucker_ranks needs L slices of shape (tokens, hidden)")
    dt = dtype or gram_dtype_for(eps)
    p = prepare_rows(x, centre=centre, row_normalise=row_normalise, dtype=dt)
    return tucker_from_prepared(p, eps=eps, centre=centre, balance_layers=balance_layers, dtype=dt)


def tucker_from_prepared(p: np.ndarray, *, eps: float, centre: bool, balance_layers: bool,
                         dtype: type[np.floating]) -> TuckerRanks:
    """:func:`tucker_ranks` of already prepared slices ``p`` (``(L, n, d)``, centred over tokens)."""
    n_layers, n, d = p.shape
    c = 1 if centre else 0
    if n_layers == 0 or n - c <= 0 or d == 0:
        return TuckerRanks((ZERO_RANKS, ZERO_RANKS, ZERO_RANKS))
    denoms = (min(n - c, n_layers * d), min(n_layers, n * d), min(d, n_layers * (n - c)))
    stacked = p.reshape(n_layers * n, d)
    s = np.asarray(stacked @ stacked.T, dtype=np.float64)
    blocks = s.reshape(n_layers, n, n_layers, n)
    if balance_layers:  # unit Frobenius norm per slice, applied to the Gram: S_lm / (|H_l| |H_m|)
        fro = np.sqrt(np.maximum(np.einsum("lili->l", blocks), 0.0))
        fro[fro == 0] = 1.0
        blocks /= fro[:, None, None, None] * fro[None, None, :, None]
    g0 = np.einsum("lilj->ij", blocks)
    g1 = np.einsum("liki->lk", blocks)
    out = []
    for g, denom in ((g0, denoms[0]), (g1, denoms[1]), (s, denoms[2])):
        out.append(ranks_from_spectrum(spectrum_from_gram(g, dtype), eps, denom))
    return TuckerRanks((out[0], out[1], out[2]))


def subspace_novelty(prev: np.ndarray | None, cur: np.ndarray, *, eps: float = 1e-2, centre: bool = True,
                     row_normalise: bool = False, dtype: type[np.floating] | None = None) -> float:
    """Share of ``cur``'s energy outside the numerical span of ``prev``, in ``[0, 1]``.

    ``prev`` ``(m, d)`` and ``cur`` ``(n, d)`` are prepared like windows (each centred on its own mean).
    With ``A = prev`` and ``B = cur``: ``1 - tr(C^T (A A^T + delta I)^{-1} C) / ||B||_F^2``, ``C = A B^T`` and
    ``delta = eps^2 * tr(A A^T)``: a ridge projector onto the directions of ``A`` that hold more than about
    ``eps^2`` of ``A``'s energy (weights ``lambda_i / (lambda_i + delta)``). Returns 1.0 without a usable
    ``prev`` (nothing seen before) and 0.0 when ``cur`` has no energy (fewer than two rows centred, or
    constant rows).
    """
    dt = dtype or gram_dtype_for(eps)
    b = prepare_rows(cur, centre=centre, row_normalise=row_normalise, dtype=dt)
    if prev is None or prev.shape[0] == 0:
        return novelty_from_prepared(None, None, b, eps=eps, dtype=dt)
    a = prepare_rows(prev, centre=centre, row_normalise=row_normalise, dtype=dt)
    return novelty_from_prepared(a, a @ a.T, b, eps=eps, dtype=dt)


def novelty_from_prepared(a: np.ndarray | None, ga: np.ndarray | None, b: np.ndarray, *, eps: float,
                          dtype: type[np.floating], energy_b: float | None = None) -> float:
    """:func:`subspace_novelty` of prepared rows ``a`` (``(m, d)``, with ``ga = a a^T`` ``(m, m)``) and ``b``
    (``(n, d)``); ``energy_b`` is ``||b||_F^2`` when known (the trace of b's Gram)."""
    eb = float(np.vdot(b, b)) if energy_b is None else float(energy_b)
    if b.shape[0] == 0 or eb <= 0:
        return 0.0
    if a is None or ga is None or a.shape[0] == 0:
        return 1.0
    ga = np.asarray(ga, dtype=np.float64)
    energy = float(np.trace(ga))
    if energy <= 0:
        return 1.0
    c = np.asarray(a @ b.T, dtype=np.float64)
    ridge = max(eps * eps, _FLOOR_ULPS * float(np.finfo(dtype).eps)) * energy
    sol = np.linalg.solve(ga + ridge * np.eye(ga.shape[0]), c)
    inside = float(np.einsum("ij,ij->", c, sol))
    return float(min(1.0, max(0.0, 1.0 - inside / eb)))


def resolve_layers(config: SignalConfig, available: Sequence[int]) -> tuple[int, ...]:
    """The layers (ascending) the config uses out of the tapped ``available`` ones."""
    avail = sorted({int(i) for i in available})
    if not avail:
        raise InvalidInputError("no hidden states were passed; tap at least one layer")
    if config.layers == "all":
        return tuple(avail)
    if config.layers == "last":
        return (avail[-1],)
    missing = [i for i in config.layers if i not in avail]  # type: ignore[union-attr]
    if missing:
        raise LayerIndexError(f"layer(s) {missing} were not tapped; tap them or use layers from {avail}")
    return tuple(config.layers)  # type: ignore[arg-type]


def _primary(config: SignalConfig, layers: Sequence[int]) -> int:
    if config.primary_layer is None:
        return max(layers)
    if config.primary_layer not in layers:
        raise LayerIndexError(f"primary_layer={config.primary_layer} is not among the used layers {list(layers)}")
    return int(config.primary_layer)


def _rank_items(prefix: str, suffix: str, rv: RankValues) -> dict[str, float]:
    d = rv.as_dict()
    return {f"{prefix}.{v}{suffix}": d[v] for v in RANK_VALUES}


class ReferenceStepComputer:
    """Per-trace signal computation. Call :meth:`reset` between traces.

    State kept across steps: the last ``max(window, tucker_window)`` hidden rows of every used layer (for
    windows reaching into earlier steps), the previous step's step-window ranks (deltas), the previous
    step's prepared whole-step rows of the primary layer and their Gram (novelty), earlier step texts
    (repetition) and the revalidation streak.
    """

    def __init__(self, config: SignalConfig | None = None) -> None:
        self.config = config or SignalConfig()
        c = self.config
        self._dtype = c.gram_dtype
        self._patterns = [("revalidation", compile_keywords(c.revalidation_words)),
                          ("uncertainty", compile_keywords(c.uncertainty_words)),
                          ("confident", compile_keywords(c.confident_words))]
        self._rep = RepetitionTracker(ngram=c.ngram, min_words=c.min_words)
        self._scorer = FailureScorer(c.failure)
        self.reset()

    def reset(self) -> None:
        """Forget the trace: the next call is step 0 of a new trace."""
        self._layers: tuple[int, ...] | None = None
        self._tail: dict[int, np.ndarray] = {}
        self._prev_step: dict[int, RankValues] = {}
        self._prev_rows: tuple[np.ndarray, np.ndarray] | None = None
        self._tucker_rows = 0
        self._key_cache: dict[tuple[int, str], tuple[str, ...]] | None = None
        self._rep.reset()
        self._scorer.reset()
        self.n_steps = 0

    @property
    def layers(self) -> tuple[int, ...] | None:
        """The used layers (known after the first call)."""
        return self._layers

    def _keys(self, layers: Sequence[int]) -> dict[tuple[int, str], tuple[str, ...]]:
        """Per-layer key names, built once per trace (formatting 100 keys per step is measurable)."""
        if self._key_cache is None:
            cache: dict[tuple[int, str], tuple[str, ...]] = {}
            for layer in layers:
                for w in WINDOWS:
                    cache[(layer, w)] = tuple(f"rank.{v}.L{layer}.{w}" for v in RANK_VALUES)
                cache[(layer, "delta")] = tuple(f"rank.delta.{v}.L{layer}" for v in ("num_norm", "eff_norm",
                                                                                     "stable_norm"))
            self._key_cache = cache
        return self._key_cache

    def _check(self, hidden: Mapping[int, np.ndarray],
               stats: TokenStats) -> tuple[tuple[int, ...], dict[int, np.ndarray]]:
        """Validate one step's inputs; returns the used layers and their ``(T, d)`` arrays."""
        layers = self._layers
        if layers is None:
            layers = resolve_layers(self.config, list(hidden.keys()))
            _primary(self.config, layers)
        out: dict[int, np.ndarray] = {}
        n_tokens = len(stats)
        for layer in layers:
            if layer not in hidden:
                raise LayerIndexError(f"layer {layer} is missing from this step's hidden states; tap it every step")
            h = np.asarray(hidden[layer])
            if h.ndim != 2:
                raise InvalidInputError(f"hidden[{layer}] has shape {h.shape}; pass (tokens, n_embd) arrays")
            if h.shape[0] != n_tokens:
                raise InvalidInputError(
                    f"hidden[{layer}] has {h.shape[0]} rows but token stats have {n_tokens}; pass the same tokens"
                )
            tail = self._tail.get(layer)
            if tail is not None and tail.shape[1] != h.shape[1]:
                raise InvalidInputError(f"hidden[{layer}] width changed from {tail.shape[1]} to {h.shape[1]}")
            out[layer] = h
        return layers, out

    def _win_rows(self, layer: int, h: np.ndarray, size: int) -> np.ndarray:
        tail = self._tail.get(layer)
        if not self.config.window_carry or tail is None or h.shape[0] >= size or tail.shape[0] == 0:
            return h[-size:] if h.shape[0] else h
        return np.concatenate([tail[-(size - h.shape[0]):], h], axis=0)

    def _text_part(self, stats: TokenStats, text: str, commit: bool) -> tuple[dict[str, float], dict[str, float]]:
        tf = token_features(stats)
        out = {"text.n_tokens": tf["n_tokens"], "text.n_chars": float(len(text)),
               "text.entropy_mean": tf["entropy_mean"], "text.entropy_max": tf["entropy_max"],
               "text.top1_mean": tf["top1_mean"], "text.margin_min": tf["margin_min"]}
        for name, pat in self._patterns:
            out[f"kw.{name}"] = float(count_keywords(text, pat))
        rep = self._rep.measure(text)
        for k, v in rep.items():
            out[f"rep.{k}"] = v
        if commit:
            self._rep.add(text)
        return out, tf

    def _fail(self, out: dict[str, float], tf: dict[str, float], rank_eff: float | None,
              novelty: float | None, commit: bool) -> None:
        has_tokens = tf["n_tokens"] > 0
        inp = FailureInputs(
            entropy_mean=tf["entropy_mean"] if has_tokens else None,
            entropy_max=tf["entropy_max"] if has_tokens else None,
            top1_mean=tf["top1_mean"] if has_tokens else None,
            margin_min=tf["margin_min"] if has_tokens else None,
            rank_eff_norm=rank_eff, novelty=novelty,
            kw_revalidation=out["kw.revalidation"], kw_uncertainty=out["kw.uncertainty"],
            kw_confident=out["kw.confident"],
            repetition=max(out["rep.max_jaccard"], out["rep.ngram_containment"]),
            arith_repeats=out["rep.arith_repeats"],
        )
        for k, v in self._scorer.score(inp, commit=commit).items():
            out[f"fail.{k}"] = v

    def compute(self, hidden: Mapping[int, np.ndarray], stats: TokenStats, text: str | None = None) -> dict[str, float]:
        """All signals of one finished step, then advance the trace state.

        ``hidden``: layer -> ``(T, n_embd)`` float array; ``stats``: the same T tokens; ``text``: the step's
        text (defaults to the joined pieces). Returns the keys of :func:`signal_names` in that order.
        """
        with blas_threads(self.config.blas_threads):
            return self._compute(hidden, stats, text)

    def _compute(self, hidden: Mapping[int, np.ndarray], stats: TokenStats, text: str | None) -> dict[str, float]:
        c = self.config
        text = stats.text if text is None else text
        layers, hs = self._check(hidden, stats)
        self._layers = layers
        prim = _primary(c, layers)
        n_tok = len(stats)
        out: dict[str, float] = {"step.index": float(self.n_steps), "step.partial": 0.0}

        # windows: whole step (evenly row-capped) and the last W tokens (reaching back when window_carry)
        if n_tok > c.step_max_rows:
            rows = np.unique(np.linspace(0, n_tok - 1, c.step_max_rows).round().astype(np.intp))
        else:
            rows = None
        wins: list[np.ndarray] = []
        same = []
        for layer in layers:
            h = hs[layer]
            win_w = self._win_rows(layer, h, c.window)
            same.append(rows is None and win_w.shape[0] == n_tok)
            wins.append(h[rows] if rows is not None else h)
            wins.append(win_w)
        need = [i for i in range(len(wins)) if not (i % 2 == 1 and same[i // 2])]
        got = batch_window_spectra([wins[i] for i in need], eps=c.eps, centre=c.centre,
                                   row_normalise=c.row_normalise, dtype=self._dtype)
        specs: list[WindowSpectrum] = [None] * len(wins)  # type: ignore[list-item]
        for i, ws in zip(need, got, strict=True):
            specs[i] = ws
        for j in range(len(layers)):
            if same[j]:
                specs[2 * j + 1] = specs[2 * j]
        keys = self._keys(layers)
        for j, layer in enumerate(layers):
            for w, spec in (("step", specs[2 * j]), ("win", specs[2 * j + 1])):
                r = spec.ranks
                out.update(zip(keys[(layer, w)], (r.num, r.num_norm, r.eff, r.eff_norm, r.stable, r.stable_norm),
                               strict=True))
        win_rows = wins[1].shape[0]
        out["rank.rows.step"] = float(wins[0].shape[0])
        out["rank.rows.win"] = float(win_rows)
        for j, layer in enumerate(layers):
            cur, prev = specs[2 * j].ranks, self._prev_step.get(layer)
            deltas = ((cur.num_norm - prev.num_norm, cur.eff_norm - prev.eff_norm, cur.stable_norm - prev.stable_norm)
                      if prev else (0.0, 0.0, 0.0))
            out.update(zip(keys[(layer, "delta")], map(float, deltas), strict=True))

        jp = layers.index(prim)
        own = specs[2 * jp]
        novelty = None
        if c.novelty:
            a, ga = self._prev_rows if self._prev_rows is not None else (None, None)
            nov = novelty_from_prepared(a, ga, own.rows, eps=c.eps, dtype=self._dtype,
                                        energy_b=float(np.trace(own.gram, dtype=np.float64)))
            out[f"rank.novelty.L{prim}"] = nov
            novelty = nov if own.rows.shape[0] >= c.min_rank_tokens else None

        if c.tucker and len(layers) >= 2:
            tk = self._tucker(layers, hs, specs)
            for m in range(3):
                out.update(_rank_items("tucker", f".mode{m}", tk.modes[m] if tk else ZERO_RANKS))
            out["tucker.rows"] = float(self._tucker_rows) if tk else 0.0

        txt, tf = self._text_part(stats, text, commit=True)
        out.update(txt)
        prim_win = specs[2 * jp + 1].ranks
        rank_eff = prim_win.eff_norm if win_rows >= c.min_rank_tokens else None
        self._fail(out, tf, rank_eff, novelty, commit=True)

        # advance the trace state
        keep = max(c.window, c.tucker_window)
        for j, layer in enumerate(layers):
            h = hs[layer]
            tail = self._tail.get(layer)
            joined = h if tail is None or h.shape[0] >= keep else np.concatenate([tail, h], axis=0)
            self._tail[layer] = np.array(joined[-keep:], dtype=np.float32)
            self._prev_step[layer] = specs[2 * j].ranks
        if c.novelty and own.rows.shape[0] >= (2 if c.centre else 1):
            n_own, d_own = own.rows.shape
            ga = own.gram if n_own <= d_own else own.rows @ own.rows.T
            self._prev_rows = (own.rows, ga)
        self.n_steps += 1
        return out

    def _tucker(self, layers: Sequence[int], hs: Mapping[int, np.ndarray],
                specs: Sequence[WindowSpectrum]) -> TuckerRanks | None:
        """Tucker ranks over the last ``tucker_window`` tokens; reuses the prepared sliding windows."""
        c = self.config
        wins = [specs[2 * j + 1].rows for j in range(len(layers))]
        if len({w.shape for w in wins}) != 1:
            return None
        if c.tucker_window <= c.window:
            p = np.stack([w[-c.tucker_window:] for w in wins])
            if c.centre and p.shape[1]:
                p -= p.mean(axis=1, keepdims=True)  # re-centre the sub-window (translation invariance)
            self._tucker_rows = p.shape[1]
            return tucker_from_prepared(p, eps=c.eps, centre=c.centre, balance_layers=c.tucker_balance_layers,
                                        dtype=self._dtype)
        slices = [self._win_rows(layer, hs[layer], c.tucker_window) for layer in layers]
        self._tucker_rows = slices[0].shape[0]
        return tucker_ranks(np.stack(slices), eps=c.eps, centre=c.centre, row_normalise=c.row_normalise,
                            balance_layers=c.tucker_balance_layers, dtype=self._dtype)

    def compute_partial(self, hidden: Mapping[int, np.ndarray], stats: TokenStats,
                        text: str | None = None) -> dict[str, float]:
        """Cheap signals of an unfinished step (its first K tokens) for early decisions; state is unchanged.

        Only the primary layer's sliding window is ranked (no whole-step window, deltas, novelty or Tucker);
        text, keyword and repetition signals compare with earlier steps without recording this one; the
        failure scorer reports the streak the step would reach. Keys: ``signal_names(..., partial=True)``.
        """
        with blas_threads(self.config.blas_threads):
            return self._compute_partial(hidden, stats, text)

    def _compute_partial(self, hidden: Mapping[int, np.ndarray], stats: TokenStats,
                         text: str | None) -> dict[str, float]:
        c = self.config
        text = stats.text if text is None else text
        layers, hs = self._check(hidden, stats)  # a partial call does not fix the trace's layers
        prim = _primary(c, layers)
        out: dict[str, float] = {"step.index": float(self.n_steps), "step.partial": 1.0}
        win = self._win_rows(prim, hs[prim], c.window)
        rv = batch_window_ranks([win], eps=c.eps, centre=c.centre, row_normalise=c.row_normalise,
                                dtype=self._dtype)[0]
        out.update(_rank_items("rank", f".L{prim}.win", rv))
        out["rank.rows.win"] = float(win.shape[0])
        txt, tf = self._text_part(stats, text, commit=False)
        out.update(txt)
        rank_eff = rv.eff_norm if win.shape[0] >= c.min_rank_tokens else None
        self._fail(out, tf, rank_eff, None, commit=False)
        return out


