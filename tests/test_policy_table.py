"""`router eval`: single-intervention policies on a counterfactual table, checked on a table small enough that
every expected outcome is worked out by hand (pure Python, no model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from rankguide_edge.errors import ConfigError, InvalidInputError
from rankguide_edge.fitting.policy_table import (
    compare,
    evaluate,
    parse_policy,
    table_problems,
)


def _step(i: int, n: int, *, entropy: float, cf_correct: bool | None, base_correct: bool, lrm_min: float = -0.1,
          lrm_tokens: int = 10, cont: int = 20, control: bool | None = None) -> dict:
    st = {"index": i, "source": "srm", "text": f"step {i}\n\n", "n_tokens": n, "lrm_check_prefill_tokens": n + 5,
          "signals": {"text.entropy_max": entropy, "step.index": float(i)},
          "lrm": {"lrm.logprob_min": lrm_min}}
    if cf_correct is not None:
        st["cf"] = {"lrm_tokens": lrm_tokens, "srm_tokens": cont, "correct": cf_correct,
                    "gain": int(cf_correct) - int(base_correct)}
    if control is not None:
        st["control"] = {"srm_tokens": cont + 1, "correct": control, "gain": int(control) - int(base_correct)}
    return st


def _problem(pid: str, correct: bool, steps: list[dict]) -> dict:
    plan = {"index": 0, "source": "lrm", "text": "plan\n\n", "n_tokens": 30}
    return {"id": pid, "question": f"question {pid}", "correct": correct, "counterfactuals": True,
            "usage": {"lrm_tokens": 30, "srm_tokens": sum(s["n_tokens"] for s in steps)}, "steps": [plan, *steps]}


# a: wrong; the LRM's first step fixes it, its second does not; confident first step, unsure second
# b: right; rewriting the first step breaks it; the sampled control keeps it
# c: wrong; only the second step's rewrite fixes it
RECORDS = [
    _problem("a", False, [_step(1, 40, entropy=0.5, cf_correct=True, base_correct=False, lrm_min=-9.0, control=False),
                          _step(2, 60, entropy=4.0, cf_correct=False, base_correct=False)]),
    _problem("b", True, [_step(1, 50, entropy=3.0, cf_correct=False, base_correct=True, control=True),
                         _step(2, 50, entropy=0.1, cf_correct=True, base_correct=True)]),
    _problem("c", False, [_step(1, 20, entropy=0.2, cf_correct=False, base_correct=False, control=False),
                          _step(2, 20, entropy=5.0, cf_correct=True, base_correct=False)]),
]


def _acc(spec: str) -> np.ndarray:
    return evaluate(parse_policy(spec), table_problems(RECORDS)).correct


def test_fixed_policies_read_the_counterfactual_of_their_step() -> None:
    assert list(_acc("srm^1")) == [0, 1, 0]
    assert list(_acc("srm^2")) == [1, 0, 0]  # the first SRM step's rewrite
    assert list(_acc("control")) == [0, 1, 0]


def test_random_policies_are_exact_expectations() -> None:
    # first-random:p: p * cf(first) + (1 - p) * base
    assert _acc("first-random:0.25") == pytest.approx([0.25, 0.75, 0.0])
    # random:p over two steps: p * cf1 + (1-p) p * cf2 + (1-p)^2 * base
    p = 0.5
    assert _acc("random:0.5") == pytest.approx([p, (1 - p) * p + (1 - p) ** 2, (1 - p) * p])


def test_score_policies_route_their_first_step_reaching_the_threshold() -> None:
    # entropy squashes text.entropy_max around 2 nats: 0.5 < 2 < 3, 4, 5
    assert list(_acc("entropy:0.5")) == [0, 0, 1]  # a: step 2 (no fix); b: step 1 (breaks); c: step 2 (fixes)
    assert list(_acc("first-entropy:0.5")) == [0, 0, 0]  # first steps only: b routed and broken
    # verify / first-check: 1 - exp(lrm.logprob_min): only a's first step (-9) is doubted by the LRM
    assert list(_acc("first-check:0.99")) == [1, 1, 0]
    assert list(_acc("verify:0.99")) == [1, 1, 0]


def test_tokens_and_checks_follow_the_routed_step() -> None:
    problems = table_problems(RECORDS)
    r = evaluate(parse_policy("srm^2"), problems)
    # plan 30 + the LRM's 10; SRM: nothing before the first step, then the continuation of 20
    assert list(r.lrm_tokens) == [40, 40, 40] and list(r.srm_tokens) == [20, 20, 20]
    base = evaluate(parse_policy("srm^1"), problems)
    assert list(base.srm_tokens) == [100, 100, 40] and base.lrm_share == pytest.approx(90 / 330)
    check = evaluate(parse_policy("verify:0.99"), problems)
    # a routes its first step (one check); b and c route nothing and check both steps
    assert list(check.check_tokens) == [45, 110, 50]
    assert list(evaluate(parse_policy("first-check:0.99"), problems).check_tokens) == [45, 55, 25]


def test_a_step_past_the_table_counts_as_not_routed_and_is_reported() -> None:
    recs = json.loads(json.dumps(RECORDS))
    del recs[2]["steps"][2]["cf"]  # c's second step has no counterfactual
    r = evaluate(parse_policy("entropy:0.5"), table_problems(recs))
    assert list(r.correct) == [0, 0, 0] and list(r.beyond) == [0, 0, 1]


def test_paired_differences_and_groups() -> None:
    out = compare(table_problems(RECORDS), [parse_policy(s) for s in ("srm^1", "srm^2", "first-check:0.99")],
                  versus=["srm^1"], chosen_on=1, baselines={"srm": {"a": 0, "b": 0, "c": 0},
                                                            "lrm": {"a": 1, "b": 1, "c": 1}})
    assert set(out["groups"]) == {"chosen", "new", "all"} and out["groups"]["new"]["n"] == 2
    rows = {r["policy"]: r for r in out["groups"]["all"]["rows"]}
    assert rows["first-check:0.99"]["accuracy"] == pytest.approx(2 / 3)
    assert rows["first-check:0.99"]["pgr_from_srm"] == pytest.approx(2 / 3)
    assert rows["first-check:0.99"]["pgr_from_srm1"] == pytest.approx((2 / 3 - 1 / 3) / (1 - 1 / 3))
    d = rows["first-check:0.99"]["versus"]["srm^1"]
    assert d["diff"] == pytest.approx(1 / 3) and d["wins"] == 1 and d["losses"] == 0


def test_the_sign_flip_p_value_is_exact_in_the_simplest_cases() -> None:
    from rankguide_edge.stats import paired_difference

    assert paired_difference(np.ones(3), np.ones(3))["p"] == 1.0
    one = paired_difference(np.array([1.0, 0, 0]), np.zeros(3), n_resamples=2000)
    assert one["p"] == 1.0  # one discordant problem can never be significant
    many = paired_difference(np.ones(12), np.zeros(12), n_resamples=4096)
    # exact: 2 of the 4096 sign patterns are as extreme; the interval of a constant difference is that constant
    assert many["p"] == pytest.approx(2 / 4096) and many["lo"] == many["hi"] == 1.0
    # McNemar's exact test on 6 wins and 0 losses (2 ties): p = 2 / 2**6
    six = paired_difference(np.r_[np.ones(6), np.zeros(2)], np.zeros(8), n_resamples=256)
    assert six["p"] == pytest.approx(2 / 64)


def test_bad_specs_and_tables_fail_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="unknown table policy"):
        parse_policy("oracle")
    with pytest.raises(ConfigError, match="needs a probability"):
        parse_policy("random")
    with pytest.raises(ConfigError, match="must lie in"):
        parse_policy("entropy:3")
    partial = json.loads(json.dumps(RECORDS))
    partial[1]["counterfactuals"] = False
    with pytest.raises(InvalidInputError, match="cf-right-share 1"):
        table_problems(partial)


def test_router_eval_cli_writes_its_report(tmp_path) -> None:
    from rankguide_edge.cli.main import main

    table = tmp_path / "table.jsonl"
    header = {"format": "rankguide-edge/labels", "version": 1, "settings": {}}
    table.write_text("".join(json.dumps(r) + "\n" for r in [header, *RECORDS]))
    out = tmp_path / "eval"
    res = CliRunner().invoke(main, ["router", "eval", str(table), "--policies", "srm^1,srm^2,entropy:0.5",
                                    "--versus", "srm^1", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert [r["accuracy"] for r in summary["groups"]["all"]["rows"]] == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    assert (out / "report.md").read_text().startswith("# Single-intervention")
    assert (out / "share.png").stat().st_size > 1000 and (out / "summary.json").exists()
    bad = CliRunner().invoke(main, ["router", "eval", str(table), "--policies", "nope"])
    assert bad.exit_code != 0 and "unknown table policy" in bad.output
