"""The rank study's report: markdown tables, a JSON of every number and the depth-profile figure.

:func:`run_study` scores each label file on its own problem-grouped folds; every file after the first is
also scored *transferred* (everything fitted on the first file, which is where the definitions were chosen).
:func:`verdict` applies the hot-path rule: a rank set stays only if adding it to text + position raises the
held-out AUROC with a paired interval that excludes 0, on the first file and on every test.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RuntimeConfig, bounded, same_as, validate
from ..errors import DependencyError
from .rank_study_eval import FileStudy, Scored, study_file
from .rank_study_table import RANK_SETS, StudyConfig, StudyTable, build_table
from .router_fit import FitConfig


@dataclass(frozen=True)
class RankStudyConfig:
    """The settings of ``rankguide-edge rank-study`` (the replay's and the study's knobs)."""

    cache: str = bounded("runs/rank_study_cache", help="replay cache folder (one .npz per problem, ~8 MB each; "
                         "resumable)")
    replay: bool = bounded(True, help="replay problems whose cache is missing (loads the SRM); --no-replay scores "
                           "only what is cached and loads no model")
    replay_only: bool = bounded(False, help="fill the cache and stop (no scoring)")
    replay_limit: int | None = bounded(None, lo=1, hi=10**9, help="replay at most this many problems in this call",
                                       unset="every missing one")
    window: int = bounded(16, lo=3, hi=64, help="W: rows of every window (the step's last W tokens)")
    angle_k: int = bounded(4, lo=1, hi=63, help="principal angles compared between consecutive steps' windows")
    n_folds: int = same_as(FitConfig, "n_folds", help="problem-grouped folds of the held-out AUROCs")
    repeats: int = bounded(5, lo=1, hi=100, help="fold shuffles averaged over")
    n_boot: int = same_as(FitConfig, "n_boot", default=2000)
    seed: int = same_as(RuntimeConfig, "seed", help="seed of the folds and resamples")
    n_ctx: int = same_as(RuntimeConfig, "n_ctx")
    n_threads: int = same_as(RuntimeConfig, "n_threads")

    def __post_init__(self) -> None:
        validate(self)

#: what each rank set of the key test holds (the report's wording)
SET_WORDS = {
    "spectral": "Rényi-2 spectral entropy of the last-W window at the chosen layers + its depth slope",
    "angles": "mean cos² of the top-k principal angles to the previous step's window at the chosen layers + "
              "their mean over all layers",
    "tensor": "effective ranks of the layer, token and hidden unfoldings of the W × layers × hidden tensor",
    "probe": "PCs of the step's mean row at the probe depths",
    "all_new": "all of the above together",
}


@dataclass
class StudyRun:
    studies: list[FileStudy]
    cfg: StudyConfig
    files: list[str]
    replay: dict[str, Any] = field(default_factory=dict)
    command: str = ""
    notes: str = ""
    n_layer: int = 24
    n_embd: int = 896


def run_study(tables: Sequence[StudyTable], cfg: StudyConfig) -> list[FileStudy]:
    """Each table on its own folds; every table after the first also transferred from the first."""
    out = [study_file(tables[0], cfg)]
    for t in tables[1:]:
        out += [study_file(t, cfg), study_file(t, cfg, train=tables[0])]
    return out


def load_tables(paths: Sequence[str], cache_dir: str | os.PathLike[str], cfg: StudyConfig, srm: str | None,
                keep_rows: int = 64) -> list[StudyTable]:
    from .label import load_labels

    tables = []
    for p in paths:
        _, records = load_labels(p)
        tables.append(build_table(_short(p), records, cache_dir, cfg, srm=srm, keep_rows=keep_rows))
    return tables


def _short(path: str) -> str:
    name = Path(path).name
    for suf in (".gz", ".jsonl"):
        name = name[: -len(suf)] if name.endswith(suf) else name
    parent = Path(path).parent.name
    return f"{parent}/{name}" if name == "labels" and parent else name


def verdict(studies: Sequence[FileStudy]) -> dict[str, bool]:
    """Rank set -> whether it earns the hot path: its paired interval excludes 0 (above) in every study."""
    return {rs: all(next(c for c in s.comparisons if c.rank_set == rs).earns for s in studies) for rs in RANK_SETS}


# ------------------------------------------------------------------------------------------------ markdown


def _f(x: float | None, nd: int = 3) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{nd}f}"


def _ci(ci: tuple[float, float] | None, nd: int = 3) -> str:
    return "—" if ci is None else f"[{ci[0]:.{nd}f}, {ci[1]:.{nd}f}]"


def _title(s: FileStudy) -> str:
    how = ("its own 5-fold problem-grouped CV" if s.mode == "cv"
           else "transferred: every direction, fit and weight from the first file, applied unchanged")
    return f"{s.name}, {how}"


def _single_table(raw: list[Scored], resid: list[Scored]) -> list[str]:
    by = {r.name: r for r in resid}
    out = ["| signal | steps (helps) | ρ with log length | in-sample AUROC (high routes) | held-out raw [95 % CI] "
           "| held-out residualised [95 % CI] | direction (raw / resid) |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for s in raw:
        r = by.get(s.name)
        out.append(f"| `{s.name}` | {s.n} ({s.positives}) | {_f(s.spearman_length, 2)} | {_f(s.insample)} | "
                   f"{_f(s.auroc)} {_ci(s.ci)} | {_f(r.auroc) if r else '—'} {_ci(r.ci) if r else ''} | "
                   f"{s.direction or '—'} / {r.direction if r and r.direction else '—'} |")
    return out


def _comparison_table(s: FileStudy) -> list[str]:
    out = ["| rank set added to text + position | text + position | with the rank set | difference "
           "[paired 95 % CI] | interval above 0 |", "| --- | --- | --- | --- | --- |"]
    for c in s.comparisons:
        out.append(f"| {c.rank_set} | {_f(c.base.auroc)} {_ci(c.base.ci)} | {_f(c.with_rank.auroc)} "
                   f"{_ci(c.with_rank.ci)} | {c.diff:+.3f} {_ci(c.diff_ci)} | {'yes' if c.earns else 'no'} |")
    return out


def definitions_lines(cfg: StudyConfig, n_layer: int = 24, n_embd: int = 896) -> list[str]:
    d = cfg.defs
    w, k, nl = d.window, d.angle_k, n_layer
    return [
        f"Every window is the step's **last W = {w} token rows** (steps shorter than W give no value: they are "
        "left out of the single-signal rows and mean-imputed in the models); rows are centred over the "
        "window's tokens; `λ` are the eigenvalues of the centred window's Gram matrix and `p = λ / Σλ`.",
        "",
        "| signal | formula |",
        "| --- | --- |",
        f"| `spec.h2.L{{l}}` (every layer: a depth profile) | Rényi-2 spectral entropy `−log Σ p_i²` of layer "
        f"l's window (0 … log {w - 1}) |",
        "| `spec.h1.L{l}`, `spec.h1.mean` | Shannon spectral entropy `−Σ p_i log p_i`; mean over layers |",
        f"| `spec.h2.mean`, `.slope`, `.argmin` | mean over the {nl} layers; least-squares slope against depth "
        f"scaled to [0, 1]; the layer of the lowest entropy / {nl - 1} |",
        f"| `angle.cos2.L{{l}}`, `.mean` | `(1/k) Σ_{{i≤k}} cos² θ_i`, θ the principal angles between the top-k "
        f"(k = {k}) hidden-space singular subspaces of this step's window and the previous step's (for the "
        "first SRM step: the plan's last W rows); mean over layers |",
        "| `tensor.erank.{layer,token,hidden}` | `exp(−Σ p log p)` of each unfolding's spectrum of the "
        f"{w} × {nl} × {n_embd} tensor (every layer slice centred and scaled to unit Frobenius norm): layer mode "
        f"1 … {nl}, token mode 1 … {w - 1}, hidden mode 1 … {min(n_embd, nl * (w - 1))} |",
        f"| probe | per depth L{', L'.join(map(str, cfg.probe_layers))}: the step's mean row over all its tokens, "
        f"{cfg.probe_dims} principal components fitted on the training folds; L2 logistic (C = 1/{cfg.l2:g}) "
        f"on the {cfg.probe_dims * len(cfg.probe_layers)} components |",
        "",
        f"Models in the key test use the layers {', '.join(map(str, d.spec_layers))} for `spec.h2` and "
        f"{', '.join(map(str, d.angle_layers))} for `angle.cos2` (sets in the comparison table). Residualised: "
        "minus the least-squares fit on log step length, step position (`step.index`) and a first-SRM-step "
        "flag, fitted on the training folds.",
    ]


def _diff_cell(s: FileStudy, rank_set: str) -> str:
    c = next(c for c in s.comparisons if c.rank_set == rank_set)
    return f"{c.diff:+.3f} {_ci(c.diff_ci)}"


def _verdict_line(studies: Sequence[FileStudy], earned: list[str]) -> str:
    if earned:
        return f"**Rank sets that earn the hot path: {', '.join(earned)}.**"
    tested = ("on the file the definitions were chosen on" if len(studies) == 1 else
              "on the file the definitions were chosen on, nor on the test file(s)")
    worse = [c.rank_set for c in studies[0].comparisons if c.diff_ci is not None and c.diff_ci[1] < 0]
    line = ("**No rank definition earns the hot path.** No rank set adds held-out AUROC over text + position "
            f"with a paired interval that excludes 0 — not {tested}.")
    if worse:
        line += (f" On {studies[0].name} adding {', '.join(worse)} makes the held-out AUROC *worse*, with an "
                 "interval below 0.")
    return line


def report_markdown(run: StudyRun) -> str:
    cfg = run.cfg
    v = verdict(run.studies)
    earned = [rs for rs, ok in v.items() if ok]
    first = run.studies[0]
    lines = [
        "# Rank signals defined so they can carry information (issue 23, item 3)", "",
        "```", run.command or "rankguide-edge rank-study LABELS... --out DIR", "```", "",
        "Target: **routing helps** (`cf.gain == +1`; steps of right answers without a counterfactual count as 0, "
        "as in `router fit`). Held out by problem: stratified group folds "
        f"({cfg.n_folds} folds × {cfg.repeats} repeats with other shuffles; an AUROC is taken over the pairs of "
        "a helping and a non-helping step in the same test fold and averaged over the repeats). Intervals: 95 % "
        f"percentile bootstrap over problems ({cfg.n_boot} resamples; the difference is paired: both models on "
        "the same resamples). Text + position are `router fit`'s `text` and `position` feature groups "
        "(imported), in an L2 logistic regression (C = 1 / "
        f"{cfg.l2:g}, as `router fit --l2 {cfg.l2:g}`).", "",
        "## Verdict", "",
        _verdict_line(run.studies, earned),
        "",
        "The rule: a set stays only if its paired difference interval lies above 0 in every study below "
        f"({'; '.join(_title(s) for s in run.studies)}).", "",
        "| rank set | " + " | ".join(f"{s.name} ({s.mode})" for s in run.studies) + " |",
        "| --- | " + " | ".join("---" for _ in run.studies) + " |",
        *[f"| {rs} | " + " | ".join(_diff_cell(s, rs) for s in run.studies) + " |" for rs in RANK_SETS],
        "",
    ]
    if run.notes:
        lines += [run.notes.rstrip(), ""]
    lines += ["## Definitions", "", *definitions_lines(cfg, run.n_layer, run.n_embd), ""]
    if run.replay:
        lines += ["## Replay", ""]
        for name, r in run.replay.items():
            lines.append(f"- `{name}`: {r}")
        lines.append("")
    for s in run.studies:
        lines += [f"## {_title(s)}", "",
                  f"{s.steps} SRM steps with a known label in {s.problems} problems, {s.positives} where routing "
                  f"helps ({s.positives / max(1, s.steps):.1%})."
                  + (f" {s.missing_problems} problems of the file had no replay yet and are left out."
                     if s.missing_problems else "")
                  + (f" Replay check: the replayed mean last-layer row matches the label file's `pooled` row "
                     f"(median cosine {s.pooled_check:.5f})." if math.isfinite(s.pooled_check) else ""), "",
                  "Key test (the rule):", "", *_comparison_table(s), "",
                  "Single signals (`direction`: which values route, chosen on the training folds; \"mixed\" = it "
                  "flips between folds, and a signal without information then scores *below* 0.5 held out):", "",
                  *_single_table(s.single_raw, s.single_resid), ""]
        if s.first_step:
            n, h = s.first_step[0].n, s.first_step[0].positives
            lines += [f"The first SRM step after the plan alone (where most of the routing gain is; held-out raw "
                      f"AUROC; about {n} steps, {h} helping):", "",
                      "| signal | steps (helps) | held-out raw [95 % CI] | in-sample (high routes) |",
                      "| --- | --- | --- | --- |",
                      *[f"| `{x.name}` | {x.n} ({x.positives}) | {_f(x.auroc)} {_ci(x.ci)} | {_f(x.insample)} |"
                        for x in s.first_step], ""]
    lines += ["## Depth profile", "", "![depth profile](depth_profile.png)", "",
              "Left: mean `spec.h2` and `angle.cos2` by layer for the steps where routing helps and the others "
              "(±1.96 standard errors). Right: their held-out AUROC per layer, raw and residualised (95 % "
              f"intervals for the first file, {first.name}).", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ figure


def plot_profiles(studies: Sequence[FileStudy], path: str | os.PathLike[str]) -> None:
    """The depth-profile figure (PNG): means and held-out AUROCs of ``spec.h2`` and ``angle.cos2`` by layer."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise DependencyError("matplotlib is missing: pip install 'matplotlib>=3.7'") from None
    fig = Figure(figsize=(11, 7.5), dpi=110)
    FigureCanvasAgg(fig)
    shown = [s for s in studies if s.mode == "cv"]
    styles = ["-", "--", ":", "-."]
    for row, (fam, label) in enumerate((("spec.h2", "Rényi-2 entropy of the last-W window (nats)"),
                                        ("angle.cos2", "mean cos² to the previous step's window"))):
        ax = fig.add_subplot(2, 2, 2 * row + 1)
        for i, s in enumerate(shown):
            x = s.profile["layers"]
            for lab, color in (("helps", "tab:red"), ("other", "tab:blue")):
                m = [math.nan if v is None else v for v in s.profile[f"{fam}.mean.{lab}"]]
                se = [math.nan if v is None else v for v in s.profile[f"{fam}.se.{lab}"]]
                ax.plot(x, m, color=color, ls=styles[i % 4], lw=1.4, label=f"{s.name}: {lab}")
                ax.fill_between(x, [a - 1.96 * b for a, b in zip(m, se, strict=True)],
                                [a + 1.96 * b for a, b in zip(m, se, strict=True)], color=color, alpha=0.12)
        ax.set_xlabel("layer")
        ax.set_ylabel(label, fontsize=8)
        ax.legend(fontsize=6)
        ax = fig.add_subplot(2, 2, 2 * row + 2)
        ax.axhline(0.5, color="0.6", lw=1, ls=":")
        for i, s in enumerate(studies):
            x = s.profile["layers"]
            for resid, color in ((False, "tab:green"), (True, "tab:purple")):
                d = s.profile[f"{fam}.{'resid' if resid else 'raw'}"]
                a = [math.nan if v is None else v for v in d["auroc"]]
                tag = f"{s.name} ({s.mode}): {'residualised' if resid else 'raw'}"
                ax.plot(x, a, color=color, ls=styles[i % 4], lw=1.4, marker="." if s.mode == "transfer" else None,
                        label=tag)
                if i == 0:
                    lo = [math.nan if c is None else c[0] for c in d["ci"]]
                    hi = [math.nan if c is None else c[1] for c in d["ci"]]
                    ax.fill_between(x, lo, hi, color=color, alpha=0.12)
        ax.set_xlabel("layer")
        ax.set_ylabel(f"held-out AUROC of {fam}.L{{l}}", fontsize=8)
        ax.set_ylim(0.25, 0.8)
        ax.legend(fontsize=6)
    fig.suptitle("Rank signals by depth: do they tell where routing helps?", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.fspath(path), format="png")


def write_report(out_dir: str | os.PathLike[str], run: StudyRun) -> list[str]:
    """``report.md``, ``results.json`` and ``depth_profile.png`` in ``out_dir``; returns the paths written (a
    figure that cannot be drawn is reported in the markdown and skipped)."""
    from ..files import atomic_path, write_text_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    png = out / "depth_profile.png"
    try:
        with atomic_path(png) as tmp:
            plot_profiles(run.studies, tmp)
        written.append(str(png))
    except Exception as exc:  # a figure must never fail the report around it
        run.notes = (run.notes + f"\n\n(The figure was not drawn: {exc}.)").strip()
    data = {"command": run.command, "files": run.files, "config": _cfg_dict(run.cfg), "replay": run.replay,
            "verdict": verdict(run.studies), "studies": [s.to_dict() for s in run.studies]}
    write_text_atomic(out / "results.json", json.dumps(data, indent=1, allow_nan=False) + "\n")
    write_text_atomic(out / "report.md", report_markdown(run))
    return [str(out / "report.md"), str(out / "results.json"), *written]


def _cfg_dict(cfg: StudyConfig) -> dict[str, Any]:
    import dataclasses

    return json.loads(json.dumps(dataclasses.asdict(cfg)))


__all__ = ["StudyRun", "definitions_lines", "load_tables", "plot_profiles", "report_markdown", "run_study",
           "verdict", "write_report"]
