"""Latency model: a run's token counts priced under a hardware profile.

Every bench record carries how much work each model did, by kind (:class:`TokenCounts`):

* ``srm_decode`` -- SRM forward passes that produced a token (drafted, kept or thrown away);
* ``srm_prefill`` -- further tokens fed to the SRM in batches (the prompt, LRM steps appended, catch-up);
* ``lrm_decode`` -- LRM forward passes that produced a token (for ``specdec`` one per verify batch);
* ``lrm_prefill`` -- further tokens fed to the LRM in batches (prompt, text written by the SRM since its last
  call, judge prompts, the extra rows of a ``specdec`` verify batch);
* ``lrm_calls`` -- LRM round trips (step requests, judge ratings, ``specdec`` verify batches and prefill).

A :class:`HardwareProfile` gives per model a decode rate, a prefill rate (tokens/s) and a cost per call
(seconds); a record's latency under it is ``sum(counts / rates) + calls * call_s + overhead``, where the
overhead is the record's measured time outside both models (signals, policy, bookkeeping) and is kept as
measured under every profile. A value ``None`` (``"measured"`` in a profile file) is taken from
:func:`fit_measured`: a non-negative least-squares fit, per model, of the seconds each record spent in that
model (``timing.srm``; ``timing.lrm`` + ``timing.judge``) on its counts -- SRM: ``seconds ~ a * decode + b *
prefill``; LRM: ``seconds ~ a * decode + b * prefill + c * calls``. The fit leaves out, and names, records
whose time in a model exceeds :data:`OUTLIER_RATIO` times what their work predicts plus
:data:`OUTLIER_FLOOR_S` (a process stopped or sharing the cores: one such record can move a least-squares
fit more than hundreds of clean ones), refitting until that set settles. The shipped profiles:

* ``measured`` -- everything fitted: reproduces the run's own latency (checked by :func:`profile_check`);
* ``laptop+gpu-server`` -- the SRM as measured; the LRM remote on a GPU server: 60 tok/s decode, 3000 tok/s
  prefill, 50 ms per call;
* ``rtx4090`` (and any entry of :data:`GPUS`) -- both models on one named consumer GPU, no call cost, each
  model's rates derived from its own GGUF size (:func:`gpu_rates`): decoding reads every weight once per
  token, so a token costs ``size / (efficiency * bandwidth)`` plus a fixed per-token overhead (kernel
  launches, synchronisation) fitted to a published llama.cpp result for a small model on that GPU; prefill
  is compute-bound and scaled by size from a published ``pp512`` result. Resolving it needs the run's model
  sizes (``run.json``); sources in docs/BENCHMARKING.md;
* ``gpu-large-ratio`` -- the paper's setting, not this project's default pair: both on one GPU, SRM 300
  tok/s decode and 6000 tok/s prefill, the LRM 6x slower per token (50 and 1000 tok/s), as for a 1.5B/32B
  pair; no call cost.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..config import bounded, from_mapping, validate
from ..errors import ConfigError
from ..files import read_mapping

MEASURED = "measured"

#: a record's time in one model above OUTLIER_RATIO x its predicted time + OUTLIER_FLOOR_S seconds is not fitted
OUTLIER_RATIO = 2.0
OUTLIER_FLOOR_S = 2.0

#: the shipped hardware profiles (values in tokens/s and seconds; "measured" = fitted from the run)
SHIPPED_PROFILES: dict[str, dict[str, Any]] = {
    "measured": {
        "description": "rates fitted from this run's own timings (NNLS of seconds on token counts per model)",
        "srm": {"decode_tok_s": MEASURED, "prefill_tok_s": MEASURED, "call_s": 0.0},
        "lrm": {"decode_tok_s": MEASURED, "prefill_tok_s": MEASURED, "call_s": MEASURED},
    },
    "laptop+gpu-server": {
        "description": "SRM local as measured; LRM on a remote GPU server: 60 tok/s decode, 3000 tok/s prefill, "
                       "50 ms per call",
        "srm": {"decode_tok_s": MEASURED, "prefill_tok_s": MEASURED, "call_s": 0.0},
        "lrm": {"decode_tok_s": 60.0, "prefill_tok_s": 3000.0, "call_s": 0.05},
    },
    "gpu-large-ratio": {
        "description": "a large pair on one GPU (the paper's 1.5B/32B-like setting, not the default pair): SRM "
                       "300 tok/s decode, LRM 6x slower per token, prefill 20x decode, no call cost",
        "srm": {"decode_tok_s": 300.0, "prefill_tok_s": 6000.0, "call_s": 0.0},
        "lrm": {"decode_tok_s": 50.0, "prefill_tok_s": 1000.0, "call_s": 0.0},
    },
}


@dataclass(frozen=True)
class TokenCounts:
    """The work of one record by model and kind (all ints >= 0); ``*_discarded`` are informational (already
    inside the decode/prefill counts)."""

    srm_decode: int = 0
    srm_prefill: int = 0
    lrm_decode: int = 0
    lrm_prefill: int = 0
    lrm_calls: int = 0
    srm_discarded: int = 0
    lrm_discarded: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def counts_of(rec: Mapping[str, Any]) -> TokenCounts:
    """The :class:`TokenCounts` of a bench record: its ``counts`` when present, else derived from ``usage``
    (records written before counts existed: SRM decode = ``srm_tokens``, LRM decode = ``lrm_tokens``, or
    ``lrm_verify_batches`` for specdec; judge calls and the LRM's step checks (``verify``) are LRM calls and
    prefill)."""
    stored = rec.get("counts")
    if isinstance(stored, Mapping):
        known = {f.name for f in fields(TokenCounts)}
        return TokenCounts(**{k: int(v) for k, v in stored.items() if k in known})
    u = rec.get("usage") or {}
    lrm_decode = u.get("lrm_verify_batches", u.get("lrm_tokens", 0))
    return TokenCounts(
        srm_decode=int(u.get("srm_tokens", 0)), srm_prefill=int(u.get("srm_prefill_tokens", 0)),
        lrm_decode=int(lrm_decode),
        lrm_prefill=int(u.get("lrm_prefill_tokens", 0)) + int(u.get("judge_prefill_tokens", 0))
        + int(u.get("lrm_check_prefill_tokens", 0)),
        lrm_calls=int(u.get("lrm_calls", 0)) + int(u.get("judge_calls", 0)) + int(u.get("lrm_checks", 0)),
        srm_discarded=int(u.get("srm_discarded_tokens", 0)), lrm_discarded=int(u.get("lrm_discarded_tokens", 0)))


def _record_key(rec: Mapping[str, Any]) -> tuple[str, str]:
    """``(id, method)``: how the fit names an outlier and how the check finds it again."""
    return str(rec.get("id")), str(rec.get("method"))


def model_seconds(rec: Mapping[str, Any]) -> tuple[float, float]:
    """Measured seconds of a record in the SRM and in the LRM (``timing.lrm`` + ``timing.judge`` +
    ``timing.lrm_check``)."""
    t = rec.get("timing") or {}
    lrm = float(t.get("lrm", 0.0)) + float(t.get("judge", 0.0)) + float(t.get("lrm_check", 0.0))
    return float(t.get("srm", 0.0)), lrm


def overhead_seconds(rec: Mapping[str, Any]) -> float:
    """A record's measured seconds outside both models (>= 0): signals, policy, bookkeeping."""
    srm_s, lrm_s = model_seconds(rec)
    return max(0.0, float(rec.get("seconds", 0.0)) - srm_s - lrm_s)


# ------------------------------------------------------------------------------------------------ profiles


@dataclass(frozen=True)
class DeviceRates:
    """How fast one model runs. ``None`` means "measured": taken from the run's fit."""

    decode_tok_s: float | None = bounded(None, lo=1e-6, hi=1e9, help="tokens/s, one token per forward pass")
    prefill_tok_s: float | None = bounded(None, lo=1e-6, hi=1e9, help="tokens/s fed in batches")
    call_s: float | None = bounded(None, lo=0.0, hi=3600.0, help="seconds per call (round trip)")

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True)
class HardwareProfile:
    """A named pair of :class:`DeviceRates`, for the SRM and the LRM."""

    name: str
    srm: DeviceRates
    lrm: DeviceRates
    description: str = ""


def _rates(name: str, role: str, data: Any) -> DeviceRates:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"profile {name}: [{role}] must be a table of decode_tok_s, prefill_tok_s, call_s")
    clean = {}
    for key, value in data.items():
        if isinstance(value, str):
            if value.strip().lower() != MEASURED:
                raise ConfigError(f"profile {name}: {role}.{key}={value!r}: give a number or \"measured\"")
            value = None
        clean[key] = value
    try:
        return from_mapping(DeviceRates, clean)
    except ConfigError as exc:
        raise ConfigError(f"profile {name}: {role}: {exc}") from None


def profile_from_mapping(data: Mapping[str, Any], name: str = "custom") -> HardwareProfile:
    """Build a profile from ``{"description": ..., "srm": {...}, "lrm": {...}}``; a missing key is "measured"."""
    unknown = sorted(set(data) - {"name", "description", "srm", "lrm"})
    if unknown:
        raise ConfigError(f"profile {name}: unknown key(s) {', '.join(unknown)}; use name, description, srm, lrm")
    return HardwareProfile(name=str(data.get("name", name)), srm=_rates(name, "srm", data.get("srm")),
                           lrm=_rates(name, "lrm", data.get("lrm")), description=str(data.get("description", "")))


def profile_names() -> list[str]:
    """Every profile a name selects: the fixed ones, then one per :data:`GPUS` entry."""
    return [*SHIPPED_PROFILES, *GPUS]


def load_profile(spec: str, model_bytes: Mapping[str, int | None] | None = None) -> HardwareProfile:
    """A shipped profile by name, a GPU profile (needs ``model_bytes``, ``{"srm": bytes, "lrm": bytes}``: the
    run's GGUF sizes), or a TOML/JSON profile file (see :data:`SHIPPED_PROFILES` for the keys)."""
    if spec in SHIPPED_PROFILES:
        return profile_from_mapping(SHIPPED_PROFILES[spec], spec)
    if spec in GPUS:
        sizes = model_bytes or {}
        return gpu_profile(spec, sizes.get("srm"), sizes.get("lrm"))
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"unknown profile {spec!r}: use {', '.join(profile_names())} or a .toml/.json file")
    data = read_mapping(path, "profile file")
    name = data.get("name") or path.stem
    if name in profile_names():  # it would silently replace the shipped one in every report table
        raise ConfigError(f"profile file {path} is named {name!r} like a shipped profile: set another name "
                          "(name = \"...\") or rename the file")
    return profile_from_mapping(data, name)


@dataclass(frozen=True)
class GpuSpec:
    """A consumer GPU as the latency model sees it: its memory bandwidth, the share of it llama.cpp's decode
    kernels reach on large models, and one published llama.cpp result each for decoding a small model and
    prefilling (``*_ref_bytes``: that model's GGUF size; ``*_ref_tok_s``: its tokens/s)."""

    description: str
    bandwidth_gb_s: float
    efficiency: float
    decode_ref_bytes: float
    decode_ref_tok_s: float
    prefill_ref_bytes: float
    prefill_ref_tok_s: float
    source: str

    @property
    def token_overhead_s(self) -> float:
        """Seconds per decoded token beyond reading the weights, so that the decode reference is reproduced."""
        return max(0.0, 1.0 / self.decode_ref_tok_s - self.decode_ref_bytes / self._bytes_per_s)

    @property
    def _bytes_per_s(self) -> float:
        return self.efficiency * self.bandwidth_gb_s * 1e9


_MIB, _GIB = float(1 << 20), float(1 << 30)

#: GPUs a profile can be named after (``--profile rtx4090``); docs/BENCHMARKING.md cites the sources
GPUS: dict[str, GpuSpec] = {
    "rtx4090": GpuSpec(
        description="both models on one NVIDIA RTX 4090 (1008 GB/s), rates from each model's GGUF size, no call "
                    "cost",
        bandwidth_gb_s=1008.0, efficiency=0.80,
        # TinyLlama 1.1B Q4_K_M (636.18 MiB): tg128 762.37 t/s; Llama 3.2 3B Q4_K_M (1.87 GiB): pp512 20323 t/s
        decode_ref_bytes=636.18 * _MIB, decode_ref_tok_s=762.37,
        prefill_ref_bytes=1.87 * _GIB, prefill_ref_tok_s=20323.29,
        source="llama-bench, llama.cpp build 086a63e3a (7340), Vulkan, ngl 99: github.com/geerlingguy/"
               "ai-benchmarks/issues/43 (2025-12-09)"),
}


def gpu_rates(spec: GpuSpec, model_bytes: float) -> dict[str, float]:
    """``decode_tok_s``, ``prefill_tok_s`` and ``call_s`` (0) of a model of ``model_bytes`` on ``spec``."""
    if model_bytes <= 0:
        raise ConfigError(f"a model size must be positive, got {model_bytes}")
    decode_s = model_bytes / spec._bytes_per_s + spec.token_overhead_s
    return {"decode_tok_s": 1.0 / decode_s,
            "prefill_tok_s": spec.prefill_ref_tok_s * spec.prefill_ref_bytes / model_bytes, "call_s": 0.0}


def gpu_profile(name: str, srm_bytes: float | None, lrm_bytes: float | None) -> HardwareProfile:
    """The :data:`GPUS` profile ``name`` for a pair of models of these GGUF sizes; ConfigError naming the
    missing size when one is unknown (an LRM given as a URL, or a run.json without sizes)."""
    spec = GPUS[name]
    missing = [role for role, b in (("SRM", srm_bytes), ("LRM", lrm_bytes)) if not b]
    if missing:
        raise ConfigError(f"profile {name} prices each model from its GGUF size, but the size of the "
                          f"{' and '.join(missing)} is unknown (an LRM given as a URL, or no run.json beside the "
                          "results): use a profile file with fixed rates")
    rates = {"srm": gpu_rates(spec, float(srm_bytes or 0)), "lrm": gpu_rates(spec, float(lrm_bytes or 0))}
    return profile_from_mapping({"description": spec.description, **rates}, name)


# ------------------------------------------------------------------------------------------------ fitting


@dataclass(frozen=True)
class UnitCosts:
    """Seconds per unit for one model: per decoded token, per prefilled token, per call."""

    decode_s: float = 0.0
    prefill_s: float = 0.0
    call_s: float = 0.0

    def seconds(self, decode: int, prefill: int, calls: int) -> float:
        return decode * self.decode_s + prefill * self.prefill_s + calls * self.call_s

    def as_rates(self) -> dict[str, float | None]:
        """``decode_tok_s``/``prefill_tok_s`` (None when free) and ``call_s``."""
        return {"decode_tok_s": 1.0 / self.decode_s if self.decode_s > 0 else None,
                "prefill_tok_s": 1.0 / self.prefill_s if self.prefill_s > 0 else None, "call_s": self.call_s}


@dataclass(frozen=True)
class MeasuredFit:
    """Per-model unit costs fitted on a run, with the records used and the fit's relative residual."""

    srm: UnitCosts
    lrm: UnitCosts
    n_srm: int = 0
    n_lrm: int = 0
    srm_rel_residual: float = 0.0
    lrm_rel_residual: float = 0.0
    #: (id, method) of the records left out of either model's fit as too slow for their work
    outliers: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"srm": self.srm.as_rates(), "lrm": self.lrm.as_rates(), "n_srm_records": self.n_srm,
                "n_lrm_records": self.n_lrm, "srm_rel_residual": round(self.srm_rel_residual, 4),
                "lrm_rel_residual": round(self.lrm_rel_residual, 4),
                "outliers": [{"id": i, "method": m} for i, m in self.outliers]}


def _nnls(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-negative least squares of ``y`` (``(n,)``) on ``x`` (``(n, p)``): coefficients ``(p,)`` and the
    residual norm relative to ``|y|``; columns that are all zero get coefficient 0."""
    from scipy.optimize import nnls

    coef = np.zeros(x.shape[1])
    used = np.flatnonzero(np.abs(x).sum(axis=0) > 0)
    if len(y) == 0 or len(used) == 0:
        return coef, 0.0
    # scale columns to unit norm so the solver treats tokens and calls alike
    norms = np.linalg.norm(x[:, used], axis=0)
    sol, _ = nnls(x[:, used] / norms, y)
    coef[used] = sol / norms
    den = float(np.linalg.norm(y))
    return coef, float(np.linalg.norm(x @ coef - y)) / den if den else 0.0


def _robust_nnls(x: np.ndarray, y: np.ndarray, rounds: int = 20) -> tuple[np.ndarray, float, np.ndarray]:
    """:func:`_nnls` refitted without the rows slower than ``OUTLIER_RATIO * predicted + OUTLIER_FLOOR_S``
    until that set stops changing: coefficients, relative residual over the kept rows, kept mask ``(n,)``."""
    keep = np.ones(len(y), dtype=bool)
    coef, rel = _nnls(x, y)
    for _ in range(rounds):
        new = y <= OUTLIER_RATIO * (x @ coef) + OUTLIER_FLOOR_S
        if new.sum() < max(2, len(y) // 2) or (new == keep).all():  # never fit on a minority of the run
            break
        keep = new
        coef, rel = _nnls(x[keep], y[keep])
    return coef, rel, keep


def fit_measured(records: Iterable[Mapping[str, Any]]) -> MeasuredFit:
    """Fit seconds per SRM decode/prefill token and per LRM decode/prefill token and call on ``records``,
    leaving out records too slow for their work (see the module docstring; named in ``outliers``)."""
    srm_x, srm_y, srm_k, lrm_x, lrm_y, lrm_k = [], [], [], [], [], []
    for rec in records:
        c = counts_of(rec)
        srm_s, lrm_s = model_seconds(rec)
        key = _record_key(rec)
        if c.srm_decode or c.srm_prefill:
            srm_x.append([c.srm_decode, c.srm_prefill])
            srm_y.append(srm_s)
            srm_k.append(key)
        if c.lrm_decode or c.lrm_prefill or c.lrm_calls:
            lrm_x.append([c.lrm_decode, c.lrm_prefill, c.lrm_calls])
            lrm_y.append(lrm_s)
            lrm_k.append(key)
    sc, sr, s_keep = _robust_nnls(np.asarray(srm_x, dtype=np.float64).reshape(-1, 2),
                                  np.asarray(srm_y, dtype=np.float64))
    lc, lr, l_keep = _robust_nnls(np.asarray(lrm_x, dtype=np.float64).reshape(-1, 3),
                                  np.asarray(lrm_y, dtype=np.float64))
    out = ([k for k, kept in zip(srm_k, s_keep, strict=True) if not kept]
           + [k for k, kept in zip(lrm_k, l_keep, strict=True) if not kept])
    return MeasuredFit(srm=UnitCosts(float(sc[0]), float(sc[1]), 0.0),
                       lrm=UnitCosts(float(lc[0]), float(lc[1]), float(lc[2])),
                       n_srm=int(s_keep.sum()), n_lrm=int(l_keep.sum()), srm_rel_residual=sr, lrm_rel_residual=lr,
                       outliers=tuple(dict.fromkeys(out)))


# ------------------------------------------------------------------------------------------------ pricing


@dataclass(frozen=True)
class ResolvedProfile:
    """A profile with every "measured" value replaced by the fit: concrete unit costs per model."""

    name: str
    srm: UnitCosts
    lrm: UnitCosts

    def to_dict(self) -> dict[str, Any]:
        return {"srm": self.srm.as_rates(), "lrm": self.lrm.as_rates()}


def _resolve_rates(rates: DeviceRates, fitted: UnitCosts) -> UnitCosts:
    def per_token(rate: float | None, fit: float) -> float:
        return fit if rate is None else 1.0 / rate

    return UnitCosts(per_token(rates.decode_tok_s, fitted.decode_s),
                     per_token(rates.prefill_tok_s, fitted.prefill_s),
                     fitted.call_s if rates.call_s is None else rates.call_s)


def resolve(profile: HardwareProfile, fit: MeasuredFit) -> ResolvedProfile:
    """Concrete unit costs of ``profile`` on a run whose measured costs are ``fit``."""
    return ResolvedProfile(profile.name, _resolve_rates(profile.srm, fit.srm), _resolve_rates(profile.lrm, fit.lrm))


def predict_seconds(counts: TokenCounts, profile: ResolvedProfile, overhead: float = 0.0) -> float:
    """Latency of one record's work under ``profile``: SRM time + LRM time (calls included) + ``overhead``."""
    srm = profile.srm.seconds(counts.srm_decode, counts.srm_prefill, 0)
    lrm = profile.lrm.seconds(counts.lrm_decode, counts.lrm_prefill, counts.lrm_calls)
    return srm + lrm + overhead


def record_seconds(rec: Mapping[str, Any], profile: ResolvedProfile) -> float:
    """:func:`predict_seconds` of a bench record with its measured overhead."""
    return predict_seconds(counts_of(rec), profile, overhead_seconds(rec))


def profile_check(records: Iterable[Mapping[str, Any]], measured: ResolvedProfile, tolerance: float = 0.10,
                  exclude: Collection[tuple[str, str]] = ()) -> dict[str, Any]:
    """How well ``measured`` (the fitted profile) reproduces the run: total measured vs predicted seconds over
    ``records`` but the ``exclude``d ``(id, method)`` pairs (the fit's outliers), overall and per method; ``ok``
    when the overall relative error is within ``tolerance``. ``all_records_rel_error`` counts every record."""
    per: dict[str, list[float]] = {}
    every = [0.0, 0.0]
    skipped = 0
    left_out = set(exclude)
    for rec in records:
        seconds, predicted = float(rec.get("seconds", 0.0)), record_seconds(rec, measured)
        every[0] += seconds
        every[1] += predicted
        if _record_key(rec) in left_out:
            skipped += 1
            continue
        acc = per.setdefault(str(rec.get("method", "")), [0.0, 0.0])
        acc[0] += seconds
        acc[1] += predicted
    tot_m = sum(v[0] for v in per.values())
    tot_p = sum(v[1] for v in per.values())
    rel = (tot_p - tot_m) / tot_m if tot_m else 0.0
    return {"measured_total_s": round(tot_m, 3), "predicted_total_s": round(tot_p, 3),
            "rel_error": round(rel, 4), "tolerance": tolerance,
            "ok": bool(math.isfinite(rel) and abs(rel) <= tolerance), "excluded_records": skipped,
            "all_records_rel_error": round((every[1] - every[0]) / every[0], 4) if every[0] else 0.0,
            "per_method_rel_error": {m: round((p - s) / s, 4) if s else 0.0 for m, (s, p) in per.items()}}
