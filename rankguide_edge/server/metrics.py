"""Prometheus text-format metrics of the server, written by hand (no client library needed).

Families (all prefixed ``rankguide_``):

* ``requests_total{endpoint,status}`` -- finished HTTP requests; a client that went away mid-response counts
  as status 499;
* ``requests_cancelled_total{reason}`` -- generations stopped early: ``disconnect`` or ``timeout``;
* ``prompt_tokens_total``, ``prompt_reused_tokens_total`` (prompt tokens the SRM kept from the request
  before instead of reading them again), ``completion_tokens_total{source}`` (kept tokens, ``srm``/``lrm``),
  ``srm_discarded_tokens_total`` (SRM drafts thrown away because the LRM rewrote the step);
* ``steps_total{source}``, ``steps_routed_total`` (steps the policy sent to the LRM, whether or not it
  answered), ``lrm_calls_total``, ``lrm_failures_total``;
* ``request_duration_seconds{endpoint}`` and ``queue_wait_seconds`` histograms;
* gauges ``workers``, ``workers_busy``, ``queue_depth``.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterable
from typing import Any

#: histogram bucket upper bounds in seconds
BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

_PREFIX = "rankguide_"
_HELP: dict[str, tuple[str, str]] = {
    "requests_total": ("counter", "HTTP requests by endpoint and status (499: client went away)"),
    "requests_cancelled_total": ("counter", "generations stopped early, by reason"),
    "prompt_tokens_total": ("counter", "prompt tokens of served requests"),
    "prompt_reused_tokens_total": ("counter", "prompt tokens the SRM kept from an earlier request"),
    "completion_tokens_total": ("counter", "kept completion tokens by the model that wrote them"),
    "srm_discarded_tokens_total": ("counter", "SRM draft tokens thrown away when the LRM rewrote a step"),
    "steps_total": ("counter", "kept reasoning steps by the model that wrote them"),
    "steps_routed_total": ("counter", "steps the policy sent to the LRM"),
    "lrm_calls_total": ("counter", "LRM step calls"),
    "lrm_failures_total": ("counter", "LRM step calls that failed (the SRM step was kept)"),
    "request_duration_seconds": ("histogram", "wall time of HTTP requests, by endpoint"),
    "queue_wait_seconds": ("histogram", "time a request waited for a free worker"),
    "workers": ("gauge", "workers (model contexts)"),
    "workers_busy": ("gauge", "workers serving a request"),
    "queue_depth": ("gauge", "requests waiting for a worker"),
}

Labels = tuple[tuple[str, str], ...]


def _labels(labels: dict[str, Any] | None) -> Labels:
    return tuple(sorted((k, str(v)) for k, v in (labels or {}).items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _fmt_labels(labels: Iterable[tuple[str, str]]) -> str:
    items = [f'{k}="{_escape(v)}"' for k, v in labels]
    return "{" + ",".join(items) + "}" if items else ""


def _fmt_value(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class Metrics:
    """Thread-safe counters, gauges and histograms; :meth:`render` gives the exposition text."""

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = tuple(sorted(buckets))
        self._lock = threading.Lock()
        self._values: dict[str, dict[Labels, float]] = {}
        # histogram: name -> labels -> [bucket counts (len(buckets)+1), sum, count]
        self._hist: dict[str, dict[Labels, list[Any]]] = {}
        self._gauge_fns: dict[str, Callable[[], float]] = {}

    def inc(self, name: str, value: float = 1.0, **labels: Any) -> None:
        """Add ``value`` to counter ``name`` with ``labels``."""
        self._check(name, "counter")
        key = _labels(labels)
        with self._lock:
            fam = self._values.setdefault(name, {})
            fam[key] = fam.get(key, 0.0) + value

    def set(self, name: str, value: float, **labels: Any) -> None:
        """Set gauge ``name``."""
        self._check(name, "gauge")
        with self._lock:
            self._values.setdefault(name, {})[_labels(labels)] = float(value)

    def gauge_fn(self, name: str, fn: Callable[[], float]) -> None:
        """Read gauge ``name`` (no labels) from ``fn()`` at render time."""
        self._check(name, "gauge")
        self._gauge_fns[name] = fn

    def observe(self, name: str, value: float, **labels: Any) -> None:
        """Record one observation of histogram ``name``."""
        self._check(name, "histogram")
        key = _labels(labels)
        with self._lock:
            fam = self._hist.setdefault(name, {})
            h = fam.get(key)
            if h is None:
                h = fam[key] = [[0] * (len(self.buckets) + 1), 0.0, 0]
            h[0][bisect.bisect_left(self.buckets, value)] += 1
            h[1] += value
            h[2] += 1

    def value(self, name: str, **labels: Any) -> float:
        """Current value of a counter or gauge (0 when never set); a histogram gives its count."""
        key = _labels(labels)
        if name in self._gauge_fns and not labels:
            return float(self._gauge_fns[name]())
        with self._lock:
            if name in self._hist:
                h = self._hist[name].get(key)
                return float(h[2]) if h else 0.0
            return self._values.get(name, {}).get(key, 0.0)

    def histogram_sum(self, name: str, **labels: Any) -> tuple[float, int]:
        """``(sum, count)`` of histogram ``name`` with exactly ``labels``."""
        with self._lock:
            h = self._hist.get(name, {}).get(_labels(labels))
            return (float(h[1]), int(h[2])) if h else (0.0, 0)

    @staticmethod
    def _check(name: str, kind: str) -> None:
        spec = _HELP.get(name)
        if spec is None or spec[0] != kind:
            raise KeyError(f"undeclared {kind} metric {name!r}")

    def render(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        gauges = {name: fn() for name, fn in self._gauge_fns.items()}
        lines: list[str] = []
        with self._lock:
            for name, (kind, help_text) in _HELP.items():
                full = _PREFIX + name
                lines.append(f"# HELP {full} {help_text}")
                lines.append(f"# TYPE {full} {kind}")
                if kind == "histogram":
                    for key, (counts, total, n) in sorted(self._hist.get(name, {}).items()):
                        cum = 0
                        for bound, c in zip((*self.buckets, math.inf), counts, strict=True):
                            cum += c
                            le = (*key, ("le", _fmt_value(bound)))
                            lines.append(f"{full}_bucket{_fmt_labels(le)} {cum}")
                        lines.append(f"{full}_sum{_fmt_labels(key)} {_fmt_value(total)}")
                        lines.append(f"{full}_count{_fmt_labels(key)} {n}")
                    continue
                if name in gauges:
                    lines.append(f"{full} {_fmt_value(gauges[name])}")
                    continue
                for key, v in sorted(self._values.get(name, {}).items()):
                    lines.append(f"{full}{_fmt_labels(key)} {_fmt_value(v)}")
        return "\n".join(lines) + "\n"
