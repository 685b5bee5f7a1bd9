"""Router configs: the fitted part of routing (thresholds per decision point, optional logistic weights).

A router file is JSON written by ``rankguide-edge calibrate``::

    {"format": "rankguide-edge/router", "version": 1, "policy": "rankguide",
     "thresholds": {"post": 0.46, "early": 0.61, "pre": 0.46}, "lrm_first": 1,
     "logistic": null | {"features": [...], "mean": [...], "scale": [...], "weights": [...], "bias": b},
     "target_lrm_share": 0.25, "fitted_on": {...}, "command": "rankguide-edge calibrate ..."}

``thresholds[decide]`` is the default threshold of that decision point (an explicit ``--threshold`` wins);
``lrm_first`` (optional, default 0) is how many first steps the LRM writes before the policy decides (an
explicit ``--lrm-first`` wins). Both apply only when the run's policy is the router's.
With ``logistic``, the rankguide policy scores ``sigmoid(bias + weights . (x - mean) / scale)`` over the
named signals instead of the hand-set ``fail.route`` (a missing signal counts as its mean). The package ships
``routers/default.json``; ``docs/BENCHMARKS.md`` has the command that produced it.
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from ..errors import ConfigError
from ..files import write_text_atomic
from .policies import DECISION_POINTS

FORMAT = "rankguide-edge/router"
_CACHE: dict[tuple[str, int], Router] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Logistic:
    """``sigmoid(bias + sum_i weights[i] * (x[features[i]] - mean[i]) / scale[i])``."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float

    def score(self, signals: dict[str, float]) -> float:
        z = self.bias
        for key, m, s, w in zip(self.features, self.mean, self.scale, self.weights, strict=True):
            v = signals.get(key)
            if v is None or not math.isfinite(float(v)):
                continue  # missing: counts as the mean
            z += w * (float(v) - m) / s
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "mean": list(self.mean), "scale": list(self.scale),
                "weights": list(self.weights), "bias": self.bias}


@dataclass(frozen=True)
class Router:
    policy: str = "rankguide"
    #: one threshold per decision point; what a missing point falls back to is the router's rule (.routing)
    thresholds: dict[str, float] = field(default_factory=dict)
    logistic: Logistic | None = None
    lrm_first: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = "<built-in>"

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": 1, "policy": self.policy, "thresholds": dict(self.thresholds),
                "lrm_first": self.lrm_first, "logistic": self.logistic.to_dict() if self.logistic else None,
                **self.meta}


def _bad(path: str, what: str) -> ConfigError:
    return ConfigError(f"router file {path}: {what}; regenerate it with `rankguide-edge calibrate`")


def parse_router(data: Any, source: str = "<dict>") -> Router:
    """Validate a router mapping (as loaded from JSON)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _bad(source, f"not a router config (format must be {FORMAT!r})")
    if data.get("version") != 1:
        raise _bad(source, f"unsupported version {data.get('version')!r}")
    policy = data.get("policy", "rankguide")
    if not isinstance(policy, str):
        raise _bad(source, "policy must be a string")
    th = data.get("thresholds")
    if not isinstance(th, dict) or not th:
        raise _bad(source, "thresholds must map post/early/pre to numbers")
    thresholds: dict[str, float] = {}
    for k, v in th.items():
        if k not in DECISION_POINTS:
            raise _bad(source, f"unknown decision point {k!r} in thresholds (use {', '.join(DECISION_POINTS)})")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
            raise _bad(source, f"threshold {k}={v!r} must be a number in [0, 1]")
        thresholds[k] = float(v)
    lg = data.get("logistic")
    logistic = None
    if lg is not None:
        try:
            feats = tuple(str(f) for f in lg["features"])
            cols = [tuple(float(x) for x in lg[k]) for k in ("mean", "scale", "weights")]
            bias = float(lg["bias"])
        except (KeyError, TypeError, ValueError):
            raise _bad(source, "logistic needs features, mean, scale, weights (lists) and bias") from None
        if any(len(c) != len(feats) for c in cols) or any(s <= 0 for s in cols[1]):
            raise _bad(source, "logistic lists must have one entry per feature and positive scales")
        logistic = Logistic(feats, cols[0], cols[1], cols[2], bias)
    first = data.get("lrm_first", 0)
    if isinstance(first, bool) or not isinstance(first, int) or not 0 <= first <= 1000:
        raise _bad(source, f"lrm_first={first!r} must be a whole number in [0, 1000]")
    known = {"format", "version", "policy", "thresholds", "logistic", "lrm_first"}
    meta = {k: v for k, v in data.items() if k not in known}
    return Router(policy=policy, thresholds=thresholds, logistic=logistic, lrm_first=first, meta=meta,
                  source=source)


def shipped_router_text() -> str:
    """The JSON text of the router the package ships (``routers/default.json``)."""
    return resources.files("rankguide_edge").joinpath("routers").joinpath("default.json").read_text(encoding="utf-8")


def load_router(path: str | os.PathLike[str] | None = None) -> Router:
    """Load a router file (None or "": the shipped default). Cached by path and modification time."""
    if not path:
        key = ("<default>", 0)
        with _LOCK:
            if key in _CACHE:
                return _CACHE[key]
        router = parse_router(json.loads(shipped_router_text()), "routers/default.json")
        with _LOCK:
            _CACHE[key] = router
        return router
    p = os.fspath(path)
    try:
        key = (os.path.abspath(p), os.stat(p).st_mtime_ns)
    except OSError:
        raise ConfigError(
            f"router file {p} does not exist: give a file written by `rankguide-edge calibrate`") from None
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
    try:
        with open(p, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"router file {p} is not valid JSON ({exc}): regenerate it with `rankguide-edge calibrate`") from None
    router = parse_router(data, p)
    with _LOCK:
        _CACHE[key] = router
    return router


def save_router(router: Router, path: str | os.PathLike[str]) -> None:
    """Write atomically (temporary name in the same folder, then rename)."""
    write_text_atomic(path, json.dumps(router.to_dict(), indent=2) + "\n")
