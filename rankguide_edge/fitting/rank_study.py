"""Rank signals defined so that they can carry information, and the teacher-forced replay they are read from.

The shipped rank signals (:mod:`rankguide_edge.signals.rank`) cannot: 32 centred rows in 896 dimensions are
always of full numerical rank, four layers leave the layer-mode Tucker rank no room, and whole-step ranks
follow the step's length. Every definition here is computed on a **fixed-size window**, the last ``W`` rows of
a step (steps shorter than ``W`` give NaN: they are left out, never padded), so the number of rows a spectrum
is taken over is the same for every step:

* ``spec.h2.L{l}`` / ``spec.h1.L{l}``: the Rényi-2 / Shannon entropy of the window's energy spectrum at layer
  ``l`` (``p_i = λ_i / Σλ`` of the centred window's Gram matrix; ``h2 = -log Σ p_i²``,
  ``h1 = -Σ p_i log p_i``), kept at every layer as a depth profile, with its summaries ``spec.h2.mean``,
  ``spec.h2.slope`` (least-squares slope over depth scaled to [0, 1]) and ``spec.h2.argmin`` (the layer of
  the lowest entropy, as a share of the depth);
* ``angle.cos2.L{l}``: the mean squared cosine of the ``k`` principal angles between the top-``k`` hidden-space
  subspaces of this step's window and the previous step's (for the first SRM step: the plan's rows, which the
  SRM reads), 1 for identical subspaces, about ``k / d`` for random ones; ``angle.cos2.mean`` over layers;
* ``tensor.erank.{layer,token,hidden}``: the effective rank ``exp(h1)`` of each unfolding of the token × layer ×
  hidden tensor of the window over **all** layers, every layer slice centred over tokens and scaled to unit
  Frobenius norm (so the layer mode measures how many distinct layer patterns there are, from 1 to ``L``);
* the probe (:mod:`.rank_study_eval`) reads each step's mean row at several depths (``pooled`` in the cache).

:func:`replay_labels` teacher-forces the stored steps of label records through the SRM with every layer tapped
(no generation: the prompt, then each step's tokens in order, in batches of at most 32 tokens, as
:mod:`.replay` does) and caches per problem the last ``keep_rows`` rows of every step at every layer (float16)
and every step's mean row at every layer, so the definitions can be recomputed without the model.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInputError

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.context import Context
    from ..engine.model import Model

#: most tokens fed per llama.cpp batch (as teacher forcing does, so the rows round like generation)
REPLAY_CHUNK = 32
CACHE_VERSION = 1


# ------------------------------------------------------------------------------------------------ definitions


def last_window(rows: np.ndarray, window: int) -> np.ndarray | None:
    """The last ``window`` token rows of ``rows`` (``(..., n, d)``, tokens on axis -2) as float64, or None when
    the step has fewer rows: a window is never padded or shortened, so every spectrum has the same size."""
    if rows.shape[-2] < window:
        return None
    return np.asarray(rows[..., rows.shape[-2] - window:, :], dtype=np.float64)


def centred(x: np.ndarray) -> np.ndarray:
    """``x`` (``(..., n, d)``) minus its mean over tokens (axis -2), non-finite entries set to 0 first."""
    x = np.where(np.isfinite(x), x, 0.0)
    return x - x.mean(axis=-2, keepdims=True)


def _spectrum(gram: np.ndarray) -> np.ndarray:
    """Eigenvalues (``(..., n)``, descending, clipped at 0, round-off below ``1e-12·λ_max`` set to 0)."""
    lam = np.linalg.eigvalsh(gram)[..., ::-1]
    lam = np.clip(lam, 0.0, None)
    top = lam[..., :1]
    return np.where(lam > 1e-12 * top, lam, 0.0)


def spectral_entropies(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(h1, h2)``: Shannon and Rényi-2 entropies (nats) of the energy spectrum of each centred window in ``x``
    (``(..., n, d)``): ``p = λ / Σλ`` of ``X_c X_cᵀ``. ``k`` equal singular values give ``log k`` for both; a
    window with no energy gives NaN."""
    xc = centred(x)
    lam = _spectrum(np.einsum("...td,...sd->...ts", xc, xc))
    tot = lam.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = lam / tot
        h1 = -np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(axis=-1)
        h2 = -np.log((p * p).sum(axis=-1))
    bad = tot[..., 0] <= 0
    return np.where(bad, np.nan, h1), np.where(bad, np.nan, h2)


def effective_rank(lam: np.ndarray) -> float:
    """``exp(h1)`` of the distribution ``λ / Σλ`` (an energy spectrum): ``k`` equal values give ``k``; NaN when
    there is no energy."""
    lam = np.clip(np.asarray(lam, np.float64), 0.0, None)
    tot = float(lam.sum())
    if not tot > 0:
        return math.nan
    p = lam[lam > 0] / tot
    return float(np.exp(-(p * np.log(p)).sum()))


def principal_cosines(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """Cosines (descending, ``(..., k)``) of the principal angles between the top-``k`` right singular
    subspaces (in hidden space) of the centred windows ``a`` and ``b`` (``(..., n, d)`` each, any ``n``).
    NaN when either window spans fewer than ``k`` directions."""
    ac, bc = centred(a), centred(b)
    bases = []
    for xc in (ac, bc):
        lam, u = np.linalg.eigh(np.einsum("...td,...sd->...ts", xc, xc))
        lam, u = lam[..., ::-1][..., :k], u[..., :, ::-1][..., :, :k]
        ok = lam > 1e-10 * np.maximum(lam[..., :1], 1e-300)
        sig = np.sqrt(np.where(ok, lam, 1.0))
        bases.append((u / sig[..., None, :], ok.all(axis=-1)))
    (ua, oka), (ub, okb) = bases
    # V_a = A_cᵀ U_a Σ_a⁻¹, so V_aᵀ V_b = Σ_a⁻¹ U_aᵀ (A_c B_cᵀ) U_b Σ_b⁻¹: only small Gram products
    m = np.einsum("...tk,...ts,...sj->...kj", ua, np.einsum("...td,...sd->...ts", ac, bc), ub)
    cos = np.clip(np.linalg.svd(m, compute_uv=False), 0.0, 1.0)
    return np.where((oka & okb)[..., None], cos, np.nan)


def subspace_overlap(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """Mean ``cos²`` of the ``k`` principal angles of :func:`principal_cosines`: 1 for the same subspace, 0 for
    orthogonal ones, about ``k / d`` for random ones."""
    return (principal_cosines(a, b, k) ** 2).mean(axis=-1)


def tensor_eranks(x: np.ndarray) -> dict[str, float]:
    """Effective ranks of the three unfoldings of the tensor ``x`` (``(L, n, d)``: layers × tokens × hidden),
    each layer slice centred over tokens and scaled to unit Frobenius norm. ``layer``: the ``L × (n·d)``
    unfolding (1 when every layer's window is the same up to scale, ``L`` when they are orthogonal);
    ``token``: ``n × (L·d)`` (at most ``n − 1`` after centring); ``hidden``: ``d × (L·n)``."""
    xc = centred(np.asarray(x, np.float64))
    norms = np.sqrt((xc * xc).sum(axis=(1, 2)))
    if not (norms > 0).all():
        return {"layer": math.nan, "token": math.nan, "hidden": math.nan}
    xs = xc / norms[:, None, None]
    n_l, n, _ = xs.shape
    g_layer = np.einsum("ltd,mtd->lm", xs, xs)
    g_token = np.einsum("ltd,lsd->ts", xs, xs)
    flat = xs.reshape(n_l * n, -1)
    g_hidden = flat @ flat.T
    return {"layer": effective_rank(_spectrum(g_layer)), "token": effective_rank(_spectrum(g_token)),
            "hidden": effective_rank(_spectrum(g_hidden))}


def depth_slope(values: np.ndarray) -> float:
    """Least-squares slope of ``values`` (one per layer, in layer order) against depth scaled to [0, 1]."""
    v = np.asarray(values, np.float64)
    if len(v) < 2 or not np.isfinite(v).all():
        return math.nan
    t = np.linspace(0.0, 1.0, len(v))
    t = t - t.mean()
    return float((t * (v - v.mean())).sum() / (t * t).sum())


@dataclass(frozen=True)
class Definitions:
    """The knobs of the new definitions (the study's defaults were chosen on the train labels)."""

    window: int = 16          #: W: rows of every window (the step's last W tokens)
    angle_k: int = 4          #: principal angles compared per pair of windows
    #: layers whose overlap / h2 enter the models (plus the mean / the slope); () = the model's ``auto`` layers
    #: (four evenly spaced ones ending at the last: 5, 11, 17, 23 of the default SRM's 24)
    angle_layers: tuple[int, ...] = ()
    spec_layers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.window < 3 or self.angle_k < 1 or self.angle_k > self.window - 1:
            raise InvalidInputError(f"window {self.window} / angle k {self.angle_k}: need window >= 3 and "
                                    "1 <= k <= window - 1")


def step_definitions(rows: np.ndarray, prev: np.ndarray | None, layers: Sequence[int],
                     defs: Definitions) -> dict[str, float]:
    """Every new signal of one step from its rows (``(L, n, d)``, all tapped ``layers``, last rows of the step)
    and the previous step's (or None): NaN where the step (or the previous step, for angles) is shorter than
    the window."""
    out: dict[str, float] = {}
    n_l = len(layers)
    win = last_window(rows, defs.window)
    pwin = last_window(prev, defs.window) if prev is not None else None
    if win is None:
        h1 = h2 = np.full(n_l, np.nan)
    else:
        h1, h2 = spectral_entropies(win)
    for j, il in enumerate(layers):
        out[f"spec.h2.L{il}"] = float(h2[j])
        out[f"spec.h1.L{il}"] = float(h1[j])
    out["spec.h2.mean"] = float(np.mean(h2)) if np.isfinite(h2).all() else math.nan
    out["spec.h1.mean"] = float(np.mean(h1)) if np.isfinite(h1).all() else math.nan
    out["spec.h2.slope"] = depth_slope(h2)
    out["spec.h2.argmin"] = (float(layers[int(np.argmin(h2))]) / max(1, layers[-1])
                             if np.isfinite(h2).all() else math.nan)
    cos2 = (subspace_overlap(win, pwin, defs.angle_k) if win is not None and pwin is not None
            else np.full(n_l, np.nan))
    for j, il in enumerate(layers):
        out[f"angle.cos2.L{il}"] = float(cos2[j])
    out["angle.cos2.mean"] = float(np.mean(cos2)) if np.isfinite(cos2).all() else math.nan
    tr = tensor_eranks(win) if win is not None else {"layer": math.nan, "token": math.nan, "hidden": math.nan}
    for mode, v in tr.items():
        out[f"tensor.erank.{mode}"] = v
    return out


# ------------------------------------------------------------------------------------------------ replay


@dataclass
class ReplayedProblem:
    """What the cache holds for one problem (every step of its record, the LRM's plan included)."""

    layers: np.ndarray        # int (L,)
    sources: list[str]        # per step: "lrm" / "srm"
    n_tokens: np.ndarray      # int (S,): tokens fed for the step
    tails: list[np.ndarray]   # per step: float16 (L, min(n, keep_rows), d), the step's last rows
    pooled: np.ndarray        # float32 (S, L, d): the step's mean row at every layer (NaN for an empty step)
    digest: str


def step_tokens(model: Model, step: dict[str, Any]) -> list[int]:
    """The tokens the SRM read for a stored step: its recorded ``token_ids`` (an SRM step of a newer label
    file), else its text tokenised as the live loop tokenises an LRM step."""
    ids = step.get("token_ids")
    if step.get("source") == "srm" and isinstance(ids, list) and ids:
        return [int(t) for t in ids]
    text = step.get("text") or ""
    return model.tokenize(text) if text else []


def _safe_name(pid: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", pid)[:80]
    return f"{stem}-{hashlib.sha1(pid.encode('utf-8')).hexdigest()[:8]}"


def cache_file(cache_dir: str | os.PathLike[str], problem_id: str) -> Path:
    return Path(cache_dir) / f"{_safe_name(str(problem_id))}.npz"


def model_id(path: str | os.PathLike[str]) -> str:
    """A GGUF file as the cache names it: its file name and size (another model's rows are never reused)."""
    p = Path(path)
    return f"{p.name} ({p.stat().st_size if p.exists() else 0} bytes)"


def record_digest(record: dict[str, Any], srm: str, keep_rows: int) -> str:
    """The cache key of a label record's replay: what is fed (question, kind, every step's source, text and
    token ids), the SRM (:func:`model_id`) and ``keep_rows``; computed without loading the model."""
    steps = [[st.get("source"), st.get("text"), st.get("token_ids") if st.get("source") == "srm" else None]
             for st in record.get("steps") or []]
    key = [CACHE_VERSION, srm, keep_rows, record.get("question"), record.get("kind"), steps]
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()


def feed_plan(model: Model, record: dict[str, Any]) -> tuple[list[int], list[list[int]]]:
    """``(prompt tokens, per-step tokens)`` a replay of a label record feeds: the chat prompt exactly as
    ``label`` built it, then each step's tokens (:func:`step_tokens`)."""
    from ..engine.prompts import chat_tokens, prompt_for

    question, kind = record.get("question"), record.get("kind") or "generic"
    if not isinstance(question, str) or not question:
        raise InvalidInputError(f"label record {record.get('id')!r} has no question: re-run label")
    prompt = chat_tokens(model, prompt_for(question, kind))
    return prompt, [step_tokens(model, st) for st in record.get("steps") or []]


def replay_problem(model: Model, ctx: Context, record: dict[str, Any], keep_rows: int) -> ReplayedProblem:
    """Teacher-force one label record through ``ctx`` (tapped on every layer it should read): the prompt, then
    each step's tokens in order, in batches of at most :data:`REPLAY_CHUNK` tokens (all logits, so the last
    layer yields every row). Raises ContextOverflowError when the record does not fit the context."""
    layers = list(ctx.layers)
    prompt, toks = feed_plan(model, record)
    digest = record_digest(record, model_id(model.path), keep_rows)
    d = model.n_embd
    ctx.reset()
    ctx.eval(prompt, hidden=False)
    tails, pooled, sources = [], [], []
    for st, ids in zip(record.get("steps") or [], toks, strict=True):
        sources.append(str(st.get("source", "")))
        sums = np.zeros((len(layers), d), np.float64)
        kept: list[np.ndarray] = []
        for start in range(0, len(ids), REPLAY_CHUNK):
            hidden = ctx.eval(ids[start:start + REPLAY_CHUNK], logits="all")
            block = np.stack([hidden[il] for il in layers])  # (L, rows, d)
            sums += block.sum(axis=1, dtype=np.float64)
            kept.append(block)
            while len(kept) > 1 and sum(b.shape[1] for b in kept[1:]) >= keep_rows:
                kept.pop(0)
        allrows = np.concatenate(kept, axis=1) if kept else np.zeros((len(layers), 0, d), np.float32)
        tails.append(allrows[:, max(0, allrows.shape[1] - keep_rows):].astype(np.float16))
        pooled.append((sums / len(ids)).astype(np.float32) if ids else np.full((len(layers), d), np.nan, np.float32))
    return ReplayedProblem(np.array(layers), sources, np.array([len(t) for t in toks]), tails,
                           np.stack(pooled) if pooled else np.zeros((0, len(layers), d), np.float32), digest)


def save_replayed(path: str | os.PathLike[str], rp: ReplayedProblem) -> None:
    """Write one problem's cache (``.npz``, atomically: a run stopped mid-write leaves no half file)."""
    from ..files import atomic_path

    arrays: dict[str, Any] = {"layers": rp.layers, "n_tokens": rp.n_tokens, "pooled": rp.pooled,
                              "sources": np.array(rp.sources), "digest": np.array(rp.digest)}
    for j, t in enumerate(rp.tails):
        arrays[f"tail{j}"] = t
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def load_replayed(path: str | os.PathLike[str]) -> ReplayedProblem:
    with np.load(path, allow_pickle=False) as z:
        n = len(z["n_tokens"])
        return ReplayedProblem(z["layers"], [str(s) for s in z["sources"]], z["n_tokens"],
                               [z[f"tail{j}"] for j in range(n)], z["pooled"], str(z["digest"]))


def missing_replays(records: Iterable[dict[str, Any]], cache_dir: str | os.PathLike[str], srm: str,
                    keep_rows: int = 64) -> list[str]:
    """Ids of the records (with steps, not errored) whose cache is missing or stale, without loading a model."""
    return [str(r["id"]) for r in records if not r.get("error") and r.get("steps")
            and cached_digest(cache_file(cache_dir, str(r["id"]))) != record_digest(r, srm, keep_rows)]


def cached_digest(path: Path) -> str | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return str(z["digest"])
    except (OSError, ValueError, KeyError):
        return None


@dataclass
class ReplaySummary:
    replayed: int = 0
    cached: int = 0
    skipped: int = 0          # records without steps, errored, or too long for the context
    seconds: float = 0.0
    tokens: int = 0


def replay_labels(model: Model, records: Iterable[dict[str, Any]], cache_dir: str | os.PathLike[str], *,
                  keep_rows: int = 64, n_ctx: int = 4096, n_threads: int = 0, limit: int | None = None,
                  progress: Callable[[str], None] | None = None) -> ReplaySummary:
    """Replay every record whose cache is missing or stale (another model, other tokens), writing one ``.npz``
    per problem as it goes, so a stopped run resumes. ``limit`` caps the problems replayed in this call."""
    from ..config import RuntimeConfig
    from ..errors import ContextOverflowError

    layers = list(range(model.n_layer))
    srm = model_id(model.path)
    s = ReplaySummary()
    t0 = time.perf_counter()
    with model.context(RuntimeConfig(n_ctx=n_ctx, n_threads=n_threads), tap_layers=layers) as ctx:
        for rec in records:
            if rec.get("error") or not rec.get("steps"):
                s.skipped += 1
                continue
            path = cache_file(cache_dir, str(rec["id"]))
            if path.exists() and cached_digest(path) == record_digest(rec, srm, keep_rows):
                s.cached += 1
                continue
            if limit is not None and s.replayed >= limit:
                continue
            try:
                rp = replay_problem(model, ctx, rec, keep_rows)
            except ContextOverflowError:
                s.skipped += 1
                continue
            save_replayed(path, rp)
            s.replayed += 1
            s.tokens += int(rp.n_tokens.sum())
            if progress:
                progress(str(rec["id"]))
    s.seconds = round(time.perf_counter() - t0, 2)
    return s


__all__ = ["Definitions", "ReplaySummary", "ReplayedProblem", "cache_file", "cached_digest", "centred",
           "depth_slope", "effective_rank", "feed_plan", "last_window", "load_replayed", "missing_replays",
           "model_id", "principal_cosines", "record_digest", "replay_labels", "replay_problem", "save_replayed",
           "spectral_entropies", "step_definitions", "step_tokens", "subspace_overlap", "tensor_eranks"]
