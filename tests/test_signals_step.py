"""The per-step entry point: keys, state across steps, partial steps, config, benchmark."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from rankguide_edge.errors import ConfigError, InvalidInputError, LayerIndexError
from rankguide_edge.signals import (
    FailureConfig,
    SignalConfig,
    StepSignalComputer,
    TokenStats,
    benchmark_signals,
    signal_names,
)

LAYERS = (3, 7, 11)
D = 48


def _step(rng: np.random.Generator, n: int, text: str = "We add 2 + 3 = 5.\n\n", k: int = 4,
          layers: tuple[int, ...] = LAYERS) -> tuple[dict[int, np.ndarray], TokenStats, str]:
    hidden = {layer: (rng.standard_normal((n, D)) + 5.0).astype(np.float32) for layer in layers}
    top = np.sort(rng.uniform(-6.0, -0.05, (n, k)), axis=1)[:, ::-1]
    stats = TokenStats(rng.gamma(1.0, 0.3, n), top, tuple("x" for _ in range(n)))
    return hidden, stats, text


def _finite(out: dict[str, float]) -> bool:
    return all(isinstance(v, float) and math.isfinite(v) for v in out.values())


def test_keys_match_signal_names_and_are_json_serialisable() -> None:
    rng = np.random.default_rng(0)
    comp = StepSignalComputer(SignalConfig(window=8))
    for n in (12, 5, 8, 0, 1):
        out = comp.compute(*_step(rng, n))
        assert list(out) == signal_names(comp.config, LAYERS)
        assert _finite(out)
        json.dumps(out)
    names = signal_names(comp.config, LAYERS)
    assert "rank.eff_norm.L11.win" in names and "rank.delta.eff_norm.L3" in names
    assert "rank.novelty.L11" in names and "tucker.eff.mode2" in names and "fail.route" in names
    assert len(names) == len(set(names))


def test_layer_selection() -> None:
    rng = np.random.default_rng(1)
    last = StepSignalComputer(SignalConfig(layers="last", window=8))
    out = last.compute(*_step(rng, 10))
    assert last.layers == (11,)
    assert not any(".L3." in k for k in out) and "tucker.eff.mode0" not in out
    some = StepSignalComputer(SignalConfig(layers=(3, 11), window=8))
    out = some.compute(*_step(rng, 10))
    assert some.layers == (3, 11) and "rank.num.L7.step" not in out and "tucker.num.mode1" in out
    assert out["tucker.num.mode1"] <= 2
    with pytest.raises(LayerIndexError):
        StepSignalComputer(SignalConfig(layers=(4,))).compute(*_step(rng, 10))
    with pytest.raises(LayerIndexError):
        StepSignalComputer(SignalConfig(primary_layer=5)).compute(*_step(rng, 10))
    comp = StepSignalComputer(SignalConfig(window=8))
    comp.compute(*_step(rng, 10))
    with pytest.raises(LayerIndexError):
        comp.compute(*_step(rng, 10, layers=(3, 7)))


def test_input_validation() -> None:
    rng = np.random.default_rng(2)
    hidden, stats, text = _step(rng, 10)
    comp = StepSignalComputer()
    with pytest.raises(InvalidInputError):
        comp.compute(hidden, stats.head(9), text)
    with pytest.raises(InvalidInputError):
        comp.compute({k: v[:, :, None] for k, v in hidden.items()}, stats, text)
    with pytest.raises(InvalidInputError):
        comp.compute({}, stats, text)
    comp.compute(hidden, stats, text)
    with pytest.raises(InvalidInputError):
        comp.compute({k: np.zeros((10, D + 1), np.float32) for k in LAYERS}, stats, text)


def test_state_deltas_windows_and_reset() -> None:
    rng = np.random.default_rng(3)
    comp = StepSignalComputer(SignalConfig(window=16, tucker_window=8))
    first = comp.compute(*_step(rng, 20))
    assert first["step.index"] == 0 and first["rank.delta.eff_norm.L7"] == 0.0
    assert first["rank.novelty.L11"] == 1.0
    assert first["rank.rows.step"] == 20 and first["rank.rows.win"] == 16 and first["tucker.rows"] == 8
    second = comp.compute(*_step(rng, 4))
    assert second["step.index"] == 1
    assert second["rank.delta.eff_norm.L7"] == pytest.approx(
        second["rank.eff_norm.L7.step"] - first["rank.eff_norm.L7.step"])
    assert second["rank.rows.step"] == 4 and second["rank.rows.win"] == 16  # window reaches back
    assert second["tucker.rows"] == 8
    comp.reset()
    again = comp.compute(*_step(rng, 4))
    assert again["step.index"] == 0 and again["rank.rows.win"] == 4
    no_carry = StepSignalComputer(SignalConfig(window=16, window_carry=False))
    no_carry.compute(*_step(rng, 20))
    assert no_carry.compute(*_step(rng, 4))["rank.rows.win"] == 4


def test_step_rows_are_capped() -> None:
    rng = np.random.default_rng(4)
    comp = StepSignalComputer(SignalConfig(window=8, step_max_rows=16))
    out = comp.compute(*_step(rng, 50))
    assert out["rank.rows.step"] == 16 and out["rank.num.L3.step"] == 15


def test_identical_windows_share_values() -> None:
    rng = np.random.default_rng(5)
    comp = StepSignalComputer(SignalConfig(window=10))
    out = comp.compute(*_step(rng, 10))
    for v in ("num", "eff", "stable"):
        assert out[f"rank.{v}.L7.step"] == out[f"rank.{v}.L7.win"]


def test_collapsed_hidden_states_give_low_rank_and_high_overconfidence() -> None:
    rng = np.random.default_rng(6)
    comp = StepSignalComputer(SignalConfig(window=16))
    hidden, stats, _ = _step(rng, 16)
    direction = rng.standard_normal(D).astype(np.float32)
    collapsed = {k: np.outer(rng.standard_normal(16), direction).astype(np.float32) + 1.0 for k in hidden}
    confident = TokenStats(np.full(16, 0.01), np.log(np.tile([[0.99, 0.005]], (16, 1))), ())
    a = comp.compute(collapsed, confident, "Clearly, therefore, the answer is 4.")
    comp.reset()
    b = comp.compute(hidden, stats, "Maybe it is 4, perhaps 5? I think so.")
    assert a["rank.num.L11.win"] == 1 and b["rank.num.L11.win"] == 15
    assert a["fail.overconfidence"] > b["fail.overconfidence"]
    assert b["fail.uncertainty"] > a["fail.uncertainty"]


def test_revalidation_rises_with_rechecking_and_repetition() -> None:
    rng = np.random.default_rng(7)
    comp = StepSignalComputer(SignalConfig(window=8))
    hidden, stats, _ = _step(rng, 12)
    base = "First we compute 12 * 7 = 84 so the total is 84 apples.\n\n"
    fresh = comp.compute(hidden, stats, base)
    again = comp.compute(hidden, stats, "Wait, let me double-check: 12 * 7 = 84, total 84 apples.\n\n")
    assert again["kw.revalidation"] == 2 and again["rep.arith_repeats"] == 1
    assert again["rank.novelty.L11"] < 0.05  # the very same hidden rows: nothing new
    assert again["fail.revalidation"] > fresh["fail.revalidation"]
    assert again["fail.revalidation_streak"] >= 1


def test_compute_partial_leaves_state_unchanged() -> None:
    rng = np.random.default_rng(8)
    steps = [_step(rng, n) for n in (9, 14, 6)]
    plain = StepSignalComputer(SignalConfig(window=8))
    probed = StepSignalComputer(SignalConfig(window=8))
    for hidden, stats, text in steps:
        part = probed.compute_partial({k: v[:3] for k, v in hidden.items()}, stats.head(3), text[:5])
        assert list(part) == signal_names(probed.config, LAYERS, partial=True)
        assert part["step.partial"] == 1.0 and _finite(part)
        assert plain.compute(hidden, stats, text) == probed.compute(hidden, stats, text)


def test_restoring_a_snapshot_forgets_a_discarded_step() -> None:
    """A routed draft is scored (which records it), then thrown away: after restore the next step's signals
    are those of a trace that never saw the draft; an LRM step noted by text joins the repetition history."""
    rng = np.random.default_rng(21)
    a, draft, c = _step(rng, 12), _step(rng, 10, "Wait, let me check 2 + 3 = 5 again.\n\n"), _step(rng, 7)
    lrm_text = "So the total is 5 apples.\n\n"
    clean = StepSignalComputer(SignalConfig(window=8))
    clean.compute(*a)
    clean.note_step(lrm_text)
    want = clean.compute(*c)
    probed = StepSignalComputer(SignalConfig(window=8))
    probed.compute(*a)
    state = probed.snapshot()
    probed.compute(*draft)
    probed.restore(state)
    probed.note_step(lrm_text)
    assert probed.compute(*c) == want
    probed.restore(state)  # a snapshot can be restored more than once
    assert probed.n_steps == 1
    # the noted text counts for repetition: restating it is seen as repetition
    again = StepSignalComputer(SignalConfig(window=8))
    again.compute(*a)
    again.note_step(lrm_text)
    h, st, _ = _step(rng, 7)
    assert again.compute(h, st, lrm_text)["rep.max_jaccard"] == 1.0


def test_compute_partial_before_the_first_step_and_on_empty_input() -> None:
    rng = np.random.default_rng(9)
    comp = StepSignalComputer(SignalConfig(layers="last"))
    hidden, stats, text = _step(rng, 0)
    part = comp.compute_partial(hidden, stats, "")
    assert _finite(part) and part["rank.eff.L11.win"] == 0.0
    assert comp.layers is None
    out = comp.compute(hidden, stats, "")
    assert _finite(out) and out["text.n_tokens"] == 0


def test_signal_config_from_mapping() -> None:
    cfg = SignalConfig.from_mapping({"layers": [11, 3], "window": 16, "failure": {"unc_rank_weight": 2},
                                     "revalidation_words": ["wait", "hmm"]})
    assert cfg.layers == (3, 11) and isinstance(cfg.failure, FailureConfig)
    assert cfg.failure.unc_rank_weight == 2.0 and cfg.revalidation_words == ("wait", "hmm")
    assert SignalConfig.from_mapping({"layers": "last"}).layers == "last"
    assert SignalConfig(eps=1e-4).gram_dtype is np.float64 and SignalConfig().gram_dtype is np.float32
    seg = SignalConfig(delimiter="\n", max_step_tokens=4).segmenter()
    assert (seg.delimiter, seg.max_step_tokens) == ("\n", 4)
    for bad in ({"layers": "first"}, {"layers": [-1]}, {"window": 1}, {"nope": 1}, {"failure": {"x": 1}},
                {"delimiter": ""}, {"precision": "half"}, {"revalidation_words": [1, 2]}):
        with pytest.raises(ConfigError):
            SignalConfig.from_mapping(bad)


def test_custom_keyword_lists_are_used() -> None:
    rng = np.random.default_rng(10)
    comp = StepSignalComputer(SignalConfig(revalidation_words=("oops",), uncertainty_words=(),
                                           confident_words=("boom",)))
    out = comp.compute(*_step(rng, 4, text="Oops, wait. Boom boom."))
    assert (out["kw.revalidation"], out["kw.uncertainty"], out["kw.confident"]) == (1.0, 0.0, 2.0)


def test_benchmark_runs_and_reports() -> None:
    res = benchmark_signals(n_embd=32, layers=2, window=8, steps=5, seed=1)
    assert res["steps"] == 5 and res["layers"] == 2 and res["n_signals"] > 50
    for key in ("median_ms", "p95_ms", "partial_median_ms", "cpu_median_ms"):
        assert res[key] > 0
    assert res["p95_ms"] >= res["median_ms"]
    with pytest.raises(InvalidInputError):
        benchmark_signals(steps=0)


def test_signals_never_import_llama_cpp() -> None:
    code = ("import sys, rankguide_edge.signals as s, rankguide_edge.signals.bench; "
            "print('llama_cpp' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"


def test_blas_thread_limit_is_applied_and_restored() -> None:
    from rankguide_edge.signals import _blas

    before = _blas.get_blas_threads()
    with _blas.blas_threads(1):
        inside = _blas.get_blas_threads()
    assert _blas.get_blas_threads() == before
    if _blas.blas_available():
        assert inside == 1 and before >= 1
    else:  # another BLAS: the limiter is a no-op
        assert inside == before == 0
    with _blas.blas_threads(0):
        assert _blas.get_blas_threads() == before


def test_trace_state_keeps_a_copy_of_the_hidden_rows() -> None:
    """The caller may reuse its buffers: changing them after compute must not change later steps."""
    rng = np.random.default_rng(11)
    steps = [_step(rng, n) for n in (12, 3)]
    kept = StepSignalComputer(SignalConfig(window=8, tucker_window=6))
    clobbered = StepSignalComputer(SignalConfig(window=8, tucker_window=6))
    first = steps[0]
    kept.compute(*first)
    mutable = {k: v.copy() for k, v in first[0].items()}
    clobbered.compute(mutable, first[1], first[2])
    for v in mutable.values():
        v[:] = 1e6
    assert kept.compute(*steps[1]) == clobbered.compute(*steps[1])
