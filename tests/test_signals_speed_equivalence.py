"""The optimised signal computation gives the values of the frozen pre-optimisation code (tests/_signals_reference.py).

Every signal must agree within 1e-6 relative or 1e-9 absolute, step after step (state included), on random
inputs and on inputs that look like real hidden states (massive-activation dimensions, slowly drifting
low-rank structure, heavy-tailed spectra, repeated tokens, non-finite entries), across configurations.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rankguide_edge.signals import rank as R
from rankguide_edge.signals.bench import _synthetic_step
from rankguide_edge.signals.step import SignalConfig, StepSignalComputer
from rankguide_edge.signals.text import TokenStats


def _load_reference():
    path = Path(__file__).with_name("_signals_reference.py")
    spec = importlib.util.spec_from_file_location("_signals_reference", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("_signals_reference", mod)
    spec.loader.exec_module(mod)
    return mod


REF = _load_reference()
REL, ABS = 1e-6, 1e-9


def _assert_same(new: dict[str, float], old: dict[str, float], where: str) -> None:
    assert list(new) == list(old), where
    bad = {k: (new[k], old[k]) for k in old
           if not (abs(new[k] - old[k]) <= max(ABS, REL * abs(old[k])))}
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


def _run_pair(cfg: SignalConfig, steps: Iterator[tuple[dict[int, np.ndarray], TokenStats, str]], label: str,
              partial: bool = True) -> int:
    new, old = StepSignalComputer(cfg), REF.ReferenceStepComputer(cfg)
    count = 0
    for i, (hidden, stats, text) in enumerate(steps):
        if partial and len(stats) >= 2:
            k = max(1, len(stats) // 2)
            ph = {key: v[:k] for key, v in hidden.items()}
            _assert_same(new.compute_partial(ph, stats.head(k), text[:9]),
                         old.compute_partial(ph, stats.head(k), text[:9]), f"{label} partial step {i}")
        _assert_same(new.compute(hidden, stats, text), old.compute(hidden, stats, text), f"{label} step {i}")
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
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("kind", [_random, _real_looking], ids=["random", "real-looking"])
def test_signals_equal_reference_across_configs(name: str, kind) -> None:
    cfg = SignalConfig.from_mapping(CONFIGS[name])
    n = _run_pair(cfg, _steps(kind, 17, LAYERS, LENGTHS, 48), f"{name}/{kind.__name__}")
    assert n == len(LENGTHS)


@pytest.mark.parametrize("kind", [_random, _real_looking], ids=["random", "real-looking"])
def test_signals_equal_reference_at_benchmark_size(kind) -> None:
    """W 64, 4 layers, n_embd 896: the configuration the speed target is about."""
    cfg = SignalConfig.from_mapping({}, window=64, tucker_window=16)
    layers = (5, 11, 17, 23)
    n = _run_pair(cfg, _steps(kind, 3, layers, [64, 64, 30, 64, 80, 64, 64, 10], 896), kind.__name__)
    assert n == 8


def test_signals_equal_reference_on_benchmark_trace() -> None:
    """The synthetic trace of ``rankguide-edge bench signals`` (large offsets, low-rank drift, noise)."""
    rng = np.random.default_rng(0)
    layers = [5, 11, 17, 23]
    offsets = {layer: rng.standard_normal(896).astype(np.float32) * 0.5 for layer in layers}
    for layer in layers:
        offsets[layer][:3] = 50.0 * (1 + layer)
    steps = (_synthetic_step(rng, layers, 64, 896, offsets) for _ in range(12))
    assert _run_pair(SignalConfig(window=64, tucker_window=16), steps, "bench trace", partial=False) == 12


def test_non_finite_and_degenerate_inputs_equal_reference() -> None:
    rng = np.random.default_rng(5)

    def steps():
        for n in (10, 10, 3, 10):
            hidden = _random(rng, LAYERS, n, 32, {})
            hidden[7][min(2, n - 1), 4] = np.nan
            hidden[11][0, 1] = np.inf
            yield hidden, _stats(rng, n), "x"
        const = {layer: np.tile(np.arange(32, dtype=np.float32), (9, 1)) for layer in LAYERS}
        yield const, _stats(rng, 9), "y"
        yield {layer: np.zeros((9, 32), np.float32) for layer in LAYERS}, _stats(rng, 9), "z"
        f64 = {layer: rng.standard_normal((11, 32)) * 3.0 + 1e3 for layer in LAYERS}  # float64 input
        yield f64, _stats(rng, 11), "w"

    assert _run_pair(SignalConfig(window=8, tucker_window=6), steps(), "non-finite") == 7


@pytest.mark.parametrize("shape", [(64, 896), (16, 40), (40, 16), (1, 8), (2, 8), (9, 0)])
def test_rank_functions_equal_reference(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    ws = [(rng.standard_normal(shape) * rng.uniform(0.1, 3.0, shape[1]) + 7.0).astype(np.float32)
          for _ in range(3)]
    for kwargs in ({}, {"row_normalise": True}, {"centre": False}, {"dtype": np.float64, "eps": 1e-4}):
        got = R.batch_window_ranks(ws + [ws[0][: max(0, shape[0] - 1)]], eps=kwargs.get("eps", 1e-2),
                                   **{k: v for k, v in kwargs.items() if k != "eps"})
        want = REF.batch_window_ranks(ws + [ws[0][: max(0, shape[0] - 1)]], eps=kwargs.get("eps", 1e-2),
                                      **{k: v for k, v in kwargs.items() if k != "eps"})
        for g, w in zip(got, want, strict=True):
            _assert_same(g.as_dict(), w.as_dict(), f"batch {shape} {kwargs}")
        _assert_same(R.window_ranks(ws[1], **kwargs).as_dict(), REF.window_ranks(ws[1], **kwargs).as_dict(),
                     f"window {shape} {kwargs}")
    if shape[0] >= 2 and shape[1] > 0:
        x = np.stack(ws)
        for bal in (True, False):
            got_t, want_t = R.tucker_ranks(x, balance_layers=bal), REF.tucker_ranks(x, balance_layers=bal)
            for m in range(3):
                _assert_same(got_t.modes[m].as_dict(), want_t.modes[m].as_dict(), f"tucker {shape} mode {m}")
        nov = R.subspace_novelty(ws[0], ws[1])
        assert abs(nov - REF.subspace_novelty(ws[0], ws[1])) <= max(ABS, REL * nov)


def test_novelty_with_a_nearly_singular_previous_window_equals_reference() -> None:
    """Tiny eps makes the ridge tiny: the Cholesky path must still agree (or fall back) with the LU solve."""
    rng = np.random.default_rng(21)
    base = rng.standard_normal((3, 64))
    prev = rng.standard_normal((30, 3)) @ base  # rank 3 (2 after centring would be rank <= 3)
    cur = rng.standard_normal((20, 3)) @ base + 1e-3 * rng.standard_normal((20, 64))
    for eps, dt in ((1e-7, np.float64), (1e-2, np.float32), (1e-4, np.float64)):
        got = R.subspace_novelty(prev, cur, eps=eps, dtype=dt)
        want = REF.subspace_novelty(prev, cur, eps=eps, dtype=dt)
        assert abs(got - want) <= max(ABS, REL * abs(want)), (eps, got, want)


def test_prepared_grams_are_bitwise_those_of_the_reference() -> None:
    """Centring from the input (one pass less) must give the very same float32 rows and Gram entries: the
    numerical rank counts singular values above a threshold, so any change of rounding could flip it."""
    rng = np.random.default_rng(8)
    for shape in ((64, 896), (17, 48), (48, 17), (5, 3)):
        h = (rng.standard_normal(shape) * 2.0 + rng.standard_normal(shape[1]) * 300.0).astype(np.float32)
        for w in (h, np.asfortranarray(h), h.astype(np.float64), h[::-1]):
            for kwargs in ({}, {"row_normalise": True}, {"centre": False}):
                rows, g = R.prepare_window(w, **kwargs)
                ref = REF.batch_window_spectra([w, w], eps=1e-2, **kwargs)[1]
                assert rows.dtype == np.float32 and np.array_equal(rows, ref.rows), (shape, kwargs)
                assert np.array_equal(g, ref.gram), (shape, kwargs)

