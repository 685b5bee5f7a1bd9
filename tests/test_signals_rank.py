"""Rank signals on constructed matrices and tensors of known rank."""

from __future__ import annotations

import _signal_oracle as O
import numpy as np
import pytest

from rankguide_edge.signals import rank as R


def _orth(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((n, k)))
    return q


def _low_rank(rng: np.random.Generator, n: int, d: int, k: int, sv: np.ndarray | None = None) -> np.ndarray:
    s = np.ones(k) if sv is None else sv
    return (_orth(rng, n, k) * s) @ _orth(rng, d, k).T


def _centred_orth(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """n x k orthonormal columns orthogonal to the all-ones vector (so centring leaves them unchanged)."""
    m = rng.standard_normal((n, k))
    m -= m.mean(axis=0)
    q, _ = np.linalg.qr(m)
    return q


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("centre", [False, True])
def test_numerical_rank_exact(k: int, centre: bool) -> None:
    rng = np.random.default_rng(k)
    h = _low_rank(rng, 40, 200, k, sv=np.linspace(3.0, 1.0, k)).astype(np.float32)
    rv = R.window_ranks(h, eps=1e-2, centre=centre)
    assert rv.num == k
    assert rv.denom == (39 if centre else 40)
    assert rv.num_norm == pytest.approx(k / rv.denom)


@pytest.mark.parametrize("k", [2, 5])
def test_numerical_rank_with_small_noise(k: int) -> None:
    rng = np.random.default_rng(10 + k)
    h = _low_rank(rng, 30, 128, k, sv=np.linspace(2.0, 1.0, k))
    noisy = h + 1e-6 * rng.standard_normal(h.shape)
    for eps, dtype in ((1e-2, np.float32), (1e-4, np.float64)):
        assert R.window_ranks(noisy, eps=eps, dtype=dtype).num == k
    # with a tolerance below the noise floor every direction counts
    assert R.window_ranks(noisy, eps=1e-9, dtype=np.float64).num == 29


@pytest.mark.parametrize("k", [1, 4, 10])
def test_effective_and_stable_rank_of_equal_singular_values(k: int) -> None:
    rng = np.random.default_rng(k)
    h = (_centred_orth(rng, 32, k) * 5.0) @ _orth(rng, 96, k).T
    for centre in (False, True):
        rv = R.window_ranks(h, eps=1e-2, centre=centre, dtype=np.float64)
        assert rv.eff == pytest.approx(k, rel=1e-6)
        assert rv.stable == pytest.approx(k, rel=1e-6)
        assert rv.num == k


def test_stable_rank_of_rank_one_is_one() -> None:
    rng = np.random.default_rng(1)
    h = np.outer(rng.standard_normal(20), rng.standard_normal(64)).astype(np.float32)
    for centre in (False, True):
        rv = R.window_ranks(h, centre=centre)
        assert rv.stable == pytest.approx(1.0, rel=1e-5)
        assert rv.eff == pytest.approx(1.0, rel=1e-5)
        assert rv.num == 1


def test_effective_rank_formula_on_a_known_spectrum() -> None:
    sv = np.array([3.0, 2.0, 1.0, 0.0])
    p = sv[:3] / 6.0
    assert R.effective_rank(sv) == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert R.stable_rank(sv) == pytest.approx(14.0 / 9.0)
    assert R.numerical_rank(sv, 0.4) == 2


@pytest.mark.parametrize("shape", [(16, 200), (40, 12), (25, 25)])
def test_gram_path_matches_svd(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(3)
    h = rng.standard_normal(shape) * np.linspace(0.1, 3.0, shape[1])
    a = R.singular_values(h, dtype=np.float64, method="gram")
    b = R.singular_values(h, dtype=np.float64, method="svd")
    np.testing.assert_allclose(a, b[: a.size], rtol=1e-8, atol=1e-10 * b[0])
    ra = R.window_ranks(h, eps=1e-3, dtype=np.float64)
    rb = R.window_ranks(h, eps=1e-3, dtype=np.float64, method="svd")
    assert ra.num == rb.num
    assert ra.eff == pytest.approx(rb.eff, rel=1e-9)
    assert ra.stable == pytest.approx(rb.stable, rel=1e-9)


def test_float32_gram_is_close_to_float64() -> None:
    rng = np.random.default_rng(4)
    h = (rng.standard_normal((64, 896)) + 30.0 * rng.standard_normal(896)).astype(np.float32)
    r32 = R.window_ranks(h, dtype=np.float32)
    r64 = R.window_ranks(h, dtype=np.float64)
    assert r32.eff == pytest.approx(r64.eff, rel=1e-4)
    assert r32.num == r64.num
    assert R.gram_dtype_for(1e-2) is np.float32
    assert R.gram_dtype_for(1e-4) is np.float64


def test_normalisation_by_min_n_minus_one_d_after_centring() -> None:
    rng = np.random.default_rng(5)
    wide = rng.standard_normal((20, 300))
    rv = R.window_ranks(wide)
    assert (rv.num, rv.denom, rv.num_norm) == (19, 19, 1.0)
    rv0 = R.window_ranks(wide, centre=False)
    assert (rv0.num, rv0.denom, rv0.num_norm) == (20, 20, 1.0)
    tall = rng.standard_normal((50, 10))
    rt = R.window_ranks(tall)
    assert (rt.num, rt.denom, rt.num_norm) == (10, 10, 1.0)
    assert R.rank_denominator(1, 10) == 0 and R.rank_denominator(1, 10, centre=False) == 1
    for v in (rv.eff_norm, rv.stable_norm, rt.eff_norm):
        assert 0.0 < v <= 1.0


def test_invariances_permutation_scale_translation() -> None:
    rng = np.random.default_rng(6)
    h = (_low_rank(rng, 32, 128, 6, sv=np.linspace(4, 1, 6)) + 0.05 * rng.standard_normal((32, 128)))
    base = R.window_ranks(h, dtype=np.float64).as_dict()
    perm = R.window_ranks(h[rng.permutation(32)], dtype=np.float64).as_dict()
    moved = R.window_ranks(h + 7.0 * rng.standard_normal(128), dtype=np.float64).as_dict()
    for scale in (1e-3, 1e3):
        scaled = R.window_ranks(h * scale, dtype=np.float64).as_dict()
        for key in base:
            assert scaled[key] == pytest.approx(base[key], rel=1e-9)
    for key in base:
        assert perm[key] == pytest.approx(base[key], rel=1e-9)
        assert moved[key] == pytest.approx(base[key], rel=1e-6)


def test_row_normalise_ignores_row_scales() -> None:
    rng = np.random.default_rng(7)
    h = rng.standard_normal((24, 64))
    scales = rng.uniform(0.1, 10.0, (24, 1))
    a = R.window_ranks(h, row_normalise=True, dtype=np.float64)
    b = R.window_ranks(h * scales, row_normalise=True, dtype=np.float64)
    assert a.eff == pytest.approx(b.eff, rel=1e-9)
    assert R.window_ranks(h * scales, dtype=np.float64).eff != pytest.approx(a.eff, rel=1e-3)


@pytest.mark.parametrize("h", [
    np.zeros((0, 16)), np.zeros((1, 16)), np.zeros((8, 16)), np.tile(np.arange(16.0), (8, 1)),
    np.zeros((8, 0)),
])
def test_degenerate_windows_are_zero_not_nan(h: np.ndarray) -> None:
    rv = R.window_ranks(h)
    assert rv.as_dict() == {k: 0.0 for k in rv.as_dict()}
    assert R.batch_window_ranks([h], eps=1e-2)[0].as_dict() == rv.as_dict()


def test_single_row_without_centring_has_rank_one() -> None:
    rv = R.window_ranks(np.ones((1, 8)), centre=False)
    assert (rv.num, rv.eff, rv.stable, rv.num_norm) == (1.0, 1.0, 1.0, 1.0)


def test_non_finite_entries_never_give_nan() -> None:
    rng = np.random.default_rng(8)
    h = rng.standard_normal((16, 32)).astype(np.float32)
    h[3, 5], h[7, 1], h[9, 2] = np.nan, np.inf, -np.inf
    for fn in (lambda: R.window_ranks(h).as_dict(), lambda: R.batch_window_ranks([h, h[:8]], eps=1e-2)[0].as_dict()):
        vals = fn()
        assert all(np.isfinite(v) for v in vals.values())
        assert vals["num"] > 0
    tk = R.tucker_ranks(np.stack([h, h * 2]))
    assert all(np.isfinite(v) for m in tk.modes for v in m.as_dict().values())


def test_batch_matches_single_windows_with_mixed_shapes() -> None:
    rng = np.random.default_rng(9)
    wins = [rng.standard_normal((12, 40)), rng.standard_normal((12, 40)), rng.standard_normal((5, 40)),
            np.zeros((1, 40))]
    batch = R.batch_window_ranks(wins, eps=1e-2, dtype=np.float64)
    for w, rv in zip(wins, batch, strict=True):
        single = R.window_ranks(w, eps=1e-2, dtype=np.float64)
        assert rv.as_dict() == pytest.approx(single.as_dict())
        assert rv.as_dict() == pytest.approx(O.window(w, dtype=np.float64).values, rel=1e-9)  # SVD by definition
    spectra = R.batch_window_spectra(wins[:2], eps=1e-2)
    np.testing.assert_allclose(spectra[0].rows.mean(axis=0), 0.0, atol=1e-5)
    assert spectra[0].gram.shape == (12, 12)


def _tucker_tensor(rng: np.random.Generator, dims: tuple[int, int, int], ranks: tuple[int, int, int]) -> np.ndarray:
    core = rng.standard_normal(ranks)
    a = rng.standard_normal((dims[0], ranks[0]))
    b = rng.standard_normal((dims[1], ranks[1]))
    c = rng.standard_normal((dims[2], ranks[2]))
    x = np.einsum("pqr,tp,lq,dr->tld", core, a, b, c)  # tokens x layers x hidden
    return np.transpose(x, (1, 0, 2))  # (L, n, d) slices


@pytest.mark.parametrize("ranks", [(3, 2, 4), (1, 1, 1), (5, 3, 2)])
def test_tucker_mode_ranks_of_known_factor_ranks(ranks: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(sum(ranks))
    x = _tucker_tensor(rng, (16, 4, 64), ranks)
    raw = R.tucker_ranks(x, eps=1e-6, centre=False, balance_layers=False, dtype=np.float64)
    assert tuple(m.num for m in raw.modes) == ranks
    balanced = R.tucker_ranks(x, eps=1e-6, centre=False, balance_layers=True, dtype=np.float64)
    assert tuple(m.num for m in balanced.modes) == ranks  # scaling slices keeps multilinear ranks
    assert [m.denom for m in raw.modes] == [16, 4, 64]
    centred = R.tucker_ranks(x, eps=1e-6, dtype=np.float64)
    assert [m.denom for m in centred.modes] == [15, 4, 60]
    assert tuple(m.num for m in centred.modes) == ranks


def test_tucker_matches_explicit_unfoldings() -> None:
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 10, 30)) * np.array([1.0, 5.0, 0.2])[:, None, None]
    tk = R.tucker_ranks(x, eps=1e-3, centre=False, balance_layers=False, dtype=np.float64)
    t = np.transpose(x, (1, 0, 2))  # tokens x layers x hidden
    unfold = [t.reshape(10, -1), np.transpose(t, (1, 0, 2)).reshape(3, -1), np.transpose(t, (2, 0, 1)).reshape(30, -1)]
    for mode, u in enumerate(unfold):
        sv = np.linalg.svd(u, compute_uv=False)
        assert tk.modes[mode].eff == pytest.approx(R.effective_rank(sv), rel=1e-9)
        assert tk.modes[mode].stable == pytest.approx(R.stable_rank(sv), rel=1e-9)
        assert tk.modes[mode].num == R.numerical_rank(sv, 1e-3)


def test_tucker_degenerate() -> None:
    tk = R.tucker_ranks(np.zeros((2, 1, 8)))
    assert all(m.as_dict() == R.ZERO_RANKS.as_dict() for m in tk.modes)
    tk0 = R.tucker_ranks(np.zeros((3, 6, 8)))
    assert all(m.num == 0 and m.eff == 0 for m in tk0.modes)


def test_subspace_novelty() -> None:
    rng = np.random.default_rng(12)
    basis = _orth(rng, 64, 8)
    prev = rng.standard_normal((20, 8)) @ basis.T
    same_span = rng.standard_normal((15, 8)) @ basis.T
    other = rng.standard_normal((15, 8)) @ _orth(rng, 64, 8).T
    other -= (other @ basis) @ basis.T  # orthogonal to prev's span
    assert R.subspace_novelty(prev, same_span, dtype=np.float64) == pytest.approx(0.0, abs=5e-3)  # ridge bias ~ r eps^2
    assert R.subspace_novelty(prev, other, dtype=np.float64) == pytest.approx(1.0, abs=1e-6)
    half = np.concatenate([same_span, other], axis=0)
    assert 0.2 < R.subspace_novelty(prev, half, dtype=np.float64) < 0.8
    assert R.subspace_novelty(None, other) == 1.0
    assert R.subspace_novelty(prev, other[:1]) == 0.0
    assert R.subspace_novelty(np.zeros((5, 64)), other) == 1.0


def test_ranks_from_spectra_match_the_scalar_formulas() -> None:
    rng = np.random.default_rng(13)
    sv = np.sort(rng.uniform(0.0, 3.0, (6, 20)), axis=1)[:, ::-1].copy()
    sv[1, 10:] = 0.0  # padding zeros / exact zeros
    sv[2] = 0.0  # a zero spectrum
    sv[3, 1:] = 1e-9  # below eps of the largest
    denoms = [19, 19, 19, 19, 0, 7]
    got = R.ranks_from_spectra(sv, 1e-2, denoms)
    for row, d, rv in zip(sv, denoms, got, strict=True):
        want = R.ranks_from_spectrum(row, 1e-2, d)
        assert rv.as_dict() == pytest.approx(want.as_dict(), rel=1e-12, abs=0.0)
    assert got[2] is R.ZERO_RANKS and got[4] is R.ZERO_RANKS and got[3].num == 1.0
    for few, many in zip(R.ranks_from_spectra(sv[:2], 1e-2, denoms[:2]), got[:2], strict=True):  # the scalar path
        assert few.as_dict() == pytest.approx(many.as_dict(), rel=1e-12, abs=0.0)
    assert R.ranks_from_spectra(np.zeros((0, 5)), 1e-2, []) == []


def test_ranks_from_grams_of_mixed_sizes_equal_one_at_a_time() -> None:
    rng = np.random.default_rng(14)
    xs = [rng.standard_normal((n, 30)) for n in (12, 5, 12, 12, 3)]
    grams = [x @ x.T for x in xs] + [np.zeros((4, 4)), np.full((2, 2), np.nan)]
    denoms = [11, 4, 11, 0, 2, 3, 1]
    for dt in (np.float32, np.float64):
        got = R.ranks_from_grams(grams, denoms, eps=1e-3, dtype=dt)
        for g, d, rv in zip(grams, denoms, got, strict=True):
            want = R.ranks_from_spectrum(R.spectrum_from_gram(g, dt), 1e-3, d)
            assert rv.as_dict() == pytest.approx(want.as_dict(), rel=1e-12, abs=0.0)
        assert got[3] is R.ZERO_RANKS and got[5].num == 0.0 and got[6].num == 0.0
        assert got[0].num == 12 and got[1].num == 5  # uncentred rows: full rank
        for x, d, rv in zip(xs, denoms, got, strict=False):  # the Grams' spectra are the rows' singular values
            want = O.ranks(np.linalg.svd(x, compute_uv=False), 1e-3, d, dt).values
            assert rv.as_dict() == pytest.approx(want, rel=1e-9 if dt is np.float64 else 1e-5)
    assert R.ranks_from_grams([], [], eps=1e-2, dtype=np.float32) == []


def test_prepare_window_centres_and_forms_the_smaller_gram() -> None:
    rng = np.random.default_rng(15)
    h = rng.standard_normal((10, 25)) + 4.0
    rows, g = R.prepare_window(h)
    assert rows.dtype == np.float32 and g.shape == (10, 10)
    np.testing.assert_allclose(rows.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(g, rows @ rows.T, rtol=1e-5)
    tall_rows, tall_g = R.prepare_window(h.T, dtype=np.float64)
    assert tall_g.shape == (10, 10) and tall_rows.shape == (25, 10)
    np.testing.assert_allclose(tall_g, tall_rows.T @ tall_rows)
    bad = h.copy()
    bad[2, 3] = np.inf
    rows_b, g_b = R.prepare_window(bad)
    assert np.isfinite(g_b).all() and np.isfinite(rows_b).all()
    assert [x.shape for x, _ in R.prepare_windows([h, h[:4]])] == [(10, 25), (4, 25)]
    with pytest.raises(ValueError):
        R.prepare_window(h[None])
    empty_rows, empty_g = R.prepare_window(np.zeros((0, 7)))
    assert empty_rows.shape == (0, 7) and empty_g.shape == (0, 0)


def test_tucker_grams_are_the_unfolding_grams() -> None:
    rng = np.random.default_rng(16)
    p = R.prepare_rows(rng.standard_normal((3, 6, 20)), dtype=np.float64)
    (g0, g1, g2), denoms = R.tucker_grams(p, centre=True, balance_layers=False)
    t = np.transpose(p, (1, 0, 2))  # tokens x layers x hidden
    u0, u1 = t.reshape(6, -1), np.transpose(t, (1, 0, 2)).reshape(3, -1)
    np.testing.assert_allclose(g0, u0 @ u0.T)
    np.testing.assert_allclose(g1, u1 @ u1.T)
    np.testing.assert_allclose(g2, p.reshape(18, 20) @ p.reshape(18, 20).T)
    assert denoms == (5, 3, 15)
    (_, b1, _), _ = R.tucker_grams(p, centre=True, balance_layers=True)
    np.testing.assert_allclose(np.diag(b1), 1.0)
    assert R.tucker_grams(p[:, :1], centre=True, balance_layers=True) is None
    assert R.tucker_grams(np.zeros((0, 4, 3)), centre=False, balance_layers=True) is None


def test_a_hand_computed_window() -> None:
    """Rows (1, 0), (0, 1), (-1, -1): mean 0, so centring changes nothing; H^T H = [[2, 1], [1, 2]] has
    eigenvalues 3 and 1, so the singular values are sqrt(3) and 1 and the normaliser is min(3 - 1, 2) = 2."""
    h = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    p = np.array([np.sqrt(3.0), 1.0]) / (np.sqrt(3.0) + 1.0)
    for dt in (np.float32, np.float64):
        rv = R.window_ranks(h, dtype=dt)
        assert (rv.num, rv.denom) == (2.0, 2)
        assert rv.eff == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-6)
        assert rv.stable == pytest.approx(4.0 / 3.0, rel=1e-6)
        assert rv.eff_norm == pytest.approx(rv.eff / 2) and rv.stable_norm == pytest.approx(2.0 / 3.0, rel=1e-6)
        assert R.window_ranks(h, eps=0.6, dtype=dt).num == 1.0  # 1 / sqrt(3) = 0.577 is below 0.6 sqrt(3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ranks_of_a_window_with_known_distinct_singular_values(dtype) -> None:
    """U diag(s) V^T with token-centred orthonormal U: the window's spectrum is s, whatever U and V."""
    rng = np.random.default_rng(17)
    s = np.array([4.0, 2.0, 1.0, 0.5, 0.02])  # 0.02 < eps * 4 = 0.04: not counted by num, but in eff
    h = (_centred_orth(rng, 30, 5) * s) @ _orth(rng, 80, 5).T + rng.standard_normal(80)  # any row offset
    rv = R.window_ranks(h, eps=1e-2, dtype=dtype)
    p = s / s.sum()
    assert rv.num == 4 and rv.denom == 29
    assert rv.eff == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-5)
    assert rv.stable == pytest.approx((s * s).sum() / 16.0, rel=1e-5)
    assert R.window_ranks(h, eps=0.3, dtype=dtype).num == 2  # 1.0 < 0.3 * 4 < 2.0


def test_ranks_are_invariant_to_orthogonal_maps_and_zero_padding() -> None:
    rng = np.random.default_rng(18)
    h = _low_rank(rng, 24, 40, 5, sv=np.linspace(3, 1, 5)) + 0.05 * rng.standard_normal((24, 40)) + 2.0
    q = np.linalg.qr(rng.standard_normal((40, 40)))[0]
    for centre in (True, False):
        base = R.window_ranks(h, centre=centre, dtype=np.float64).as_dict()
        assert R.window_ranks(h @ q, centre=centre, dtype=np.float64).as_dict() == pytest.approx(base, rel=1e-9)
        wider = np.concatenate([h, np.zeros((24, 7))], axis=1)  # extra hidden units that never fire
        assert R.window_ranks(wider, centre=centre, dtype=np.float64).as_dict() == pytest.approx(base, rel=1e-9)
    # uncentred, all-zero tokens add nothing to the spectrum: the ranks stay, the normaliser min(n, d) grows
    plain = R.window_ranks(h, centre=False, dtype=np.float64)
    longer = R.window_ranks(np.concatenate([h, np.zeros((6, 40))]), centre=False, dtype=np.float64)
    assert (longer.num, longer.eff, longer.stable) == pytest.approx((plain.num, plain.eff, plain.stable), rel=1e-9)
    assert (plain.denom, longer.denom) == (24, 30)


def test_tucker_ranks_are_invariant_to_layer_order_and_orthogonal_maps() -> None:
    rng = np.random.default_rng(19)
    x = _tucker_tensor(rng, (12, 4, 30), (3, 2, 4)) + 0.01 * rng.standard_normal((4, 12, 30))
    q = np.linalg.qr(rng.standard_normal((30, 30)))[0]
    for bal in (True, False):
        base = [m.as_dict() for m in R.tucker_ranks(x, balance_layers=bal, dtype=np.float64).modes]
        for moved in (x[[2, 0, 3, 1]], x @ q, x * 1e3):
            got = [m.as_dict() for m in R.tucker_ranks(moved, balance_layers=bal, dtype=np.float64).modes]
            assert got == [pytest.approx(b, rel=1e-8) for b in base]


def test_a_hand_computed_novelty() -> None:
    """prev spans e1 with energy 2 (rows +e1, -e1), so delta = eps^2 * 2 and e1 keeps the weight
    2 / (2 + delta) = 1 / (1 + eps^2); a step along e2 is all new, one along e1 + e2 half new, plus the bias."""
    prev = np.array([[1.0, 0.0], [-1.0, 0.0]])
    eps = 1e-2
    assert R.subspace_novelty(prev, np.array([[0.0, 1.0], [0.0, -1.0]]), eps=eps, dtype=np.float64) == 1.0
    half = R.subspace_novelty(prev, np.array([[1.0, 1.0], [-1.0, -1.0]]), eps=eps, dtype=np.float64)
    assert half == pytest.approx(1.0 - 0.5 / (1.0 + eps * eps), rel=1e-12)
    same = R.subspace_novelty(prev, np.array([[3.0, 0.0], [-3.0, 0.0]]), eps=eps, dtype=np.float64)
    assert same == pytest.approx(1.0 - 1.0 / (1.0 + eps * eps), rel=1e-9)
