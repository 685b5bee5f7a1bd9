"""Decoding contexts of a loaded model, speaking numpy: feeding, sampling, rollback, prefix reuse, teacher
forcing and control vectors, with an optional hidden-state tap.

:class:`Context` owns a ``llama_context`` (and, when hidden states are tapped, the tap whose buffer llama.cpp
writes into). It is a context manager with ``close()``; it keeps its :class:`~.model.Model` alive and must be
closed before it (``Model.close`` closes its open contexts first).

Hidden states: for tapped layer ``N`` the tap copies llama.cpp's ``l_out-N`` tensor, the residual stream
after layer N (0-based) including any control vector on that layer. A generated token's hidden state is the
row computed when that token is fed to the model, i.e. the state that predicts the *next* token.
"""

from __future__ import annotations

import codecs
import math
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..config import RuntimeConfig, SamplingConfig
from ..errors import ContextOverflowError, ControlVectorError, InvalidInputError, NativeError
from . import _native

if TYPE_CHECKING:
    from .model import Model

#: where a steering vector is added: every fed token, or only generated step-delimiter tokens
STEER_WHERE = ("all", "boundary")

#: most tokens :meth:`Context.teacher_force` feeds per batch, so that replayed logits equal generated ones
TEACHER_FORCE_CHUNK = 32

#: :meth:`Context.prefill` feeds text in blocks of this many tokens at multiples of it (a shorter tail joins
#: the block before it), so a kept prefix can be continued exactly as a cold start would feed it
PREFILL_BLOCK = 64


@dataclass
class TokenEvent:
    """One generated token.

    ``top_ids``/``top_logprobs``: int32/float32 ``(k,)``, descending, from the distribution the token was drawn
    from (before temperature); ``entropy`` of that full distribution in nats; ``hidden``: tapped layer ->
    float32 ``(n_embd,)`` (empty when not tapped, or for an end-of-generation token, which is not fed back).
    ``text`` is the newly completed UTF-8 text (may be "" while a multi-byte character is incomplete).
    """

    id: int
    text: str
    piece: bytes
    logprob: float
    entropy: float
    top_ids: np.ndarray
    top_logprobs: np.ndarray
    hidden: dict[int, np.ndarray] = field(default_factory=dict)
    eog: bool = False


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    m = float(logits.max())
    shifted = logits - m
    return shifted - math.log(float(np.exp(shifted).sum()))


class Context:
    """A llama.cpp context with an optional hidden-state tap, sampling, rollback and control vectors.

    ``tap_layers``: 0-based layers whose ``l_out`` is copied per token (None: no tap, plain llama.cpp).
    ``tap``: "native", "python" or "auto". The context tracks the token ids it holds (:attr:`tokens`).
    """

    def __init__(self, model: Model, config: RuntimeConfig | None = None, *,
                 tap_layers: Sequence[int] | None = None, tap: str = "auto") -> None:
        self.model = model
        self.config = config or RuntimeConfig()
        n_threads = self.config.n_threads or os.cpu_count() or 1
        self.layers: list[int] = model.check_layers(tap_layers) if tap_layers is not None else []
        self._tap = (_native.make_tap(tap, model.n_embd, model.n_layer, self.layers, self.config.n_batch)
                     if self.layers else None)
        ptr = _native.new_context(
            model.ptr, n_ctx=self.config.n_ctx, n_batch=self.config.n_batch, n_threads=n_threads,
            seed=self.config.seed,
            cb_eval=self._tap.cb_eval if self._tap else None,
            user_data=self._tap.user_data if self._tap else None,
        )
        if not ptr:
            if self._tap:
                self._tap.close()
            raise NativeError(f"llama.cpp could not create a context of {self.config.n_ctx} tokens: "
                              "lower --n-ctx or free memory")
        self._ptr: int | None = ptr
        self.n_ctx = _native.context_size(ptr)
        #: tokens per llama_decode: the asked n_batch, or less when llama.cpp clamped it (a small n_ctx)
        self.n_batch = min(self.config.n_batch, _native.context_batch(ptr))
        self._batch = _native.Batch(self.config.n_batch)
        self.tokens: list[int] = []
        self._last_logits: np.ndarray | None = None
        #: leading positions fed by :meth:`prefill` in whole aligned blocks, and leading positions computed under
        #: the control vector now in force (what :meth:`keep_prefix` may keep)
        self._canon = 0
        self._uniform = 0
        self._rng = np.random.default_rng(self.config.seed)
        self._cvec: np.ndarray | None = None  # the buffer last given to llama.cpp (it copies it)
        self._steer_boundary: tuple[tuple[np.ndarray, int, int], bytes] | None = None
        self._lock = threading.Lock()
        model._contexts.append(self)

    # -- ownership ----------------------------------------------------------------------------------------------

    @property
    def ptr(self) -> int:
        if self._ptr is None:
            raise NativeError("the context is closed")
        return self._ptr

    @property
    def tap_kind(self) -> str | None:
        return self._tap.kind if self._tap else None

    def close(self) -> None:
        if self._ptr is not None:
            self._batch.close()
            _native.free_context(self._ptr)  # the context before the tap it calls into
            self._ptr = None
            if self._tap is not None:
                self._tap.close()
                self._tap = None
            if self in self.model._contexts:
                self.model._contexts.remove(self)

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- decoding -----------------------------------------------------------------------------------------------

    @property
    def n_past(self) -> int:
        return len(self.tokens)

    def reseed(self, seed: int) -> None:
        """Restart the sampler's random stream (what seeded sampling draws next depends only on ``seed``)."""
        self._rng = np.random.default_rng(int(seed))

    def eval(self, tokens: Sequence[int], *, logits: str = "last", hidden: bool = True) -> dict[int, np.ndarray]:
        """Feed ``tokens`` after the current position, in chunks of ``n_batch``.

        Returns tapped layer -> float32 ``(rows, n_embd)`` for the fed tokens (empty without a tap or with
        ``hidden=False``). llama.cpp computes the last layer only for rows with logits, so with
        ``logits="last"`` the model's final layer yields only the last token's row; pass ``logits="all"`` to get
        every row there (slower: full vocabulary logits per token).
        """
        self.ptr  # noqa: B018 - raises NativeError when the context is closed
        toks = [int(t) for t in tokens]
        if not toks:
            return {il: np.zeros((0, self.model.n_embd), np.float32) for il in self.layers} if hidden else {}
        if self.n_past + len(toks) > self.n_ctx:
            raise ContextOverflowError(
                f"{self.n_past + len(toks)} tokens do not fit the context of {self.n_ctx}: "
                "shorten the input or raise --n-ctx")
        parts: dict[int, list[np.ndarray]] = {il: [] for il in self.layers}
        step = self.n_batch
        with self._lock:
            if self._tap is not None:
                self._tap.set_enabled(hidden)
            try:
                for start in range(0, len(toks), step):
                    chunk = toks[start:start + step]
                    last = start + step >= len(toks)
                    mode = logits if (last or logits == "all") else "none"
                    at = self.n_past
                    self._batch.fill(chunk, at, logits=mode)
                    if self._tap is not None:
                        self._tap.reset()
                    rc = self._batch.decode(self.ptr)
                    if rc != 0:
                        raise NativeError(f"llama_decode failed with code {rc} at position {self.n_past}")
                    self.tokens.extend(chunk)
                    if self._uniform == at:
                        self._uniform += len(chunk)
                    if hidden and self._tap is not None:
                        self._collect(parts)
                    if mode == "none":
                        self._last_logits = None
                    else:
                        self._last_logits = self.logits_row(-1)
            finally:
                if self._tap is not None:
                    self._tap.set_enabled(True)
        if not (hidden and self._tap is not None):
            return {}
        return {il: np.concatenate(p) if p else np.zeros((0, self.model.n_embd), np.float32)
                for il, p in parts.items()}

    def _collect(self, parts: dict[int, list[np.ndarray]]) -> None:
        tap = self._tap
        assert tap is not None
        if tap.overflow or tap.errors:
            raise NativeError(f"tap lost data (overflow {tap.overflow} rows, {tap.errors} bad tensors)")
        for k, il in enumerate(self.layers):
            n = int(tap.rows[k])
            parts[il].append(tap.buffer[k, :n].copy())

    @property
    def has_logits(self) -> bool:
        """Whether :meth:`logits` holds the distribution after the last token (false after a rollback)."""
        return self._last_logits is not None

    def logits(self) -> np.ndarray:
        """float32 ``(n_vocab,)`` logits after the last fed token."""
        if self._last_logits is None:
            raise NativeError("no logits available: feed tokens first (eval or generate)")
        return self._last_logits

    def logits_row(self, i: int) -> np.ndarray:
        """float32 ``(n_vocab,)`` logits of row ``i`` (-1: the last) of the batch llama.cpp decoded last: after
        ``eval(tokens, logits="all")`` row ``i`` predicts the token after ``tokens[i]`` (when ``tokens`` fit one
        batch of ``n_batch``; eval decodes longer input in chunks and only the last chunk's rows remain).
        NativeError for a row decoded without logits."""
        return _native.logits_row(self.ptr, i, self.model.n_vocab)

    def rollback(self, n_keep: int) -> None:
        """Forget every position from ``n_keep`` on (KV cache and token list). Logits must be recomputed by
        feeding at least one token again."""
        if not 0 <= n_keep <= self.n_past:
            raise NativeError(f"cannot roll back to {n_keep}: the context holds {self.n_past} tokens")
        if n_keep == self.n_past:
            return
        if not _native.memory_seq_rm(self.ptr, n_keep, -1):
            raise NativeError(f"llama_memory_seq_rm could not remove positions {n_keep}.. from the cache")
        del self.tokens[n_keep:]
        self._canon = min(self._canon, n_keep)
        self._uniform = min(self._uniform, n_keep)
        self._last_logits = None

    def reset(self) -> None:
        """Empty the context (KV cache and tokens)."""
        _native.memory_clear(self.ptr)
        self.tokens.clear()
        self._canon = self._uniform = 0
        self._last_logits = None

    # -- prompt prefill and prefix reuse ------------------------------------------------------------------------

    @property
    def prefill_block(self) -> int:
        """Tokens per :meth:`prefill` block: :data:`PREFILL_BLOCK`, or half of a smaller ``n_batch`` (a joined
        tail holds up to two blocks less one token, which must fit one batch)."""
        return max(1, min(PREFILL_BLOCK, self.n_batch // 2))

    def _prefill_cuts(self, start: int, end: int) -> list[int]:
        """Chunk starts for feeding positions ``start..end`` from an aligned ``start``: every multiple of the
        block, except that a tail shorter than a block joins the block before it. The cuts of ``(0, end)`` from
        ``start`` on are exactly the cuts of ``(start, end)`` whenever ``start`` is one of them."""
        b = self.prefill_block
        cuts = list(range(start, end, b))
        if len(cuts) > 1 and end - cuts[-1] < b:
            cuts.pop()
        return cuts

    def prefill(self, tokens: Sequence[int]) -> None:
        """Feed text the model reads but did not write (a prompt, another model's step), without hidden rows,
        leaving the last token's logits.

        From a position that is a multiple of :attr:`prefill_block` the tokens go in aligned blocks (see
        :meth:`_prefill_cuts`), so that llama.cpp computes every position exactly as in a cold start, whose
        batch sizes decide its rounding; from anywhere else, as :meth:`eval` does. Whole blocks fed from
        position 0 on form the prefix :meth:`keep_prefix` may keep."""
        toks = [int(t) for t in tokens]
        start, b = self.n_past, self.prefill_block
        if not toks or start % b:
            self.eval(toks, hidden=False)
            return
        end = start + len(toks)
        if end > self.n_ctx:
            raise ContextOverflowError(f"{end} tokens do not fit the context of {self.n_ctx}: "
                                       "shorten the input or raise --n-ctx")
        cuts = self._prefill_cuts(start, end)
        for a, z in zip(cuts, [*cuts[1:], end], strict=True):
            self.eval(toks[a - start:z - start], hidden=False)
            if z - a == b and self._canon == a:
                self._canon = z

    def keep_prefix(self, tokens: Sequence[int], *, exact: bool = True) -> int:
        """Roll back to the longest reusable prefix of the held tokens for ``tokens`` and return its length (the
        tokens still to feed are ``tokens[kept:]``, at least one). Only positions computed under the control
        vector now in force are ever kept.

        ``exact``: keep only what a :meth:`prefill` of ``tokens`` from here computes exactly as one from an empty
        context would: whole aligned blocks fed by :meth:`prefill` from position 0 that ``tokens`` start with,
        up to a cut of ``tokens``' own prefill. Generated tokens and text fed elsewhere are read again: llama.cpp
        rounds a token fed alone differently from one in a batch. Otherwise keep the whole common prefix, as
        llama-server's prompt cache does (faster; the result may differ from a cold start in near-ties)."""
        toks = [int(t) for t in tokens]
        held = 0
        limit = min(len(toks), self._uniform, self._canon if exact else self.n_past)
        while held < limit and self.tokens[held] == toks[held]:
            held += 1
        if not toks:
            keep = 0
        elif exact:
            keep = max(c for c in self._prefill_cuts(0, len(toks)) if c <= held)
        else:
            keep = min(held, len(toks) - 1)
        self.rollback(keep)
        return keep

    def _pick(self, logits: np.ndarray, sampling: SamplingConfig) -> tuple[int, np.ndarray]:
        logp = _log_softmax(logits.astype(np.float32, copy=False))
        if sampling.temperature <= 0.0:
            return int(np.argmax(logits)), logp
        z = logits.astype(np.float64) / sampling.temperature
        z -= z.max()
        p = np.exp(z)
        p /= p.sum()
        if sampling.top_p < 1.0:
            order = np.argsort(-p, kind="stable")
            cum = np.cumsum(p[order])
            keep = order[: int(np.searchsorted(cum, sampling.top_p) + 1)]
            q = np.zeros_like(p)
            q[keep] = p[keep]
            p = q / q.sum()
        return int(self._rng.choice(len(p), p=p)), logp

    def generate(self, prompt: Sequence[int] | None = None, sampling: SamplingConfig | None = None
                 ) -> Iterator[TokenEvent]:
        """Feed ``prompt`` (if any) then yield generated tokens until end-of-generation or ``max_tokens``.

        Every yielded non-EOG token has already been fed back (its hidden state is in the event), so when the
        caller stops iterating the context holds exactly the prompt plus the yielded tokens. Stop strings are
        the caller's business (see :func:`generate_text`).
        """
        sampling = sampling or SamplingConfig()
        if prompt:
            self.eval(prompt, hidden=False)
        k = self.config.top_logprobs
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        tail = b""  # generated bytes just before the current token: a step delimiter may span tokens
        for _ in range(sampling.max_tokens):
            logits = self.logits()
            tok, logp = self._pick(logits, sampling)
            p = np.exp(logp)
            entropy = float(-(p * logp).sum())
            if k:
                top = np.argpartition(-logp, k)[:k] if k < len(logp) else np.arange(len(logp))
                top = top[np.argsort(-logp[top], kind="stable")]
            else:
                top = np.zeros(0, dtype=np.int64)
            piece = self.model.piece(tok)
            eog = self.model.is_eog(tok)
            hidden: dict[int, np.ndarray] = {}
            if not eog:
                if self.n_past + 1 > self.n_ctx:
                    raise ContextOverflowError(f"the context of {self.n_ctx} tokens is full: raise --n-ctx")
                states = self._feed_generated(tok, piece, tail)
                hidden = {il: s[-1] for il, s in states.items() if len(s)}
                if self._steer_boundary is not None:
                    tail = (tail + piece)[-len(self._steer_boundary[1]):]
            yield TokenEvent(
                id=tok, text="" if eog else decoder.decode(piece), piece=piece, logprob=float(logp[tok]),
                entropy=entropy, top_ids=top.astype(np.int32), top_logprobs=logp[top].astype(np.float32),
                hidden=hidden, eog=eog)
            if eog:
                return

    def _forced_rows(self, toks: list[int], chunk: int
                     ) -> Iterator[tuple[int, list[np.ndarray], dict[int, np.ndarray]]]:
        """Feed ``toks`` in batches of at most ``chunk`` (and ``n_batch``); yield ``(start, rows, states)`` per
        batch: ``rows[j]`` the logits that predicted ``toks[start + j]``, ``states`` the tapped rows fed."""
        prev = self.logits()
        step = max(1, min(self.n_batch, int(chunk)))
        for start in range(0, len(toks), step):
            batch = toks[start:start + step]
            rows = [prev]
            states = self.eval(batch, logits="all")
            rows += [self.logits_row(i) for i in range(len(batch))]
            prev = rows.pop()
            yield start, rows, states

    def teacher_force(self, tokens: Sequence[int], chunk: int = TEACHER_FORCE_CHUNK
                      ) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
        """Feed given ``tokens`` (T of them) as if they had been generated, and return what generation would
        have recorded: the entropy (float32 ``(T,)``) and top-k log-probabilities (float32 ``(T, k)``, k =
        ``top_logprobs``) of the distribution that predicted each token, and the tapped states (layer -> float32
        ``(T, n_embd)``). The context must hold logits (feed the prompt first).

        Tokens go in batches of at most ``chunk`` (and ``n_batch``). The default, :data:`TEACHER_FORCE_CHUNK`,
        is small on purpose: llama.cpp's CPU kernels compute large batches with other rounding than
        single-token decoding (SmolLM2: one 80-token batch moved a step's max entropy from 4.749 to 4.565),
        while batches of up to 48 tokens reproduced generation exactly."""
        toks = [int(t) for t in tokens]
        k = self.config.top_logprobs
        ent = np.zeros(len(toks), np.float32)
        top = np.zeros((len(toks), k), np.float32)
        parts: dict[int, list[np.ndarray]] = {il: [] for il in self.layers}
        for start, rows, states in self._forced_rows(toks, chunk):
            for j, row in enumerate(rows):
                logp = _log_softmax(row)
                ent[start + j] = float(-(np.exp(logp) * logp).sum())
                if k:
                    idx = np.argpartition(-logp, k)[:k] if k < len(logp) else np.arange(len(logp))
                    top[start + j, : len(idx)] = np.sort(logp[idx])[::-1]
            for il, st in states.items():
                parts[il].append(st)
        hidden = {il: np.concatenate(p) if p else np.zeros((0, self.model.n_embd), np.float32)
                  for il, p in parts.items()}
        return ent, top, hidden

    def score_tokens(self, tokens: Sequence[int], chunk: int = TEACHER_FORCE_CHUNK) -> tuple[np.ndarray, np.ndarray]:
        """Feed given ``tokens`` (T of them) and return how this model saw each: the log-probability it gave the
        token (float32 ``(T,)``) and its own greedy choice at that position (int32 ``(T,)``, ties to the lowest
        id). The context must hold logits (feed the prompt first); batching as in :meth:`teacher_force`."""
        toks = [int(t) for t in tokens]
        logprob = np.zeros(len(toks), np.float32)
        best = np.zeros(len(toks), np.int32)
        for start, rows, _ in self._forced_rows(toks, chunk):
            for j, row in enumerate(rows):
                logprob[start + j] = _log_softmax(row)[toks[start + j]]
                best[start + j] = int(np.argmax(row))
        return logprob, best

    def sync(self, tokens: Sequence[int]) -> int:
        """Make the context hold exactly ``tokens`` with fresh logits, keeping the longest common prefix of the
        KV cache and feeding only the rest (at least the last token, since logits exist only after an eval).
        Returns how many tokens were fed."""
        toks = [int(t) for t in tokens]
        if not toks:
            raise InvalidInputError("sync needs at least one token")
        if len(toks) > self.n_ctx:
            raise ContextOverflowError(f"{len(toks)} tokens do not fit the context of {self.n_ctx}: "
                                       "shorten the input or raise --n-ctx")
        held = 0
        for a, b in zip(self.tokens, toks, strict=False):
            if a != b:
                break
            held += 1
        if held == len(toks) == len(self.tokens) and self.has_logits:
            return 0
        keep = min(held, len(toks) - 1)
        self.rollback(keep)
        self.eval(toks[keep:], hidden=False)
        return len(toks) - keep

    # -- control vectors ----------------------------------------------------------------------------------------

    def _cvec_buffer(self, vectors: Mapping[int, np.ndarray], scale: float) -> tuple[np.ndarray, int, int]:
        """Lay ``{layer: (n_embd,) vector}`` out as llama.cpp's control-vector buffer: float32
        ``(n_layer-1, n_embd)`` starting at layer 1, already multiplied by ``scale``; plus the first and last
        direction index used."""
        n_layer, n_embd = self.model.n_layer, self.model.n_embd
        if not vectors:
            raise ControlVectorError("empty control vector: give at least one layer")
        data = np.zeros((n_layer - 1, n_embd), dtype=np.float32)
        for layer, vec in vectors.items():
            d = _native.cvec_direction_for_layer(int(layer))
            if not 1 <= d <= n_layer - 1:
                raise ControlVectorError(
                    f"control vector for layer {layer} is out of range: steerable layers are 1..{n_layer - 1}")
            v = np.asarray(vec, dtype=np.float32)
            if v.shape != (n_embd,):
                raise ControlVectorError(f"control vector for layer {layer} has shape {v.shape}, "
                                         f"the model needs ({n_embd},)")
            data[d - 1] = v * np.float32(scale)
        directions = [_native.cvec_direction_for_layer(int(la)) for la in vectors]
        return np.ascontiguousarray(data), min(directions), max(directions)

    def _apply_cvec(self, buf: tuple[np.ndarray, int, int] | None) -> None:
        if (None if buf is None else buf[0]) is not self._cvec:
            self._uniform = 0  # what the context holds was computed under another vector
        if buf is None:
            _native.set_cvec(self.ptr, None, self.model.n_embd, -1, -1)
            self._cvec = None
            return
        data, lo, hi = buf
        rc = _native.set_cvec(self.ptr, data, self.model.n_embd, lo, hi)
        if rc != 0:
            raise ControlVectorError(f"llama.cpp rejected the control vector (code {rc})")
        self._cvec = data

    def set_control_vector(self, vectors: Mapping[int, np.ndarray], scale: float = 1.0) -> None:
        """Add ``scale * vectors[N]`` to the output of layer N (the tapped ``l_out-N``), N in 1..n_layer-1,
        for every token fed from now on.

        Layer 0's output cannot be steered (llama.cpp's buffer starts at layer 1). Each vector is float
        ``(n_embd,)``. Replaces any vector or steering set before.
        """
        buf = self._cvec_buffer(vectors, scale)
        self._steer_boundary = None
        self._apply_cvec(buf)
        self._last_logits = None

    def clear_control_vector(self) -> None:
        """Remove any control vector or steering: logits are again bit-identical to an unsteered context."""
        self._steer_boundary = None
        self._apply_cvec(None)
        self._last_logits = None

    def set_steering(self, vectors: Mapping[int, np.ndarray], scale: float = 1.0, *, where: str = "all",
                     delimiter: str = "") -> None:
        """Steer generation with a control vector (``{layer: (n_embd,) float}``, layer = tapped ``l_out`` index).

        ``where="all"`` adds it while feeding every token (prompt, appended text and generated tokens);
        ``where="boundary"`` only while :meth:`generate` feeds back a generated token that completes
        ``delimiter`` (the step boundary, SEAL style; the delimiter may start in earlier tokens), so only those
        tokens' states, and what attends to them, are nudged; the caller names it (the engine knows no step
        delimiter: :data:`rankguide_edge.signals.segment.DEFAULT_DELIMITER` is the project's).
        ``clear_control_vector`` removes either.
        """
        if where not in STEER_WHERE:
            raise ControlVectorError(f"unknown steering placement {where!r}: use all or boundary")
        buf = self._cvec_buffer(vectors, scale)
        if where == "all":
            self._steer_boundary = None
            self._apply_cvec(buf)
        else:
            if not delimiter:
                raise ControlVectorError("boundary steering needs a non-empty step delimiter")
            self._apply_cvec(None)
            self._steer_boundary = (buf, delimiter.encode("utf-8"))
        self._last_logits = None

    def _feed_generated(self, tok: int, piece: bytes, before: bytes) -> dict[int, np.ndarray]:
        """Feed one sampled token back. Boundary steering applies to the token that completes a step
        delimiter: one that ends inside ``piece``, given ``before``, the bytes generated just before it (so
        "\n\n" counts when a vocabulary writes it as two "\n" tokens)."""
        sb = self._steer_boundary
        if sb is None:
            return self.eval([tok], hidden=True)
        keep = len(sb[1]) - 1  # fewer bytes than the delimiter: every match ends inside this token
        if sb[1] not in (before[len(before) - keep:] if keep else b"") + piece:
            return self.eval([tok], hidden=True)
        self._apply_cvec(sb[0])
        try:
            return self.eval([tok], hidden=True)
        finally:
            self._apply_cvec(None)


def generate_text(ctx: Context, prompt: Sequence[int] | None, sampling: SamplingConfig) -> tuple[str, list[TokenEvent]]:
    """Generate until EOG, ``max_tokens`` or a stop string; return the text (cut before the stop) and events."""
    events: list[TokenEvent] = []
    text = ""
    for ev in ctx.generate(prompt, sampling):
        events.append(ev)
        text += ev.text
        hit = [text.find(s) for s in sampling.stop if s and s in text]
        if hit:
            return text[: min(hit)], events
    return text, events
