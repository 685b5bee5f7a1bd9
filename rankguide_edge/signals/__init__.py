"""Signals layer: step segmentation, tensor-rank signals of hidden states, text signals, failure scores.

Pure numpy; no llama_cpp import. The entry point is :class:`StepSignalComputer` (see docs/SIGNALS.md).
"""

from __future__ import annotations

from .failure import FailureConfig, FailureInputs, FailureScorer
from .rank import RankValues, TuckerRanks, tucker_ranks, window_ranks
from .segment import StepSegmenter, split_steps
from .step import SignalConfig, StepSignalComputer, signal_names
from .text import TokenStats

__all__ = [
    "FailureConfig", "FailureInputs", "FailureScorer", "RankValues", "TuckerRanks", "tucker_ranks",
    "window_ranks", "StepSegmenter", "split_steps", "SignalConfig", "StepSignalComputer", "signal_names",
    "TokenStats", "benchmark_signals",
]


def __getattr__(name: str):
    if name == "benchmark_signals":
        from .bench import benchmark_signals

        return benchmark_signals
    raise AttributeError(name)
