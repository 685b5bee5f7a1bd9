"""The plain-language reading and the Markdown report of ``rankguide-edge analyze``.

Every sentence is generated from the measured numbers; nothing here assumes a direction or a winner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .analyze import AnalysisResult


def _f(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _ci(ci: Any) -> str:
    return "—" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _dir_words(row: dict[str, Any]) -> str:
    return {"high": "high values go with failure", "low": "low values go with failure"}.get(
        row["direction"], "no direction")


def _control_words(row: dict[str, Any]) -> str:
    return {"kept": "it keeps its signal after length control",
            "lost": "its signal does not survive length control",
            "untestable": "no length stratum holds both classes, so length control cannot be tested",
            "n.s.": "its CI already includes 0.5"}[row["length_control"]]


def _strat_words(cb: dict[str, Any], ent: dict[str, Any]) -> str:
    ds = cb.get("route_minus_entropy_length_strat")
    if not ds or ds["diff"] is None:
        return "; within length strata the comparison is not possible"
    return (f"; within length strata it {cb['verdict_length_strat']} it "
            f"({_f(cb['route']['auroc_length_strat'])} vs {_f(ent['auroc_length_strat'])}, "
            f"difference {ds['diff']:+.3f}, CI {_ci(ds['ci'])})")


def reading(res: AnalysisResult) -> list[str]:
    """Short sentences summarising ``res`` (counts, length, strongest signals, combined vs entropy, CV)."""
    c = res.counts
    out = [f"{c['traces']} usable traces, {c['wrong']} wrong ({100 * c['wrong'] / c['traces']:.0f}%); "
           f"{c['errors']} error records, {c['malformed']} malformed lines and {c['no_steps']} records without "
           f"steps were skipped; {c['unfinished']} traces hit the token cap ({c['wrong_unfinished']} of them wrong)."]
    nt, ns = res.length["n_tokens"], res.length["n_steps"]
    out.append(f"Length alone as a predictor of failure: n_tokens AUROC {_f(nt['auroc'])} {_ci(nt['ci'])}, n_steps "
               f"{_f(ns['auroc'])} {_ci(ns['ci'])} (raw AUROC: above 0.5 means longer traces fail more).")
    sig = [r for r in res.features if r["kind"] != "length"]
    if sig:
        top = sig[0]
        out.append(f"The strongest single signal is {top['name']} (AUROC {_f(top['auroc'])} {_ci(top['ci'])}, "
                   f"{_dir_words(top)}); after length stratification it is {_f(top['auroc_length_strat'])} "
                   f"and on finished traces only {_f(top['auroc_finished'])}: {_control_words(top)}.")
        significant = [r for r in sig if r["significant"]]
        kept = [r for r in significant if r["length_control"] == "kept"]
        if not significant:
            out.append("No signal feature has a bootstrap CI that excludes 0.5; with these traces none is "
                       "distinguishable from chance.")
        elif kept:
            best = sorted(kept, key=lambda r: -abs(r["auroc_length_strat"] - 0.5))[:3]
            names = ", ".join(f"{r['name']} ({_f(r['auroc_length_strat'])})" for r in best)
            out.append(f"{len(kept)} of {len(significant)} significant signal features keep a significant AUROC "
                       f"within length strata; the strongest length-controlled ones are {names}.")
        else:
            out.append(f"None of the {len(significant)} significant signal features keeps a significant AUROC "
                       "within length strata: their raw AUROCs may be mostly trace length.")
    cb = res.combined
    if cb.get("verdict"):
        d = cb["route_minus_entropy"]
        ent = cb["entropy_max"] if cb["entropy_best"] == "text.entropy_max:max" else cb["entropy_mean"]
        out.append(f"The combined routing score fail.route (max over steps, AUROC {_f(cb['route']['auroc'])}) "
                   f"{cb['verdict']} entropy alone ({cb['entropy_best']} {_f(ent['auroc'])}; difference "
                   f"{d['diff']:+.3f}, paired 95% CI {_ci(d['ci'])}; both read as high = failure)"
                   + _strat_words(cb, ent) + ".")
    elif cb.get("route") is None:
        out.append("The traces carry no fail.route score, so the combined score cannot be compared with entropy.")
    br, be = cb.get("best_rank"), cb.get("best_entropy")
    if br:
        eff = abs(br["auroc"] - 0.5)
        cmp = ""
        if be:
            ent_eff = abs(be["auroc"] - 0.5)
            cmp = (f" vs {ent_eff:.3f} for the best entropy feature {be['name']} ({_f(be['auroc'])}); "
                   f"it is {'stronger' if eff > ent_eff else 'weaker'} than entropy")
        out.append(f"Of the rank variants, {br['name']} comes closest to entropy (AUROC {_f(br['auroc'])}, "
                   f"|AUROC-0.5| = {eff:.3f}{cmp}; within length strata it is {_f(br['auroc_length_strat'])}.")
    lg = res.logistic
    if lg.get("available"):
        m = lg["models"]
        parts = [f"{k} {_f(v.get('auroc'))}" if v.get("available") else f"{k} n/a ({v.get('note')})"
                 for k, v in m.items()]
        text = f"Cross-validated ({lg['folds']}-fold) logistic regression, out-of-fold AUROC: " + "; ".join(parts)
        d = lg.get("entropy+rank_minus_entropy")
        if d and d["diff"] is not None:
            text += f". Adding rank features changes it by {d['diff']:+.3f} (paired 95% CI {_ci(d['ci'])})"
        out.append(text + ".")
    sl = res.step_level
    if sl.get("available"):
        top = sl["signals"][0]
        out.append(f"Step labels on {sl['n_labelled']} steps: the strongest step-level signal is {top['signal']} "
                   f"(AUROC {_f(top['auroc'])} {_ci(top['ci'])}).")
    else:
        out.append(f"Step level: {sl['note']}.")
    widths = [(r["ci"][1] - r["ci"][0]) / 2 for r in sig if r["ci"]]
    if widths:
        out.append(f"With {c['traces']} traces the typical 95% CI half-width is ±{float(np.median(widths)):.3f}: "
                   "differences between AUROCs smaller than that are noise.")
    return out


def _counts_table(c: dict[str, int]) -> list[str]:
    cols = [("traces", "traces"), ("wrong", "wrong"), ("correct", "correct"), ("errors", "error records"),
            ("malformed", "malformed lines"), ("no_steps", "no steps"), ("unfinished", "unfinished"),
            ("steps", "steps"), ("signal_keys", "signal keys"), ("labelled_steps", "labelled steps")]
    return ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols),
            "| " + " | ".join(str(c[k]) for k, _ in cols) + " |"]


_CONTROL_MARK = {"kept": "**kept**", "lost": "lost", "untestable": "untestable", "n.s.": "n.s."}


def _feature_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| # | feature | aggregation | AUROC | 95% CI | direction | n | finished only | length-stratified "
             "| strat. 95% CI | after length control |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, start=1):
        agg = r["agg"] if r["kind"] != "first_cross" else f"{r['agg']} ({r['threshold']:.3g})"
        lines.append(f"| {i} | `{r['signal']}` | {agg} | {_f(r['auroc'])} | {_ci(r['ci'])} | {r['direction']} | "
                     f"{r['n']} | {_f(r['auroc_finished'])} | {_f(r['auroc_length_strat'])} | "
                     f"{_ci(r['ci_length_strat'])} | {_CONTROL_MARK[r['length_control']]} |")
    return lines


def render_report(res: AnalysisResult) -> str:
    """The Markdown report: reading, counts, length, combined vs entropy, logistic CV, step level, table."""
    L: list[str] = [f"# Which signals predict failure: `{res.source}`", ""]
    L += [f"- {s}" for s in res.reading] + [""]
    L += ["## Counts", ""] + _counts_table(res.counts) + [""]
    if res.warnings:
        L += [f"Skipped malformed lines (first {len(res.warnings)}):", ""]
        L += [f"- `{w}`" for w in res.warnings] + [""]
    ln = res.length
    L += ["## Length", "",
          f"Trace length: n_tokens AUROC {_f(ln['n_tokens']['auroc'])} {_ci(ln['n_tokens']['ci'])}, n_steps "
          f"{_f(ln['n_steps']['auroc'])} {_ci(ln['n_steps']['ci'])}. Length strata: {ln['bins']} quantile bins "
          f"of n_tokens with {ln['bin_sizes']} traces ({ln['bin_wrong']} wrong), upper bounds "
          f"{[None if x is None else int(x) for x in ln['bin_max_tokens']]} tokens. The length-stratified "
          "AUROC is the within-bin AUROC averaged over bins holding both classes, weighted by bin size.", ""]
    cb = res.combined
    L += ["## Combined score vs entropy", "",
          "| role | feature | AUROC | 95% CI | finished only | length-stratified | strat. 95% CI |",
          "|---|---|---|---|---|---|---|"]
    shown: set[str] = set()
    roles = (("route", "combined score"), ("entropy_max", "entropy (max of step max)"),
             ("entropy_mean", "entropy (mean of step max)"), ("best_rank", "strongest rank feature"),
             ("best_rank_length_strat", "strongest rank feature within length strata"))
    for key, role in roles:
        r = cb.get(key)
        if r and r["name"] not in shown:
            shown.add(r["name"])
            L.append(f"| {role} | `{r['name']}` | {_f(r['auroc'])} | {_ci(r['ci'])} | {_f(r['auroc_finished'])} | "
                     f"{_f(r['auroc_length_strat'])} | {_ci(r['ci_length_strat'])} |")
    if cb.get("verdict"):
        d = cb["route_minus_entropy"]
        L += ["", f"fail.route (max) **{cb['verdict']}** {cb['entropy_best']}: difference {d['diff']:+.3f}, "
                  f"paired bootstrap 95% CI {_ci(d['ci'])}."]
        ds = cb.get("route_minus_entropy_length_strat")
        if ds and ds["diff"] is not None:
            L.append(f"Within length strata it **{cb['verdict_length_strat']}** it: difference "
                     f"{ds['diff']:+.3f}, paired 95% CI {_ci(ds['ci'])}.")
    L.append("")
    lg = res.logistic
    L += ["## Logistic regression (cross-validated)", ""]
    if lg.get("available"):
        L += [f"{lg['folds']}-fold stratified CV (seed {lg['seed']}), L2 = {lg['l2']:g}; {lg['note']}.", "",
              "| model | features | out-of-fold AUROC | 95% CI |", "|---|---|---|---|"]
        for k, m in lg["models"].items():
            feats = ", ".join(f"`{x}`" for x in m["features"]) or "—"
            if m.get("available"):
                L.append(f"| {k} | {feats} | {_f(m['auroc'])} | {_ci(m['ci'])} |")
            else:
                L.append(f"| {k} | {feats} | n/a ({m['note']}) | — |")
        for k in ("entropy+rank_minus_entropy", "entropy+rank+length_minus_entropy"):
            d = lg.get(k)
            if d and d["diff"] is not None:
                L.append(f"\n{k.replace('_minus_', ' minus ')}: {d['diff']:+.3f}, paired 95% CI {_ci(d['ci'])}.")
    else:
        L.append(lg["note"] + ".")
    L.append("")
    sl = res.step_level
    L += ["## Step level", ""]
    if sl.get("available"):
        L += [f"{sl['n_labelled']} labelled steps ({sl['n_wrong_steps']} wrong) in {sl['n_traces']} traces; "
              f"{sl['note']}.", "", "| signal | AUROC | 95% CI | direction |", "|---|---|---|---|"]
        L += [f"| `{r['signal']}` | {_f(r['auroc'])} | {_ci(r['ci'])} | {r['direction']} |" for r in sl["signals"]]
    else:
        L.append(sl["note"] + ".")
    L += ["", "## Every signal", "",
          "Sorted by |AUROC − 0.5|. AUROC is raw: the positive class is a wrong final answer, so below 0.5 means "
          "low values go with failure (direction `low`). Aggregations over a trace's steps: `max`, `mean`, `last`; "
          "`first>qXX` is the relative position of the first step whose score exceeds the pooled XX-th percentile "
          "(1.0 when none does; low = early). *After length control*: **kept** when the length-stratified CI "
          "still excludes 0.5 on the same side, *lost* when it does not, *n.s.* when the raw CI already "
          "includes 0.5.", ""]
    L += _feature_table(res.features)
    if res.files:
        L += ["", "## Files", ""] + [f"- {k}: `{v}`" for k, v in res.files.items()]
    return "\n".join(L) + "\n"
