"""``bench report``: a results.jsonl summarised per method, priced under hardware profiles, and a Pareto figure.

Accuracy, token and step figures count only problems that every method finished, so methods are compared on
the same set. The latency model (:mod:`.latency`) is fitted on every record of the file (more data, same
machine); ``profile_check`` says how closely the fitted ``measured`` profile reproduces the run's total time.
"""

from __future__ import annotations

import gzip
import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import stats
from ..errors import ConfigError, InvalidInputError
from ..figures import agg_figure
from ..jsonl import read_lines
from ..tasks.plans import plan_breakdown, plan_markdown
from .latency import (
    OUTLIER_FLOOR_S,
    OUTLIER_RATIO,
    HardwareProfile,
    counts_of,
    fit_measured,
    load_profile,
    profile_check,
    profile_names,
    record_seconds,
    resolve,
)
from .settings import run_model_bytes


def _wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of ``k`` successes in ``n`` (scipy's; exactly 0 and 1 at the ends)."""
    if n == 0:
        return (0.0, 0.0)
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return (float(ci.low), float(ci.high))


def _sign_test(wins: int, losses: int) -> float:
    """Two-sided exact McNemar p-value: the chance of a split at least this uneven among ``wins + losses``
    discordant problems if both methods were equally good (scipy's exact binomial test at p = 1/2)."""
    n = wins + losses
    if n == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(wins, n, 0.5, alternative="two-sided").pvalue)


def _paired(rows: list[dict[str, Any]], base: list[dict[str, Any]]) -> dict[str, Any]:
    """Problems a method gets right that ``base`` gets wrong (wins) and the reverse (losses), same problems."""
    wins = sum(bool(r["correct"]) and not bool(b["correct"]) for r, b in zip(rows, base, strict=True))
    losses = sum(bool(b["correct"]) and not bool(r["correct"]) for r, b in zip(rows, base, strict=True))
    return {"wins": wins, "losses": losses, "p": _sign_test(wins, losses)}


def _unsteered(label: str) -> str | None:
    """``rankguide+rank*0.25/boundary`` -> ``rankguide``; None for a method without steering."""
    base, plus, _ = label.partition("+")
    return base if plus else None


def _sweep_of(label: str) -> str:
    """The curve a method label lies on: the label without its threshold, probability or draft length
    (``entropy:0.41^1`` and ``entropy:0.63^1`` -> ``entropy^1``; ``rankguide~learned^1`` stays itself), so a
    threshold sweep is one line while another decision point, router, plan length or steering is another."""
    head, plus, steer = label.partition("+")
    head, caret, first = head.partition("^")
    return head.partition(":")[0] + (caret + first) + (plus + steer)


def _policy_of(rec: Mapping[str, Any]) -> str:
    return str(rec.get("policy") or str(rec["method"]).split("@")[0].split(":")[0])


#: fields every bench record needs, and their types
_RECORD_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str, int), "method": (str,), "correct": (bool,), "seconds": (int, float), "n_steps": (int,),
    "lrm_steps": (int,), "usage": (dict,), "timing": (dict,)}


def _check_record(rec: Any) -> str | None:
    """What is wrong with one bench record (None: usable)."""
    if not isinstance(rec, dict):
        return f"a record must be a JSON object, not {type(rec).__name__}"
    for key, types in _RECORD_FIELDS.items():
        value = rec.get(key)
        if value is None or isinstance(value, bool) != (bool in types) or not isinstance(value, types):
            return f"field {key!r} is missing or not a {' or '.join(t.__name__ for t in types)}"
    return None


def load_results(results: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a results.jsonl, or of a gzip-compressed results.jsonl.gz (a torn last line is ignored: a
    run may be writing it). InvalidInputError when the file is missing, holds no complete record, or a record
    lacks a field the report needs."""
    path = Path(results)
    if not path.exists():
        raise InvalidInputError(f"{path} does not exist: run `rankguide-edge bench run` first")
    recs = []
    for line in read_lines(path):
        if line.error is not None:
            raise InvalidInputError(f"{path}:{line.number} is {line.error}: fix or remove that line")
        rec = line.value
        problem = None if isinstance(rec, dict) and rec.get("error") and rec.get("method") else _check_record(rec)
        if problem:
            raise InvalidInputError(f"{path}:{line.number} is not a bench record ({problem}): "
                                    "fix or remove that line")
        recs.append(rec)
    if not recs:
        raw = path.read_bytes()
        what = "is empty" if not (gzip.decompress(raw) if path.suffix == ".gz" else raw).strip() else \
            "holds no complete record"  # only a torn line
        raise InvalidInputError(f"{path} {what}: run `rankguide-edge bench run` first")
    return recs


def summarize(results: str | os.PathLike[str], profile: str | HardwareProfile = "measured",
              methods: Sequence[str] | None = None, versus: Sequence[str] = ()) -> dict[str, Any]:
    """Per method: n, accuracy (Wilson 95% CI), measured latency, speedup vs lrm, LRM step and token share
    (``lrm_tokens / (srm kept + lrm tokens)``), LRM calls (round trips, judge ratings and verify batches
    included), PGR, tokens thrown away, mean steps and tokens, answers that hit the token cap, mean work
    counts, the mean latency and speedup under every shipped profile plus ``profile`` (a name, file or profile
    object), and paired comparisons on the same problems (``vs_srm``; ``vs_unsteered`` for ``METHOD+NAME...``
    against ``METHOD``): wins, losses and the exact two-sided McNemar p-value. ``versus`` names further
    baselines (labels among the methods reported): every other method's ``vs`` maps each of them to the same
    paired comparison (``vs_table`` lists the baselines in order).

    ``methods``: report only these labels (InvalidInputError for a label the file lacks); the comparison
    set is then the problems these methods all ran. ``short_methods`` names the methods that limit that set
    (those with the fewest problems) when some other method ran more. PGR comes with a 95% bootstrap interval
    over problems (``pgr_ci95``). specdec has no LRM token share (the LRM checks every token); its
    ``acceptance`` is the share of drafted tokens the LRM accepted, and ``same_text_as_lrm`` the share of
    problems where its answer is the LRM alone's, character for character (greedy speculative decoding is
    lossless in exact arithmetic; batched verification can still flip a near-tie).

    ``plans`` (when a method ``srm^1`` is compared): what its LRM-written plan is on each problem (the whole
    answer, a paragraph with or without the final answer, one sentence) and every method's accuracy per kind
    (:mod:`.plans`).

    ``mixed_session_problems`` counts compared problems whose records come from more than one bench session
    (records carry ``session``; wall times then include the machine's drift between sessions).

    Top level: ``profile`` (the chosen one's name), ``profiles`` (their rates after fitting), ``fit`` (the
    measured fit) and ``profile_check`` (``measured`` against the run's total wall time, 10% tolerance).
    """
    path = Path(results)
    every = load_results(path)
    recs = [r for r in every if not r.get("error")]
    failed: dict[str, list[str]] = {}  # method -> problems it could not solve (error records)
    for r in every:
        if r.get("error"):
            failed.setdefault(str(r["method"]), []).append(str(r.get("id")))
    if not recs:
        raise InvalidInputError(f"every record of {path} is an error: see their 'error' fields")
    sizes = run_model_bytes(path.parent)  # GPU profiles price each model from its GGUF size
    chosen = profile if isinstance(profile, HardwareProfile) else load_profile(profile, sizes)
    fit = fit_measured(recs)
    loaded, unpriced = {}, {}
    for name in profile_names():
        try:
            loaded[name] = load_profile(name, sizes)
        except ConfigError as exc:  # a GPU profile when a model's size is unknown (an LRM URL)
            unpriced[name] = str(exc)
    loaded[chosen.name] = chosen
    profiles = {name: resolve(p, fit) for name, p in loaded.items()}
    descriptions = {name: p.description for name, p in loaded.items()}
    in_file = list(dict.fromkeys(r["method"] for r in every))
    if methods:
        missing = [m for m in methods if m not in in_file]
        if missing:
            raise InvalidInputError(f"no records of {', '.join(missing)} in {path}: it holds {', '.join(in_file)}")
        methods = list(dict.fromkeys(methods))
    else:
        methods = in_file
    versus = list(dict.fromkeys(versus))
    absent = [b for b in versus if b not in methods]
    if absent:
        raise InvalidInputError(f"baseline {', '.join(absent)} is not among the methods reported "
                                f"({', '.join(methods)}): add it to the methods or drop it")
    by_id: dict[str, dict[str, dict]] = {}
    for r in recs:
        if r["method"] in methods:
            by_id.setdefault(r["id"], {})[r["method"]] = r
    broken = {i for m in methods for i in failed.get(m, [])}  # a problem some method errored on: left out
    common = [i for i, d in by_id.items() if len(d) == len(methods) and str(i) not in broken]
    ran = {m: sum(m in d for d in by_id.values()) for m in methods}
    fewest = min(ran.values())
    short = [m for m in methods if ran[m] == fewest] if fewest < max(ran.values()) else []
    table: dict[str, dict[str, Any]] = {}
    for m in methods:
        rows = [by_id[i][m] for i in common]
        table[m] = _method_row(rows, profiles)
        first = next((r for r in recs if r["method"] == m), None) or next(r for r in every if r["method"] == m)
        table[m].update(policy=_policy_of(first), decide=first.get("decide"), threshold=first.get("threshold"))
        if "k" in first:
            table[m]["k"] = first["k"]
        if "random_p" in first:
            table[m]["mean_random_p"] = statistics.fmean(r.get("random_p", 0.0) for r in rows) if rows else None
    lrm_m = next((m for m in methods if table[m]["policy"] == "lrm" and "+" not in m), None)
    srm_m = next((m for m in methods if table[m]["policy"] == "srm" and "+" not in m), None)
    for m in methods:  # paired on the same problems: against srm, and a steered method against its unsteered self
        rows = [by_id[i][m] for i in common]
        table[m]["vs_srm"] = _paired(rows, [by_id[i][srm_m] for i in common]) if srm_m and m != srm_m else None
        base = _unsteered(m)
        table[m]["vs_unsteered"] = (_paired(rows, [by_id[i][base] for i in common])
                                    if base in table else None)
        table[m]["vs"] = {b: _paired(rows, [by_id[i][b] for i in common]) for b in versus if b != m}
    for row in table.values():
        row["speedup_vs_lrm"] = (table[lrm_m]["mean_s"] / row["mean_s"]) if lrm_m and row["mean_s"] else None
        row["speedup_vs_lrm_by_profile"] = {
            name: (table[lrm_m]["latency_s"][name] / lat) if lrm_m and lat else None
            for name, lat in row["latency_s"].items()}
        gap = (table[lrm_m]["accuracy"] - table[srm_m]["accuracy"]) if lrm_m and srm_m else None
        row["pgr"] = ((row["accuracy"] - table[srm_m]["accuracy"]) / gap) if gap and srm_m else None
    for m in methods:  # lossless in exact arithmetic; batched verification can flip near-ties
        if table[m]["policy"] == "specdec" and lrm_m:
            table[m]["same_text_as_lrm"] = (sum(by_id[i][m].get("text") == by_id[i][lrm_m].get("text") for i in common)
                                            / len(common) if common else None)
    for m in methods:
        table[m]["pgr_ci95"] = (_pgr_interval([by_id[i] for i in common], m, srm_m, lrm_m)
                                if table[m]["pgr"] is not None else None)
    # records of one problem written in different bench sessions: wall times then carry the machine's drift
    mixed = sum(len({by_id[i][m].get("session") for m in methods}) > 1 for i in common)
    planner = next((m for m in methods if table[m]["policy"] == "srm" and m.endswith("^1")), None)
    plans = ({"planner": planner, "kinds": plan_breakdown({i: by_id[i] for i in common}, planner, methods)}
             if planner else None)
    return {"results": str(path), "problems": len(common), "short_methods": short, "vs_table": versus,
            "mixed_session_problems": mixed,
            "errors": {m: failed[m] for m in methods if m in failed},
            "problems_per_method": ran, "methods": table, "profile": chosen.name, "plans": plans,
            "unpriced_profiles": unpriced,
            "profiles": {name: {"description": descriptions.get(name, ""), **res.to_dict()}
                         for name, res in profiles.items()},
            "fit": fit.to_dict(), "profile_check": profile_check(recs, profiles["measured"], exclude=fit.outliers)}


def _method_row(rows: list[dict[str, Any]], profiles: Mapping[str, Any]) -> dict[str, Any]:
    n = len(rows)
    k = sum(bool(r["correct"]) for r in rows)
    secs = [r["seconds"] for r in rows]
    srm_tok = sum(r["usage"]["srm_tokens"] - r["usage"]["srm_discarded_tokens"] for r in rows)
    lrm_tok = sum(r["usage"]["lrm_tokens"] for r in rows)
    steps = sum(r["n_steps"] for r in rows)
    counts = [counts_of(r).to_dict() for r in rows]
    row: dict[str, Any] = {
        "n": n, "correct": k, "accuracy": k / n if n else 0.0, "accuracy_ci95": _wilson(k, n),
        "mean_s": statistics.fmean(secs) if secs else 0.0, "median_s": statistics.median(secs) if secs else 0.0,
        "lrm_step_share": sum(r["lrm_steps"] for r in rows) / steps if steps else 0.0,
        "lrm_token_share": lrm_tok / (lrm_tok + srm_tok) if lrm_tok + srm_tok else 0.0,
        "lrm_calls": sum(c["lrm_calls"] for c in counts),
        "lrm_failures": sum(r["usage"].get("lrm_failures", 0) for r in rows),
        "srm_discarded_tokens": sum(r["usage"]["srm_discarded_tokens"] for r in rows),
        "mean_steps": steps / n if n else 0.0,
        "mean_tokens": (srm_tok + lrm_tok) / n if n else 0.0,
        "unfinished": sum(not r.get("finished", True) for r in rows),
        "mean_counts": {key: sum(c[key] for c in counts) / n if n else 0.0 for key in (counts[0] if counts else {})},
        "signals_s": sum(r["timing"].get("signals", 0.0) for r in rows),
        "srm_s": sum(r["timing"].get("srm", 0.0) for r in rows),
        "latency_s": {name: statistics.fmean(record_seconds(r, res) for r in rows) if rows else 0.0
                      for name, res in profiles.items()},
    }
    row["signals_vs_srm"] = row["signals_s"] / row["srm_s"] if row["srm_s"] else 0.0
    if rows and _policy_of(rows[0]) == "specdec":  # the LRM checks every token: no share of tokens to report
        row["lrm_token_share"] = None
        drafted = sum(r["usage"].get("srm_tokens", 0) for r in rows)
        row["acceptance"] = sum(r["usage"].get("specdec_accepted", 0) for r in rows) / drafted if drafted else None
    return row


def _pgr_interval(problems: list[dict[str, dict]], m: str, srm_m: str | None, lrm_m: str | None,
                  rounds: int = 2000, seed: int = 0) -> tuple[float, float] | None:
    """95% percentile-bootstrap interval of PGR, resampling problems (each keeps its methods' outcomes
    together; :func:`rankguide_edge.stats.bootstrap_distribution`); resamples where lrm and srm tie are left
    out. None when too few resamples are usable."""
    import numpy as np

    if not (srm_m and lrm_m) or not problems:
        return None
    cols = np.array([[bool(p[x]["correct"]) for x in (m, srm_m, lrm_m)] for p in problems], dtype=np.float64)

    def pgr(idx: np.ndarray) -> np.ndarray:
        acc = cols[idx].mean(axis=1)  # (resamples, 3): method, srm, lrm
        gap = acc[:, 2] - acc[:, 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(gap != 0, (acc[:, 0] - acc[:, 1]) / np.where(gap != 0, gap, 1.0), np.nan)

    samples = stats.bootstrap_distribution(pgr, len(problems), rounds, seed)
    if np.isfinite(samples).sum() < rounds // 2:
        return None
    return stats.ci95(samples)


def summary_markdown(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table (latency and speedup under the chosen profile) and the profile check."""
    prof = summary.get("profile", "measured")
    lines = [f"{summary['problems']} problems run by every method ({summary['results']})."]
    if summary.get("short_methods"):
        per = summary.get("problems_per_method", {})
        lines.append(f"Other methods ran more problems; {', '.join(summary['short_methods'])} limit the set "
                     f"(leave them out with `bench report --methods`: "
                     + ", ".join(f"{m} {n}" for m, n in per.items()) + ").")
    if summary.get("errors"):
        lines.append("Left out, because a method failed on them (see the records' `error`): "
                     + "; ".join(f"{m}: {', '.join(ids)}" for m, ids in summary["errors"].items()) + ".")
    if summary.get("mixed_session_problems"):
        lines.append(f"On {summary['mixed_session_problems']} of these problems the methods ran in different bench "
                     "sessions (run.json lists them), and this machine's speed drifts between sessions: the "
                     "measured seconds and their speedups compare across sessions, while the profile columns "
                     "price every record at one set of fitted rates.")
    lines += ["",
             f"| method | n | accuracy | 95% CI | mean s | median s | speedup vs lrm | latency s ({prof}) | "
             f"speedup ({prof}) | LRM step share | LRM token share | LRM calls | SRM tokens thrown away | "
             "mean steps | mean tokens | hit token cap | PGR [95% CI] | vs srm (+/−, p) | vs unsteered (+/−, p) | "
             "signals / SRM time |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(x: Any, nd: int = 2) -> str:
        return "—" if x is None else f"{x:.{nd}f}"

    def paired(d: Mapping[str, Any] | None) -> str:
        return "—" if not d else f"+{d['wins']}/−{d['losses']}, p {d['p']:.2f}"

    def pgr(r: Mapping[str, Any]) -> str:
        ci = r.get("pgr_ci95")
        return f(r["pgr"]) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

    for m, r in summary["methods"].items():
        lo, hi = r["accuracy_ci95"]
        lat = r.get("latency_s", {}).get(prof)
        spd = r.get("speedup_vs_lrm_by_profile", {}).get(prof)
        lines.append(f"| {m} | {r['n']} | {f(r['accuracy'])} | [{lo:.2f}, {hi:.2f}] | {f(r['mean_s'], 1)} | "
                     f"{f(r['median_s'], 1)} | {f(r['speedup_vs_lrm'])} | {f(lat, 1)} | {f(spd)} | "
                     f"{f(r['lrm_step_share'])} | {f(r['lrm_token_share'])} | {r['lrm_calls']} | "
                     f"{r['srm_discarded_tokens']} | {f(r['mean_steps'], 1)} | {f(r['mean_tokens'], 0)} | "
                     f"{r.get('unfinished', 0)} | {pgr(r)} | {paired(r.get('vs_srm'))} | "
                     f"{paired(r.get('vs_unsteered'))} | {100 * r['signals_vs_srm']:.2f} % |")
    if summary.get("vs_table"):  # paired against each named baseline, on the same problems
        bases = summary["vs_table"]
        lines += ["", f"Paired on the same {summary['problems']} problems: wins/losses against each baseline (problems "
                      "the method gets right and the baseline wrong, and the reverse) and the exact two-sided "
                      "McNemar p-value:", "",
                  "| method | " + " | ".join(f"vs {b}" for b in bases) + " |", "|---|" + "---|" * len(bases)]
        for m, r in summary["methods"].items():
            vs = r.get("vs") or {}
            lines.append(f"| {m} | " + " | ".join(paired(vs.get(b)) for b in bases) + " |")
    names = list(summary.get("profiles") or {})
    if names:  # every method under every profile: latency and speedup against lrm priced the same way
        lines += ["", "Mean latency per problem in seconds (speedup against lrm) under each hardware profile:", "",
                  "| method | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for m, r in summary["methods"].items():
            cells = []
            for name in names:
                lat = r.get("latency_s", {}).get(name)
                spd = r.get("speedup_vs_lrm_by_profile", {}).get(name)
                cells.append(f"{f(lat, 1)} ({f(spd)}×)" if spd is not None else f(lat, 1))
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    check = summary.get("profile_check")
    if check:
        lines += ["", f"Latency model check: the fitted `measured` profile predicts {check['predicted_total_s']:.1f} s "
                      f"for {check['measured_total_s']:.1f} s measured ({100 * check['rel_error']:+.1f} %, "
                      f"{'within' if check['ok'] else 'OUTSIDE'} {100 * check['tolerance']:.0f} %). Per method: "
                      + ", ".join(f"{m} {100 * e:+.1f} %" for m, e in check.get("per_method_rel_error", {}).items())
                      + "."]
        if check.get("excluded_records"):
            lines.append(f"{check['excluded_records']} records took more than {OUTLIER_RATIO:g}× what their work "
                         f"predicts (+{OUTLIER_FLOOR_S:g} s) in a model (a stopped process or a busy machine): the fit "
                         "and this check leave them out (`fit.outliers` in summary.json names them); counting them, "
                         f"the error is {100 * check['all_records_rel_error']:+.1f} %. They stay in the mean s and "
                         "median s columns: delete their lines from results.jsonl and resume the run to measure "
                         "them again.")
    if summary.get("plans"):
        lines += ["", *plan_markdown(summary["plans"]["planner"], summary["plans"]["kinds"], list(summary["methods"]))]
    accept = {m: r["acceptance"] for m, r in summary["methods"].items() if r.get("acceptance") is not None}
    if accept:
        lines += ["", "Speculative decoding, share of drafted tokens the LRM accepted: "
                  + ", ".join(f"{m} {a:.2f}" for m, a in accept.items()) + "; answers identical to lrm's: "
                  + ", ".join(f"{m} {f(summary['methods'][m].get('same_text_as_lrm'))}" for m in accept) + "."]
    if summary.get("profiles"):
        lines += ["", "| profile | SRM decode tok/s | SRM prefill tok/s | LRM decode tok/s | LRM prefill tok/s | "
                      "LRM s/call |", "|---|---|---|---|---|---|"]
        for name, p in summary["profiles"].items():
            s, q = p["srm"], p["lrm"]
            lines.append(f"| {name} | {f(s['decode_tok_s'], 1)} | {f(s['prefill_tok_s'], 1)} | "
                         f"{f(q['decode_tok_s'], 1)} | {f(q['prefill_tok_s'], 1)} | {f(q['call_s'], 3)} |")
    for name, why in (summary.get("unpriced_profiles") or {}).items():
        lines += ["", f"Not priced under `{name}`: {why}."]
    return "\n".join(lines) + "\n"


def write_pareto(summary: dict[str, Any], path: str | os.PathLike[str], profile: str | None = None) -> Path:
    """Accuracy (with 95% CI bars) against mean latency under ``profile`` (default: the summary's), one point
    per method; the methods of one sweep (labels equal but for the threshold, see :func:`_sweep_of`) are joined
    left to right. PNG."""
    prof = profile or summary.get("profile", "measured")
    return _plot_accuracy(summary, path, lambda r: r.get("latency_s", {}).get(prof, r["mean_s"]),
                          f"mean latency per problem, s (profile: {prof})", "accuracy vs latency")


def write_share_plot(summary: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Accuracy (with 95% CI bars) against the LRM token share, one point per method, sweeps joined: how
    policies compare at matched LRM use, whatever the hardware. specdec (no token share) is left out. PNG."""
    return _plot_accuracy(summary, path, lambda r: r.get("lrm_token_share"),
                          "LRM token share (LRM tokens / all kept tokens)", "accuracy vs LRM share")


def _place_labels(ax: Any, labels: list[tuple[float, float, str]], dpi: float, size: float = 7.0) -> None:
    """Annotate each point (x, y) with its label, up and right of it, moving a label up or down in steps of one
    line when its box would overlap a label already placed (methods with close accuracy and latency)."""
    ax.autoscale_view()
    px = dpi / 72.0  # pixels per point
    placed: list[tuple[float, float, float, float]] = []  # label boxes in display pixels
    for x, y, label in sorted(labels, key=lambda t: (t[0], t[1])):
        bx, by = ax.transData.transform((x, y))
        w, h = 0.6 * size * len(label) * px, 1.3 * size * px
        for dy in (4, -12, 13, -21, 22, -30, 31):
            x0, y0 = bx + 4 * px, by + dy * px
            if not any(x0 < b[2] and b[0] < x0 + w and y0 < b[3] and b[1] < y0 + h for b in placed):
                break
        placed.append((x0, y0, x0 + w, y0 + h))
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, dy), fontsize=size)


def _plot_accuracy(summary: dict[str, Any], path: str | os.PathLike[str], x_of: Any, xlabel: str,
                   title: str) -> Path:
    fig = agg_figure(7.5, 5.5)
    ax = fig.add_subplot(1, 1, 1)
    groups: dict[str, list[tuple[float, float, float, float, str]]] = {}
    labels: list[tuple[float, float, str]] = []
    for m, r in summary["methods"].items():
        x = x_of(r)
        if x is None:
            continue
        lo, hi = r["accuracy_ci95"]
        groups.setdefault(_sweep_of(m), []).append((float(x), r["accuracy"], lo, hi, m))
    for name, pts in groups.items():
        pts.sort()
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        yerr = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]  # >= 0: _wilson is exact at the ends
        ax.errorbar(xs, ys, yerr=yerr, fmt="o-" if len(pts) > 1 else "o", capsize=3, alpha=0.85, label=name)
        labels += [(x, y, label) for x, y, *_rest, label in pts]
    _place_labels(ax, labels, dpi=fig.dpi)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"{title} ({summary['problems']} problems)")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    return out
