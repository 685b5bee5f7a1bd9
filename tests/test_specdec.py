"""Speculative decoding: its output is the LRM's greedy output token for token, whatever k and however often the
drafts are rejected; the caches are left exactly as if the committed tokens had been fed one by one."""

from __future__ import annotations

import numpy as np
import pytest

from rankguide_edge.collab.backends_local import LocalBackend
from rankguide_edge.collab.reasoner import Reasoner, ReasonerConfig
from rankguide_edge.collab.specdec import SpecDecConfig, SpecDecoder, check_shared_vocab
from rankguide_edge.config import RuntimeConfig, SamplingConfig
from rankguide_edge.engine.model import Model
from rankguide_edge.errors import ConfigError, InvalidInputError

QUESTION = "Tom has 3 boxes of 4 apples and eats 2. How many apples are left? Think step by step."
RT = RuntimeConfig(n_ctx=512, n_threads=1)  # one thread: the suite shares the machine


@pytest.fixture(scope="module")
def tiny_other(tmp_path_factory) -> Model:
    """Same vocabulary as ``tiny``, other weights: its drafts are almost always rejected."""
    from rankguide_edge.testing.tiny_gguf import tiny_model_path

    m = Model(tiny_model_path(tmp_path_factory.mktemp("tiny7"), seed=7))
    yield m
    m.close()


def _greedy(model: Model, prompt: list[int], n: int) -> list[int]:
    with model.context(RT) as ctx:
        return [ev.id for ev in ctx.generate(prompt, SamplingConfig(max_tokens=n)) if not ev.eog]


def _perturb(sd: SpecDecoder, scale: float, seed: int = 0) -> None:
    """Steer the draft model with a random control vector so that it agrees with the target only sometimes."""
    m = sd.srm
    rng = np.random.default_rng(seed)
    sd.srm_context.set_control_vector({la: rng.normal(size=m.n_embd) for la in range(1, m.n_layer)}, scale)


def _check_books(out, k: int) -> None:
    u = out.usage
    n = len(out.tokens)
    assert u["specdec_accepted"] == sum(out.drafted) and u["lrm_tokens"] == n - u["specdec_accepted"]
    assert u["srm_tokens"] == u["specdec_accepted"] + u["srm_discarded_tokens"]
    assert u["srm_discarded_tokens"] == u["lrm_discarded_tokens"] == sum(out.rejected_at)
    assert u["lrm_calls"] == 1 + u["lrm_verify_batches"]
    assert u["lrm_verify_tokens"] == u["lrm_verify_batches"] + u["srm_tokens"]
    assert u["lrm_verify_tokens"] <= u["lrm_verify_batches"] * (k + 1)
    assert u["specdec_k"] == k and u["srm_prefill_tokens"] >= 0


@pytest.mark.parametrize("k", [1, 2, 4, 7])
def test_equals_lrm_greedy_when_drafts_are_rejected(tiny, tiny_other, k) -> None:
    n = 40
    with SpecDecoder(tiny, tiny_other, SpecDecConfig(k=k, max_tokens=n), runtime=RT) as sd:
        prompt = sd.prompt_tokens(QUESTION)
        out = sd.generate(prompt)
    assert out.tokens == _greedy(tiny_other, prompt, n)
    assert len(out.tokens) == n and not out.finished
    assert out.usage["srm_discarded_tokens"] > 0
    _check_books(out, k)


@pytest.mark.parametrize("k,scale", [(1, 0.5), (3, 0.5), (4, 1.0), (6, 0.5)])
def test_equals_lrm_greedy_with_partial_acceptance(tiny, k, scale) -> None:
    n = 48
    with SpecDecoder(tiny, tiny, SpecDecConfig(k=k, max_tokens=n), runtime=RT) as sd:
        _perturb(sd, scale)
        prompt = sd.prompt_tokens(QUESTION)
        out = sd.generate(prompt)
    assert out.tokens == _greedy(tiny, prompt, n)
    u = out.usage
    assert 0 < u["specdec_accepted"] < u["srm_tokens"]  # both accepted and rejected drafts happened
    _check_books(out, k)


def test_identical_models_accept_every_draft(tiny) -> None:
    n, k = 41, 4
    with SpecDecoder(tiny, tiny, SpecDecConfig(k=k, max_tokens=n), runtime=RT) as sd:
        prompt = sd.prompt_tokens(QUESTION)
        out = sd.generate(prompt)
    assert out.tokens == _greedy(tiny, prompt, n)
    assert out.usage["srm_discarded_tokens"] == 0
    # first token from the prefill, then k accepted drafts + one bonus token per batch: 1 + 8 * 5 = 41
    assert out.usage["lrm_verify_batches"] == 8 and out.usage["specdec_accepted"] == 32
    _check_books(out, k)


def test_rollback_leaves_the_caches_as_sequential_decoding_would(tiny) -> None:
    n = 30
    with SpecDecoder(tiny, tiny, SpecDecConfig(k=5, max_tokens=n), runtime=RT) as sd:
        _perturb(sd, 0.5)
        prompt = sd.prompt_tokens(QUESTION)
        out = sd.generate(prompt)
        committed = prompt + out.tokens
        lrm_ctx = sd.lrm_context
        # the LRM holds every committed token but the last (never fed), nothing of the rejected drafts
        assert lrm_ctx.tokens == committed[:-1]
        assert committed[: len(sd.srm_context.tokens)] == sd.srm_context.tokens
        lrm_ctx.eval(committed[-1:], hidden=False)
        after_rollbacks = lrm_ctx.logits().copy()
        # a second run on the same decoder starts clean
        again = sd.generate(sd.prompt_tokens("What is 7 times 8?"))
        assert again.tokens == _greedy(tiny, sd.prompt_tokens("What is 7 times 8?"), n)
    with tiny.context(RT) as fresh:
        fresh.eval(committed, hidden=False)
        # equal up to llama.cpp's batch-size-dependent rounding (~1e-3); a stale draft in the cache moves the
        # logits by O(1)
        np.testing.assert_allclose(after_rollbacks, fresh.logits(), atol=2e-2)
        assert int(np.argmax(after_rollbacks)) == int(np.argmax(fresh.logits()))


def test_solve_matches_the_lrm_method_text(tiny, tiny_other) -> None:
    n = 32
    with SpecDecoder(tiny, tiny_other, SpecDecConfig(k=3, max_tokens=n), runtime=RT) as sd:
        res = sd.chat(QUESTION)
    with LocalBackend(tiny_other, RT) as lrm, \
            Reasoner(tiny, lrm, ReasonerConfig(policy="lrm", max_tokens=n), runtime=RT) as reasoner:
        ref = reasoner.solve(QUESTION)
    assert res.answer_text == ref.answer_text
    assert res.policy == "specdec" and res.steps and all(s.source == "lrm" for s in res.steps)
    assert "".join(s.text for s in res.steps) == res.answer_text
    kept = sum(s.srm_tokens - s.discarded_tokens + s.lrm_tokens for s in res.steps)
    assert kept == n and res.usage["srm_tokens"] == sum(s.srm_tokens for s in res.steps)
    assert set(res.timing) >= {"srm", "lrm", "total"}


def test_smollm2_equals_its_greedy_output(smol) -> None:
    n, k = 16, 3
    with SpecDecoder(smol, smol, SpecDecConfig(k=k, max_tokens=n), runtime=RT) as sd:
        _perturb(sd, 0.5)
        prompt = sd.prompt_tokens(QUESTION)
        out = sd.generate(prompt)
    assert out.tokens == _greedy(smol, prompt, n)
    assert out.usage["specdec_accepted"] > 0
    _check_books(out, k)


def test_smollm2_stops_where_its_greedy_output_ends(smol) -> None:
    n = 24
    for scale in (0.0, 0.5):  # every draft accepted (the end token among them) / drafts partly rejected
        with SpecDecoder(smol, smol, SpecDecConfig(k=4, max_tokens=n), runtime=RT) as sd:
            if scale:
                _perturb(sd, scale, seed=1)
            prompt = sd.prompt_tokens("What is the capital of France? Answer in one word.")
            out = sd.generate(prompt)
        assert out.finished and len(out.tokens) < n
        assert out.tokens == _greedy(smol, prompt, n)
        if not scale:
            u = out.usage
            assert u["srm_discarded_tokens"] == 0 and u["srm_tokens"] == u["specdec_accepted"] + 1  # + the end


def test_needs_one_vocabulary_and_a_batch_that_holds_k(tiny, smol) -> None:
    with pytest.raises(InvalidInputError, match="one vocabulary"):
        check_shared_vocab(tiny, smol)
    with pytest.raises(InvalidInputError, match="one vocabulary"):
        SpecDecoder(smol, tiny, runtime=RT)
    with pytest.raises(ConfigError, match="n_batch"):
        SpecDecoder(tiny, tiny, SpecDecConfig(k=8), runtime=RuntimeConfig(n_ctx=512, n_batch=8))
    with pytest.raises(ConfigError):
        SpecDecConfig(k=0)
    with SpecDecoder(tiny, tiny, runtime=RT) as sd, pytest.raises(InvalidInputError, match="empty"):
        sd.chat("   ")
