"""The local LRM backend: a GGUF model run in-process, with one context that mirrors the conversation.

Every call works out the token sequence for ``chat_prompt(messages) + prefix``, keeps the longest token
prefix the context already holds, rolls the KV cache back to it and prefills only the rest in one ``eval``
(lazy catch-up: no full re-prefill per step). The sequence keeps the model's own tokens for text it wrote
(they spell the start of the new text) and tokenizes only what follows, because tokenizing the whole text
afresh can split a boundary differently from how the tokens were generated and would make the model
continue from tokens it never produced. When the held tokens do not spell the text (another conversation,
edited text), the text is tokenized afresh and the token-level common prefix still limits the prefill.
"""

from __future__ import annotations

import codecs
import os
import threading
import time
from collections.abc import Mapping, Sequence

import numpy as np

from ..config import RuntimeConfig, from_mapping
from ..engine.context import Context
from ..engine.model import Model
from ..engine.prompts import encode_prompt
from ..errors import ContextOverflowError
from .backends import RATE_PROMPT, StepReply, StepRequest, find_stop, rating_text
from .disagreement import StepCheck, check_from_scores


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    x = np.asarray(a[:n], dtype=np.int64)
    y = np.asarray(b[:n], dtype=np.int64)
    diff = np.flatnonzero(x != y)
    return int(diff[0]) if len(diff) else n


def _sample(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """Greedy (ties to the lowest id, like the runtime) for temperature 0, else a softmax draw."""
    if temperature <= 0.0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    z -= z.max()
    p = np.exp(z)
    p /= p.sum()
    return int(rng.choice(len(p), p=p))


class LocalBackend:
    """An LRM loaded in this process.

    ``model``: a manifest name, a GGUF path or a loaded :class:`Model` (borrowed: not closed by
    :meth:`close`). ``config``: the context's RuntimeConfig or a mapping of its keys (``n_ctx`` bounds
    prompt + step). No hidden-state tap is attached. Calls are serialised by a lock.

    ``retokenize`` False (default): text the backend itself generated keeps the model's own tokens, so a run
    of steps written by this backend equals one long generation. True: every call tokenizes the whole text
    afresh, so a reply never depends on earlier calls (it equals a fresh backend's, or a server's).
    """

    def __init__(self, model: str | os.PathLike[str] | Model,
                 config: RuntimeConfig | Mapping[str, object] | None = None, *,
                 pull: bool = True, progress: bool = True, name: str | None = None,
                 retokenize: bool = False) -> None:
        if isinstance(config, Mapping):
            config = from_mapping(RuntimeConfig, config)
        self.config = config or RuntimeConfig()
        if isinstance(model, Model):
            self.model, self._owns_model = model, False
        else:
            from ..engine import load_model

            self.model, self._owns_model = load_model(model, self.config, pull=pull, progress=progress), True
        self.name = name or f"local:{os.path.basename(self.model.path)}"
        self.retokenize = retokenize
        try:
            self._ctx: Context | None = self.model.context(self.config)
        except BaseException:
            if self._owns_model:
                self.model.close()
            raise
        self._lock = threading.Lock()
        self._digit_ids: list[tuple[int, int]] | None = None

    @property
    def context(self) -> Context:
        """The context mirroring the conversation (its ``tokens`` are what the KV cache holds)."""
        if self._ctx is None:
            from ..errors import NativeError

            raise NativeError("the local backend is closed")
        return self._ctx

    # -- cache ----------------------------------------------------------------------------------------------

    def clear_cache(self) -> None:
        """Empty the context: the next call prefills its whole prompt (a benchmark's cold start)."""
        with self._lock:
            self.context.reset()

    def _plan(self, text: str) -> list[int]:
        """The token sequence the context should hold for ``text`` (a chat prompt plus assistant text).

        Canonical: the text tokenized afresh. Unless ``retokenize`` is set, the tokens the context already
        holds are kept as long as their bytes spell the start of ``text`` -- the model's own tokenization of
        the steps it wrote, which may differ from the canonical one -- and only the remaining text is
        tokenized; this is chosen when it keeps at least as many cached tokens as the canonical sequence.
        """
        model, held = self.model, self.context.tokens
        canonical = encode_prompt(model, text)
        if self.retokenize or not held:
            return canonical
        k = common_prefix(held, canonical)
        data = text.encode("utf-8")
        start = 0
        if canonical and canonical[0] == model.bos and not data.startswith(model.piece(model.bos)):
            if held[0] != model.bos:  # BOS comes from add_special, not from the text
                return canonical
            start = 1
        j, pos = start, 0
        while j < len(held):
            piece = model.piece(held[j])
            if not piece or data[pos:pos + len(piece)] != piece:
                break
            pos, j = pos + len(piece), j + 1
        while True:  # the rest must start on a UTF-8 character boundary
            try:
                rest = data[pos:].decode("utf-8")
                break
            except UnicodeDecodeError:
                j -= 1
                pos -= len(model.piece(held[j]))
        if j < k:
            return canonical
        return held[:j] + (model.tokenize(rest, add_special=False) if rest else [])

    def _catch_up(self, tokens: list[int]) -> int:
        """Make the context hold exactly ``tokens`` with fresh logits; return how many tokens were fed."""
        ctx = self.context
        if len(tokens) > ctx.n_ctx:
            raise ContextOverflowError(f"the prompt of {len(tokens)} tokens does not fit the LRM context of "
                                       f"{ctx.n_ctx}: raise n_ctx or shorten the problem")
        return ctx.sync(tokens)

    # -- LRMBackend -----------------------------------------------------------------------------------------

    def write_step(self, req: StepRequest) -> StepReply:
        """Generate the step after ``req.prefix`` until a stop string (kept in the text), EOG or max_tokens;
        ``req.on_text`` gets the text as it is generated (cut at the stop).

        The step is capped by the context room left after the prompt; a prompt that leaves no room raises
        ContextOverflowError. An empty step (the model ended at once) is ``ok=False``, "empty reply". The
        generated tokens stay in the context for the next call to extend.
        """
        t0 = time.perf_counter()
        with self._lock:
            ctx = self.context
            tokens = self._plan(self.model.chat_prompt(req.messages) + req.prefix)
            if len(tokens) >= ctx.n_ctx:
                raise ContextOverflowError(f"the prompt of {len(tokens)} tokens leaves no room in the LRM context "
                                           f"of {ctx.n_ctx}: raise n_ctx or shorten the problem")
            prefill = self._catch_up(tokens)
            budget = min(req.max_tokens, ctx.n_ctx - ctx.n_past)
            rng = np.random.default_rng(req.seed)
            decoder = codecs.getincrementaldecoder("utf-8")("replace")
            longest = max((len(s) for s in req.stop), default=0)
            text, n_tokens, finished = "", 0, False
            shown = 0  # characters of ``text`` given to ``req.on_text``
            for _ in range(budget):
                tok = _sample(ctx.logits(), req.temperature, rng)
                if self.model.is_eog(tok):
                    finished = True
                    break
                ctx.eval([tok], hidden=False)
                n_tokens += 1
                before = len(text)
                text += decoder.decode(self.model.piece(tok))
                hit = find_stop(text, req.stop, max(0, before - longest + 1)) if req.stop else None
                if hit is not None:
                    text = text[: hit[0]]
                if req.on_text is not None and len(text) > shown:
                    req.on_text(text[shown:])
                    shown = len(text)
                if hit is not None:
                    break
        reply = StepReply(text=text, n_tokens=n_tokens, finished=finished, prefill_tokens=prefill,
                          seconds=time.perf_counter() - t0)
        if not text:  # like a remote server's empty answer: nothing to use (``finished`` still tells why)
            reply.ok, reply.error = False, "empty reply"
        return reply

    def check_step(self, messages: Sequence[tuple[str, str]], prefix: str, step: str) -> StepCheck | None:
        """The LRM's teacher-forced view of ``step`` written after ``prefix`` (one prefill, nothing generated):
        see :mod:`.disagreement`. None when the step is empty or does not fit the context."""
        t0 = time.perf_counter()
        with self._lock:
            toks = self.model.tokenize(step, add_special=False)
            if not toks:
                return None
            head = self._plan(self.model.chat_prompt(list(messages)) + prefix)
            if len(head) + len(toks) > self.context.n_ctx:
                return None
            fed = self._catch_up(head)
            logprob, best = self.context.score_tokens(toks)
            pieces = [self.model.piece(t).decode("utf-8", "replace") for t in toks]
        return check_from_scores(logprob, best, toks, pieces, fed + len(toks), time.perf_counter() - t0)

    def _digits(self) -> list[tuple[int, int]]:
        """``(digit, token id)`` for every digit the vocabulary writes as one token."""
        if self._digit_ids is None:
            pairs = []
            for d in range(10):
                ids = self.model.tokenize(str(d), add_special=False)
                if len(ids) == 1:
                    pairs.append((d, ids[0]))
            self._digit_ids = pairs
        return self._digit_ids

    def rate(self, messages: Sequence[tuple[str, str]], prefix: str, step: str, prompt: str = RATE_PROMPT
             ) -> int | None:
        """The digit token 0-9 with the highest logit after the judge prompt (one forward pass); None when
        the vocabulary has no single-token digits or the prompt does not fit."""
        with self._lock:
            digits = self._digits()
            if not digits:
                return None
            text = rating_text(self.model.chat_prompt(list(messages)), prefix, step, prompt)
            tokens = self._plan(text)
            try:
                self._catch_up(tokens)
            except ContextOverflowError:
                return None
            logits = self.context.logits()
            best = max(digits, key=lambda pair: (float(logits[pair[1]]), -pair[0]))
            return best[0]

    def close(self) -> None:
        """Free the context, and the model when this backend loaded it."""
        if self._ctx is not None:
            self._ctx.close()
            self._ctx = None
        if self._owns_model:
            self.model.close()

    def __enter__(self) -> LocalBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
