"""Rank signals of hidden-state windows: numerical, effective and stable rank, and Tucker mode ranks.

A *window* is a matrix ``H`` of shape ``(n, d)``: ``n`` consecutive tokens (rows, in token order) of one
layer's hidden states of width ``d``. Before any spectrum is taken the rows are optionally L2-normalised and
then centred over tokens (the token mean is subtracted). Centring removes one dimension: the centred rows
span at most ``n - 1`` directions, so every *normalised* rank divides by ``min(n - 1, d)`` when centring is
on (``min(n, d)`` when it is off). A window of generic rows therefore has normalised numerical rank 1.0.
The span of the centred rows equals the span of the consecutive differences ``h[t+1] - h[t]``, so the
numerical rank is also the rank of the token-to-token increments.

Singular values come from the eigenvalues of the smaller Gram matrix (``n x n`` when ``n <= d``), which is
much faster than an SVD for ``n << d``. Eigenvalues below ``_FLOOR_ULPS * eps(dtype) * lambda_max`` are round-off
of the Gram product and are set to zero (for float32 that hides singular values below ~1e-3 of the largest;
use float64 for smaller tolerances, see :func:`gram_dtype_for`).

The Gram product is formed in ``dtype``; ``numpy.linalg.eigvalsh`` always runs LAPACK in float64 and rounds
the eigenvalues back to ``dtype``. The float32 Gram product is therefore the only float32 round-off in the
spectrum (it moves effective ranks by up to ~1e-6 relative against a float64 product), and any change to how
a Gram entry is computed (other centring arithmetic, a float64 product, a Gram derived from another one)
changes the values at that level and can flip a numerical rank whose singular value sits at ``eps``.

Per step, every Gram matrix (windows and Tucker unfoldings) is formed first and all matrices of one size then
share one batched eigen-solve (:func:`ranks_from_grams`); the rank formulas are evaluated on the whole batch
at once. Each Gram entry and eigenvalue is bit-for-bit the one :func:`window_ranks` computes.

Degenerate windows are defined, never NaN: fewer than two rows (with centring) or an all-zero window give
every rank 0 and every normalised rank 0; non-finite entries are replaced by 0 before the Gram product.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: round-off multiple below which Gram eigenvalues (relative to the largest) are treated as zero
_FLOOR_ULPS = 8.0


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

    ``g``: ``(..., m, m)`` symmetric PSD, formed in precision ``dtype`` (numpy solves in float64 and rounds the
    eigenvalues to ``dtype``).
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


def ranks_from_spectra(sv: np.ndarray, eps: float, denoms: Sequence[int]) -> list[RankValues]:
    """:func:`ranks_from_spectrum` of a stack of spectra, evaluated on the whole stack at once.

    ``sv``: ``(B, m)`` float64, each row descending and non-negative (rows may end in padding zeros, which
    change no rank); ``denoms``: ``B`` normalisers.
    """
    sv = np.asarray(sv, dtype=np.float64)
    n_b = sv.shape[0]
    if n_b <= 2 or sv.shape[1] == 0:  # a couple of rows: the scalar formulas are cheaper than array set-up
        return [ranks_from_spectrum(sv[b], eps, int(denoms[b])) for b in range(n_b)]
    top = sv[:, 0]
    num = np.count_nonzero(sv > (eps * top)[:, None], axis=1)
    total = sv.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = sv / total[:, None]
        ent = -np.einsum("ij,ij->i", p, np.log(np.where(sv > 0, p, 1.0)))
        stable = np.einsum("ij,ij->i", sv, sv) / (top * top)
    eff = np.exp(ent)
    out = []
    for b, (nb, eb, sb, tb) in enumerate(zip(num.tolist(), eff.tolist(), stable.tolist(), top.tolist(), strict=True)):
        denom = int(denoms[b])
        out.append(RankValues(float(nb), eb, sb, denom) if denom > 0 and tb > 0 else ZERO_RANKS)
    return out


def ranks_from_grams(grams: Sequence[np.ndarray], denoms: Sequence[int], *, eps: float,
                     dtype: type[np.floating]) -> list[RankValues]:
    """:class:`RankValues` of several Gram matrices (each ``(m_i, m_i)``, symmetric PSD) with normalisers.

    Each Gram is cast to ``dtype`` and matrices of one size share one batched eigen-solve, with the floor of
    :func:`spectrum_from_gram`; a matrix whose normaliser is 0 is not solved and gets :data:`ZERO_RANKS`.
    One result per Gram, in order.
    """
    out: list[RankValues] = [ZERO_RANKS] * len(grams)
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(grams):
        if denoms[i] > 0 and g.shape[-1] > 0:
            groups.setdefault(g.shape[-1], []).append(i)
    if not groups:
        return out
    # eigenvalues of every size go into one (B, m_max) array, descending and zero-padded, so the floor and
    # the rank formulas run once over all matrices
    todo: list[int] = []
    lams = []
    for idx in groups.values():
        if len(idx) == 1:
            stack = np.asarray(grams[idx[0]], dtype=dtype)[None]
        else:
            stack = np.array([grams[i] for i in idx], dtype=dtype)
        if not np.isfinite(stack).all():
            stack = np.nan_to_num(stack, nan=0.0, posinf=0.0, neginf=0.0)
        lams.append(np.linalg.eigvalsh(stack)[:, ::-1])
        todo.extend(idx)
    if len(lams) == 1:
        lam = lams[0].astype(np.float64)
    else:
        lam = np.zeros((len(todo), max(groups)), dtype=np.float64)
        row = 0
        for part in lams:
            lam[row:row + part.shape[0], :part.shape[1]] = part
            row += part.shape[0]
    floor = _FLOOR_ULPS * float(np.finfo(dtype).eps) * lam[:, :1]
    sv = np.sqrt(np.where(lam > floor, lam, 0.0))
    for i, rv in zip(todo, ranks_from_spectra(sv, eps, [denoms[i] for i in todo]), strict=True):
        out[i] = rv
    return out


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


def prepare_window(w: np.ndarray, *, centre: bool = True, row_normalise: bool = False,
                   dtype: type[np.floating] = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Prepared rows and smaller-side Gram of one window ``w`` (``(n, d)``, any real dtype), no spectrum.

    Returns ``(rows, gram)``: a new ``(n, d)`` array of ``dtype`` (see :func:`prepare_rows`) and its Gram
    ``(min(n, d), min(n, d))`` of ``dtype``. Non-finite entries are replaced by 0 (only when present).
    """
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError("a window must be a 2-D (tokens, hidden) array")
    with np.errstate(invalid="ignore", over="ignore"):
        if centre and not row_normalise and w.shape[0] > 0:
            # centre straight from the input: the same mean and difference as copying first and centring
            # in place, with one pass less over the rows
            if w.dtype != dtype or not w.flags.c_contiguous:
                w = np.array(w, dtype=dtype, order="C")
            x = np.subtract(w, w.mean(axis=0, keepdims=True))
        else:
            x = _prepare_inplace(np.array(w, dtype=dtype, order="C"), centre=centre, row_normalise=row_normalise,
                                 check_finite=False)
        g = gram(x)
    if not np.isfinite(g).all():  # a non-finite input entry always reaches the Gram: redo with sanitising
        x = _prepare_inplace(np.array(w, dtype=dtype, order="C"), centre=centre, row_normalise=row_normalise,
                             check_finite=True)
        g = gram(x)
    return x, g


def prepare_windows(windows: Sequence[np.ndarray], *, centre: bool = True, row_normalise: bool = False,
                    dtype: type[np.floating] = np.float32) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`prepare_window` of several windows (each ``(n_i, d_i)``): one ``(rows, gram)`` per window."""
    return [prepare_window(w, centre=centre, row_normalise=row_normalise, dtype=dtype) for w in windows]


def batch_window_spectra(windows: Sequence[np.ndarray], *, eps: float, centre: bool = True,
                         row_normalise: bool = False, dtype: type[np.floating] | None = None
                         ) -> list[WindowSpectrum]:
    """Prepare and rank several windows (each ``(n_i, d_i)``); Grams of equal size share one batched
    eigen-solve (the fast path used per step). One result per window, in order."""
    dt = dtype or gram_dtype_for(eps)
    prepared = prepare_windows(windows, centre=centre, row_normalise=row_normalise, dtype=dt)
    denoms = [rank_denominator(x.shape[0], x.shape[1], centre=centre) for x, _ in prepared]
    ranks = ranks_from_grams([g for _, g in prepared], denoms, eps=eps, dtype=dt)
    return [WindowSpectrum(x, g, rv) for (x, g), rv in zip(prepared, ranks, strict=True)]


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


def tucker_grams(p: np.ndarray, *, centre: bool, balance_layers: bool
                 ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], tuple[int, int, int]] | None:
    """The three mode Grams of prepared slices ``p`` (``(L, n, d)``, centred over tokens) and their normalisers.

    Returns ``((g0, g1, g2), (denom0, denom1, denom2))`` with float64 Grams ``g0`` ``(n, n)``, ``g1``
    ``(L, L)`` and ``g2`` ``(L n, L n)`` (see :func:`tucker_ranks`), or ``None`` for a degenerate tensor (no
    layers, too few tokens or zero width), whose ranks are all :data:`ZERO_RANKS`.
    """
    n_layers, n, d = p.shape
    c = 1 if centre else 0
    if n_layers == 0 or n - c <= 0 or d == 0:
        return None
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
    return (g0, g1, s), denoms


def tucker_from_prepared(p: np.ndarray, *, eps: float, centre: bool, balance_layers: bool,
                         dtype: type[np.floating]) -> TuckerRanks:
    """:func:`tucker_ranks` of already prepared slices ``p`` (``(L, n, d)``, centred over tokens)."""
    tg = tucker_grams(p, centre=centre, balance_layers=balance_layers)
    if tg is None:
        return TuckerRanks((ZERO_RANKS, ZERO_RANKS, ZERO_RANKS))
    r = ranks_from_grams(tg[0], tg[1], eps=eps, dtype=dtype)
    return TuckerRanks((r[0], r[1], r[2]))


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
    m = ga + 0.0  # ga + ridge * I, without building the identity
    m.flat[:: m.shape[0] + 1] += ridge
    sol = np.linalg.solve(m, c)
    inside = float(np.einsum("ij,ij->", c, sol))
    return float(min(1.0, max(0.0, 1.0 - inside / eb)))
