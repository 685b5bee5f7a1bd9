"""The collaborative step loop on real models: invariants of the srm/lrm policies, routing, decision points,
remote LRMs over a real loopback HTTP server (healthy, failing, slow) and bad input."""

from __future__ import annotations

import pytest

from rankguide_edge.collab.backends_local import LocalBackend
from rankguide_edge.collab.backends_remote import RemoteBackend
from rankguide_edge.collab.reasoner import Reasoner, ReasonerConfig
from rankguide_edge.config import RuntimeConfig, SamplingConfig
from rankguide_edge.engine.context import generate_text
from rankguide_edge.engine.model import Model
from rankguide_edge.errors import ConfigError, ContextOverflowError, InvalidInputError
from rankguide_edge.testing.mini_server import MiniServer

QUESTION = "Tom has 3 boxes of 4 apples and eats 2. How many apples are left? Think step by step."
RT = RuntimeConfig(n_ctx=1024)
N = 48


def _greedy(model: Model, n: int = N) -> str:
    with model.context(RT) as ctx:
        text, _ = generate_text(ctx, model.tokenize(model.chat_prompt(QUESTION), add_special=True),
                                SamplingConfig(max_tokens=n))
    return text


def _solve(srm: Model, lrm, **cfg):
    with Reasoner(srm, lrm, ReasonerConfig(max_tokens=N, max_step_tokens=16, **cfg), runtime=RT) as r:
        return r.solve(QUESTION)


def test_policy_srm_reproduces_the_srm_alone(smol) -> None:
    res = _solve(smol, None, policy="srm")
    assert res.answer_text == _greedy(smol)
    assert all(s.source == "srm" and not s.routed for s in res.steps)
    assert res.usage["lrm_calls"] == 0 and res.usage["srm_discarded_tokens"] == 0


def test_policy_lrm_reproduces_the_lrm_alone(smol) -> None:
    with LocalBackend(smol, RT) as lrm:
        res = _solve(smol, lrm, policy="lrm")
    assert res.decide == "pre"  # the SRM drafts nothing
    assert res.answer_text == _greedy(smol)
    assert res.steps and all(s.source == "lrm" for s in res.steps)
    assert res.usage["srm_tokens"] == 0 and res.usage["lrm_calls"] == len(res.steps)
    # the SRM never drafts, so it never reads anything either: the LRM alone costs only LRM time
    assert res.usage["srm_prefill_tokens"] == 0 and res.timing["srm"] == 0.0


def test_routing_every_step_and_never(smol, tiny) -> None:
    with LocalBackend(tiny, RT) as lrm:  # another tokenizer: steps travel as text
        every = _solve(smol, lrm, policy="rankguide", threshold=0.0)
        never = _solve(smol, lrm, policy="rankguide", threshold=1.0, revalidation_k=0, lrm_first=0)
    assert every.steps and all(s.source == "lrm" for s in every.steps)
    assert every.usage["srm_discarded_tokens"] == sum(s.srm_tokens for s in every.steps) > 0
    assert never.answer_text == _greedy(smol)
    assert all(s.source == "srm" for s in never.steps)


def test_random_routing_is_deterministic_with_a_seed(smol) -> None:
    with LocalBackend(smol, RT) as lrm:
        runs = [[s.source for s in _solve(smol, lrm, policy="random", random_p=0.5, seed=3).steps]
                for _ in range(2)]
        other = [s.source for s in _solve(smol, lrm, policy="random", random_p=0.5, seed=11).steps]
    assert runs[0] == runs[1]
    assert len(runs[0]) >= 3
    assert runs[0] != other or len(set(runs[0])) == 2


def test_early_decision_stops_drafts_after_k_tokens(smol) -> None:
    with LocalBackend(smol, RT) as lrm:
        res = _solve(smol, lrm, policy="entropy", threshold=0.0, decide="early", early_tokens=4)
    assert res.steps and all(s.source == "lrm" for s in res.steps)
    assert all(s.srm_tokens <= 4 for s in res.steps)


def test_lrm_first_writes_the_plan_then_the_policy_decides(smol) -> None:
    with LocalBackend(smol, RT) as lrm:
        res = _solve(smol, lrm, policy="rankguide", threshold=1.0, revalidation_k=0, lrm_first=1)
    first, *rest = res.steps
    assert first.source == "lrm" and first.reason == "first" and first.srm_tokens == 0 and first.score is None
    assert rest and all(s.source == "srm" for s in rest)  # threshold 1: the policy routes nothing after it
    assert res.usage["srm_discarded_tokens"] == 0 and res.usage["lrm_calls"] == 1
    # policy srm with a plan: the LRM writes step 0, the SRM everything after, nothing is ever routed
    with LocalBackend(smol, RT) as lrm:
        plan = _solve(smol, lrm, policy="srm", lrm_first=1)
    assert [s.source for s in plan.steps[:1]] == ["lrm"] and all(s.source == "srm" for s in plan.steps[1:])
    assert plan.steps[0].text == first.text  # the same plan as above
    assert plan.usage["lrm_calls"] == 1 and not any(s.routed for s in plan.steps[1:])


def _conversation(answer: str = "") -> list[tuple[str, str]]:
    msgs = [("system", "You are a careful tutor. Explain each step of a calculation on its own line, check "
                       "every product and sum twice, and end with the final number alone on the last line."),
            ("user", QUESTION + " Keep every intermediate result, and say which operation you use and why.")]
    return [*msgs, ("assistant", answer), ("user", "And if Tom buys 5 more apples?")] if answer else msgs


@pytest.mark.parametrize("policy", ["random", "srm"])
def test_a_second_turn_reads_only_what_is_new_and_answers_as_a_cold_start(smol, tiny, policy: str) -> None:
    """The SRM keeps what the first turn read of the conversation, and the second turn's answer, steps,
    routing and signals are exactly those of a reasoner that starts cold."""
    cfg = ReasonerConfig(max_tokens=N, max_step_tokens=16, policy=policy, random_p=0.4, lrm_first=1)
    rt = RuntimeConfig(n_ctx=1024, n_batch=64)  # blocks of 32: the short first prompt holds whole ones
    with LocalBackend(tiny, RT) as lrm, Reasoner(smol, lrm, cfg, runtime=rt, details=True) as warm:
        first = warm.solve(_conversation())
        assert first.usage["srm_reused_tokens"] == 0
        second = warm.solve(_conversation(first.answer_text))
        reused = second.usage["srm_reused_tokens"]
        assert reused >= warm.ctx.prefill_block  # at least one whole block of the first turn's prompt
        with Reasoner(smol, lrm, cfg, runtime=rt, details=True) as cold_r:
            cold = cold_r.solve(_conversation(first.answer_text))
    assert cold.usage["srm_reused_tokens"] == 0
    assert second.usage["srm_prefill_tokens"] == cold.usage["srm_prefill_tokens"] - reused
    assert second.answer_text == cold.answer_text
    assert [(s.source, s.score, s.text, s.signals, s.token_ids) for s in second.steps] == \
        [(s.source, s.score, s.text, s.signals, s.token_ids) for s in cold.steps]
    assert any(s.source == "lrm" for s in cold.steps) and any(s.source == "srm" for s in cold.steps)


def test_prefix_reuse_all_keeps_the_last_answer_and_off_keeps_nothing(smol) -> None:
    rt = RuntimeConfig(n_ctx=1024, n_batch=64)
    kept = {}
    for mode in ("exact", "all", "off"):
        cfg = ReasonerConfig(max_tokens=N, max_step_tokens=16, policy="srm", lrm_first=0, prefix_reuse=mode)
        with Reasoner(smol, None, cfg, runtime=rt) as r:
            first = r.solve(_conversation())
            prompt_len = first.usage["srm_prefill_tokens"]
            second = r.solve(_conversation(first.answer_text))
            kept[mode] = second.usage["srm_reused_tokens"]
            assert kept[mode] + second.usage["srm_prefill_tokens"] > prompt_len + first.usage["srm_tokens"] // 2
    assert kept["off"] == 0 < kept["exact"] <= prompt_len < kept["all"]
    with pytest.raises(ConfigError, match="prefix_reuse"):
        ReasonerConfig(prefix_reuse="some")


def test_pre_decision_lets_the_lrm_write_without_a_draft(smol) -> None:
    with LocalBackend(smol, RT) as lrm:
        res = _solve(smol, lrm, policy="random", random_p=1.0, decide="pre")
    assert all(s.source == "lrm" and s.srm_tokens == 0 for s in res.steps)


def test_remote_lrm_on_a_loopback_server_writes_every_step(smol) -> None:
    """Steps travel as text over HTTP. The first step matches a local LRM exactly (both prefill the same prompt
    from an empty cache); later ones may differ in near-ties, because the server prefills each prompt whole while
    a local backend reuses its cache, and batched and incremental prefill round differently."""
    with LocalBackend(smol, RT) as local:
        ref = _solve(smol, local, policy="lrm")
    with MiniServer(smol, RT) as server:
        remote = RemoteBackend(server.url, template_model=smol)
        res = _solve(smol, remote, policy="lrm")
        remote.close()
        posts = [r for r in server.requests if r[0] == "POST"]
    assert res.steps and all(s.source == "lrm" and not s.lrm_error for s in res.steps)
    assert res.steps[0].text == ref.steps[0].text
    assert len(posts) == len(res.steps) and all(status == 200 for _, _, status in posts)
    assert res.usage["lrm_tokens"] <= N


@pytest.mark.parametrize("mode", ["error", "slow", "empty"])
def test_a_failing_remote_lrm_keeps_the_srm_steps(smol, mode: str) -> None:
    with MiniServer(smol, RT, mode=mode, delay=3.0) as server:
        remote = RemoteBackend(server.url, template_model=smol, timeout=0.5, retries=1, backoff=0.05)
        res = _solve(smol, remote, policy="rankguide", threshold=0.0)
        remote.close()
    assert res.answer_text == _greedy(smol)
    assert all(s.source == "srm" and s.lrm_error for s in res.steps)
    assert res.usage["lrm_failures"] == res.usage["lrm_calls"] == len(res.steps)


def test_an_lrm_that_ends_the_answer_at_once_ends_it_and_is_no_failure(smol) -> None:
    """An empty LRM reply ended by end-of-generation means "the answer is complete": the routed draft is
    dropped and solving stops, instead of counting a failure and letting the SRM write on."""
    with MiniServer(smol, RT, mode="done") as server:
        remote = RemoteBackend(server.url, template_model=smol, timeout=30, retries=0)
        lrm = _solve(smol, remote, policy="lrm")
        routed = _solve(smol, remote, policy="rankguide", threshold=0.0, lrm_first=0)  # a draft, then routed
        remote.close()
    for res in (lrm, routed):
        assert res.finished and res.answer_text == "" and res.steps == []
        assert res.usage["lrm_failures"] == 0 and res.usage["lrm_calls"] == 1
    assert lrm.usage["srm_tokens"] == 0  # the LRM alone: the SRM never wrote
    assert routed.usage["srm_discarded_tokens"] == routed.usage["srm_tokens"] > 0


def test_an_unreachable_lrm_keeps_the_srm_steps(smol) -> None:
    remote = RemoteBackend("http://127.0.0.1:9/v1", template_model=smol, timeout=0.5, retries=0)
    res = _solve(smol, remote, policy="rankguide", threshold=0.0)
    assert res.answer_text == _greedy(smol)
    assert all(s.lrm_error for s in res.steps)


def test_bad_input(smol) -> None:
    with Reasoner(smol, None, ReasonerConfig(policy="srm"), runtime=RuntimeConfig(n_ctx=256)) as r:
        with pytest.raises(InvalidInputError, match="empty"):
            r.solve("   ")
        with pytest.raises(ContextOverflowError, match="n-ctx"):
            r.solve("word " * 2000)
    with pytest.raises(InvalidInputError, match="cannot decide"):
        Reasoner(smol, None, ReasonerConfig(policy="judge", decide="pre"))


def test_sampled_solves_depend_on_their_seed_only(tiny) -> None:
    """Each solve reseeds the sampler: the same seed gives the same text whatever ran before."""
    with Reasoner(tiny, None, ReasonerConfig(policy="srm", temperature=1.0, seed=5, max_tokens=16), runtime=RT) as r:
        first = r.solve("hello").answer_text
        r.reconfigure(seed=6)
        other = r.solve("hello").answer_text
        r.reconfigure(seed=5)
        assert r.solve("hello").answer_text == first
    assert other != first


def test_policy_srm_never_routes_even_at_threshold_zero(tiny) -> None:
    with LocalBackend(tiny, RT) as lrm, Reasoner(
            tiny, lrm, ReasonerConfig(policy="srm", threshold=0.0, max_tokens=16), runtime=RT) as r:
        res = r.solve("hello")
    assert res.usage["lrm_calls"] == 0 and all(s.source == "srm" for s in res.steps)


@pytest.mark.bigmodel
def test_default_pair_solves_and_lrm_policy_is_the_lrm_alone() -> None:
    """The default SRM/LRM pair through the Python API: policy lrm writes exactly the LRM's greedy answer, and
    rankguide runs to a final answer."""
    from rankguide_edge import Solver
    from rankguide_edge.engine.models import DEFAULT_LRM, DEFAULT_SRM

    q = "A baker makes 12 trays of 8 muffins and sells 75. How many muffins are left?"
    with Solver(DEFAULT_SRM, DEFAULT_LRM, config=ReasonerConfig(policy="lrm", max_tokens=160), progress=False) as s:
        assert s.lrm is not None
        out = s.solve(q, kind="gsm8k")
        lrm_model = s.lrm.model
        with lrm_model.context(RuntimeConfig(n_ctx=2048)) as ctx:
            from rankguide_edge.tasks.answers import prompt_for

            prompt = lrm_model.tokenize(lrm_model.chat_prompt(prompt_for(q, "gsm8k")), add_special=True)
            alone, _ = generate_text(ctx, prompt, SamplingConfig(max_tokens=160))
        assert out.result.answer_text == alone
        s.reconfigure(policy="rankguide", decide="post")
        out = s.solve(q, kind="gsm8k")
    assert out.answer is not None and out.result.finished  # an answer was extracted (right or not)
    assert {st.source for st in out.result.steps} <= {"srm", "lrm"}


def test_route_steps_limits_routing_to_the_first_steps_after_the_plan(smol) -> None:
    """Policy lrm allowed one step after a one-step plan is a plan two steps long: the LRM writes steps 0 and 1,
    the SRM everything after, token for token."""
    rt = RT
    q = "Tom has 3 boxes of 4 apples and eats 2. How many apples are left?"
    with LocalBackend(smol, rt) as lrm:
        cfg = {"max_tokens": 64, "max_step_tokens": 16}
        with Reasoner(smol, lrm, ReasonerConfig(policy="lrm", lrm_first=1, route_steps=1, **cfg), runtime=rt) as r:
            windowed = r.solve(q)
        with Reasoner(smol, lrm, ReasonerConfig(policy="srm", lrm_first=2, **cfg), runtime=rt) as r:
            planned = r.solve(q)
    assert windowed.answer_text == planned.answer_text
    assert [s.source for s in windowed.steps] == [s.source for s in planned.steps]
    assert [s.source for s in windowed.steps][:2] == ["lrm", "lrm"] and "srm" in [s.source for s in windowed.steps]
