"""Every step signal equals its definition (docs/SIGNALS.md), computed another way (tests/_signal_oracle.py:
SVDs of the explicit windows and unfoldings, the ridge projector from singular vectors, windows cut from the
whole history), step after step (state included), on random inputs and on inputs that look like real hidden
states (massive-activation dimensions, slowly drifting low-rank structure, heavy-tailed spectra, repeated
tokens, non-finite entries), across configurations.

Tolerances: the oracle runs in float64, so with a float64 Gram every value agrees to 1e-8 relative; with the
float32 Gram (the default) the product's rounding moves values by up to ~1e-4 relative, and a value whose
spectrum has a singular value at a discontinuity (the round-off floor, or ``eps * s_1`` for ``num``) is
checked against the oracle's bounds for it.
"""

from __future__ import annotations

from collections.abc import Iterator

import _signal_oracle as O
import numpy as np
import pytest

from rankguide_edge.signals import rank as R
from rankguide_edge.signals.bench import _synthetic_step
from rankguide_edge.signals.step import SignalConfig, StepSignalComputer, signal_names
from rankguide_edge.signals.text import TokenStats

#: (absolute, relative) tolerance by Gram precision
TOL = {np.float64: (1e-10, 1e-8), np.float32: (1e-6, 2e-4)}


def _agrees(got: float, want: float, bounds: tuple[float, float] | None, dtype: type[np.floating]) -> bool:
    tol_abs, tol_rel = TOL[dtype]
    lo, hi = bounds if bounds is not None else (want, want)
    return lo - tol_abs - tol_rel * abs(lo) <= got <= hi + tol_abs + tol_rel * abs(hi)


def _assert_defined(got: dict[str, float], oracle: O.StepOracle, want: dict[str, float], where: str) -> None:
    assert set(got) == set(want), f"{where}: {set(got) ^ set(want)}"
    bad = {k: (got[k], want[k], oracle.bounds.get(k)) for k in want
           if not _agrees(got[k], want[k], oracle.bounds.get(k), oracle.dtype)}
    assert not bad, f"{where}: {bad}"


def _stats(rng: np.random.Generator, n: int, k: int = 5) -> TokenStats:
    top = np.sort(rng.uniform(-7.0, -0.01, (n, k)), axis=1)[:, ::-1]
    return TokenStats(rng.gamma(1.0, 0.4, n), top, tuple("ab" for _ in range(n)))


def _real_looking(rng: np.random.Generator, layers: tuple[int, ...], n: int, d: int,
                  state: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
    """Hidden rows with a huge per-layer offset in a few dimensions, a drifting low-rank part with a
    power-law spectrum, small isotropic noise and some repeated tokens (identical rows)."""
    if "basis" not in state:
        state["basis"] = np.linalg.qr(rng.standard_normal((d, 24)))[0].T  # (24, d) orthonormal
        state["off"] = rng.standard_normal(d) * 0.3
        state["off"][rng.choice(d, 3, replace=False)] = 400.0
    basis, off = state["basis"], state["off"]
    sv = 60.0 * np.arange(1, 25) ** -1.3
    out = {}
    for j, layer in enumerate(layers):
        coef = np.cumsum(rng.standard_normal((n, 24)), axis=0) * sv / np.sqrt(n + 1.0)
        h = off * (1 + j) + coef @ basis + 0.02 * (1 + j) * rng.standard_normal((n, d))
        if n >= 6:
            h[n // 2] = h[n // 3]  # a repeated token
        out[layer] = h.astype(np.float32)
    return out


def _random(rng: np.random.Generator, layers: tuple[int, ...], n: int, d: int,
            state: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
    return {layer: (rng.standard_normal((n, d)) * (1 + 0.3 * j) + 5.0).astype(np.float32)
            for j, layer in enumerate(layers)}


def _run(cfg: SignalConfig, steps: Iterator[tuple[dict[int, np.ndarray], TokenStats, str]], label: str,
         partial: bool = True) -> int:
    lib, oracle = StepSignalComputer(cfg), O.StepOracle(cfg)
    count = 0
    for i, (hidden, stats, text) in enumerate(steps):
        if partial and len(stats) >= 2:
            k = max(1, len(stats) // 2)
            ph = {key: v[:k] for key, v in hidden.items()}
            got = lib.compute_partial(ph, stats.head(k), text[:9])
            assert list(got) == signal_names(cfg, list(hidden), partial=True)  # the documented key order
            _assert_defined(got, oracle, oracle.compute_partial(ph, stats.head(k), text[:9]),
                            f"{label} partial step {i}")
        got = lib.compute(hidden, stats, text)
        assert list(got) == signal_names(cfg, list(hidden))
        _assert_defined(got, oracle, oracle.compute(hidden, stats, text), f"{label} step {i}")
        count += 1
    return count


def _steps(kind, seed: int, layers: tuple[int, ...], lengths: list[int], d: int
           ) -> Iterator[tuple[dict[int, np.ndarray], TokenStats, str]]:
    rng = np.random.default_rng(seed)
    state: dict[str, np.ndarray] = {}
    texts = ["We add 2 + 3 = 5.\n\n", "Wait, let me check: 2 + 3 = 5 again.\n\n", "Maybe it is 6?\n\n",
             "Therefore the answer is 5.\n\n"]
    for i, n in enumerate(lengths):
        yield kind(rng, layers, n, d, state), _stats(rng, n), texts[i % len(texts)]


LAYERS = (3, 7, 11)
LENGTHS = [20, 4, 1, 0, 12, 33, 9, 16, 7, 40, 2, 25]

CONFIGS = {
    "default": {},
    "small-window": {"window": 8, "tucker_window": 4},
    "tucker-wider-than-window": {"window": 6, "tucker_window": 10},
    "row-normalise": {"row_normalise": True, "window": 12},
    "no-centre": {"centre": False, "window": 10, "tucker_window": 6},
    "float64": {"eps": 1e-4, "window": 16},
    "capped-steps": {"step_max_rows": 10, "window": 8},
    "no-carry-unbalanced": {"window_carry": False, "tucker_balance_layers": False, "window": 12},
    "no-novelty-no-tucker": {"novelty": False, "tucker": False},
    "last-layer": {"layers": "last", "window": 8},
    "primary-layer": {"primary_layer": 3, "window": 8, "precision": "float64"},
    "float64-row-normalise-no-carry": {"precision": "float64", "row_normalise": True, "window_carry": False},
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("kind", [_random, _real_looking], ids=["random", "real-looking"])
def test_signals_follow_their_definitions_across_configs(name: str, kind) -> None:
    cfg = SignalConfig.from_mapping(CONFIGS[name])
    assert _run(cfg, _steps(kind, 17, LAYERS, LENGTHS, 48), f"{name}/{kind.__name__}") == len(LENGTHS)


@pytest.mark.parametrize("kind", [_random, _real_looking], ids=["random", "real-looking"])
def test_signals_follow_their_definitions_at_benchmark_size(kind) -> None:
    """W 64, 4 layers, n_embd 896: the configuration the speed target is about."""
    cfg = SignalConfig.from_mapping({}, window=64, tucker_window=16)
    layers = (5, 11, 17, 23)
    assert _run(cfg, _steps(kind, 3, layers, [64, 64, 30, 64, 80, 64, 64, 10], 896), kind.__name__) == 8


def test_signals_follow_their_definitions_on_the_benchmark_trace() -> None:
    """The synthetic trace of ``rankguide-edge bench signals`` (large offsets, low-rank drift, noise)."""
    rng = np.random.default_rng(0)
    layers = [5, 11, 17, 23]
    offsets = {layer: rng.standard_normal(896).astype(np.float32) * 0.5 for layer in layers}
    for layer in layers:
        offsets[layer][:3] = 50.0 * (1 + layer)
    steps = (_synthetic_step(rng, layers, 64, 896, offsets) for _ in range(12))
    assert _run(SignalConfig(window=64, tucker_window=16), steps, "bench trace", partial=False) == 12


def test_non_finite_and_degenerate_inputs_follow_their_definitions() -> None:
    rng = np.random.default_rng(5)
    const = {layer: np.tile(np.arange(32, dtype=np.float32), (9, 1)) for layer in LAYERS}
    zeros = {layer: np.zeros((9, 32), np.float32) for layer in LAYERS}

    def steps():
        for n in (10, 10, 3, 10):
            hidden = _random(rng, LAYERS, n, 32, {})
            hidden[7][min(2, n - 1), 4] = np.nan
            hidden[11][0, 1] = np.inf
            yield hidden, _stats(rng, n), "x"
        yield const, _stats(rng, 9), "y"
        yield zeros, _stats(rng, 9), "z"
        f64 = {layer: rng.standard_normal((11, 32)) * 3.0 + 1e3 for layer in LAYERS}  # float64 input
        yield f64, _stats(rng, 11), "w"

    assert _run(SignalConfig(window=8, tucker_window=6), steps(), "non-finite") == 7
    # closed form: constant or zero rows have no spectrum and no energy, whatever came before
    for hidden in (const, zeros):
        comp = StepSignalComputer(SignalConfig(window=8, tucker_window=6, window_carry=False))
        comp.compute(_random(rng, LAYERS, 10, 32, {}), _stats(rng, 10), "a")
        out = comp.compute(hidden, _stats(rng, 9), "b")
        ranks = {k: v for k, v in out.items() if k.startswith(("rank.num", "rank.eff", "rank.stable", "tucker."))
                 and k != "tucker.rows"}
        assert ranks and set(ranks.values()) == {0.0}
        assert out["rank.novelty.L11"] == 0.0 and out["tucker.rows"] == 6


@pytest.mark.parametrize("shape", [(64, 896), (16, 40), (40, 16), (1, 8), (2, 8), (9, 0)])
def test_rank_functions_follow_their_definitions(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    ws = [(rng.standard_normal(shape) * rng.uniform(0.1, 3.0, shape[1]) + 7.0).astype(np.float32)
          for _ in range(3)]
    windows = [*ws, ws[0][: max(0, shape[0] - 1)]]
    for kwargs in ({}, {"row_normalise": True}, {"centre": False}, {"dtype": np.float64, "eps": 1e-4}):
        eps, dt = kwargs.get("eps", 1e-2), kwargs.get("dtype", np.float32)
        opts = {k: v for k, v in kwargs.items() if k not in ("eps", "dtype")}
        got = R.batch_window_ranks(windows, eps=eps, dtype=dt, **opts)
        for w, rv in zip(windows, got, strict=True):
            want = O.window(w, eps=eps, dtype=dt, **opts)
            assert all(_agrees(rv.as_dict()[k], want.values[k], want.bounds.get(k), dt) for k in want.values), \
                (shape, kwargs, rv, want)
        single = R.window_ranks(ws[1], eps=eps, dtype=dt, **opts).as_dict()
        want = O.window(ws[1], eps=eps, dtype=dt, **opts)
        assert all(_agrees(single[k], want.values[k], want.bounds.get(k), dt) for k in want.values)
    if shape[0] >= 2 and shape[1] > 0:
        x = np.stack(ws)
        for bal in (True, False):
            got_t = R.tucker_ranks(x, balance_layers=bal)
            for m, want_m in enumerate(O.tucker(x, balance_layers=bal)):
                assert all(_agrees(got_t.modes[m].as_dict()[k], want_m.values[k], want_m.bounds.get(k), np.float32)
                           for k in want_m.values), (shape, bal, m)
        assert _agrees(R.subspace_novelty(ws[0], ws[1]), O.subspace_novelty(ws[0], ws[1]), None, np.float32)


def test_novelty_with_a_nearly_singular_previous_window_follows_its_definition() -> None:
    """Tiny eps makes the ridge tiny: the solve must still give the ridge projector's value, and with the ridge
    vanishing that is the share of the current energy outside the previous span (a hard projection)."""
    rng = np.random.default_rng(21)
    base = rng.standard_normal((3, 64))
    prev = rng.standard_normal((30, 3)) @ base  # rank 3
    cur = rng.standard_normal((20, 3)) @ base + 1e-3 * rng.standard_normal((20, 64))
    for eps, dt in ((1e-7, np.float64), (1e-2, np.float32), (1e-4, np.float64)):
        got = R.subspace_novelty(prev, cur, eps=eps, dtype=dt)
        assert _agrees(got, O.subspace_novelty(prev, cur, eps=eps, dtype=dt), None, dt), (eps, got)
    a, b = O.prepare(prev, dtype=np.float64), O.prepare(cur, dtype=np.float64)
    span = np.linalg.svd(a, full_matrices=False)[2][:3]  # the three directions of prev
    outside = b - (b @ span.T) @ span
    assert R.subspace_novelty(prev, cur, eps=1e-7, dtype=np.float64) == pytest.approx(
        float((outside * outside).sum() / (b * b).sum()), rel=1e-6)


def test_prepared_rows_and_grams_are_exactly_those_of_the_two_pass_definition() -> None:
    """Centring straight from the input (one pass less) must give the very float32 rows and Gram entries of
    the plain definition, a float32 copy minus its float32 token mean, whatever the input's layout or dtype:
    the numerical rank counts singular values above a threshold, so any change of rounding could flip it."""
    rng = np.random.default_rng(8)
    for shape in ((64, 896), (17, 48), (48, 17), (5, 3)):
        h = (rng.standard_normal(shape) * 2.0 + rng.standard_normal(shape[1]) * 300.0).astype(np.float32)
        for w in (h, np.asfortranarray(h), h.astype(np.float64), h[::-1]):
            x = np.ascontiguousarray(w, dtype=np.float32)
            want = x - x.mean(axis=0, keepdims=True)
            rows, g = R.prepare_window(w)
            assert rows.dtype == np.float32 and np.array_equal(rows, want), shape
            assert np.array_equal(g, want @ want.T if shape[0] <= shape[1] else want.T @ want), shape
            raw, g_raw = R.prepare_window(w, centre=False)
            assert np.array_equal(raw, x) and np.array_equal(g_raw, x @ x.T if shape[0] <= shape[1] else x.T @ x)
            normed, _ = R.prepare_window(w, row_normalise=True)
            unit = x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
            np.testing.assert_allclose(normed, unit - unit.mean(axis=0), rtol=0, atol=1e-6)
        # the same rows, whatever the memory layout
        assert all(np.array_equal(R.prepare_window(w)[0], R.prepare_window(h)[0])
                   for w in (np.asfortranarray(h), h.astype(np.float64)))


def _trace(rng: np.random.Generator, d: int = 48) -> list[tuple[dict[int, np.ndarray], TokenStats, str]]:
    """A short trace of low-rank-plus-noise steps (float64 rows, so transformations are exact)."""
    basis = rng.standard_normal((6, d))
    texts = ["We add 2 + 3 = 5.\n\n", "Wait, let me check 2 + 3 = 5.\n\n", "Maybe it is 6?\n\n"]
    out = []
    for i, n in enumerate((20, 9, 14, 1, 12)):
        hidden = {layer: rng.standard_normal((n, 6)) @ basis * (1 + j) + 0.1 * rng.standard_normal((n, d)) + 3.0
                  for j, layer in enumerate(LAYERS)}
        out.append((hidden, _stats(rng, n), texts[i % 3]))
    return out


def _signals(cfg: SignalConfig, trace, transform) -> list[dict[str, float]]:
    comp = StepSignalComputer(cfg)
    return [comp.compute({k: transform(v) for k, v in h.items()}, st, tx) for h, st, tx in trace]


@pytest.mark.parametrize("centre", [True, False])
def test_every_signal_is_invariant_to_rotating_and_scaling_the_hidden_space(centre: bool) -> None:
    """An orthogonal map of the hidden space, a common scale, extra all-zero hidden units and the order in
    which layers are handed over change no signal (every definition reads only the rows' geometry)."""
    rng = np.random.default_rng(30)
    trace = _trace(rng)
    cfg = SignalConfig(window=8, tucker_window=6, precision="float64", centre=centre)
    base = _signals(cfg, trace, lambda h: h)
    q = np.linalg.qr(rng.standard_normal((48, 48)))[0]
    for name, transform in (("rotation", lambda h: h @ q), ("scale", lambda h: h * 1e3),
                            ("zero units", lambda h: np.concatenate([h, np.zeros((h.shape[0], 5))], axis=1))):
        for i, (want, got) in enumerate(zip(base, _signals(cfg, trace, transform), strict=True)):
            assert list(got) == list(want)
            bad = {k: (got[k], want[k]) for k in want if got[k] != pytest.approx(want[k], rel=1e-7, abs=1e-9)}
            assert not bad, (name, i, bad)
    reordered = [({k: h[k] for k in reversed(list(h))}, st, tx) for h, st, tx in trace]
    assert _signals(cfg, reordered, lambda h: h) == base


def test_a_rank_r_trace_has_numerical_rank_r_in_every_window() -> None:
    """Rows ``offset + coef @ basis`` with r basis directions: every centred window of more than r rows has
    numerical rank exactly r, reaching back across steps too (the same basis throughout), Tucker mode 2
    (hidden) as well. The first step is all new; a later one lies in the span seen before, so its novelty is
    only the ridge's bias, at most ``delta / (lambda_min + delta)`` of the previous step's spectrum."""
    rng = np.random.default_rng(31)
    r, d = 4, 64
    basis = np.linalg.qr(rng.standard_normal((d, r)))[0].T
    offset = rng.standard_normal(d) * 50.0
    comp = StepSignalComputer(SignalConfig(window=12, tucker_window=8))
    prev = None
    for n in (16, 12, 10):
        hidden = {layer: (offset + rng.standard_normal((n, r)) * [4.0, 3.0, 2.0, 1.0] @ basis).astype(np.float32)
                  for layer in LAYERS}
        out = comp.compute(hidden, _stats(rng, n), "Add the numbers.\n\n")
        for layer in LAYERS:
            assert out[f"rank.num.L{layer}.step"] == min(r, n - 1)
            assert out[f"rank.num.L{layer}.win"] == r and out["rank.rows.win"] == 12
        assert out["tucker.num.mode2"] == r
        if prev is None:
            assert out["rank.novelty.L11"] == 1.0
        else:
            lam = np.linalg.svd(O.prepare(prev, dtype=np.float64), compute_uv=False)[:r] ** 2
            delta = 1e-4 * lam.sum()  # eps^2 tr(A A^T)
            assert 0.0 <= out["rank.novelty.L11"] <= delta / (lam.min() + delta) * (1 + 1e-3)
        prev = hidden[11]
