"""The runtime on real GGUF models: tap equivalence, rollback, control vectors, contexts, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from rankguide_edge.config import RuntimeConfig, SamplingConfig
from rankguide_edge.engine.context import generate_text
from rankguide_edge.engine.model import Model
from rankguide_edge.engine.prompts import chat_tokens
from rankguide_edge.errors import ContextOverflowError, ControlVectorError, LayerIndexError, NativeError, NotAGGUFError

CFG = RuntimeConfig(n_ctx=256, n_batch=64, n_threads=2)
GREEDY = SamplingConfig(max_tokens=12)


@pytest.fixture(scope="module", params=["tiny", "smollm2"])
def model(request: pytest.FixtureRequest) -> Model:
    path = request.getfixturevalue("tiny_gguf" if request.param == "tiny" else "smollm2")
    m = Model(path)
    yield m
    m.close()


def _prompt(model: Model) -> list[int]:
    return model.tokenize(model.chat_prompt("What is 12 times 7? Think step by step."), add_special=True)


def _run(model: Model, tap: str | None, layers: list[int] | None = None):
    with model.context(CFG, tap_layers=layers, tap=tap or "auto") as ctx:
        text, events = generate_text(ctx, _prompt(model), GREEDY)
        return text, events, ctx.tap_kind


def test_native_tap_equals_python_tap(model: Model) -> None:
    layers = list(range(model.n_layer))
    t_nat, ev_nat, kind_nat = _run(model, "native", layers)
    t_py, ev_py, kind_py = _run(model, "python", layers)
    assert (kind_nat, kind_py) == ("native", "python")
    assert t_nat == t_py and len(ev_nat) == len(ev_py) > 0
    fed = [e for e in ev_nat if not e.eog]
    assert fed, "no token was fed back"
    for a, b in zip(ev_nat, ev_py, strict=True):
        assert a.id == b.id
        assert sorted(a.hidden) == sorted(b.hidden)
        for il in a.hidden:
            assert a.hidden[il].shape == (model.n_embd,) and a.hidden[il].dtype == np.float32
            assert np.array_equal(a.hidden[il], b.hidden[il])
    assert all(np.isfinite(e.hidden[il]).all() for e in fed for il in layers)
    # different layers really are different tensors
    assert not np.array_equal(fed[0].hidden[0], fed[0].hidden[model.n_layer - 1])


def test_tap_does_not_change_the_computation(model: Model) -> None:
    t_plain, ev_plain, kind = _run(model, None)
    t_tap, ev_tap, _ = _run(model, "native", [0, model.n_layer - 1])
    assert kind is None
    assert t_plain == t_tap
    for a, b in zip(ev_plain, ev_tap, strict=True):
        assert a.id == b.id and np.array_equal(a.top_logprobs, b.top_logprobs)
        assert a.entropy == pytest.approx(b.entropy, abs=0)


def test_token_statistics_are_consistent(model: Model) -> None:
    _, events, _ = _run(model, None)
    for e in events:
        assert e.top_ids[0] == e.id  # greedy picks the most likely token
        assert np.all(np.diff(e.top_logprobs) <= 0)
        assert 0.0 <= e.entropy <= np.log(model.n_vocab) + 1e-4
        assert e.logprob == pytest.approx(float(e.top_logprobs[0]), abs=1e-5)


def test_prefill_hidden_rows_cover_every_token(model: Model) -> None:
    long = (_prompt(model) * 20)[: CFG.n_batch + 7]  # forces two llama_decode chunks
    last = model.n_layer - 1
    with model.context(CFG, tap_layers=[0, last]) as ctx:
        states = ctx.eval(long)
        assert states[0].shape == (len(long), model.n_embd)
        # llama.cpp computes the final layer only for rows with logits: here the last token of the last chunk
        assert states[last].shape == (1, model.n_embd)
        ctx.reset()
        states_all = ctx.eval(long, logits="all")
        assert states_all[last].shape == (len(long), model.n_embd)
        assert np.array_equal(states_all[0], states[0])


def test_rollback_then_redecode_reproduces_logits(model: Model) -> None:
    toks = _prompt(model)
    with model.context(CFG, tap_layers=[1]) as ctx:
        ctx.eval(toks[:-1])
        ctx.eval(toks[-1:])
        ref = ctx.logits().copy()
        events = list(ctx.generate(None, GREEDY))
        fed = [e for e in events if not e.eog]
        assert ctx.n_past == len(toks) + len(fed)
        # roll back into the generated part and re-decode one token: same logits, same continuation
        keep = len(toks) + 2
        ctx.rollback(keep)
        assert ctx.n_past == keep
        with pytest.raises(NativeError):
            ctx.logits()
        ctx.rollback(keep - 1)
        ctx.eval([fed[1].id])
        assert [e.id for e in ctx.generate(None, SamplingConfig(max_tokens=len(events) - 2))] == \
            [e.id for e in events[2:]]
        # roll back to the prompt: the very same logits as before generating
        ctx.rollback(len(toks) - 1)
        ctx.eval(toks[-1:])
        assert np.array_equal(ctx.logits(), ref)


def test_logits_row_gives_each_row_of_the_last_batch(model: Model) -> None:
    """Row i of one all-logits batch predicts the token after toks[i]: the same argmax (and nearly the same
    values: batched kernels round differently) as feeding the tokens one at a time."""
    toks = _prompt(model)[:12]
    with model.context(CFG) as ctx:
        ctx.eval(toks, logits="all", hidden=False)
        rows = [ctx.logits_row(i) for i in range(len(toks))]
        assert np.array_equal(ctx.logits_row(-1), ctx.logits()) and rows[0].shape == (model.n_vocab,)
        ctx.eval(toks[:3], logits="last", hidden=False)  # rows 0 and 1 of this batch have no logits
        with pytest.raises(NativeError, match="without logits"):
            ctx.logits_row(0)
    with model.context(CFG) as one:
        for i, t in enumerate(toks):
            one.eval([t], hidden=False)
            assert int(np.argmax(one.logits())) == int(np.argmax(rows[i]))
            np.testing.assert_allclose(one.logits(), rows[i], atol=2e-2, rtol=0)


def test_two_contexts_tap_independently(model: Model) -> None:
    a_toks = _prompt(model)
    b_toks = model.tokenize("Once upon a time there was", add_special=True)
    solo = {}
    for name, toks, layers in (("a", a_toks, [0, 1]), ("b", b_toks, [1, 2])):
        with model.context(CFG, tap_layers=layers) as ctx:
            solo[name] = [e.hidden for e in ctx.generate(toks, GREEDY)]
    with model.context(CFG, tap_layers=[0, 1]) as ca, model.context(CFG, tap_layers=[1, 2]) as cb:
        ga, gb = ca.generate(a_toks, GREEDY), cb.generate(b_toks, GREEDY)
        got = {"a": [], "b": []}
        for ea, eb in zip(ga, gb, strict=False):  # interleaved decoding
            got["a"].append(ea.hidden)
            got["b"].append(eb.hidden)
    for name in ("a", "b"):
        for h_solo, h_int in zip(solo[name], got[name], strict=False):
            assert sorted(h_solo) == sorted(h_int)
            for il in h_solo:
                assert np.array_equal(h_solo[il], h_int[il])


def test_control_vector_acts_on_its_layer_and_later_only(model: Model) -> None:
    """direction for tapped layer N changes l_out-N and later layers, never earlier ones."""
    toks = _prompt(model)
    layers = list(range(model.n_layer))
    target = 1 if model.n_layer <= 4 else model.n_layer // 2
    rng = np.random.default_rng(0)
    with model.context(CFG, tap_layers=layers) as ctx:
        ctx.eval(toks)
        base_logits = ctx.logits().copy()
        ctx.reset()
        base = ctx.eval(toks, logits="all")
        ctx.reset()
        ctx.set_control_vector({target: rng.normal(size=model.n_embd).astype(np.float32)}, scale=4.0)
        steered = ctx.eval(toks, logits="all")
        for il in layers:
            same = np.array_equal(base[il], steered[il])
            assert same == (il < target), f"layer {il} (target {target})"
        assert not np.array_equal(ctx.logits(), base_logits)
        # scale 0 and clearing both give bit-identical logits
        ctx.reset()
        ctx.set_control_vector({target: rng.normal(size=model.n_embd).astype(np.float32)}, scale=0.0)
        ctx.eval(toks)
        assert np.array_equal(ctx.logits(), base_logits)
        ctx.clear_control_vector()
        ctx.reset()
        ctx.eval(toks)
        assert np.array_equal(ctx.logits(), base_logits)


def test_boundary_steering_touches_only_delimiter_tokens(model: Model) -> None:
    """where=boundary adds the vector only while feeding a generated token whose piece holds the delimiter:
    every state before that token is bit-identical to an unsteered run, the token's own state at the steered
    layer differs, and layers below the steered one never change while the tokens agree."""
    layers = list(range(model.n_layer))
    target = 1 if model.n_layer <= 4 else model.n_layer // 2
    vec = {target: np.random.default_rng(3).normal(size=model.n_embd).astype(np.float32)}
    sampling = SamplingConfig(max_tokens=12)
    with model.context(CFG, tap_layers=layers) as ctx:
        base = list(ctx.generate(_prompt(model), sampling))
        pieces = [e.piece for e in base if not e.eog]
        k = next(i for i in range(2, len(pieces)) if pieces[i] and pieces[i] not in pieces[:i])
        delim = pieces[k].decode("utf-8", "replace")
        ctx.reset()
        ctx.set_steering(vec, 8.0, where="boundary", delimiter=delim)
        steered = list(ctx.generate(_prompt(model), sampling))
        assert [e.id for e in steered[: k + 1]] == [e.id for e in base[: k + 1]]
        for i in range(k):
            for il in layers:
                assert np.array_equal(steered[i].hidden[il], base[i].hidden[il]), (i, il)
        assert not np.array_equal(steered[k].hidden[target], base[k].hidden[target])
        for il in range(target):
            assert np.array_equal(steered[k].hidden[il], base[k].hidden[il])
        # and only there: the whole generation is the hand-made reference's
        assert [e.id for e in steered] == _boundary_reference(ctx, model, vec, delim.encode(), len(steered))
        # a delimiter that never occurs, or clearing, leaves generation bit-identical
        ctx.reset()
        ctx.set_steering(vec, 8.0, where="boundary", delimiter="\x00never\x00")
        assert [e.id for e in ctx.generate(_prompt(model), sampling)] == [e.id for e in base]
        ctx.reset()
        ctx.set_steering(vec, 8.0, where="all")
        ctx.clear_control_vector()
        again = list(ctx.generate(_prompt(model), sampling))
        assert [e.id for e in again] == [e.id for e in base]
        assert all(np.array_equal(a.top_logprobs, b.top_logprobs) for a, b in zip(again, base, strict=True))
        with pytest.raises(ControlVectorError, match="boundary"):
            ctx.set_steering(vec, 1.0, where="middle")


def _boundary_reference(ctx, model: Model, vec: dict[int, np.ndarray], delim: bytes, n: int) -> list[int]:
    """Greedy ids of boundary steering made by hand: the vector is set (``where="all"``) for exactly the fed
    tokens that complete an occurrence of ``delim`` in the generated bytes, and cleared right after."""
    ctx.reset()
    ctx.eval(_prompt(model), hidden=False)
    logits, out, text = ctx.logits(), [], b""
    while len(out) < n:
        tok = int(np.argmax(logits))
        out.append(tok)
        if model.is_eog(tok):
            break
        start = max(0, len(text) - len(delim) + 1)
        text += model.piece(tok)
        if delim in text[start:]:
            ctx.set_steering(vec, 8.0, where="all")
            ctx.eval([tok])
            logits = ctx.logits().copy()
            ctx.clear_control_vector()
        else:
            ctx.eval([tok])
            logits = ctx.logits()
    return out


def test_boundary_steering_finds_a_delimiter_split_over_two_tokens(model: Model) -> None:
    """A delimiter that a vocabulary writes as two tokens (byte-level "\n" "\n") still triggers the vector,
    on the token that completes it, and nowhere before."""
    layers = list(range(model.n_layer))
    target = 1 if model.n_layer <= 4 else model.n_layer // 2
    vec = {target: np.random.default_rng(5).normal(size=model.n_embd).astype(np.float32)}
    sampling = SamplingConfig(max_tokens=16)
    with model.context(CFG, tap_layers=layers) as ctx:
        base = [e for e in ctx.generate(_prompt(model), sampling) if not e.eog]
        pieces = [e.piece for e in base]

        def splits_at(i: int) -> bool:
            pair = pieces[i - 1] + pieces[i]
            try:
                pair.decode("utf-8")
            except UnicodeDecodeError:
                return False
            return bool(pieces[i - 1]) and bool(pieces[i]) and pair not in b"".join(pieces[:i])

        k = next(i for i in range(2, len(pieces)) if splits_at(i))
        delim = (pieces[k - 1] + pieces[k]).decode("utf-8")
        ctx.reset()
        ctx.set_steering(vec, 8.0, where="boundary", delimiter=delim)
        steered = list(ctx.generate(_prompt(model), sampling))
        assert [e.id for e in steered[: k + 1]] == [e.id for e in base[: k + 1]]
        for i in range(k):
            assert np.array_equal(steered[i].hidden[target], base[i].hidden[target]), i
        assert not np.array_equal(steered[k].hidden[target], base[k].hidden[target])
        assert [e.id for e in steered] == _boundary_reference(ctx, model, vec, delim.encode(), len(steered))


def test_seeded_sampling_is_deterministic(model: Model) -> None:
    s = SamplingConfig(max_tokens=10, temperature=0.9, top_p=0.95)
    runs = []
    for _ in range(2):
        with model.context(RuntimeConfig(n_ctx=256, seed=7)) as ctx:
            runs.append([e.id for e in ctx.generate(_prompt(model), s)])
    assert runs[0] == runs[1]


def test_bad_input_errors(model: Model, tmp_path) -> None:
    with pytest.raises(LayerIndexError, match="out of range"):
        model.context(CFG, tap_layers=[model.n_layer])
    with model.context(RuntimeConfig(n_ctx=32, n_batch=32)) as ctx:
        assert ctx.n_ctx >= 32  # llama.cpp may round the context up
        with pytest.raises(ContextOverflowError, match="n-ctx"):
            ctx.eval([5] * (ctx.n_ctx + 1))
        assert ctx.n_past == 0
        with pytest.raises(ControlVectorError):
            ctx.set_control_vector({0: np.zeros(model.n_embd)})
        with pytest.raises(ControlVectorError):
            ctx.set_control_vector({1: np.zeros(model.n_embd + 1)})
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a model at all")
    with pytest.raises(NotAGGUFError):
        Model(bogus)


def test_close_order_and_reuse_after_close(tiny_gguf) -> None:
    m = Model(tiny_gguf)
    ctx = m.context(CFG, tap_layers=[0])
    m.close()  # closes the context first
    with pytest.raises(NativeError):
        ctx.eval([1, 2])
    ctx.close()  # idempotent


@pytest.mark.bigmodel
def test_default_srm_native_tap_equals_python_tap_on_all_layers() -> None:
    from rankguide_edge.engine import load_model
    from rankguide_edge.engine.models import DEFAULT_SRM

    with load_model(DEFAULT_SRM, progress=False) as m:
        assert (m.n_layer, m.n_embd) == (24, 896)
        runs = []
        for kind in ("native", "python"):
            with m.context(CFG, tap_layers=list(range(m.n_layer)), tap=kind) as ctx:
                runs.append(list(ctx.generate(_prompt(m), SamplingConfig(max_tokens=8))))
        for a, b in zip(*runs, strict=True):
            assert a.id == b.id
            for il in a.hidden:
                assert np.array_equal(a.hidden[il], b.hidden[il])


def test_stop_strings_cut_the_text(model: Model) -> None:
    with model.context(CFG) as ctx:
        full, _ = generate_text(ctx, _prompt(model), SamplingConfig(max_tokens=16))
    assert len(full) > 4
    stop = full[3:5]
    with model.context(CFG) as ctx:
        cut, events = generate_text(ctx, _prompt(model), SamplingConfig(max_tokens=16, stop=(stop,)))
    assert cut == full[: full.find(stop)]
    assert "".join(e.text for e in events).startswith(cut + stop)  # generation stopped once the stop appeared


def test_appending_external_text_equals_decoding_it(model: Model) -> None:
    """Text another model wrote, appended as tokens, leaves the same state as if the model had decoded it."""
    toks = _prompt(model)
    with model.context(CFG) as ctx:
        generated = [e.id for e in ctx.generate(toks, SamplingConfig(max_tokens=6)) if not e.eog]
        after_generate = ctx.logits().copy()
        ctx.reset()
        ctx.eval(toks)
        ctx.eval(generated)  # appended as one batch, like an LRM step
        assert ctx.n_past == len(toks) + len(generated)
        assert np.allclose(ctx.logits(), after_generate, atol=1e-3)
        assert int(np.argmax(ctx.logits())) == int(np.argmax(after_generate))


def test_missing_native_library_falls_back_to_python_with_a_warning(tiny_gguf, tmp_path) -> None:
    import subprocess
    import sys

    code = (
        "import warnings\n"
        "from rankguide_edge.engine.model import Model\n"
        f"m = Model({str(tiny_gguf)!r})\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    c = m.context(tap_layers=[0])\n"
        "print(c.tap_kind, any('Python' in str(x.message) for x in w))\n"
        "h = [e.hidden[0].shape for e in c.generate([1, 10, 11], None) if e.hidden][:1]\n"
        "print(h)\n"
    )
    env = {**__import__("os").environ, "RANKGUIDE_EDGE_TAP_LIB": str(tmp_path / "missing.so")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                         check=True).stdout.split("\n")
    assert out[0] == "python True"
    assert out[1] == "[(64,)]"


@pytest.mark.bigmodel
def test_second_architecture_gemma3_taps_and_steers() -> None:
    """Gemma-3-270m (another architecture, 253 MB): native tap equals the Python tap, and a control vector on
    one layer leaves earlier layers bit-identical."""
    from rankguide_edge.engine import load_model

    with load_model("gemma-3-270m", progress=False) as m:
        assert m.arch == "gemma3"
        toks = m.tokenize("The capital of France is", add_special=True)
        runs = []
        for kind in ("native", "python"):
            with m.context(CFG, tap_layers=list(range(m.n_layer)), tap=kind) as ctx:
                runs.append(list(ctx.generate(toks, SamplingConfig(max_tokens=6))))
        for a, b in zip(*runs, strict=True):
            assert a.id == b.id and all(np.array_equal(a.hidden[il], b.hidden[il]) for il in a.hidden)
        target = m.n_layer // 2
        with m.context(CFG, tap_layers=list(range(m.n_layer))) as ctx:
            base = ctx.eval(toks, logits="all")
            ctx.reset()
            ctx.set_control_vector({target: np.full(m.n_embd, 0.5, np.float32)})
            steered = ctx.eval(toks, logits="all")
        for il in range(m.n_layer):
            assert np.array_equal(base[il], steered[il]) == (il < target)


def test_teacher_forcing_reproduces_generation(model: Model) -> None:
    """Feeding a greedy continuation back as given text records the same entropies, top-k log-probabilities
    and hidden states as generating it (up to float noise of batched vs single-token matmuls)."""
    layers = [0, model.n_layer - 1]
    cfg = RuntimeConfig(n_ctx=256, n_batch=4, seed=0)  # several chunks: the carried-over row is exercised
    with model.context(cfg, tap_layers=layers) as ctx:
        gen = [e for e in ctx.generate(_prompt(model), SamplingConfig(max_tokens=10)) if not e.eog]
        ctx.reset()
        ctx.eval(_prompt(model), hidden=False)
        ent, top, hidden = ctx.teacher_force([e.id for e in gen])
    assert ent.shape == (len(gen),) and top.shape == (len(gen), CFG.top_logprobs)
    np.testing.assert_allclose(ent, [e.entropy for e in gen], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(top, np.stack([e.top_logprobs for e in gen]), rtol=1e-3, atol=1e-3)
    for il in layers:
        np.testing.assert_allclose(hidden[il], np.stack([e.hidden[il] for e in gen]), rtol=1e-2, atol=1e-2)


def test_a_small_context_feeds_long_inputs_in_batches_llama_cpp_accepts(tiny_gguf) -> None:
    """llama.cpp clamps n_batch to the asked n_ctx but rounds the context up (128 -> 256): feeding more than
    the clamped batch in one decode used to abort the process (GGML_ASSERT n_tokens_all <= n_batch)."""
    with Model(tiny_gguf) as m, m.context(RuntimeConfig(n_ctx=128, n_threads=1)) as ctx:
        assert ctx.n_batch <= 128 < ctx.n_ctx
        ctx.eval(list(range(10, 210)), hidden=False)
        assert ctx.n_past == 200 and ctx.logits().shape == (m.n_vocab,)


def test_scoring_a_greedy_continuation_agrees_with_every_token(model: Model) -> None:
    """A model scoring its own greedy output picks every token itself, and gives each the log-probability
    generation recorded (batched scoring vs one-token decoding: float noise only)."""
    cfg = RuntimeConfig(n_ctx=256, n_batch=4, seed=0)
    with model.context(cfg) as ctx:
        gen = [e for e in ctx.generate(_prompt(model), SamplingConfig(max_tokens=10)) if not e.eog]
        ctx.reset()
        ctx.eval(_prompt(model), hidden=False)
        logprob, best = ctx.score_tokens([e.id for e in gen])
    assert logprob.dtype == np.float32 and best.dtype == np.int32 and logprob.shape == best.shape == (len(gen),)
    assert best.tolist() == [e.id for e in gen]
    np.testing.assert_allclose(logprob, [e.logprob for e in gen], rtol=1e-3, atol=1e-3)
    assert (logprob <= 0).all()


def test_sync_keeps_the_common_prefix_and_gives_fresh_logits(model: Model) -> None:
    prompt = _prompt(model)
    other = prompt[:-3] + model.tokenize(" Answer quickly.")
    with model.context(CFG) as ctx, model.context(CFG) as fresh:
        assert ctx.sync(prompt) == len(prompt)
        assert ctx.sync(prompt) == 0  # already there, logits included
        fed = ctx.sync(other)
        assert fed == len(other) - (len(prompt) - 3) and ctx.tokens == other
        fresh.eval(other, hidden=False)
        np.testing.assert_allclose(ctx.logits(), fresh.logits(), rtol=1e-4, atol=1e-4)
        assert ctx.sync(other[:5]) == 1 and ctx.tokens == other[:5]  # a prefix: roll back, refeed the last
        with pytest.raises(ContextOverflowError):
            ctx.sync(list(range(3, 3 + ctx.n_ctx + 1)))


def _turns(model: Model, answer: str = "") -> list[int]:
    """A chat long enough for whole prefill blocks; with ``answer``, the next turn of the same conversation."""
    msgs = [("system", "You are a careful tutor. Explain each step of a calculation on its own line, "
                       "check every product and sum twice, and end with the final number alone."),
            ("user", "A farm has 14 rows of 23 apple trees and sells 3 crates of apples per tree. "
                     "How many crates does it sell? Think step by step.")]
    if answer:
        msgs += [("assistant", answer), ("user", "And if each crate holds 12 apples, how many apples is that?")]
    return chat_tokens(model, msgs)


def _kept_prefix_continues_as_a_cold_start(model: Model, n_batch: int) -> None:
    cfg = RuntimeConfig(n_ctx=1024, n_batch=n_batch, n_threads=2)
    with model.context(cfg, tap_layers=[1]) as ctx, model.context(cfg, tap_layers=[1]) as cold:
        block = ctx.prefill_block
        first = _turns(model)
        assert block == n_batch // 2 and len(first) >= 3 * block
        ctx.prefill(first)
        text, _ = generate_text(ctx, None, GREEDY)
        assert ctx.tokens[:len(first)] == first
        second = _turns(model, text)
        kept = ctx.keep_prefix(second)
        # whole aligned blocks only, none that held the joined tail or generated tokens
        assert 0 < kept <= len(first) and kept % block == 0 and ctx.n_past == kept
        ctx.prefill(second[kept:])
        cold.prefill(second)
        assert ctx.tokens == cold.tokens == second
        np.testing.assert_array_equal(ctx.logits(), cold.logits())
        assert generate_text(ctx, None, GREEDY)[0] == generate_text(cold, None, GREEDY)[0]


def test_a_kept_prefix_continues_exactly_as_a_cold_start(model: Model) -> None:
    """The next turn keeps whole prefilled blocks of the last one and feeds the rest as a cold start would:
    identical logits, bit for bit, and the same greedy continuation."""
    _kept_prefix_continues_as_a_cold_start(model, n_batch=32)


@pytest.mark.bigmodel
def test_default_srm_keeps_a_prefix_exactly() -> None:
    """The default SRM's quantised kernels round a token fed alone, in a small batch and in a large one
    differently (measured: logits differ by up to 0.4), so this is where keeping generated tokens would show."""
    from rankguide_edge.engine import load_model
    from rankguide_edge.engine.models import DEFAULT_SRM

    with load_model(DEFAULT_SRM, progress=False) as m:
        _kept_prefix_continues_as_a_cold_start(m, n_batch=32)


def test_a_kept_prefix_is_only_what_a_cold_start_would_compute_the_same(model: Model) -> None:
    cfg = RuntimeConfig(n_ctx=1024, n_batch=32, n_threads=2)
    first = _turns(model)
    with model.context(cfg) as ctx:
        ctx.eval(first, hidden=False)  # fed in one go, not in prefill blocks: nothing to keep
        assert ctx.keep_prefix(first) == 0 and ctx.n_past == 0
        ctx.prefill(first)
        assert ctx.keep_prefix(first) == ctx.n_past > 0  # the last cut is fed again, for fresh logits
        ctx.prefill(first[ctx.n_past:])
        ctx.rollback(5)  # a rollback forgets what it removed
        assert ctx.keep_prefix(first) == 0
        ctx.prefill(first)
        other = [*first[:10], *reversed(first[10:])]
        assert ctx.keep_prefix(other) == 0  # diverges inside the first block
        ctx.prefill(first)
        # a control vector changes every state computed after it: the blocks before it are not kept
        ctx.set_control_vector({1: np.full(model.n_embd, 0.5, np.float32)})
        assert ctx.keep_prefix(first) == 0
        ctx.prefill(first)
        assert ctx.keep_prefix(first) > 0  # the same vector still in force
        ctx.clear_control_vector()
        assert ctx.keep_prefix(first) == 0
        assert ctx.keep_prefix([]) == 0 and ctx.n_past == 0


def test_keeping_every_common_token_is_the_fast_inexact_choice(model: Model) -> None:
    """exact=False keeps generated tokens too (llama-server's prompt cache), never a position computed under
    another control vector, and always leaves one token to feed."""
    cfg = RuntimeConfig(n_ctx=1024, n_batch=32, n_threads=2)
    first = _turns(model)
    with model.context(cfg) as ctx:
        ctx.prefill(first)
        text, events = generate_text(ctx, None, GREEDY)
        held = list(ctx.tokens)
        assert len(held) > len(first)
        assert ctx.keep_prefix([*held, 7, 8], exact=False) == len(held)
        assert ctx.keep_prefix(held, exact=False) == len(held) - 1 and ctx.tokens == held[:-1]
        ctx.prefill(held[-1:])
        assert ctx.keep_prefix(held) <= len(first)  # exact: the generated tokens are read again
        ctx.prefill(held[ctx.n_past:])
        ctx.set_control_vector({1: np.full(model.n_embd, 0.5, np.float32)})
        assert ctx.keep_prefix(held, exact=False) == 0
