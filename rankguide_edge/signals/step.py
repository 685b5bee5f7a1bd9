"""The per-step entry point: :class:`SignalConfig`, :class:`StepSignalComputer`, :func:`signal_names`.

The trace/reasoner calls ``compute(hidden, stats, text)`` once per finished step (and optionally
``compute_partial`` while a step grows). ``hidden`` maps a tapped layer index to that layer's hidden states
for the step's tokens, ``(T, n_embd)`` float32 rows in token order; ``stats`` holds the same T tokens'
entropies and top-k log-probabilities. The result is a flat ``dict[str, float]`` with the keys of
:func:`signal_names` (documented in docs/SIGNALS.md).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import bounded, from_mapping, validate
from ..errors import ConfigError, InvalidInputError, LayerIndexError
from ._blas import blas_threads
from .failure import FailureConfig, FailureInputs, FailureScorer
from .rank import (
    ZERO_RANKS,
    RankValues,
    batch_window_ranks,
    gram_dtype_for,
    novelty_from_prepared,
    prepare_rows,
    prepare_window,
    rank_denominator,
    ranks_from_grams,
    tucker_grams,
)
from .segment import DEFAULT_DELIMITER, StepSegmenter
from .text import (
    CONFIDENT_WORDS,
    REVALIDATION_WORDS,
    UNCERTAINTY_WORDS,
    RepetitionTracker,
    TokenStats,
    compile_keywords,
    count_keywords,
    token_features,
)

#: rank value names per window, in key order
RANK_VALUES: tuple[str, ...] = ("num", "num_norm", "eff", "eff_norm", "stable", "stable_norm")
#: rank windows per layer: the whole step (row-capped) and the sliding window of the last W tokens
WINDOWS: tuple[str, ...] = ("step", "win")
TEXT_KEYS: tuple[str, ...] = ("text.n_tokens", "text.n_chars", "text.entropy_mean", "text.entropy_max",
                              "text.top1_mean", "text.margin_min")
KW_KEYS: tuple[str, ...] = ("kw.revalidation", "kw.uncertainty", "kw.confident")
REP_KEYS: tuple[str, ...] = ("rep.max_jaccard", "rep.ngram_containment", "rep.arith_total", "rep.arith_repeats")
FAIL_KEYS: tuple[str, ...] = ("fail.overconfidence", "fail.uncertainty", "fail.revalidation", "fail.route",
                              "fail.revalidation_streak")


@dataclass(frozen=True)
class SignalConfig:
    """Every knob of the signals layer (build from a mapping with :meth:`from_mapping`)."""

    layers: tuple[int, ...] | str = bounded("all", help='tapped layers to use: "all", "last" or indices')
    primary_layer: int | None = bounded(None, lo=0, hi=100000,
                                        help="layer feeding the failure scorer; None = highest used")
    window: int = bounded(32, lo=2, hi=4096, help="sliding rank window W, in tokens")
    window_carry: bool = bounded(True, help="sliding windows reach back into earlier steps (fixed size W)")
    step_max_rows: int = bounded(128, lo=2, hi=65536, help="whole-step windows keep this many evenly spaced rows")
    eps: float = bounded(1e-2, lo=1e-7, hi=0.5, help="relative tolerance of the numerical rank")
    centre: bool = bounded(True, help="subtract the token mean before spectra (normaliser min(n-1, d))")
    row_normalise: bool = bounded(False, help="L2-normalise hidden-state rows before centring")
    precision: str = bounded("auto", choices=("auto", "float32", "float64"),
                             help="Gram precision; auto = float32 when eps >= 5e-3")
    tucker: bool = bounded(True, help="Tucker mode ranks of tokens x layers x hidden (needs >= 2 layers)")
    tucker_window: int = bounded(16, lo=2, hi=1024, help="tokens in the Tucker tensor")
    tucker_balance_layers: bool = bounded(True, help="scale each layer slice to unit Frobenius norm")
    novelty: bool = bounded(True, help="subspace novelty of the primary layer against the previous step")
    min_rank_tokens: int = bounded(8, lo=2, hi=4096, help="fewer window rows: rank inputs skip the scorer")
    delimiter: str = bounded(DEFAULT_DELIMITER, help="step delimiter: the text that ends a step (a blank line)")
    max_step_tokens: int = bounded(256, lo=1, hi=262144, help="a step ends after this many tokens")
    revalidation_words: tuple[str, ...] = bounded(REVALIDATION_WORDS, help="revalidation phrases")
    uncertainty_words: tuple[str, ...] = bounded(UNCERTAINTY_WORDS, help="uncertainty phrases")
    confident_words: tuple[str, ...] = bounded(CONFIDENT_WORDS, help="confident-claim phrases")
    ngram: int = bounded(8, lo=1, hi=256, help="character n-gram length of rep.ngram_containment")
    min_words: int = bounded(3, lo=1, hi=1000, help="distinct words a step needs to count for rep.max_jaccard")
    blas_threads: int = bounded(1, lo=0, hi=1024, help="numpy OpenBLAS threads during compute; 0 = leave alone")
    failure: FailureConfig = bounded(FailureConfig(), help="failure-mode scorer knobs (a nested mapping)")

    def __post_init__(self) -> None:
        layers = self.layers
        if isinstance(layers, str):
            if layers not in ("all", "last"):
                raise ConfigError(f'SignalConfig.layers={layers!r}; use "all", "last" or a list of layer indices')
        else:
            if isinstance(layers, int) and not isinstance(layers, bool):
                layers = (layers,)
            try:
                tup = tuple(layers)
            except TypeError:
                raise ConfigError(f"SignalConfig.layers={layers!r}; use \"all\", \"last\" or a list of ints") from None
            if not tup or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in tup):
                raise ConfigError(f"SignalConfig.layers={tup!r} must be non-negative layer indices")
            object.__setattr__(self, "layers", tuple(sorted(set(tup))))
        for name in ("revalidation_words", "uncertainty_words", "confident_words"):
            words = tuple(getattr(self, name))
            if not all(isinstance(w, str) for w in words):
                raise ConfigError(f"SignalConfig.{name} must be a list of strings")
            object.__setattr__(self, name, words)
        if isinstance(self.failure, Mapping):
            object.__setattr__(self, "failure", from_mapping(FailureConfig, self.failure))
        elif not isinstance(self.failure, FailureConfig):
            raise ConfigError("SignalConfig.failure must be a mapping of FailureConfig keys")
        if not isinstance(self.delimiter, str) or not self.delimiter:
            raise ConfigError("SignalConfig.delimiter is empty; use e.g. '\\n\\n'")
        validate(self)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, **overrides: Any) -> SignalConfig:
        """Build from a plain mapping (TOML/JSON); ``failure`` may be a nested mapping."""
        return from_mapping(cls, data, **overrides)

    def segmenter(self) -> StepSegmenter:
        """A fresh :class:`StepSegmenter` with this config's delimiter and ``max_step_tokens``."""
        return StepSegmenter(self.delimiter, self.max_step_tokens)

    @property
    def gram_dtype(self) -> type[np.floating]:
        """Precision of Gram products and spectra."""
        if self.precision == "auto":
            return gram_dtype_for(self.eps)
        return np.float32 if self.precision == "float32" else np.float64


def resolve_layers(config: SignalConfig, available: Sequence[int]) -> tuple[int, ...]:
    """The layers (ascending) the config uses out of the tapped ``available`` ones."""
    avail = sorted({int(i) for i in available})
    if not avail:
        raise InvalidInputError("no hidden states were passed; tap at least one layer")
    layers = config.layers
    if isinstance(layers, str):  # "all" or "last" (__post_init__ admits no other string)
        return tuple(avail) if layers == "all" else (avail[-1],)
    missing = [i for i in layers if i not in avail]
    if missing:
        raise LayerIndexError(f"layer(s) {missing} were not tapped; tap them or use layers from {avail}")
    return tuple(layers)


def _primary(config: SignalConfig, layers: Sequence[int]) -> int:
    if config.primary_layer is None:
        return max(layers)
    if config.primary_layer not in layers:
        raise LayerIndexError(f"primary_layer={config.primary_layer} is not among the used layers {list(layers)}")
    return int(config.primary_layer)


def signal_names(config: SignalConfig, layers: Sequence[int], *, partial: bool = False) -> list[str]:
    """Keys of :meth:`StepSignalComputer.compute` (or of ``compute_partial`` with ``partial=True``), in order.

    ``layers`` are the tapped layer indices; they are resolved with the config like at compute time.
    """
    used = resolve_layers(config, layers)
    prim = _primary(config, used)
    names = ["step.index", "step.partial"]
    if partial:
        names += [f"rank.{v}.L{prim}.win" for v in RANK_VALUES] + ["rank.rows.win"]
    else:
        names += [f"rank.{v}.L{layer}.{w}" for layer in used for w in WINDOWS for v in RANK_VALUES]
        names += ["rank.rows.step", "rank.rows.win"]
        names += [f"rank.delta.{v}.L{layer}" for layer in used for v in ("num_norm", "eff_norm", "stable_norm")]
        if config.novelty:
            names.append(f"rank.novelty.L{prim}")
        if config.tucker and len(used) >= 2:
            names += [f"tucker.{v}.mode{m}" for m in range(3) for v in RANK_VALUES] + ["tucker.rows"]
    return names + list(TEXT_KEYS) + list(KW_KEYS) + list(REP_KEYS) + list(FAIL_KEYS)


def _rank_items(prefix: str, suffix: str, rv: RankValues) -> dict[str, float]:
    d = rv.as_dict()
    return {f"{prefix}.{v}{suffix}": d[v] for v in RANK_VALUES}


class StepSignalComputer:
    """Per-trace signal computation. Call :meth:`reset` between traces.

    State kept across steps: the last ``max(window, tucker_window)`` hidden rows of every used layer (for
    windows reaching into earlier steps), the previous step's step-window ranks (deltas), the previous
    step's prepared whole-step rows of the primary layer and their Gram (novelty), earlier step texts
    (repetition) and the revalidation streak.
    """

    def __init__(self, config: SignalConfig | None = None) -> None:
        self.config = config or SignalConfig()
        c = self.config
        self._dtype = c.gram_dtype
        self._patterns = [("revalidation", compile_keywords(c.revalidation_words)),
                          ("uncertainty", compile_keywords(c.uncertainty_words)),
                          ("confident", compile_keywords(c.confident_words))]
        self._rep = RepetitionTracker(ngram=c.ngram, min_words=c.min_words)
        self._scorer = FailureScorer(c.failure)
        self.reset()

    def reset(self) -> None:
        """Forget the trace: the next call is step 0 of a new trace."""
        self._layers: tuple[int, ...] | None = None
        self._tail: dict[int, np.ndarray] = {}
        self._prev_step: dict[int, RankValues] = {}
        self._prev_rows: tuple[np.ndarray, np.ndarray] | None = None
        self._tucker_rows = 0
        self._key_cache: dict[tuple[int, str], tuple[str, ...]] | None = None
        self._rep.reset()
        self._scorer.reset()
        self.n_steps = 0

    def snapshot(self) -> tuple[Any, ...]:
        """The trace state (see the class docstring), for :meth:`restore`: taken before scoring a step that may
        be thrown away (a routed draft), so the next step's signals do not see it."""
        return (self._layers, dict(self._tail), dict(self._prev_step), self._prev_rows, self._tucker_rows,
                self.n_steps, self._rep.snapshot(), self._scorer.streak)

    def restore(self, state: tuple[Any, ...]) -> None:
        """Return to a :meth:`snapshot` (the hidden rows are never modified in place, so sharing them is safe)."""
        layers, tail, prev_step, prev_rows, tucker_rows, n_steps, rep, streak = state
        self._layers, self._tail, self._prev_step = layers, dict(tail), dict(prev_step)
        self._prev_rows, self._tucker_rows, self.n_steps = prev_rows, tucker_rows, n_steps
        self._rep.restore(rep)
        self._scorer.streak = streak

    def note_step(self, text: str) -> None:
        """Record a step this model did not write (the LRM's): its text joins the repetition history, the step
        count advances and the revalidation streak ends. Its hidden rows are unknown, so rank windows that
        reach back skip it."""
        self._rep.add(text)
        self._scorer.streak = 0
        self.n_steps += 1

    @property
    def layers(self) -> tuple[int, ...] | None:
        """The used layers (known after the first call)."""
        return self._layers

    def _keys(self, layers: Sequence[int]) -> dict[tuple[int, str], tuple[str, ...]]:
        """Per-layer key names, built once per trace (formatting 100 keys per step is measurable)."""
        if self._key_cache is None:
            cache: dict[tuple[int, str], tuple[str, ...]] = {}
            for layer in layers:
                for w in WINDOWS:
                    cache[(layer, w)] = tuple(f"rank.{v}.L{layer}.{w}" for v in RANK_VALUES)
                cache[(layer, "delta")] = tuple(f"rank.delta.{v}.L{layer}" for v in ("num_norm", "eff_norm",
                                                                                     "stable_norm"))
            self._key_cache = cache
        return self._key_cache

    def _check(self, hidden: Mapping[int, np.ndarray],
               stats: TokenStats) -> tuple[tuple[int, ...], dict[int, np.ndarray]]:
        """Validate one step's inputs; returns the used layers and their ``(T, d)`` arrays."""
        layers = self._layers
        if layers is None:
            layers = resolve_layers(self.config, list(hidden.keys()))
            _primary(self.config, layers)
        out: dict[int, np.ndarray] = {}
        n_tokens = len(stats)
        for layer in layers:
            if layer not in hidden:
                raise LayerIndexError(f"layer {layer} is missing from this step's hidden states; tap it every step")
            h = np.asarray(hidden[layer])
            if h.ndim != 2:
                raise InvalidInputError(f"hidden[{layer}] has shape {h.shape}; pass (tokens, n_embd) arrays")
            if h.shape[0] != n_tokens:
                raise InvalidInputError(
                    f"hidden[{layer}] has {h.shape[0]} rows but token stats have {n_tokens}; pass the same tokens"
                )
            tail = self._tail.get(layer)
            if tail is not None and tail.shape[1] != h.shape[1]:
                raise InvalidInputError(f"hidden[{layer}] width changed from {tail.shape[1]} to {h.shape[1]}")
            out[layer] = h
        return layers, out

    def _next_tail(self, layer: int, h: np.ndarray, keep: int) -> np.ndarray:
        """The last ``keep`` rows of the layer's trace after this step (``(<= keep, d)`` float32, a copy)."""
        tail = self._tail.get(layer)
        joined = h if tail is None or h.shape[0] >= keep else np.concatenate([tail, h], axis=0)
        return np.array(joined[-keep:], dtype=np.float32)

    def _win_rows(self, layer: int, h: np.ndarray, size: int) -> np.ndarray:
        tail = self._tail.get(layer)
        if not self.config.window_carry or tail is None or h.shape[0] >= size or tail.shape[0] == 0:
            return h[-size:] if h.shape[0] else h
        return np.concatenate([tail[-(size - h.shape[0]):], h], axis=0)

    def _text_part(self, stats: TokenStats, text: str, commit: bool) -> tuple[dict[str, float], dict[str, float]]:
        tf = token_features(stats)
        out = {"text.n_tokens": tf["n_tokens"], "text.n_chars": float(len(text)),
               "text.entropy_mean": tf["entropy_mean"], "text.entropy_max": tf["entropy_max"],
               "text.top1_mean": tf["top1_mean"], "text.margin_min": tf["margin_min"]}
        for name, pat in self._patterns:
            out[f"kw.{name}"] = float(count_keywords(text, pat))
        rep = self._rep.measure(text)
        for k, v in rep.items():
            out[f"rep.{k}"] = v
        if commit:
            self._rep.add(text)
        return out, tf

    def _fail(self, out: dict[str, float], tf: dict[str, float], rank_eff: float | None,
              novelty: float | None, commit: bool) -> None:
        has_tokens = tf["n_tokens"] > 0
        inp = FailureInputs(
            entropy_mean=tf["entropy_mean"] if has_tokens else None,
            entropy_max=tf["entropy_max"] if has_tokens else None,
            top1_mean=tf["top1_mean"] if has_tokens else None,
            margin_min=tf["margin_min"] if has_tokens else None,
            rank_eff_norm=rank_eff, novelty=novelty,
            kw_revalidation=out["kw.revalidation"], kw_uncertainty=out["kw.uncertainty"],
            kw_confident=out["kw.confident"],
            repetition=max(out["rep.max_jaccard"], out["rep.ngram_containment"]),
            arith_repeats=out["rep.arith_repeats"],
        )
        for k, v in self._scorer.score(inp, commit=commit).items():
            out[f"fail.{k}"] = v

    def compute(self, hidden: Mapping[int, np.ndarray], stats: TokenStats, text: str | None = None) -> dict[str, float]:
        """All signals of one finished step, then advance the trace state.

        ``hidden``: layer -> ``(T, n_embd)`` float array; ``stats``: the same T tokens; ``text``: the step's
        text (defaults to the joined pieces). Returns the keys of :func:`signal_names` in that order.
        """
        with blas_threads(self.config.blas_threads):
            return self._compute(hidden, stats, text)

    def _compute(self, hidden: Mapping[int, np.ndarray], stats: TokenStats, text: str | None) -> dict[str, float]:
        c = self.config
        text = stats.text if text is None else text
        layers, hs = self._check(hidden, stats)
        self._layers = layers
        prim = _primary(c, layers)
        n_tok = len(stats)
        out: dict[str, float] = {"step.index": float(self.n_steps), "step.partial": 0.0}

        # windows: whole step (evenly row-capped) and the last W tokens (reaching back when window_carry);
        # a sliding window that is the whole step itself is prepared and ranked once
        if n_tok > c.step_max_rows:
            rows = np.unique(np.linspace(0, n_tok - 1, c.step_max_rows).round().astype(np.intp))
        else:
            rows = None
        prep = functools.partial(prepare_window, centre=c.centre, row_normalise=c.row_normalise, dtype=self._dtype)
        keep = max(c.window, c.tucker_window)
        prepared: list[tuple[np.ndarray, np.ndarray]] = []  # (rows, gram) of every distinct window
        slot: list[tuple[int, int]] = []  # per layer: indices of its step and sliding windows in ``prepared``
        tails: dict[int, np.ndarray] = {}
        for layer in layers:
            h = hs[layer]
            win_w = self._win_rows(layer, h, c.window)
            prepared.append(prep(h[rows] if rows is not None else h))
            if rows is None and win_w.shape[0] == n_tok:
                slot.append((len(prepared) - 1, len(prepared) - 1))
            else:
                prepared.append(prep(win_w))
                slot.append((len(prepared) - 2, len(prepared) - 1))
            tails[layer] = self._next_tail(layer, h, keep)  # copied now, while h is still in cache
        grams = [g for _, g in prepared]
        denoms = [rank_denominator(x.shape[0], x.shape[1], centre=c.centre) for x, _ in prepared]

        # Tucker Grams join the same batched eigen-solves as the windows
        n_win = len(grams)
        use_tucker = c.tucker and len(layers) >= 2
        tucker_ok, tg = False, None
        if use_tucker:
            tucker_ok, tg = self._tucker_grams(layers, hs, [prepared[sl[1]][0] for sl in slot])
            if tg is not None:
                grams.extend(tg[0])
                denoms.extend(tg[1])
        ranks = ranks_from_grams(grams, denoms, eps=c.eps, dtype=self._dtype)

        keys = self._keys(layers)
        for j, layer in enumerate(layers):
            for w, i in (("step", slot[j][0]), ("win", slot[j][1])):
                r = ranks[i]
                out.update(zip(keys[(layer, w)], (r.num, r.num_norm, r.eff, r.eff_norm, r.stable, r.stable_norm),
                               strict=True))
        win_rows = prepared[slot[0][1]][0].shape[0]
        out["rank.rows.step"] = float(prepared[slot[0][0]][0].shape[0])
        out["rank.rows.win"] = float(win_rows)
        for j, layer in enumerate(layers):
            cur, prev = ranks[slot[j][0]], self._prev_step.get(layer)
            deltas = ((cur.num_norm - prev.num_norm, cur.eff_norm - prev.eff_norm, cur.stable_norm - prev.stable_norm)
                      if prev else (0.0, 0.0, 0.0))
            out.update(zip(keys[(layer, "delta")], map(float, deltas), strict=True))

        jp = layers.index(prim)
        own_rows, own_gram = prepared[slot[jp][0]]
        novelty = None
        if c.novelty:
            a, ga = self._prev_rows if self._prev_rows is not None else (None, None)
            nov = novelty_from_prepared(a, ga, own_rows, eps=c.eps, dtype=self._dtype,
                                        energy_b=float(np.trace(own_gram, dtype=np.float64)))
            out[f"rank.novelty.L{prim}"] = nov
            novelty = nov if own_rows.shape[0] >= c.min_rank_tokens else None

        if use_tucker:
            tk = ranks[n_win:n_win + 3] if tg is not None else [ZERO_RANKS] * 3
            for m in range(3):
                out.update(_rank_items("tucker", f".mode{m}", tk[m]))
            out["tucker.rows"] = float(self._tucker_rows) if tucker_ok else 0.0

        txt, tf = self._text_part(stats, text, commit=True)
        out.update(txt)
        prim_win = ranks[slot[jp][1]]
        rank_eff = prim_win.eff_norm if win_rows >= c.min_rank_tokens else None
        self._fail(out, tf, rank_eff, novelty, commit=True)

        # advance the trace state
        self._tail.update(tails)
        for j, layer in enumerate(layers):
            self._prev_step[layer] = ranks[slot[j][0]]
        if c.novelty and own_rows.shape[0] >= (2 if c.centre else 1):
            n_own, d_own = own_rows.shape
            ga = own_gram if n_own <= d_own else own_rows @ own_rows.T
            self._prev_rows = (own_rows, ga)
        self.n_steps += 1
        return out

    def _tucker_grams(self, layers: Sequence[int], hs: Mapping[int, np.ndarray], wins: Sequence[np.ndarray]
                      ) -> tuple[bool, tuple[tuple[np.ndarray, ...], tuple[int, ...]] | None]:
        """Mode Grams of the Tucker tensor over the last ``tucker_window`` tokens.

        ``wins``: the prepared sliding windows (``(n, d)`` each), reused when ``tucker_window <= window``.
        Returns ``(False, None)`` when the layers' windows differ in shape (no Tucker signals this step),
        else ``(True, grams_and_denoms)`` where the second item is ``None`` for a degenerate tensor.
        """
        c = self.config
        if len({w.shape for w in wins}) != 1:
            return False, None
        if c.tucker_window <= c.window:
            p = np.stack([w[-c.tucker_window:] for w in wins])
            if c.centre and p.shape[1]:
                p -= p.mean(axis=1, keepdims=True)  # re-centre the sub-window (translation invariance)
        else:
            slices = [self._win_rows(layer, hs[layer], c.tucker_window) for layer in layers]
            p = prepare_rows(np.stack(slices), centre=c.centre, row_normalise=c.row_normalise, dtype=self._dtype)
        self._tucker_rows = p.shape[1]
        return True, tucker_grams(p, centre=c.centre, balance_layers=c.tucker_balance_layers)

    def compute_partial(self, hidden: Mapping[int, np.ndarray], stats: TokenStats,
                        text: str | None = None) -> dict[str, float]:
        """Cheap signals of an unfinished step (its first K tokens) for early decisions; state is unchanged.

        Only the primary layer's sliding window is ranked (no whole-step window, deltas, novelty or Tucker);
        text, keyword and repetition signals compare with earlier steps without recording this one; the
        failure scorer reports the streak the step would reach. Keys: ``signal_names(..., partial=True)``.
        """
        with blas_threads(self.config.blas_threads):
            return self._compute_partial(hidden, stats, text)

    def _compute_partial(self, hidden: Mapping[int, np.ndarray], stats: TokenStats,
                         text: str | None) -> dict[str, float]:
        c = self.config
        text = stats.text if text is None else text
        layers, hs = self._check(hidden, stats)  # a partial call does not fix the trace's layers
        prim = _primary(c, layers)
        out: dict[str, float] = {"step.index": float(self.n_steps), "step.partial": 1.0}
        win = self._win_rows(prim, hs[prim], c.window)
        rv = batch_window_ranks([win], eps=c.eps, centre=c.centre, row_normalise=c.row_normalise,
                                dtype=self._dtype)[0]
        out.update(_rank_items("rank", f".L{prim}.win", rv))
        out["rank.rows.win"] = float(win.shape[0])
        txt, tf = self._text_part(stats, text, commit=False)
        out.update(txt)
        rank_eff = rv.eff_norm if win.shape[0] >= c.min_rank_tokens else None
        self._fail(out, tf, rank_eff, None, commit=False)
        return out
