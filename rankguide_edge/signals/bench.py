"""Micro-benchmark of per-step signal computation on synthetic hidden states (``rankguide-edge bench signals``).

The synthetic trace imitates what the runtime hands over: per layer, hidden rows ``mean + drift + noise``
(a large constant offset with a few massive dimensions, a slowly varying low-rank component, isotropic
noise), entropies, descending top-k log-probabilities and step texts with keywords and arithmetic. Only
the ``compute`` / ``compute_partial`` calls are timed; data generation is not.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import RuntimeConfig, bounded, same_as, validate
from ..errors import InvalidInputError
from .segment import DEFAULT_DELIMITER
from .step import SignalConfig, StepSignalComputer
from .text import TokenStats

_PHRASES = (
    "We need to find the value of x.", "Wait, let me check that again.", "So 12 * 7 = 84.",
    "Maybe the answer is different.", "Therefore the answer is 42.", "Let me verify: 84 / 2 = 42.",
    "Alternatively, we could factor the expression.", "Clearly this holds for all n.",
    "Hmm, actually 3 + 4 = 7, not 8.", "Then the sum is 15 + 27 = 42.",
)
_BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class SignalsBenchConfig:
    """What ``bench signals`` times: random hidden states of this shape, ``steps`` steps."""

    n_embd: int = bounded(896, lo=2, hi=65536, help="hidden size")
    layers: int = bounded(4, lo=1, hi=256, help="tapped layers")
    window: int = same_as(SignalConfig, "window", default=64)
    steps: int = bounded(200, lo=1, hi=100000, help="steps to time")
    seed: int = same_as(RuntimeConfig, "seed", help="seed of the random hidden states")

    def __post_init__(self) -> None:
        validate(self)


def _synthetic_step(rng: np.random.Generator, layer_ids: list[int], n_tokens: int, n_embd: int,
                    offsets: Mapping[int, np.ndarray], k: int = 5) -> tuple[dict[int, np.ndarray], TokenStats, str]:
    """One step: ``{layer: (n_tokens, n_embd) float32}``, its TokenStats (k log-probs) and its text."""
    hidden = {}
    basis = rng.standard_normal((8, n_embd)).astype(np.float32)
    t = np.linspace(0.0, 1.0, n_tokens, dtype=np.float32)[:, None]
    coef = np.cos(t * rng.uniform(1.0, 6.0, (1, 8)).astype(np.float32) * np.pi) * 4.0
    for layer in layer_ids:
        noise = rng.standard_normal((n_tokens, n_embd), dtype=np.float32)
        hidden[layer] = (offsets[layer] + coef @ basis + noise * (1.0 + 0.1 * layer)).astype(np.float32)
    ent = rng.gamma(1.0, 0.4, n_tokens).astype(np.float32)
    logits = np.sort(rng.standard_normal((n_tokens, k)) * 2.0, axis=1)[:, ::-1]
    top = (logits - np.log(np.exp(logits).sum(axis=1, keepdims=True) + 1.0)).astype(np.float32)
    words = " ".join(rng.choice(_PHRASES, size=4))
    text = words + DEFAULT_DELIMITER
    pieces = [text[i * len(text) // n_tokens:(i + 1) * len(text) // n_tokens] for i in range(n_tokens)]
    return hidden, TokenStats(ent, top, tuple(pieces)), text


def _percentiles(ts: list[float]) -> dict[str, float]:
    a = np.asarray(ts) * 1e3
    return {"median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95)),
            "mean_ms": float(a.mean()), "max_ms": float(a.max())}


def benchmark_signals(n_embd: int = 896, layers: int = 4, window: int = 64, steps: int = 200, seed: int = 0,
                      step_tokens: int | None = None, partial_tokens: int | None = None,
                      config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Time ``StepSignalComputer.compute`` per step on a synthetic trace.

    ``layers`` tapped layers of width ``n_embd``; sliding window ``window``; each step has ``step_tokens``
    tokens (default: ``window``); ``compute_partial`` is timed on the first ``partial_tokens`` tokens
    (default: ``window // 2``). ``config`` overrides further :class:`SignalConfig` keys. Returns
    ``median_ms``/``p95_ms``/``mean_ms``/``max_ms`` (wall clock) of ``compute``, the same with a ``partial_``
    prefix, ``cpu_median_ms``/``cpu_p95_ms`` (process CPU time of ``compute``: what the step costs when the
    machine's cores are shared with other work), the number of signals, the Gram precision and the BLAS
    thread environment variables in force.
    """
    if min(n_embd, layers, window, steps) < 1:
        raise InvalidInputError("n_embd, layers, window and steps must all be at least 1")
    n_tok = int(step_tokens or window)
    n_part = max(1, min(n_tok, int(partial_tokens or max(1, window // 2))))
    cfg = SignalConfig.from_mapping(dict(config or {}), window=max(2, window),
                                    tucker_window=min(16, max(2, window)))
    rng = np.random.default_rng(seed)
    layer_ids = sorted({round((i + 1) * 24 / layers) - 1 if layers <= 24 else i for i in range(layers)})
    offsets = {}
    for layer in layer_ids:
        off = rng.standard_normal(n_embd).astype(np.float32) * 0.5
        off[:3] = 50.0 * (1 + layer)  # massive-activation dimensions
        offsets[layer] = off
    comp = StepSignalComputer(cfg)
    warm_h, warm_s, warm_t = _synthetic_step(rng, layer_ids, n_tok, n_embd, offsets)
    comp.compute(warm_h, warm_s, warm_t)
    comp.compute_partial({k: v[:n_part] for k, v in warm_h.items()}, warm_s.head(n_part), warm_t[:20])
    comp.reset()
    full: list[float] = []
    part: list[float] = []
    cpu: list[float] = []
    n_signals = 0
    for _ in range(steps):
        hidden, stats, text = _synthetic_step(rng, layer_ids, n_tok, n_embd, offsets)
        ph = {k: v[:n_part] for k, v in hidden.items()}
        ps = stats.head(n_part)
        t0 = time.perf_counter()
        comp.compute_partial(ph, ps, ps.text)
        t1, c1 = time.perf_counter(), time.process_time()
        out = comp.compute(hidden, stats, text)
        t2, c2 = time.perf_counter(), time.process_time()
        part.append(t1 - t0)
        full.append(t2 - t1)
        cpu.append(c2 - c1)
        n_signals = len(out)
    res: dict[str, Any] = {"n_embd": n_embd, "layers": len(layer_ids), "window": window, "steps": steps,
                           "step_tokens": n_tok, "partial_tokens": n_part}
    res.update(_percentiles(full))
    res.update({f"partial_{k}": v for k, v in _percentiles(part).items()})
    res.update({f"cpu_{k}": v for k, v in _percentiles(cpu).items() if k in ("median_ms", "p95_ms")})
    res["n_signals"] = n_signals
    res["gram_dtype"] = np.dtype(cfg.gram_dtype).name
    res["blas_env"] = {k: os.environ.get(k, "") for k in _BLAS_ENV}
    return res
