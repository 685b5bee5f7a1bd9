"""``bench capture``: what tapping hidden states costs during greedy decoding.

Three ways of decoding the same N tokens from the same prompt on one loaded model — no tap, the native tap,
the Python fallback tap — alternated for R rounds so that machine drift hits them alike. Each way has its own
context (created before timing); timing covers decoding only (not prefill), including the copy of every tapped
row out of the tap buffer.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..config import RuntimeConfig, bounded, same_as, validate
from ..engine.context import Context
from ..engine.layers import TapConfig
from ..engine.model import Model
from ..engine.prompts import chat_tokens

WAYS = ("plain", "native", "python")
PROMPT = "Write a detailed, step-by-step explanation of how long division works, with three worked examples."


@dataclass(frozen=True)
class CaptureConfig:
    """What ``bench capture`` measures."""

    layers: str = same_as(TapConfig, "layers")
    tokens: int = bounded(64, lo=1, hi=4096, help="tokens decoded per run")
    rounds: int = bounded(5, lo=1, hi=100, help="rounds; each decodes N tokens with every way, alternating the order")

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class CaptureResult:
    model: str
    n_layer_tapped: int
    tokens: int
    rounds: int
    tok_s_plain: float
    tok_s_native: float
    tok_s_python: float
    native_overhead: float
    python_overhead: float
    per_round: dict[str, list[float]]

    def to_dict(self) -> dict:
        return asdict(self)


def _decode_n(ctx: Context, prompt: Sequence[int], n: int) -> float:
    """Greedy-decode exactly ``n`` tokens (an end-of-generation token is replaced by the runner-up)."""
    ctx.reset()
    ctx.eval(prompt, hidden=False)
    model = ctx.model
    t0 = time.perf_counter()
    for _ in range(n):
        logits = ctx.logits()
        tok = int(np.argmax(logits))
        if model.is_eog(tok):
            logits = logits.copy()
            logits[tok] = -np.inf
            tok = int(np.argmax(logits))
        ctx.eval([tok])
    return time.perf_counter() - t0


def run_capture_bench(model: Model, *, layers: Sequence[int], tokens: int = CaptureConfig.tokens,
                      rounds: int = CaptureConfig.rounds,
                      config: RuntimeConfig | None = None,
                      progress: Callable[[int, str], None] | None = None) -> CaptureResult:
    cfg = config or RuntimeConfig(n_ctx=max(512, tokens + 256))
    prompt = chat_tokens(model, PROMPT)
    ctxs = {
        "plain": model.context(cfg),
        "native": model.context(cfg, tap_layers=layers, tap="native"),
        "python": model.context(cfg, tap_layers=layers, tap="python"),
    }
    times: dict[str, list[float]] = {w: [] for w in WAYS}
    try:
        _decode_n(ctxs["plain"], prompt, min(8, tokens))  # warm-up
        for r in range(rounds):
            order = WAYS if r % 2 == 0 else tuple(reversed(WAYS))
            for way in order:
                times[way].append(tokens / _decode_n(ctxs[way], prompt, tokens))
                if progress:
                    progress(r, way)
    finally:
        for c in ctxs.values():
            c.close()
    med = {w: statistics.median(v) for w, v in times.items()}
    return CaptureResult(
        model=model.path, n_layer_tapped=len(layers), tokens=tokens, rounds=rounds,
        tok_s_plain=med["plain"], tok_s_native=med["native"], tok_s_python=med["python"],
        native_overhead=1.0 - med["native"] / med["plain"], python_overhead=1.0 - med["python"] / med["plain"],
        per_round=times)
