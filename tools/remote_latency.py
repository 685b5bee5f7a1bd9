"""Maintainer tool: per-step latency of the remote LRM backend against a local OpenAI-compatible server.

Starts :class:`rankguide_edge.testing.mini_server.MiniServer` on 127.0.0.1 (HTTP/1.1, keep-alive) with a
generated tiny GGUF (or ``--model``), and times ``RemoteBackend.write_step`` for ``--steps`` short steps with
each variant, alternating the variants step by step so machine drift hits both alike. The variants are the
installed backend and, with ``--baseline FILE``, another version of ``collab/backends_remote.py`` (for example
``git show REV:rankguide_edge/collab/backends_remote.py > old.py``), loaded beside it.

    python tools/remote_latency.py --baseline old.py --steps 50 [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from rankguide_edge.collab.backends import StepRequest
from rankguide_edge.collab.backends_remote import RemoteBackend
from rankguide_edge.config import RuntimeConfig
from rankguide_edge.testing.mini_server import MiniServer
from rankguide_edge.testing.tiny_gguf import write_tiny_gguf

MESSAGES = [("user", "What is 12 times 7? Think step by step.")]


def _load_backend_class(path: Path) -> type:
    """``RemoteBackend`` of another version of the module, imported as a sibling so its relative imports work."""
    spec = importlib.util.spec_from_file_location("rankguide_edge.collab._baseline_remote", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.RemoteBackend


def measure(model: Path, variants: dict[str, type], steps: int, max_tokens: int) -> dict[str, Any]:
    with MiniServer(model, RuntimeConfig(n_ctx=512, n_batch=64, n_threads=1)) as server:
        backends = {name: cls(server.url, timeout=30, retries=0) for name, cls in variants.items()}
        req = StepRequest(MESSAGES, "First, 12 times 7 is", max_tokens)
        times: dict[str, list[float]] = {name: [] for name in variants}
        connections = dict.fromkeys(variants, 0)
        for backend in backends.values():  # warm-up: imports, first connection, first context
            assert backend.write_step(req).ok
        names = list(variants)
        for i in range(steps):
            for name in names if i % 2 == 0 else names[::-1]:
                before = server.connections
                t0 = time.perf_counter()
                reply = backends[name].write_step(req)
                times[name].append(time.perf_counter() - t0)
                connections[name] += server.connections - before
                if not reply.ok:
                    raise SystemExit(f"{name}: step {i} failed: {reply.error}")
        for backend in backends.values():
            backend.close()
    out = {}
    for name, ts in times.items():
        ms = np.asarray(ts) * 1e3
        out[name] = {"steps": len(ts), "median_ms": round(float(np.median(ms)), 3),
                     "mean_ms": round(float(ms.mean()), 3), "p90_ms": round(float(np.quantile(ms, 0.9)), 3),
                     "stdev_ms": round(statistics.stdev(ms.tolist()), 3) if len(ts) > 1 else 0.0,
                     "new_connections": connections[name]}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", type=Path, help="another version of collab/backends_remote.py to compare")
    ap.add_argument("--model", type=Path, help="GGUF the server runs [default: a generated tiny GGUF]")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--max-tokens", type=int, default=4, help="tokens per step (short steps: transport shows)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    variants: dict[str, type] = {}
    if args.baseline:
        variants["baseline"] = _load_backend_class(args.baseline)
    variants["installed"] = RemoteBackend
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or write_tiny_gguf(Path(tmp) / "tiny.gguf")
        result = measure(model, variants, args.steps, args.max_tokens)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name, r in result.items():
            print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in r.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
