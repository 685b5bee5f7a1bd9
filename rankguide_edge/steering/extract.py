"""Steering-vector extraction: execution minus reflection/transition thoughts, filtered by rank signals.

Per trace (a record written by ``rankguide-edge trace``):

1. the generated text is split into thoughts at the step delimiter and each thought is classified by keywords
   (:mod:`._thoughts`): execution, reflection or transition;
2. the SRM is teacher-forced on the trace's prompt plus its generated text in one prefill, tapping the
   steering layers; a thought's state is the row of its delimiter token (the token whose piece completes the
   ``"\\n\\n"`` ending it), or with ``anchor="start"`` the row of the delimiter token before it;
3. each thought gets a failure score: the trace's own per-step signal when the thought is one trace step,
   otherwise recomputed with :class:`StepSignalComputer` from the teacher-forced states and logits;
4. the rank filter keeps execution thoughts scoring at most the ``band`` quantile and reflection/transition
   thoughts scoring at least the ``1 - band`` quantile of all thoughts' scores (``filter="none"``: all);
5. ``v_L = mean(kept execution states) - mean(kept reflection/transition states)`` per steering layer L,
   stored raw as ``direction.L`` (the layer it was measured at; see :func:`.cvec_io.direction_for_layer`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import RuntimeConfig, bounded, from_mapping, same_as, validate
from ..engine.prompts import chat_tokens, prompt_for
from ..errors import ConfigError, ContextOverflowError, DatasetError, InvalidInputError, LayerIndexError
from ..records import load_record_file, trace_text
from ..signals.step import SignalConfig, StepSignalComputer
from ..signals.text import TokenStats
from ._thoughts import (
    CLASSES,
    EXECUTION,
    REFLECTION_WORDS,
    TRANSITION_WORDS,
    Classifier,
    Thought,
    band_keep,
    failure_bands,
    mean_difference,
    split_thoughts,
)
from .cvec_io import ControlVector, direction_for_layer

#: the rank filter's default signal: the windowed normalised effective rank of the last signal layer, whose
#: low values (rank collapse) go with failure (docs/BENCHMARKS.md); a pure hidden-state signal, unlike
#: ``fail.route``, which counts revalidation keywords and so marks reflection thoughts by construction
DEFAULT_SIGNAL = "rank.eff_norm.Llast.win"


@dataclass(frozen=True)
class ExtractConfig:
    """Every knob of steering-vector extraction (build from a mapping with :meth:`from_mapping`)."""

    layers: str = bounded("mid", help="steering layers, 0-based and >= 1: mid (n_layer // 2), or a list like 12, "
                                      "10,12,14 or 10-14")
    filter: str = bounded("rank", choices=("rank", "none"),
                          help="rank: keep healthy execution and failing reflection/transition thoughts (a band "
                               "filter on the signal); none: keep every thought (SEAL)")
    signal: str = bounded(DEFAULT_SIGNAL, help="step signal the rank filter reads (any trace step key works, e.g. "
                                               "fail.route; 'Llast' stands for the last signal layer, e.g. L23)")
    fail_side: str = bounded("auto", choices=("auto", "high", "low"),
                             help="which end of the signal means failure; auto: low for rank.* keys, else high")
    band: float = bounded(0.5, lo=0.01, hi=1.0,
                          help="quantile band: execution kept at <= q(band), others at >= q(1 - band)")
    signal_source: str = bounded("auto", choices=("auto", "trace", "compute"),
                                 help="where thought scores come from: trace (the trace's step signals only), "
                                      "compute (recomputed always) or auto (the trace's when every thought is one "
                                      "trace step, else recomputed)")
    anchor: str = bounded("end", choices=("end", "start"),
                          help="state of the delimiter ending each thought (end) or of the one before it (start)")
    head_chars: int = bounded(0, lo=0, hi=1_000_000, help="classify on the first N characters only; 0 = all")
    reflection_words: tuple[str, ...] = bounded(REFLECTION_WORDS, help="reflection phrases")
    transition_words: tuple[str, ...] = bounded(TRANSITION_WORDS, help="transition phrases")
    min_per_group: int = bounded(1, lo=1, hi=1_000_000,
                                 help="kept execution and kept reflection+transition thoughts needed at least")
    n_ctx: int = same_as(RuntimeConfig, "n_ctx", help="context window in tokens (tracing and teacher forcing)")
    n_batch: int = same_as(RuntimeConfig, "n_batch")
    logits_chunk: int = bounded(64, lo=1, hi=4096, help="tokens per decode when every row's logits are needed")
    n_threads: int = same_as(RuntimeConfig, "n_threads")
    n_gpu_layers: int = same_as(RuntimeConfig, "n_gpu_layers")

    def __post_init__(self) -> None:
        for name in ("reflection_words", "transition_words"):
            words = getattr(self, name)
            if isinstance(words, str) or not all(isinstance(w, str) for w in words):
                raise ConfigError(f"ExtractConfig.{name} must be a list of strings")
            object.__setattr__(self, name, tuple(words))
        if not self.signal:
            raise ConfigError(f"ExtractConfig.signal is empty; use e.g. {DEFAULT_SIGNAL} or fail.route")
        validate(self)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, **overrides: Any) -> ExtractConfig:
        return from_mapping(cls, data, **overrides)

    def runtime(self) -> RuntimeConfig:
        return RuntimeConfig(n_ctx=self.n_ctx, n_batch=self.n_batch, n_threads=self.n_threads,
                             n_gpu_layers=self.n_gpu_layers)

    def resolved(self, signal_layers: Sequence[int]) -> ExtractConfig:
        """This config with ``Llast`` in ``signal`` replaced by the last of ``signal_layers`` (``L23`` for the
        default SRM's traces) and ``fail_side`` ``auto`` made explicit (low for ``rank.*`` signals)."""
        signal = self.signal.replace(".Llast.", f".L{max(signal_layers)}.") if signal_layers else self.signal
        side = self.fail_side if self.fail_side != "auto" else ("low" if signal.startswith("rank.") else "high")
        return dataclasses.replace(self, signal=signal, fail_side=side)

    def classifier(self) -> Classifier:
        return Classifier(self.reflection_words, self.transition_words, self.head_chars)


def check_steering_layers(spec: str) -> str:
    """``spec`` if it is ``mid`` or a layer list in :func:`steering_layers`' syntax (checked before a model is
    loaded; the range is checked by :func:`steering_layers` against the model)."""
    from ..engine.layers import check_layer_spec

    return check_layer_spec(spec, extra_words=("mid",))


def steering_layers(spec: str | Sequence[int], n_layer: int) -> list[int]:
    """0-based steering layers from ``"mid"`` or a layer list; each must be steerable (``1..n_layer-1``)."""
    from ..engine.layers import parse_layer_spec

    if n_layer < 2:
        raise LayerIndexError(f"a {n_layer}-layer model has no steerable layer (layer 0 cannot be steered)")
    if isinstance(spec, str) and spec.strip().lower() == "mid":
        return [max(1, n_layer // 2)]
    layers = parse_layer_spec(spec, n_layer)
    if 0 in layers:
        raise LayerIndexError(f"layer 0 cannot be steered (llama.cpp adds direction.N to layers 1..{n_layer - 1}):"
                              " pick layers from 1")
    return layers


@dataclass
class ThoughtRow:
    """One thought seen by the extraction: where it came from, its class, score and fate."""

    problem: str
    index: int
    kind: str
    score: float | None
    source: str
    kept: bool
    token: int


@dataclass
class ExtractReport:
    """What an extraction did. ``thoughts[class] = {"total", "kept", "dropped"}``; ``norms`` by 0-based layer;
    ``state_norms``: the median norm of every thought's state at that layer, kept or not -- the typical size of
    a state there, whatever the filter (scale ``a`` adds ``a * norms[L] / state_norms[L]`` of it).

    ``shared_token`` counts thoughts dropped because their delimiter token was the previous thought's (no state
    of their own; they are in ``thoughts`` as dropped). ``threshold_execution``/``threshold_other`` are the band
    edges in the signal's own units: with
    ``fail_side="high"`` execution thoughts are kept at ``<= threshold_execution`` and the others at
    ``>= threshold_other``; with ``"low"`` the comparisons flip.
    """

    problems: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    thoughts: dict[str, dict[str, int]] = field(
        default_factory=lambda: {c: {"total": 0, "kept": 0, "dropped": 0} for c in CLASSES})
    unscored: int = 0
    shared_token: int = 0
    signal_sources: dict[str, int] = field(default_factory=lambda: {"trace": 0, "computed": 0})
    filter: str = "rank"
    signal: str = DEFAULT_SIGNAL
    fail_side: str = "low"
    band: float = 0.5
    threshold_execution: float | None = None
    threshold_other: float | None = None
    anchor: str = "end"
    layers: list[int] = field(default_factory=list)
    directions: list[int] = field(default_factory=list)
    norms: dict[int, float] = field(default_factory=dict)
    state_norms: dict[int, float] = field(default_factory=dict)
    n_embd: int = 0
    model_hint: str = ""
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["norms"] = {str(k): v for k, v in self.norms.items()}
        return d


@dataclass
class ExtractResult:
    """The vector, the report and one row per thought (``table``)."""

    vector: ControlVector
    report: ExtractReport
    table: list[ThoughtRow]


# ---------------------------------------------------------------------------------------------- trace input


def read_traces(path: str | os.PathLike[str], *, limit: int | None = None, offset: int = 0,
                ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Trace records of a JSONL file (``rankguide-edge trace`` output, read by
    :func:`rankguide_edge.records.load_record_file`), in file order.

    ``ids`` keeps only those ids (in file order); ``offset``/``limit`` then cut the list. A torn last line
    (a writer killed mid-line) is ignored; any other malformed line is a :class:`DatasetError`.
    """
    out = load_record_file(path, "trace", error=DatasetError).records
    if ids is not None:
        wanted = {str(i) for i in ids}
        out = [rec for rec in out if str(rec.get("id")) in wanted]
    out = out[offset:]
    return out[:limit] if limit is not None else out


def _trace_scores(rec: Mapping[str, Any], thoughts: Sequence[Thought], signal: str) -> list[float | None]:
    """The trace's per-step ``signal`` for each thought that is exactly one trace step (else None)."""
    by_span: dict[tuple[int, int], float | None] = {}
    pos = 0
    for s in rec.get("steps") or []:
        text = str(s.get("text", ""))
        value = (s.get("signals") or {}).get(signal)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            value = None
        by_span[(pos, pos + len(text))] = None if value is None else float(value)
        pos += len(text)
    return [by_span.get((t.start, t.end)) for t in thoughts]


# ------------------------------------------------------------------------------------------ teacher forcing


@dataclass
class _Forced:
    """One teacher-forced trace: generated-token states per tapped layer ``(n_gen, n_embd)``, the prompt's
    last-row state per layer ``(n_embd,)``, delimiter token per thought, and (when asked) token stats."""

    hidden: dict[int, np.ndarray]
    prompt_last: dict[int, np.ndarray]
    delim_tokens: list[int]
    entropy: np.ndarray | None = None
    top_logprobs: np.ndarray | None = None
    pieces: list[str] = field(default_factory=list)


class _Skip(Exception):
    """A trace that cannot be used; ``reason`` goes to the report."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _teacher_force(model: Any, ctx: Any, rec: Mapping[str, Any], text: str, thoughts: Sequence[Thought],
                   need_stats: bool) -> _Forced:
    question = str(rec.get("question") or "")
    kind = str(rec.get("kind") or "generic")
    if not question:
        raise _Skip("no_question")
    prompt = chat_tokens(model, prompt_for(question, kind))
    gen = model.tokenize(text, add_special=False)
    pieces = [model.piece(t) for t in gen]
    full, tb = b"".join(pieces), text.encode("utf-8")
    if not gen or not full.endswith(tb):
        raise _Skip("misaligned")
    ends = np.cumsum([len(p) for p in pieces]) - (len(full) - len(tb))  # byte end of each token in text
    delim = [int(np.searchsorted(ends, len(text[: t.end].encode("utf-8")), side="left")) for t in thoughts]
    gen = gen[: max(delim) + 1]  # nothing after the last thought's delimiter is needed
    if len(prompt) + len(gen) > ctx.n_ctx:
        raise _Skip("too_long")
    ctx.reset()
    try:
        states = ctx.eval(prompt, logits="last")
    except ContextOverflowError:
        raise _Skip("too_long") from None
    prompt_last = {il: s[-1].copy() for il, s in states.items()}
    forced = _Forced(hidden={}, prompt_last=prompt_last, delim_tokens=delim)
    if need_stats or (model.n_layer - 1) in ctx.layers:
        # every row's logits are needed (token statistics; the last layer's rows exist only where logits do)
        forced.entropy, forced.top_logprobs, forced.hidden = ctx.teacher_force(gen, chunk=ctx.n_batch)
        forced.pieces = [p.decode("utf-8", "replace") for p in pieces[: len(gen)]]
    else:
        forced.hidden = ctx.eval(gen, logits="last")
    return forced


def _computed_scores(forced: _Forced, thoughts: Sequence[Thought], signal_layers: Sequence[int],
                     signal_cfg: SignalConfig, signal: str) -> list[float | None]:
    """Recompute every thought's signals (thoughts as steps, in order) from the teacher-forced pass."""
    assert forced.entropy is not None and forced.top_logprobs is not None
    computer = StepSignalComputer(signal_cfg)
    out: list[float | None] = []
    prev = -1
    for t, d in zip(thoughts, forced.delim_tokens, strict=True):
        if d <= prev:
            out.append(None)
            continue
        sl = slice(prev + 1, d + 1)
        stats = TokenStats(forced.entropy[sl], forced.top_logprobs[sl], tuple(forced.pieces[sl]))
        sig = computer.compute({il: forced.hidden[il][sl] for il in signal_layers}, stats, t.text)
        if signal not in sig:
            raise ConfigError(f"signal {signal!r} is not computed from layers {list(signal_layers)}; use one of "
                              f"fail.route, fail.uncertainty, ... or a rank key of those layers")
        v = float(sig[signal])
        out.append(v if math.isfinite(v) else None)
        prev = d
    return out


# ------------------------------------------------------------------------------------------------ the run


def _signal_layers(records: Sequence[Mapping[str, Any]], n_layer: int) -> list[int]:
    from ..engine.layers import parse_layer_spec

    for rec in records:
        layers = rec.get("layers")
        if isinstance(layers, list) and layers and all(isinstance(i, int) and 0 <= i < n_layer for i in layers):
            return sorted(set(layers))
    return parse_layer_spec("auto", n_layer)


def extract_steering_vector(model: Any, records: Sequence[Mapping[str, Any]], cfg: ExtractConfig | None = None, *,
                            signal_cfg: SignalConfig | None = None, model_name: str = "",
                            progress: Callable[[Mapping[str, Any]], None] | None = None) -> ExtractResult:
    """Build a steering vector for ``model`` from trace ``records`` (see the module docstring).

    Returns the :class:`ControlVector` (``direction.L`` float32 ``(n_embd,)`` per steering layer L), the
    :class:`ExtractReport` and one :class:`ThoughtRow` per thought. Raises InvalidInputError when, after
    filtering, fewer than ``min_per_group`` execution or reflection/transition thoughts remain.
    """
    records = list(records)
    cfg = (cfg or ExtractConfig()).resolved(_signal_layers([r for r in records if not r.get("error")], model.n_layer))
    signal_cfg = signal_cfg or SignalConfig()
    t0 = time.perf_counter()
    layers = steering_layers(cfg.layers, model.n_layer)
    classify = cfg.classifier()
    report = ExtractReport(filter=cfg.filter, signal=cfg.signal, fail_side=cfg.fail_side, band=cfg.band,
                           anchor=cfg.anchor, layers=layers, n_embd=model.n_embd, model_hint=model.arch)

    def skip(reason: str, rec: Mapping[str, Any] | None = None) -> None:
        report.skipped[reason] = report.skipped.get(reason, 0) + 1
        if rec is not None and progress:
            progress(rec)

    # pass 1 (text only): thoughts, classes, and whether the trace's own signals cover them
    plan: list[tuple[Mapping[str, Any], str, list[Thought], list[float | None], bool]] = []
    for rec in records:
        if rec.get("error"):
            skip("trace_error", rec)
            continue
        text = trace_text(rec)
        thoughts = split_thoughts(text, signal_cfg.delimiter, classify)
        if not thoughts:
            skip("no_thoughts", rec)
            continue
        scores: list[float | None] = [None] * len(thoughts)
        compute = False
        if cfg.filter == "rank":
            if cfg.signal_source != "compute":
                scores = _trace_scores(rec, thoughts, cfg.signal)
            compute = cfg.signal_source == "compute" or (cfg.signal_source == "auto" and None in scores)
        plan.append((rec, text, thoughts, scores, compute))
    any_compute = any(p[4] for p in plan)
    sig_layers = _signal_layers([p[0] for p in plan], model.n_layer) if any_compute else []
    tap = sorted(set(layers) | set(sig_layers))
    if model_name:
        names = {str(p[0].get("model")) for p in plan if p[0].get("model")}
        if names and names != {model_name}:
            report.warnings.append(f"traces were written by {sorted(names)}, states come from {model_name}")

    # pass 2: teacher forcing, states and scores
    states: dict[int, list[np.ndarray]] = {il: [] for il in layers}
    table: list[ThoughtRow] = []
    shared = dict.fromkeys(CLASSES, 0)  # thoughts whose delimiter token is a previous thought's: no own state
    runtime = cfg.runtime()
    if any_compute or (model.n_layer - 1) in tap:  # every row's logits: decode in small chunks (n_vocab floats each)
        runtime = dataclasses.replace(runtime, n_batch=min(cfg.n_batch, cfg.logits_chunk))
    if any(p[0].get("steer") for p in plan):
        report.warnings.append("some traces were generated with steering; their states are re-read unsteered")
    with model.context(runtime, tap_layers=tap) as ctx:
        for n_rec, (rec, text, thoughts, scores, compute) in enumerate(plan):
            pid = str(rec.get("id", f"#{n_rec}"))
            try:
                forced = _teacher_force(model, ctx, rec, text, thoughts, compute)
            except _Skip as exc:
                skip(exc.reason, rec)
                continue
            source = "trace"
            if compute:
                scores = _computed_scores(forced, thoughts, sig_layers, signal_cfg, cfg.signal)
                source = "computed"
            if cfg.filter == "rank":
                report.signal_sources[source] += 1
            report.problems += 1
            prev = -1
            for t, d, s in zip(thoughts, forced.delim_tokens, scores, strict=True):
                if d <= prev or d >= len(forced.hidden[layers[0]]):
                    shared[t.kind] += 1
                    continue
                row = prev if cfg.anchor == "start" else d
                for il in layers:
                    states[il].append(forced.hidden[il][row] if row >= 0 else forced.prompt_last[il])
                table.append(ThoughtRow(problem=pid, index=t.index, kind=t.kind, score=s,
                                        source=source if cfg.filter == "rank" else "none", kept=True, token=d))
                prev = d
            if progress:
                progress(rec)

    kinds = [r.kind for r in table]
    if cfg.filter == "rank":
        raw = np.array([np.nan if r.score is None else r.score for r in table], dtype=np.float64)
        oriented = raw if cfg.fail_side == "high" else -raw
        bands = failure_bands(oriented, cfg.band)
        keep = band_keep(kinds, oriented, bands)
        report.unscored = int((~np.isfinite(raw)).sum())
        if bands.n_scored:
            lo, hi = bands.keep_below, bands.keep_above
            report.threshold_execution = lo if cfg.fail_side == "high" else -lo
            report.threshold_other = hi if cfg.fail_side == "high" else -hi
    else:
        keep = np.ones(len(table), dtype=bool)
    for r, k in zip(table, keep, strict=True):
        r.kept = bool(k)
        c = report.thoughts[r.kind]
        c["total"] += 1
        c["kept" if k else "dropped"] += 1
    for kind, n in shared.items():  # counted as dropped, so kept + dropped = every thought seen
        report.thoughts[kind]["total"] += n
        report.thoughts[kind]["dropped"] += n
    report.shared_token = sum(shared.values())
    n_exec = report.thoughts[EXECUTION]["kept"]
    n_other = sum(report.thoughts[c]["kept"] for c in CLASSES if c != EXECUTION)
    if n_exec < cfg.min_per_group or n_other < cfg.min_per_group:
        total = {c: report.thoughts[c]["total"] for c in CLASSES}
        raise InvalidInputError(
            f"after filtering {n_exec} execution and {n_other} reflection/transition thoughts remain (need "
            f"{cfg.min_per_group} each; seen {total}): use more problems, --filter none or a wider --band")

    directions: dict[int, np.ndarray] = {}
    for il in layers:
        v = mean_difference(np.stack(states[il]), kinds, keep)
        directions[direction_for_layer(il)] = v
        report.norms[il] = float(np.linalg.norm(v.astype(np.float64)))
        report.state_norms[il] = float(np.median(np.linalg.norm(np.stack(states[il]).astype(np.float64), axis=1)))
    report.directions = sorted(directions)
    report.seconds = round(time.perf_counter() - t0, 3)
    meta: dict[str, Any] = {
        "rankguide.kind": "steering", "rankguide.method": "mean(execution) - mean(reflection+transition)",
        "rankguide.source_model": model_name or os.path.basename(getattr(model, "path", "")),
        "rankguide.source_layers": ",".join(map(str, layers)),
        "rankguide.layer_convention": "direction.N is added to l_out-N, the output of 0-based layer N",
        "rankguide.filter": cfg.filter, "rankguide.anchor": cfg.anchor, "rankguide.problems": report.problems,
    }
    for il in layers:
        meta[f"rankguide.state_norm.{direction_for_layer(il)}"] = report.state_norms[il]
    if cfg.filter == "rank":
        meta.update({"rankguide.signal": cfg.signal, "rankguide.fail_side": cfg.fail_side,
                     "rankguide.band": float(cfg.band)})
    for kind in CLASSES:
        meta[f"rankguide.kept.{kind}"] = report.thoughts[kind]["kept"]
        meta[f"rankguide.total.{kind}"] = report.thoughts[kind]["total"]
    return ExtractResult(ControlVector(model.arch, directions, meta), report, table)
