"""The prompt pipeline (engine/prompts.py): the chat template or the ChatML fallback (warned once per model),
and one BOS for the SRM and the LRM even when the template writes its own."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from rankguide_edge.collab.backends import StepRequest
from rankguide_edge.collab.backends_local import LocalBackend
from rankguide_edge.collab.reasoner import Reasoner, ReasonerConfig
from rankguide_edge.config import RuntimeConfig
from rankguide_edge.engine.model import Model
from rankguide_edge.engine.prompts import chat_text, chat_tokens, chatml, encode_prompt
from rankguide_edge.testing.tiny_gguf import tiny_model_path

RT = RuntimeConfig(n_ctx=256, n_threads=1)
MESSAGES = [("user", "hi"), ("assistant", "yo"), ("user", "ok")]


def _model(tmp_path_factory: pytest.TempPathFactory, template: str) -> Path:
    return tiny_model_path(tmp_path_factory.mktemp("tpl"), chat_template=template)


def _fallback_warnings(model: Model, calls: int = 3) -> tuple[list[str], str]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        texts = {chat_text(model, MESSAGES) for _ in range(calls)}
    assert len(texts) == 1
    return [str(w.message) for w in seen], texts.pop()


@pytest.mark.parametrize("template,why", [("{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}",
                                           "does not know"), ("", "no chat template")])
def test_a_template_llama_cpp_does_not_know_falls_back_to_chatml_warning_once_per_model(
        tmp_path_factory: pytest.TempPathFactory, template: str, why: str) -> None:
    path = _model(tmp_path_factory, template)
    for _ in range(2):  # each loaded model warns once
        with Model(path) as model:
            seen, text = _fallback_warnings(model)
            assert text == ("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"
                            "<|im_start|>user\nok<|im_end|>\n<|im_start|>assistant\n") == chatml(MESSAGES)
            assert len(seen) == 1 and why in seen[0] and "ChatML" in seen[0]


def test_a_known_template_is_applied_without_warning(tiny: Model) -> None:
    seen, text = _fallback_warnings(tiny)
    assert seen == [] and text.endswith("<|im_start|>assistant\n")


def test_a_template_that_writes_bos_gets_one_bos_on_the_srm_and_the_lrm(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    with Model(_model(tmp_path_factory, "gigachat")) as model:  # llama.cpp's gigachat template starts with <s>
        text = chat_text(model, MESSAGES)
        assert text.startswith("<s>")
        raw = model.tokenize(text, add_special=True)
        assert raw[:2] == [model.bos, model.bos]  # what tokenising the prompt directly gave before
        tokens = chat_tokens(model, MESSAGES)
        assert tokens == raw[1:] == encode_prompt(model, text)
        # the SRM: policy srm prefills exactly the pipeline's tokens
        cfg = ReasonerConfig(policy="srm", lrm_first=0, max_tokens=8)
        with Reasoner(model, None, cfg, runtime=RT) as r:
            res = r.solve(MESSAGES)
            assert r.ctx.tokens[:len(tokens)] == tokens
            assert res.usage["srm_prefill_tokens"] == len(tokens)
        # the LRM: a local backend's context starts with the same tokens
        with LocalBackend(model, RT) as lrm:
            lrm.write_step(StepRequest(messages=MESSAGES, prefix="", max_tokens=4))
            assert lrm.context.tokens[:len(tokens)] == tokens


def test_plain_text_gets_the_bos_the_model_asks_for(tiny: Model) -> None:
    assert tiny.add_bos and encode_prompt(tiny, "hi") == [tiny.bos, *tiny.tokenize("hi")]
    assert encode_prompt(tiny, "<s>hi") == [tiny.bos, *tiny.tokenize("hi")]
