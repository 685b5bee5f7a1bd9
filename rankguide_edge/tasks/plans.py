"""What the LRM's "plan" (the first step a ``^N`` method hands it) actually is, and where it decides the answer.

The plan is the LRM's first step: everything up to its first step delimiter (a blank line). On easy problems
the LRM often writes its whole answer as one paragraph, so the "plan" is the LRM alone; elsewhere it is one
sentence ("To find X, we follow these steps:") or a paragraph of real work. :func:`plan_kind` names which, from
a bench record of a ``^1`` method, and :func:`plan_breakdown` reports every compared method's accuracy on each
kind of problem, so a report can say where a planned method's wins come from.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from ..signals.segment import DEFAULT_DELIMITER

#: the kinds, in report order
PLAN_KINDS = ("whole answer", "paragraph with the answer", "paragraph", "one sentence")
_ANSWER = re.compile(r"answer is|\\boxed|####", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?:](?:\s|$)")


def plan_kind(text: str, n_steps: int, delimiter: str = DEFAULT_DELIMITER) -> str:
    """The kind of plan of an answer ``text`` of ``n_steps`` steps whose first step the LRM wrote: the whole
    answer (it is the only step), a paragraph that already states the final answer, a paragraph, or one
    sentence (at most one sentence end)."""
    if n_steps <= 1:
        return "whole answer"
    plan = text.split(delimiter, 1)[0]
    if _ANSWER.search(plan):
        return "paragraph with the answer"
    return "one sentence" if len(_SENTENCE_END.findall(plan.strip())) <= 1 else "paragraph"


def plan_breakdown(by_id: Mapping[str, Mapping[str, Mapping[str, Any]]], planner: str,
                   methods: Sequence[str]) -> list[dict[str, Any]]:
    """Per plan kind of ``planner``'s answers (a ``^1`` method) over the problems in ``by_id`` (id -> method
    -> record): how many problems, the plan's median LRM tokens, and each of ``methods``' accuracy there."""
    groups: dict[str, list[str]] = {k: [] for k in PLAN_KINDS}
    tokens: dict[str, list[int]] = {k: [] for k in PLAN_KINDS}
    for pid, recs in by_id.items():
        rec = recs.get(planner)
        if rec is None or not rec.get("steps"):
            continue
        kind = plan_kind(str(rec.get("text", "")), int(rec.get("n_steps", len(rec["steps"]))))
        groups[kind].append(pid)
        tokens[kind].append(int(rec["steps"][0].get("lrm_tokens", 0)))
    out = []
    for kind in PLAN_KINDS:
        ids = groups[kind]
        if not ids:
            continue
        acc = {m: sum(bool(by_id[i][m].get("correct")) for i in ids) / len(ids) for m in methods}
        out.append({"kind": kind, "problems": len(ids), "plan_tokens_median": statistics.median(tokens[kind]),
                    "accuracy": acc})
    return out


def plan_markdown(planner: str, rows: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> list[str]:
    """The breakdown as Markdown lines."""
    lines = [f"What `{planner}`'s plan (the LRM's first step) is, and each method's accuracy on those problems:",
             "", "| plan | problems | plan tokens (median) | " + " | ".join(methods) + " |",
             "|---|---|---|" + "---|" * len(methods)]
    for r in rows:
        lines.append(f"| {r['kind']} | {r['problems']} | {r['plan_tokens_median']:g} | "
                     + " | ".join(f"{r['accuracy'][m]:.2f}" for m in methods) + " |")
    return lines
