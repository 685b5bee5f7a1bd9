"""Lossless greedy speculative decoding: the SRM drafts, the LRM verifies, the output is the LRM's own.

The baseline the routing methods are measured against. Per round, with ``pending`` the last committed token
(the LRM's own, not yet fed to it):

1. the SRM feeds what it is missing of the committed sequence and drafts ``k`` tokens greedily
   (``d1..dk``; it stops early at an end-of-generation token);
2. the LRM evaluates ``[pending, d1..dk]`` in ONE batch with logits on every row; row ``i`` holds the
   LRM's distribution after ``d_i`` (row 0: after ``pending``);
3. the longest prefix ``d1..da`` where each draft is the argmax of the row before it is accepted, and the
   LRM's own argmax at row ``a`` (its correction, or a bonus token when all ``k`` were accepted) becomes the
   new ``pending``;
4. both KV caches are rolled back past the rejected drafts (:meth:`Context.rollback`).

Every committed token is the LRM's greedy choice given the committed tokens before it, so the output equals
the LRM's greedy generation token for token (up to floating-point differences between batched and
one-token evaluation in llama.cpp, which do not occur in the tests). Both models must share a vocabulary:
:func:`check_shared_vocab` raises :class:`InvalidInputError` otherwise.

The prompt is built like :class:`~rankguide_edge.collab.backends_local.LocalBackend` builds it (the LRM's
chat template, BOS never doubled), so ``specdec`` answers the same prompt as the ``lrm`` bench method.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..config import RuntimeConfig, SamplingConfig, bounded, same_as, validate
from ..engine.context import Context
from ..engine.model import Model
from ..engine.prompts import chat_tokens
from ..errors import ConfigError, ContextOverflowError, InvalidInputError
from ..signals.step import SignalConfig
from .backends_local import common_prefix
from .reasoner import SolveResult, StepRecord

#: a text whose tokenization both models must agree on (letters, digits, spaces, newlines, punctuation)
_PROBE_TEXT = "Step 1: 12 + 30 = 42.\n\nSo the answer is \\boxed{42}. Wait, let me check: 6 * 7 = 42."


@dataclass(frozen=True)
class SpecDecConfig:
    """Knobs of :class:`SpecDecoder`. ``k`` drafts per verify batch (the batch holds ``k + 1`` tokens)."""

    k: int = bounded(4, lo=1, hi=64, help="SRM draft tokens per LRM verify batch")
    max_tokens: int = same_as(SamplingConfig, "max_tokens", default=768, help="tokens generated at most (the "
                              "LRM's own budget)")
    delimiter: str = same_as(SignalConfig, "delimiter", help="splits the answer into steps in the result "
                             "(reporting only)")

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class SpecDecOutput:
    """The committed tokens of one speculative run and what producing them cost.

    ``tokens``: int ids ``(n,)`` (no end-of-generation token). ``drafted[i]`` is True when ``tokens[i]`` was an
    accepted SRM draft, False when it is the LRM's own token. ``rejected_at[i]``: SRM drafts thrown away in the
    round that committed ``tokens[i]`` as the LRM's correction (0 elsewhere).
    """

    tokens: list[int]
    drafted: list[bool]
    rejected_at: list[int]
    finished: bool
    usage: dict[str, int] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)


def check_shared_vocab(srm: Model, lrm: Model) -> None:
    """Raise InvalidInputError unless both models have the same vocabulary (size, special ids, token bytes of
    a spread of 512 ids, and the tokenization of a probe text)."""
    if srm.n_vocab != lrm.n_vocab:
        raise InvalidInputError(f"specdec needs one vocabulary: the SRM has {srm.n_vocab} tokens, the LRM "
                                f"{lrm.n_vocab}; pick an SRM/LRM pair of the same family")
    if (srm.bos, srm.eos) != (lrm.bos, lrm.eos):
        raise InvalidInputError("specdec needs one vocabulary: the SRM and LRM disagree on BOS/EOS ids; pick an "
                                "SRM/LRM pair of the same family")
    ids = np.unique(np.linspace(0, srm.n_vocab - 1, num=min(512, srm.n_vocab)).astype(np.int64))
    for i in ids:
        if srm.piece(int(i)) != lrm.piece(int(i)):
            raise InvalidInputError(f"specdec needs one vocabulary: token {int(i)} differs between the SRM and "
                                    "the LRM; pick an SRM/LRM pair of the same family")
    if srm.tokenize(_PROBE_TEXT) != lrm.tokenize(_PROBE_TEXT):
        raise InvalidInputError("specdec needs one vocabulary: the SRM and LRM tokenize text differently; pick "
                                "an SRM/LRM pair of the same family")


class SpecDecoder:
    """Greedy speculative decoding with ``srm`` drafting for ``lrm``; owns one untapped context per model.

    ``runtime`` configures both contexts (``n_batch`` must hold a verify batch of ``k + 1`` tokens). Not
    thread-safe: one solve at a time. The models are borrowed (not closed by :meth:`close`).
    """

    def __init__(self, srm: Model, lrm: Model, config: SpecDecConfig | None = None, *,
                 runtime: RuntimeConfig | None = None) -> None:
        self.srm, self.lrm = srm, lrm
        self.config = config or SpecDecConfig()
        self.runtime = runtime or RuntimeConfig()
        if self.config.k + 1 > self.runtime.n_batch:
            raise ConfigError(f"specdec k={self.config.k} needs n_batch >= {self.config.k + 1} (one verify "
                              f"batch), got {self.runtime.n_batch}: lower k or raise n_batch")
        check_shared_vocab(srm, lrm)
        self._srm_ctx: Context | None = srm.context(self.runtime)
        try:
            self._lrm_ctx: Context | None = lrm.context(self.runtime)
        except BaseException:
            self._srm_ctx.close()
            raise

    def close(self) -> None:
        for ctx in (self._srm_ctx, self._lrm_ctx):
            if ctx is not None:
                ctx.close()
        self._srm_ctx = self._lrm_ctx = None

    def __enter__(self) -> SpecDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def srm_context(self) -> Context:
        """The SRM's (draft) context, e.g. to steer the drafts with a control vector."""
        return self._contexts()[0]

    @property
    def lrm_context(self) -> Context:
        """The LRM's (target) context."""
        return self._contexts()[1]

    def _contexts(self) -> tuple[Context, Context]:
        if self._srm_ctx is None or self._lrm_ctx is None:
            from ..errors import NativeError

            raise NativeError("the speculative decoder is closed")
        return self._srm_ctx, self._lrm_ctx

    # -- the algorithm --------------------------------------------------------------------------------------

    def prompt_tokens(self, messages: str | Sequence[tuple[str, str]]) -> list[int]:
        """The LRM's chat prompt of ``messages`` as token ids (what the ``lrm`` method's backend feeds)."""
        msgs = [("user", messages)] if isinstance(messages, str) else list(messages)
        if not msgs or not msgs[-1][1].strip():
            raise InvalidInputError("the question is empty: give the problem to solve")
        return chat_tokens(self.lrm, msgs)

    def generate(self, prompt: Sequence[int], max_tokens: int | None = None) -> SpecDecOutput:
        """Greedy-decode up to ``max_tokens`` tokens after ``prompt`` (token ids) speculatively.

        Usage keys: ``srm_tokens`` (drafted), ``srm_discarded_tokens`` (drafts rejected), ``srm_prefill_tokens``
        (SRM tokens fed beyond one per draft: the prompt and catch-up), ``lrm_tokens`` (the LRM's own committed
        tokens), ``lrm_calls`` (prefill + verify batches), ``lrm_prefill_tokens`` (prompt + all verify rows but
        the first of each batch), ``lrm_verify_batches``, ``lrm_verify_tokens`` (rows in verify batches),
        ``lrm_discarded_tokens`` (verify rows of rejected drafts), ``specdec_accepted`` (drafts output; an accepted
        end-of-generation draft ends the run and is not counted), ``specdec_k``.
        """
        srm_ctx, lrm_ctx = self._contexts()
        k = self.config.k
        limit = self.config.max_tokens if max_tokens is None else max_tokens
        prompt = [int(t) for t in prompt]
        n_ctx = min(srm_ctx.n_ctx, lrm_ctx.n_ctx)
        if not prompt or len(prompt) + 1 > n_ctx:
            raise ContextOverflowError(f"the prompt takes {len(prompt)} tokens but the context holds {n_ctx}: "
                                       "shorten it or raise --n-ctx")
        usage = {"srm_tokens": 0, "srm_discarded_tokens": 0, "srm_prefill_tokens": 0, "lrm_tokens": 0,
                 "lrm_calls": 0, "lrm_failures": 0, "lrm_prefill_tokens": 0, "lrm_verify_batches": 0,
                 "lrm_verify_tokens": 0, "lrm_discarded_tokens": 0, "specdec_accepted": 0, "specdec_k": k}
        timing = {"srm": 0.0, "lrm": 0.0, "signals": 0.0}
        srm_ctx.reset()
        lrm_ctx.reset()
        t0 = time.perf_counter()
        lrm_ctx.eval(prompt, hidden=False)
        pending = int(np.argmax(lrm_ctx.logits()))
        timing["lrm"] += time.perf_counter() - t0
        usage["lrm_calls"] += 1
        usage["lrm_prefill_tokens"] += len(prompt)
        out: list[int] = []
        drafted: list[bool] = []
        rejected_at: list[int] = []
        srm_fed = 0
        carry = 0  # drafts rejected in the round whose correction is ``pending``
        finished = False
        while True:
            if self.lrm.is_eog(pending):
                finished = True
                if carry and rejected_at:  # the last round's rejected drafts still count against a token
                    rejected_at[-1] += carry
                break
            out.append(pending)
            drafted.append(False)
            rejected_at.append(carry)
            usage["lrm_tokens"] += 1
            n_held = len(prompt) + len(out) - 1  # the LRM holds everything but ``pending``
            room = n_ctx - n_held - 1  # drafts that fit behind ``pending`` in the verify batch
            if len(out) >= limit or room < 0:
                break
            n_draft = max(0, min(k, limit - len(out) - 1, room))
            committed = prompt + out
            # 1. draft with the SRM
            drafts: list[int] = []
            if n_draft:
                t1 = time.perf_counter()
                keep = min(common_prefix(srm_ctx.tokens, committed), len(committed) - 1)
                srm_ctx.rollback(keep)
                feed = committed[keep:]
                for _ in range(n_draft):
                    srm_ctx.eval(feed, hidden=False)
                    srm_fed += len(feed)
                    d = int(np.argmax(srm_ctx.logits()))
                    drafts.append(d)
                    if self.srm.is_eog(d):
                        break
                    feed = [d]
                timing["srm"] += time.perf_counter() - t1
                usage["srm_tokens"] += len(drafts)
            # 2. verify in one LRM batch
            t2 = time.perf_counter()
            batch = [pending] + drafts
            lrm_ctx.eval(batch, logits="all", hidden=False)
            accepted = 0
            own = -1
            for i in range(len(batch)):
                target = int(np.argmax(lrm_ctx.logits_row(i)))
                if i < len(drafts) and target == drafts[i]:
                    accepted += 1
                    continue
                own = target
                break
            # 3. keep pending + accepted drafts in the LRM cache
            lrm_ctx.rollback(n_held + 1 + accepted)
            timing["lrm"] += time.perf_counter() - t2
            usage["lrm_calls"] += 1
            usage["lrm_verify_batches"] += 1
            usage["lrm_verify_tokens"] += len(batch)
            usage["lrm_prefill_tokens"] += len(batch) - 1
            usage["lrm_discarded_tokens"] += len(drafts) - accepted
            usage["srm_discarded_tokens"] += len(drafts) - accepted
            for d in drafts[:accepted]:
                if self.lrm.is_eog(d):  # the LRM agreed to end here (the end token is not output)
                    finished = True
                    break
                out.append(d)
                drafted.append(True)
                rejected_at.append(0)
                usage["specdec_accepted"] += 1
            if finished or len(out) >= limit:
                break
            carry, pending = len(drafts) - accepted, own
        # one SRM forward pass per draft: tokens fed beyond that (prompt, catch-up after a full accept) are prefill
        usage["srm_prefill_tokens"] = srm_fed - usage["srm_tokens"]
        return SpecDecOutput(tokens=out, drafted=drafted, rejected_at=rejected_at, finished=finished,
                             usage=usage, timing=timing)

    def chat(self, messages: str | Sequence[tuple[str, str]]) -> SolveResult:
        """Answer ``messages`` (a str is one user message) with the LRM's greedy output, decoded speculatively.

        The result is a :class:`~.reasoner.SolveResult`, as :meth:`Solver.chat`'s: the text is split into steps
        at the delimiter,
        every step's source is ``"lrm"`` (the LRM ratified every token); a step's ``srm_tokens`` are the
        accepted drafts in it, ``lrm_tokens`` the LRM's own tokens, ``discarded_tokens`` the drafts rejected
        where it corrected the SRM. ``policy`` is ``"specdec"``, ``threshold`` 0, ``decide`` ``"pre"``.
        """
        t_start = time.perf_counter()
        run = self.generate(self.prompt_tokens(messages))
        text, starts = _decode_with_offsets(self.lrm, run.tokens)
        steps = _split_steps(text, starts, run, self.config.delimiter)
        timing = dict(run.timing)
        timing["total"] = time.perf_counter() - t_start
        return SolveResult(answer_text=text, steps=steps, finished=run.finished,
                           timing={key: round(v, 4) for key, v in timing.items()}, usage=dict(run.usage),
                           policy="specdec", threshold=0.0, decide="pre")


def _decode_with_offsets(model: Model, tokens: Sequence[int]) -> tuple[str, list[int]]:
    """The text of ``tokens`` and, per token, the character offset where its text starts."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    text = ""
    starts: list[int] = []
    for t in tokens:
        starts.append(len(text))
        text += decoder.decode(model.piece(int(t)))
    text += decoder.decode(b"", final=True)
    return text, starts


def _split_steps(text: str, starts: list[int], run: SpecDecOutput, delimiter: str) -> list[StepRecord]:
    """Steps of ``text`` ending just after each delimiter, with the token counts of the tokens starting in them."""
    bounds: list[int] = []
    pos = 0
    while delimiter:
        i = text.find(delimiter, pos)
        if i < 0:
            break
        pos = i + len(delimiter)
        bounds.append(pos)
    if not bounds or bounds[-1] < len(text):
        bounds.append(len(text))
    steps: list[StepRecord] = []
    lo = 0
    j = 0
    for hi in bounds:
        rec = StepRecord(index=len(steps), text=text[lo:hi], source="lrm", routed=False, score=None,
                         reason="specdec")
        while j < len(starts) and (starts[j] < hi or hi == len(text)):
            if run.drafted[j]:
                rec.srm_tokens += 1
            else:
                rec.lrm_tokens += 1
            rec.discarded_tokens += run.rejected_at[j]
            rec.srm_tokens += run.rejected_at[j]
            j += 1
        steps.append(rec)
        lo = hi
    return steps
