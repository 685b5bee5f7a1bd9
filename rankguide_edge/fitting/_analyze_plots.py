"""Figures of ``rankguide-edge analyze``: ROC curves and per-step trajectories (matplotlib, Agg canvas).

Figures come from :func:`rankguide_edge.figures.agg_figure` (own Agg canvas, no pyplot, matplotlib imported on
first use).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from ..figures import agg_figure

if TYPE_CHECKING:  # pragma: no cover
    from .analyze import AnalysisResult


def plot_roc(result: AnalysisResult, path: str | os.PathLike[str]) -> None:
    """ROC curves of ``result.roc`` (top signals, fail.route, entropy, length) as a PNG at ``path``.

    Signals whose low values go with failure are drawn negated ("low" in the legend), so every curve
    bends above the diagonal and the legend's AUROC is the oriented one.
    """
    fig = agg_figure(7.5, 6.5)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls=":")
    special = {"fail.route:max": ("black", "-", 2.2), "text.entropy_max:max": ("tab:red", "--", 2.0),
               "n_tokens": ("tab:gray", "-.", 2.0)}
    for i, c in enumerate(result.roc):
        color, ls, lw = special.get(c["name"], (f"C{i % 10}", "-", 1.2))
        label = f"{c['name']}{' (low)' if c['flipped'] else ''}  {c['auroc_oriented']:.3f}"
        ax.step(c["fpr"], c["tpr"], where="post", color=color, ls=ls, lw=lw, label=label)
    n, w = result.counts["traces"], result.counts["wrong"]
    ax.set_title(f"Predicting a wrong answer: {n} traces, {w} wrong", fontsize=10)
    ax.set_xlabel("false-positive rate (correct traces flagged)")
    ax.set_ylabel("true-positive rate (wrong traces flagged)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right", fontsize=7, title="feature  AUROC", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format="png")


def plot_trajectories(result: AnalysisResult, path: str | os.PathLike[str]) -> None:
    """Mean ± standard error of a few key signals by step index, correct vs wrong traces, as a PNG."""
    sig = result.trajectories.get("signals", {})
    steps = np.asarray(result.trajectories.get("steps", []), dtype=float)
    keys = list(sig) or ["(no trajectory signal present)"]
    fig = agg_figure(4.2 * len(keys), 3.8)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step index")
        for name, color in (("correct", "tab:blue"), ("wrong", "tab:red")):
            entry = sig.get(key, {}).get(name)
            if not entry:
                continue
            mean = np.array([np.nan if v is None else v for v in entry["mean"]], dtype=float)
            se = np.array([np.nan if v is None else v for v in entry["se"]], dtype=float)
            n_traces = max(entry["n"]) if entry["n"] else 0
            ax.plot(steps, mean, color=color, marker="o", ms=3, label=f"{name} (n≤{n_traces})")
            ax.fill_between(steps, mean - se, mean + se, color=color, alpha=0.2, lw=0)
        if sig:
            ax.legend(fontsize=7)
    fig.suptitle("per-step signals: mean ± standard error", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png")
