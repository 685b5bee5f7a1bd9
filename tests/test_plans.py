"""What an LRM-written plan is (pure text rules) and the per-kind accuracy breakdown."""

from __future__ import annotations

from rankguide_edge.tasks.plans import PLAN_KINDS, plan_breakdown, plan_kind, plan_markdown


def test_plan_kinds() -> None:
    assert plan_kind("12 * 8 = 96. 96 - 75 = 21. The answer is 21.", 1) == "whole answer"
    assert plan_kind("To find the rest, we follow these steps:\n\n1. Multiply.", 3) == "one sentence"
    assert plan_kind("She makes 96 muffins. She sells 75.\n\nSo 21 are left.", 2) == "paragraph"
    assert plan_kind("So 96 - 75 = 21. The answer is 21.\n\nDone.", 2) == "paragraph with the answer"
    assert plan_kind("We have \\boxed{21}\n\nCheck: fine.", 2) == "paragraph with the answer"


def _rec(text: str, n_steps: int, correct: bool, plan_tokens: int = 10) -> dict:
    return {"text": text, "n_steps": n_steps, "correct": correct,
            "steps": [{"source": "lrm", "lrm_tokens": plan_tokens}] + [{"source": "srm"}] * (n_steps - 1)}


def test_breakdown_counts_each_methods_accuracy_per_kind() -> None:
    by_id = {
        "a": {"srm^1": _rec("All of it. The answer is 3.", 1, True, 40), "srm": _rec("x", 1, False)},
        "b": {"srm^1": _rec("First we add:\n\nthen", 2, False, 6), "srm": _rec("x", 1, True)},
        "c": {"srm^1": _rec("We add. Then we halve.\n\nSo 4.", 2, True, 12), "srm": _rec("x", 1, False)},
        "d": {"srm^1": _rec("One line only:\n\nrest", 3, True, 8), "srm": _rec("x", 1, True)},
    }
    rows = plan_breakdown(by_id, "srm^1", ["srm^1", "srm"])
    got = {r["kind"]: r for r in rows}
    assert [r["kind"] for r in rows] == [k for k in PLAN_KINDS if k in got]
    assert got["whole answer"]["problems"] == 1 and got["whole answer"]["plan_tokens_median"] == 40
    assert got["one sentence"]["problems"] == 2 and got["one sentence"]["accuracy"] == {"srm^1": 0.5, "srm": 1.0}
    assert got["paragraph"]["accuracy"] == {"srm^1": 1.0, "srm": 0.0}
    text = "\n".join(plan_markdown("srm^1", rows, ["srm^1", "srm"]))
    assert "| one sentence | 2 | 7 | 0.50 | 1.00 |" in text
