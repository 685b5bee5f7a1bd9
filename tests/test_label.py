"""Intervention labels and the verify policy on a real model (SmolLM2 as both SRM and LRM, so that every
invariant has an exact oracle: the same model reading the same tokens)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from rankguide_edge.collab.backends_local import LocalBackend
from rankguide_edge.collab.backends_remote import RemoteBackend
from rankguide_edge.collab.reasoner import Reasoner, ReasonerConfig
from rankguide_edge.config import RuntimeConfig
from rankguide_edge.errors import ConfigError, InvalidInputError
from rankguide_edge.fitting.label import (
    LabelConfig,
    Labeller,
    control_seed,
    decode_vector,
    header,
    load_labels,
    run_labels,
    selected_for_counterfactuals,
)
from rankguide_edge.tasks.datasets import Problem

RT = RuntimeConfig(n_ctx=1024)
QUESTION = "Tom has 3 boxes of 4 apples and eats 2. How many apples are left?"
PROBLEM = Problem(id="tom", question=QUESTION, gold="10", kind="gsm8k", source="test")
CFG = LabelConfig(max_tokens=48, max_step_tokens=16, max_cf_steps=1, cf_right_share=1.0, n_ctx=1024)


def _solve(srm, lrm, **cfg):
    from rankguide_edge.tasks.answers import prompt_for

    config = ReasonerConfig(max_tokens=CFG.max_tokens, max_step_tokens=CFG.max_step_tokens, **cfg)
    with Reasoner(srm, lrm, config, runtime=RT) as r:
        return r.solve(prompt_for(QUESTION, "gsm8k"))


def test_verify_at_threshold_zero_reproduces_the_lrm_alone_and_meters_its_checks(smol) -> None:
    with LocalBackend(smol, RT) as lrm:
        verify = _solve(smol, lrm, policy="verify", threshold=0.0)
        alone = _solve(smol, lrm, policy="lrm")
        keep = _solve(smol, lrm, policy="verify", threshold=1.0, revalidation_k=0)
    assert verify.answer_text == alone.answer_text
    assert all(s.source == "lrm" for s in verify.steps)
    # threshold 1: nothing the check says routes, but every SRM draft was checked once and the cost is counted
    assert all(s.source == "srm" for s in keep.steps)
    assert keep.usage["lrm_checks"] == len(keep.steps) > 0
    assert keep.usage["lrm_check_prefill_tokens"] >= sum(s.srm_tokens for s in keep.steps)
    assert keep.timing["lrm_check"] > 0
    assert all(s.check and 0.0 <= s.check["lrm.risk"] <= 1.0 for s in keep.steps)


def test_verify_refuses_a_remote_lrm(smol) -> None:
    remote = RemoteBackend("http://127.0.0.1:9/v1")
    with pytest.raises(ConfigError, match="local LRM"):
        Reasoner(smol, remote, ReasonerConfig(policy="verify"), runtime=RT)


@pytest.fixture(scope="module")
def labelled(smol):
    with LocalBackend(smol, RT) as lrm, Labeller(smol, lrm, CFG) as lab:
        yield lab.label(PROBLEM), lab


def test_the_unintervened_trace_is_the_served_regime(smol, labelled) -> None:
    rec, _ = labelled
    with LocalBackend(smol, RT) as lrm:
        served = _solve(smol, lrm, policy="srm", lrm_first=1)
    assert rec["text"] == served.answer_text
    assert [s["source"] for s in rec["steps"]] == [s.source for s in served.steps]
    assert rec["steps"][0]["source"] == "lrm" and rec["lrm_first"] == 1


def test_a_counterfactual_is_what_the_live_loop_would_write(smol, labelled) -> None:
    """Routing the first SRM step to the LRM is the same as a plan one step longer: the counterfactual's
    answer must equal the live loop's with lrm_first=2, token for token (the SRM continues from its own
    tokens for its steps and the LRM's text re-tokenized, as the loop does)."""
    rec, _ = labelled
    first = next(s for s in rec["steps"] if s["source"] == "srm")
    assert first["index"] == 1 and "cf" in first
    with LocalBackend(smol, RT) as lrm:
        longer_plan = _solve(smol, lrm, policy="srm", lrm_first=2)
    cf = first["cf"]
    prefix = rec["steps"][0]["text"]
    assert prefix + cf["lrm_text"] + cf["continuation"] == longer_plan.answer_text
    assert cf["lrm_text"] == longer_plan.steps[1].text


def test_every_srm_step_carries_its_evidence(smol, labelled) -> None:
    rec, _ = labelled
    srm_steps = [s for s in rec["steps"] if s["source"] == "srm"]
    assert srm_steps and all(s["signals"] and "text.entropy_max" in s["signals"] for s in srm_steps)
    assert all(0.0 <= s["lrm"]["lrm.risk"] <= 1.0 for s in srm_steps)
    assert all(decode_vector(s["pooled"]).shape == (smol.n_embd,) for s in srm_steps)
    with_cf = [s for s in srm_steps if "cf" in s]
    assert len(with_cf) == min(CFG.max_cf_steps, len(srm_steps))
    assert all(s["cf"]["gain"] == int(s["cf"]["correct"]) - int(rec["correct"]) for s in with_cf)
    json.dumps(rec)  # a record is plain JSON


def test_srm_steps_keep_their_token_ids(labelled) -> None:
    rec, _ = labelled
    for s in rec["steps"]:
        if s["source"] == "srm":
            assert len(s["token_ids"]) == s["n_tokens"] > 0
        else:
            assert "token_ids" not in s


def _control_of(smol, **cfg):
    config = dataclasses.replace(CFG, control=True, **cfg)
    with LocalBackend(smol, RT) as lrm, Labeller(smol, lrm, config) as lab:
        rec = lab.label(PROBLEM)
    first = next(s for s in rec["steps"] if s["source"] == "srm")
    assert "control" in first and "cf" in first
    return rec, first


def test_a_greedy_control_reproduces_the_unintervened_answer(smol) -> None:
    """The control re-drafts the first SRM step from exactly the live loop's tokens: at temperature 0 it must
    write the same step and, continuing greedily, the same answer, so any change it shows when sampled is the
    sampling's doing."""
    rec, first = _control_of(smol, control_temperature=0.0)
    ctl = first["control"]
    assert ctl["same_as_base"] and ctl["step_text"] == first["text"]
    prefix = "".join(s["text"] for s in rec["steps"][: first["index"]])
    assert prefix + ctl["step_text"] + ctl["continuation"] == rec["text"]
    assert ctl["correct"] == rec["correct"] and ctl["gain"] == 0


def test_a_sampled_control_is_seeded_by_the_problem(smol) -> None:
    rec, a = _control_of(smol, control_temperature=1.5)
    _, b = _control_of(smol, control_temperature=1.5)
    assert a["control"] == b["control"]
    assert a["control"]["gain"] == int(a["control"]["correct"]) - int(rec["correct"])
    assert control_seed("tom", 0) != control_seed("tom", 1) and control_seed("tom", 0) != control_seed("tim", 0)


def test_label_file_resumes_and_refuses_other_settings(smol, labelled, tmp_path) -> None:
    _, lab = labelled
    out = tmp_path / "labels.jsonl"
    head = header(CFG, smol.path, smol.path, lab.signal_cfg)
    first = run_labels(lab, [PROBLEM], out, head=head)
    assert first.labelled == 1
    with open(out, "a", encoding="utf-8") as fh:
        fh.write('{"id": "torn')  # the process died mid-line
    again = run_labels(lab, [PROBLEM], out, head=head)
    assert again.labelled == 0 and again.skipped_existing == 1
    got_head, recs = load_labels(out)
    assert got_head["settings"] == head["settings"] and [r["id"] for r in recs] == ["tom"]
    other = header(LabelConfig(max_tokens=64, n_ctx=1024), smol.path, smol.path, lab.signal_cfg)
    with pytest.raises(ConfigError, match="max_tokens"):
        run_labels(lab, [PROBLEM], out, head=other)
    bad = tmp_path / "not_labels.jsonl"
    bad.write_text('{"id": "x"}\n')
    with pytest.raises(InvalidInputError, match="not a label file"):
        load_labels(bad)


def test_counterfactual_selection_is_seeded_by_id() -> None:
    ids = [f"p{i}" for i in range(400)]
    assert all(selected_for_counterfactuals(i, False, 0.0) for i in ids)  # every wrong answer
    half = [selected_for_counterfactuals(i, True, 0.5) for i in ids]
    assert 0.4 < np.mean(half) < 0.6
    assert half == [selected_for_counterfactuals(i, True, 0.5) for i in ids]
    assert not any(selected_for_counterfactuals(i, True, 0.0) for i in ids)
