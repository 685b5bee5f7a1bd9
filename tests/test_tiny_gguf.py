"""The tiny random-weight GGUF generator: file format, determinism, and real loading by llama.cpp."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest

from rankguide_edge.errors import ConfigError
from rankguide_edge.testing import (
    BOS_ID,
    EOS_ID,
    IM_END_ID,
    IM_START_ID,
    TINY_CHAT_TEMPLATE,
    UNK_ID,
    TinyGGUFSpec,
    tiny_model_path,
    tiny_vocab,
    write_tiny_gguf,
)
from rankguide_edge.testing.tiny_gguf import END_OF_TEXT_ID, END_THINK_ID, FIRST_BYTE_ID, THINK_ID


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture(scope="module")
def model_path(model_dir: Path) -> Path:
    return tiny_model_path(model_dir)


def _load(path: Path) -> llama_cpp.Llama:
    return llama_cpp.Llama(model_path=str(path), n_ctx=256, verbose=False)


@pytest.fixture()
def llm(model_path: Path) -> Iterator[llama_cpp.Llama]:
    model = _load(model_path)
    yield model
    model.close()


def _greedy(model: llama_cpp.Llama, prompt: str, n: int = 16) -> list[int]:
    out: list[int] = []
    for tok in model.generate(model.tokenize(prompt.encode()), temp=0.0):
        out.append(int(tok))
        if len(out) == n:
            break
    return out


def _field(reader: gguf.GGUFReader, key: str) -> object:
    return reader.get_field(key).contents()


# ---------------------------------------------------------------------------------------------- the file


def test_write_is_atomic_and_gguf(tmp_path: Path) -> None:
    out = write_tiny_gguf(tmp_path / "sub" / "m.gguf")
    assert out == (tmp_path / "sub" / "m.gguf").resolve()
    assert out.read_bytes()[:4] == b"GGUF"
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.gguf"]  # no temporary left behind


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path: Path) -> None:
    a = write_tiny_gguf(tmp_path / "a.gguf", seed=7).read_bytes()
    b = write_tiny_gguf(tmp_path / "b.gguf", seed=7).read_bytes()
    c = write_tiny_gguf(tmp_path / "c.gguf", seed=8).read_bytes()
    assert a == b
    assert len(a) == len(c) and a != c


def test_metadata_and_tensors(model_path: Path) -> None:
    reader = gguf.GGUFReader(model_path)
    vocab = tiny_vocab()
    assert _field(reader, "general.architecture") == "llama"
    assert _field(reader, "llama.block_count") == 3
    assert _field(reader, "llama.embedding_length") == 64
    assert _field(reader, "llama.feed_forward_length") == 128
    assert _field(reader, "llama.attention.head_count") == 4
    assert _field(reader, "llama.attention.head_count_kv") == 2
    assert _field(reader, "llama.context_length") == 512
    assert _field(reader, "llama.rope.dimension_count") == 16
    assert _field(reader, "tokenizer.ggml.model") == "llama"
    assert _field(reader, "tokenizer.ggml.bos_token_id") == BOS_ID
    assert _field(reader, "tokenizer.ggml.eos_token_id") == EOS_ID == IM_END_ID
    assert _field(reader, "tokenizer.ggml.unknown_token_id") == UNK_ID
    assert _field(reader, "tokenizer.ggml.add_bos_token") is True
    assert _field(reader, "tokenizer.chat_template") == TINY_CHAT_TEMPLATE
    tokens = _field(reader, "tokenizer.ggml.tokens")
    assert tokens == list(vocab.tokens)
    assert tokens[IM_START_ID] == "<|im_start|>" and tokens[IM_END_ID] == "<|im_end|>"
    assert tokens[FIRST_BYTE_ID + 0x0A] == "<0x0A>"
    assert len(set(tokens)) == len(tokens)

    by_name = {t.name: t for t in reader.tensors}
    assert len(by_name) == 3 + 9 * 3
    for t in reader.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
    # ggml ne[] order: (n_in, n_out)
    assert list(by_name["token_embd.weight"].shape) == [64, vocab.n_vocab]
    assert list(by_name["output.weight"].shape) == [64, vocab.n_vocab]
    assert list(by_name["blk.0.attn_q.weight"].shape) == [64, 64]
    assert list(by_name["blk.2.attn_k.weight"].shape) == [64, 32]
    assert list(by_name["blk.1.ffn_down.weight"].shape) == [128, 64]
    np.testing.assert_array_equal(np.asarray(by_name["blk.1.ffn_norm.weight"].data), np.ones(64, np.float32))
    q = np.asarray(by_name["blk.0.attn_q.weight"].data)
    assert np.all(np.isfinite(q)) and 0.08 < float(q.std()) < 0.17
    head = np.asarray(by_name["output.weight"].data)
    assert not head[EOS_ID].any() and not head[FIRST_BYTE_ID + 0xC3].any()
    assert head[FIRST_BYTE_ID + 0x0A].any() and head[-1].any()


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"n_embd": 60, "n_head": 8}, "multiple of n_head"),
        ({"n_head": 4, "n_head_kv": 3}, "multiple of n_head_kv"),
        ({"n_embd": 24, "n_head": 8}, "even"),
        ({"arch": "gpt2"}, "llama"),
        ({"n_layer": 0}, "minimum"),
    ],
)
def test_inconsistent_specs_raise_config_error(tmp_path: Path, kwargs: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        write_tiny_gguf(tmp_path / "bad.gguf", **kwargs)
    assert not list(tmp_path.iterdir())


def test_tiny_model_path_writes_once_and_keys_on_params(tmp_path: Path) -> None:
    first = tiny_model_path(tmp_path, seed=3)
    stamp = first.stat().st_mtime_ns
    again = tiny_model_path(tmp_path, seed=3)
    assert again == first and again.stat().st_mtime_ns == stamp
    other = tiny_model_path(tmp_path, seed=4)
    assert other != first
    assert TinyGGUFSpec(seed=3).cache_key() != TinyGGUFSpec(seed=4).cache_key()
    first.write_bytes(b"junk")  # a corrupted cache entry is rewritten
    assert tiny_model_path(tmp_path, seed=3).read_bytes()[:4] == b"GGUF"
    with pytest.raises(ConfigError, match="unknown tiny model parameter"):
        tiny_model_path(tmp_path, n_layers=2)


# ----------------------------------------------------------------------------------------- llama.cpp


def test_loads_with_expected_shape(llm: llama_cpp.Llama) -> None:
    assert llm.n_vocab() == tiny_vocab().n_vocab
    assert llm.n_embd() == 64
    assert llama_cpp.llama_model_n_layer(llm.model) == 3
    assert llm.n_ctx() == 256
    assert llm.token_bos() == BOS_ID
    assert llm.token_eos() == EOS_ID
    vocab = llm._model.vocab
    assert llama_cpp.llama_vocab_is_eog(vocab, IM_END_ID)
    assert llama_cpp.llama_vocab_is_eog(vocab, END_OF_TEXT_ID)
    assert not llama_cpp.llama_vocab_is_eog(vocab, IM_START_ID)


@pytest.mark.parametrize(
    "text",
    [
        "Hello world",
        "The answer is 42.",
        "0123456789 + 17 = 18",
        "first line\nsecond line",
        "para one\n\npara two\n",
        "\n\n",
        "tabs\tand  double  spaces",
        "caf\u00e9 \u2211 \U0001f600",
        "<think>so x = 2</think>",
    ],
)
def test_tokenize_detokenize_round_trip(llm: llama_cpp.Llama, text: str) -> None:
    with_bos = llm.tokenize(text.encode(), add_bos=True)
    assert with_bos[0] == BOS_ID
    assert llm.detokenize(with_bos).decode() == text
    without = llm.tokenize(text.encode(), add_bos=False)
    assert without == with_bos[1:]
    assert llm.detokenize(without).decode() == text
    assert UNK_ID not in without


def test_tokenizer_uses_word_pieces_bytes_and_specials(llm: llama_cpp.Llama) -> None:
    pieces = llm.tokenize(b"The answer is", add_bos=False)
    assert [llm.detokenize([t]).decode() for t in pieces] == ["The", " answer", " is"]
    assert llm.tokenize(b"\n", add_bos=False) == [FIRST_BYTE_ID + 0x0A]
    assert llm.tokenize("\u00e9".encode(), add_bos=False) == [FIRST_BYTE_ID + 0xC3, FIRST_BYTE_ID + 0xA9]
    chat = llm.tokenize(b"<|im_start|>user\nhi<|im_end|>", add_bos=False, special=True)
    assert chat[0] == IM_START_ID and chat[-1] == IM_END_ID
    plain = llm.tokenize(b"<|im_start|>", add_bos=False, special=False)
    assert IM_START_ID not in plain
    assert llm.tokenize(b"<think></think>", add_bos=False) == [THINK_ID, END_THINK_ID]


def test_greedy_generation_is_deterministic_and_varied(model_path: Path) -> None:
    runs = []
    for _ in range(2):
        model = _load(model_path)
        try:
            runs.append(_greedy(model, "The answer is"))
        finally:
            model.close()
    assert runs[0] == runs[1]
    assert len(runs[0]) == 16
    assert len(set(runs[0])) > 4
    allowed = tiny_vocab().generation_mask()
    assert all(allowed[t] for t in runs[0])


def test_hidden_output_depends_on_context(llm: llama_cpp.Llama) -> None:
    # same last token, different history -> different next-token logits (attention mixes context)
    logits = []
    for prompt in (b"We think the", b"Hmm okay so the"):
        llm.reset()
        llm.eval(llm.tokenize(prompt))
        ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        logits.append(np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).astype(np.float32))
    assert np.all(np.isfinite(logits[0])) and float(logits[0].std()) > 0.1
    assert not np.allclose(logits[0], logits[1], atol=1e-3)


def test_chat_template_applies(llm: llama_cpp.Llama) -> None:
    tmpl = llama_cpp.llama_model_chat_template(llm.model, None)
    assert tmpl is not None and tmpl.decode() == TINY_CHAT_TEMPLATE
    msgs = (llama_cpp.llama_chat_message * 2)(
        llama_cpp.llama_chat_message(b"system", b"Be brief."),
        llama_cpp.llama_chat_message(b"user", b"What is 2+2?"),
    )
    buf = ctypes.create_string_buffer(1024)
    n = llama_cpp.llama_chat_apply_template(tmpl, msgs, 2, True, buf, len(buf))
    assert 0 < n <= len(buf)
    expected = (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert buf.raw[:n].decode() == expected

    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    fmt = Jinja2ChatFormatter(template=llm.metadata["tokenizer.chat_template"], eos_token="<|im_end|>",
                              bos_token="<s>")
    result = fmt(messages=[{"role": "system", "content": "Be brief."},
                           {"role": "user", "content": "What is 2+2?"}])
    assert result.prompt == expected
    ids = llm.tokenize(result.prompt.encode(), add_bos=True, special=True)
    assert ids[:2] == [BOS_ID, IM_START_ID] and ids.count(IM_START_ID) == 3 and ids.count(IM_END_ID) == 2


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_other_architectures_load_and_generate(model_dir: Path, arch: str) -> None:
    path = tiny_model_path(model_dir, arch=arch, n_layer=2)
    reader = gguf.GGUFReader(path)
    assert _field(reader, "general.architecture") == arch
    assert _field(reader, f"{arch}.block_count") == 2
    names = {t.name for t in reader.tensors}
    assert ("blk.0.attn_q.bias" in names) == (arch == "qwen2")
    assert ("blk.1.attn_k_norm.weight" in names) == (arch == "qwen3")
    model = _load(path)
    try:
        assert llama_cpp.llama_model_n_layer(model.model) == 2
        text = "Let x = 3.\n"
        assert model.detokenize(model.tokenize(text.encode())).decode() == text
        out = _greedy(model, "Let x")
        assert len(out) == 16 and len(set(out)) > 4
    finally:
        model.close()


def test_file_is_not_world_unreadable(model_path: Path) -> None:
    assert os.stat(model_path).st_mode & 0o444 == 0o444
