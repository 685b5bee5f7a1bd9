"""Signals layer: step segmentation, tensor-rank signals of hidden states, text signals, failure scores.

Pure numpy; no llama_cpp import. The entry point is :class:`StepSignalComputer` (see docs/SIGNALS.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exports import lazy_exports

_EXPORTS = {
    "FailureConfig": ".failure",
    "FailureInputs": ".failure",
    "FailureScorer": ".failure",
    "RankValues": ".rank",
    "SignalConfig": ".step",
    "StepSegmenter": ".segment",
    "StepSignalComputer": ".step",
    "TokenStats": ".text",
    "TuckerRanks": ".rank",
    "benchmark_signals": ".bench",
    "signal_names": ".step",
    "split_steps": ".segment",
    "tucker_ranks": ".rank",
    "window_ranks": ".rank",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "FailureConfig",
    "FailureInputs",
    "FailureScorer",
    "RankValues",
    "SignalConfig",
    "StepSegmenter",
    "StepSignalComputer",
    "TokenStats",
    "TuckerRanks",
    "benchmark_signals",
    "signal_names",
    "split_steps",
    "tucker_ranks",
    "window_ranks",
]

if TYPE_CHECKING:
    from .bench import benchmark_signals
    from .failure import FailureConfig, FailureInputs, FailureScorer
    from .rank import RankValues, TuckerRanks, tucker_ranks, window_ranks
    from .segment import StepSegmenter, split_steps
    from .step import SignalConfig, StepSignalComputer, signal_names
    from .text import TokenStats
