"""``bench run`` / ``bench report``: methods compared on the same problems, interleaved, resumable.

A method is a routing policy at a decision point and threshold, written ``policy[@decide][:threshold]``
(``srm``, ``lrm``, ``rankguide``, ``rankguide@early:0.4``, ``entropy:0.6``, ``random``...). For every problem
every method runs once, in an order that rotates per problem so that machine drift hits all methods alike.
One SRM model and one LRM backend serve all methods. Results go to ``DIR/results.jsonl`` one line per
(problem, method) as they finish; a rerun skips pairs already there.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..collab.backends import LRMBackend
from ..collab.policies import DECISION_POINTS, available_policies
from ..collab.reasoner import Reasoner, ReasonerConfig
from ..config import RuntimeConfig
from ..engine.runtime import Model
from ..errors import ConfigError, InvalidInputError
from ._jsonl import read_for_resume
from .answers import check_answer, extract_answer, prompt_for
from .datasets import Problem


@dataclass(frozen=True)
class Method:
    label: str
    policy: str
    decide: str = "post"
    threshold: float = 0.46  # ReasonerConfig's default


def parse_methods(spec: str | Sequence[str]) -> list[Method]:
    """``"srm,lrm,rankguide@early:0.4"`` -> methods; labels are the spec items themselves."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not items:
        raise ConfigError("no methods given: use e.g. --methods srm,lrm,rankguide")
    out: list[Method] = []
    for item in items:
        head, _, thr = item.partition(":")
        policy, _, decide = head.partition("@")
        if policy not in available_policies():
            raise ConfigError(f"unknown policy {policy!r} in method {item!r}; use {', '.join(available_policies())}")
        decide = decide or ("pre" if policy == "lrm" else "post")
        if decide not in DECISION_POINTS:
            raise ConfigError(f"bad decision point {decide!r} in method {item!r}; use post, early or pre")
        try:
            threshold = float(thr) if thr else ReasonerConfig().threshold
        except ValueError:
            raise ConfigError(f"bad threshold {thr!r} in method {item!r}: give a number in [0, 1]") from None
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold {threshold} in method {item!r} is outside [0, 1]")
        out.append(Method(item, policy, decide, threshold))
    if len({m.label for m in out}) != len(out):
        raise ConfigError("a method is listed twice")
    return out


def _done_pairs(path: Path) -> set[tuple[str, str]]:
    return {(str(r["id"]), str(r["method"])) for r in read_for_resume(path)}


def run_bench(srm: Model, lrm: LRMBackend | None, problems: Iterable[Problem], methods: Sequence[Method],
              out_dir: str | Path, *, runtime: RuntimeConfig, max_tokens: int = 768, seed: int = 0,
              random_p: float = 0.2, progress: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Run every method on every problem (interleaved); return the results file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    done = _done_pairs(results)
    needs_lrm = [m.label for m in methods if m.policy != "srm"]
    if needs_lrm and lrm is None:
        raise ConfigError(f"methods {', '.join(needs_lrm)} need an LRM: pass --lrm")
    reasoners = {m.label: Reasoner(srm, lrm if m.policy != "srm" else None, ReasonerConfig(
        policy=m.policy, decide=m.decide, threshold=m.threshold, max_tokens=max_tokens, seed=seed,
        random_p=random_p), runtime=runtime) for m in methods}
    try:
        with open(results, "a", encoding="utf-8") as fh:
            for i, problem in enumerate(problems):
                order = list(methods[i % len(methods):]) + list(methods[: i % len(methods)])
                for m in order:
                    if (problem.id, m.label) in done:
                        continue
                    t0 = time.perf_counter()
                    res = reasoners[m.label].solve(prompt_for(problem.question, problem.kind))
                    wall = time.perf_counter() - t0
                    pred = extract_answer(res.answer_text, problem.kind)
                    rec = {
                        "id": problem.id, "method": m.label, "policy": m.policy, "decide": m.decide,
                        "threshold": m.threshold, "gold": problem.gold, "prediction": pred,
                        "correct": bool(check_answer(pred, problem.gold, problem.kind)), "seconds": round(wall, 3),
                        "finished": res.finished, "n_steps": len(res.steps), "lrm_steps":
                            sum(s.source == "lrm" for s in res.steps), "timing": res.timing, "usage": res.usage,
                        "steps": [{"source": s.source, "srm_tokens": s.srm_tokens, "lrm_tokens": s.lrm_tokens,
                                   "discarded": s.discarded_tokens, "score": s.score, "reason": s.reason,
                                   "lrm_error": s.lrm_error} for s in res.steps],
                        "text": res.answer_text,
                    }
                    fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                    fh.flush()
                    if progress:
                        progress(rec)
    finally:
        for r in reasoners.values():
            r.close()
    return results


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarize(results: str | Path) -> dict[str, Any]:
    """Per method: n, accuracy (Wilson 95% CI), latency, speedup vs lrm, LRM share, PGR, tokens thrown away.

    Only problems that every method finished are counted, so methods are compared on the same set.
    """
    path = Path(results)
    if not path.exists():
        raise InvalidInputError(f"{path} does not exist: run `rankguide-edge bench run` first")
    recs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not recs:
        raise InvalidInputError(f"{path} is empty: run `rankguide-edge bench run` first")
    methods = list(dict.fromkeys(r["method"] for r in recs))
    by_id: dict[str, dict[str, dict]] = {}
    for r in recs:
        by_id.setdefault(r["id"], {})[r["method"]] = r
    common = [i for i, d in by_id.items() if len(d) == len(methods)]
    table: dict[str, dict[str, Any]] = {}
    for m in methods:
        rows = [by_id[i][m] for i in common]
        n = len(rows)
        k = sum(r["correct"] for r in rows)
        secs = [r["seconds"] for r in rows]
        srm_tok = sum(r["usage"]["srm_tokens"] - r["usage"]["srm_discarded_tokens"] for r in rows)
        lrm_tok = sum(r["usage"]["lrm_tokens"] for r in rows)
        steps = sum(r["n_steps"] for r in rows)
        table[m] = {
            "n": n, "correct": k, "accuracy": k / n if n else 0.0, "accuracy_ci95": _wilson(k, n),
            "mean_s": statistics.fmean(secs) if secs else 0.0, "median_s": statistics.median(secs) if secs else 0.0,
            "lrm_step_share": sum(r["lrm_steps"] for r in rows) / steps if steps else 0.0,
            "lrm_token_share": lrm_tok / (lrm_tok + srm_tok) if lrm_tok + srm_tok else 0.0,
            "lrm_calls": sum(r["usage"]["lrm_calls"] for r in rows),
            "lrm_failures": sum(r["usage"].get("lrm_failures", 0) for r in rows),
            "srm_discarded_tokens": sum(r["usage"]["srm_discarded_tokens"] for r in rows),
            "mean_steps": steps / n if n else 0.0,
            "mean_tokens": (srm_tok + lrm_tok) / n if n else 0.0,
            "signals_s": sum(r["timing"].get("signals", 0.0) for r in rows),
            "srm_s": sum(r["timing"].get("srm", 0.0) for r in rows),
        }
        row = table[m]
        row["signals_vs_srm"] = row["signals_s"] / row["srm_s"] if row["srm_s"] else 0.0
    lrm_m = next((m for m in methods if m.split("@")[0].split(":")[0] == "lrm"), None)
    srm_m = next((m for m in methods if m.split("@")[0].split(":")[0] == "srm"), None)
    for m, row in table.items():
        row["speedup_vs_lrm"] = (table[lrm_m]["mean_s"] / row["mean_s"]) if lrm_m and row["mean_s"] else None
        gap = (table[lrm_m]["accuracy"] - table[srm_m]["accuracy"]) if lrm_m and srm_m else None
        row["pgr"] = ((row["accuracy"] - table[srm_m]["accuracy"]) / gap) if gap else None
    return {"results": str(path), "problems": len(common), "methods": table}


def summary_markdown(summary: dict[str, Any]) -> str:
    lines = [f"{summary['problems']} problems run by every method ({summary['results']}).", "",
             "| method | n | accuracy | 95% CI | mean s | median s | speedup vs lrm | LRM step share | "
             "LRM token share | LRM calls | SRM tokens thrown away | mean steps | PGR | signals / SRM time |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(x: Any, nd: int = 2) -> str:
        return "—" if x is None else f"{x:.{nd}f}"

    for m, r in summary["methods"].items():
        lo, hi = r["accuracy_ci95"]
        lines.append(f"| {m} | {r['n']} | {f(r['accuracy'])} | [{lo:.2f}, {hi:.2f}] | {f(r['mean_s'], 1)} | "
                     f"{f(r['median_s'], 1)} | {f(r['speedup_vs_lrm'])} | {f(r['lrm_step_share'])} | "
                     f"{f(r['lrm_token_share'])} | {r['lrm_calls']} | {r['srm_discarded_tokens']} | "
                     f"{f(r['mean_steps'], 1)} | {f(r['pgr'])} | {100 * r['signals_vs_srm']:.2f} % |")
    return "\n".join(lines) + "\n"
