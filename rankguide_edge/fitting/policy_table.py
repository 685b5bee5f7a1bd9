"""``router eval``: single-intervention routing policies compared exactly on a counterfactual table.

A table is a label file written with counterfactuals on every problem (``label --cf-right-share 1
--max-cf-steps K [--control]``): the un-intervened trace in the served regime (the LRM writes the plan, the SRM
the rest) and, for each of its first K SRM steps, the graded answer after the LRM rewrote that step and the SRM
continued. A policy that routes at most once is then evaluated without running a model: its **first routed
step decides the outcome** (that step's counterfactual; none routed: the un-intervened answer). A policy whose
first routed step lies past the K steps with counterfactuals is counted as not routing, and the share of such
problems is reported (``beyond``).

Policies score steps with the live policy code (:mod:`rankguide_edge.collab.policies`, the router file's
weights), so a threshold here means what it means in ``solve``. Random policies are evaluated as their exact
expectation, not one seeded draw. Spec grammar (``NAME[:THRESHOLD]``):

* ``srm^1`` — never route after the plan (the un-intervened trace);
* ``srm^2`` — always route the first SRM step (the LRM writes two steps);
* ``first-random:P`` — route the first SRM step with probability P;
* ``random:P`` — route each SRM step with probability P (first routed step geometric);
* ``entropy:T``, ``learned:T`` (the router file of ``--router``, ``learned`` alone: its own threshold),
  ``verify:T`` — the first SRM step whose score reaches T;
* ``first-entropy:T``, ``first-learned[:T]``, ``first-check:T`` — the same scores, the first SRM step only
  (``first-check`` is the LRM's teacher-forced check of that step, ``verify``'s score);
* ``control`` — the SRM re-drafts the first SRM step sampled (the table's control), never the LRM.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..bench.run import ReportConfig
from ..collab.policies import StepView, make_policy
from ..collab.router import load_router
from ..config import RuntimeConfig, bounded, same_as, validate
from ..errors import ConfigError, InvalidInputError
from ..stats import paired_difference
from .router_fit import FitConfig

#: LRM tokens and SRM tokens of one outcome
Cost = tuple[float, float]

#: the comparison the router issue names: the baselines, the scores on every step, and the first-step levers
DEFAULT_POLICIES = ("srm^1,srm^2,control,first-random:0.36,random:0.106,entropy:0.5236,learned,verify:0.9947,"
                    "first-check:0.99,first-entropy:0.5236,first-learned:0.129")


@dataclass(frozen=True)
class TableEvalConfig:
    """What ``router eval`` compares on a table."""

    policies: str = bounded(DEFAULT_POLICIES, help="comma list of single-intervention policies, NAME[:THRESHOLD]: "
                            "srm^1, srm^2, control, first-random:P, random:P, entropy:T, learned[:T], verify:T, "
                            "first-entropy:T, first-learned[:T], first-check:T")
    versus: tuple[str, ...] = same_as(ReportConfig, "versus", default=("srm^1", "srm^2", "first-random:0.36"),
                                      help="policies (among the compared) every policy is paired against, "
                                           "comma-separated")
    chosen_on: int = bounded(0, lo=0, hi=10**6, help="the first N problems are the ones thresholds were chosen "
                             "on: report them, the rest and all apart (0: all only)")
    n_boot: int = same_as(FitConfig, "n_boot", default=5000,
                          help="bootstrap resamples (and sign flips) of each paired difference")
    seed: int = same_as(RuntimeConfig, "seed", help="seed of the resamples")

    def __post_init__(self) -> None:
        validate(self)

    def policy_specs(self) -> list[str]:
        return [x.strip() for x in self.policies.split(",") if x.strip()]

    def versus_specs(self) -> list[str]:
        return [x.strip() for x in self.versus if x.strip()]


@dataclass(frozen=True)
class TableStep:
    """One SRM step of the un-intervened trace: what a policy reads, and its counterfactual if it has one."""

    index: int  # in the trace (the plan's steps come first)
    text: str
    n_tokens: int
    prefix: str
    signals: Mapping[str, float]
    lrm: Mapping[str, float] | None
    check_tokens: int
    cf: Mapping[str, Any] | None


@dataclass(frozen=True)
class TableProblem:
    id: str
    question: str
    correct: bool
    lrm_tokens: int  # the plan's
    srm_tokens: int
    steps: tuple[TableStep, ...]
    control: Mapping[str, Any] | None

    def srm_tokens_before(self, j: int) -> int:
        return sum(s.n_tokens for s in self.steps[:j])


def table_problems(records: Sequence[Mapping[str, Any]]) -> list[TableProblem]:
    """The problems of a label file's records (errors left out). InvalidInputError when the file has no
    counterfactuals on some problem (it was written with --cf-right-share below 1: not a table)."""
    out = []
    for r in records:
        if r.get("error") or "steps" not in r:
            continue
        prefix, steps, control = "", [], None
        for st in r["steps"]:
            if st["source"] == "srm":
                steps.append(TableStep(index=st["index"], text=st["text"], n_tokens=st["n_tokens"], prefix=prefix,
                                       signals={k: v for k, v in (st.get("signals") or {}).items() if v is not None},
                                       lrm=st.get("lrm"), check_tokens=int(st.get("lrm_check_prefill_tokens", 0)),
                                       cf=st.get("cf")))
                control = control if control is not None else st.get("control")
            prefix += st["text"]
        if steps and not r.get("counterfactuals"):
            raise InvalidInputError(f"problem {r.get('id')} has no counterfactuals: a table needs them on every "
                                    "problem (label --cf-right-share 1)")
        usage = r.get("usage") or {}
        out.append(TableProblem(id=str(r["id"]), question=r.get("question", ""), correct=bool(r["correct"]),
                                lrm_tokens=int(usage.get("lrm_tokens", 0)), srm_tokens=int(usage.get("srm_tokens", 0)),
                                steps=tuple(steps), control=control))
    return out


# -------------------------------------------------------------------------------------------------- policies


@dataclass(frozen=True)
class Policy:
    """``routes(problem) -> [(probability, j)]``: the distribution of the first routed SRM step (``j`` None:
    none; ``"control"``: the SRM's sampled re-draft)."""

    spec: str
    routes: Callable[[TableProblem], list[tuple[float, Any]]]
    #: which steps the LRM teacher-forces to decide: none, the first SRM step, or every one up to the routed one
    checks: str = "none"


def _scorer(name: str, router: str | None) -> Callable[[TableStep], float]:
    if name == "learned":
        lg = load_router(router).logistic
        if lg is None:
            raise ConfigError(f"router file {router or 'routers/default.json'} has no learned weights: "
                              "give --router a file written by `router fit`")
        policy = make_policy("rankguide", logistic=lg)
    elif name in ("verify", "check"):
        policy = make_policy("verify")
    else:
        policy = make_policy(name)

    def score(st: TableStep) -> float:
        feats = st.lrm
        view = StepView("post", st.index, st.text, st.n_tokens, st.signals, st.prefix,
                        check=(lambda _text: feats) if feats is not None else None)
        return float(policy.score(view))

    return score


def _first_reaching(scores: Sequence[float], threshold: float) -> int | None:
    return next((j for j, s in enumerate(scores) if s >= threshold), None)


def parse_policy(spec: str, *, router: str | None = None, default_threshold: float | None = None) -> Policy:
    """A :class:`Policy` from ``NAME[:VALUE]`` (the module doc's grammar). ConfigError for a bad spec."""
    name, _, value = spec.strip().partition(":")
    try:
        x = float(value) if value else None
    except ValueError:
        raise ConfigError(f"policy {spec!r}: {value!r} is not a number (write NAME:THRESHOLD)") from None
    if x is not None and not 0.0 <= x <= 1.0:
        raise ConfigError(f"policy {spec!r}: {x} must lie in [0, 1]")
    if name == "srm^1":
        return Policy(spec, lambda p: [(1.0, None)])
    if name == "srm^2":
        return Policy(spec, lambda p: [(1.0, 0 if p.steps else None)])
    if name == "control":
        return Policy(spec, lambda p: [(1.0, "control" if p.control is not None else None)])
    if name in ("random", "first-random"):
        if x is None:
            raise ConfigError(f"policy {spec!r} needs a probability: {name}:P")
        q = x
        if name == "first-random":
            return Policy(spec, lambda p: [(q, 0), (1.0 - q, None)] if p.steps else [(1.0, None)])

        def geometric(p: TableProblem) -> list[tuple[float, Any]]:
            dist = [(q * (1.0 - q) ** j, j) for j in range(len(p.steps))]
            return [*dist, (1.0 - sum(w for w, _ in dist), None)]

        return Policy(spec, geometric)
    first_only = name.startswith("first-")
    base = name.removeprefix("first-")
    if base not in ("entropy", "learned", "verify", "check") or (base == "check" and not first_only):
        raise ConfigError(f"unknown table policy {spec!r}: use srm^1, srm^2, control, random:P, first-random:P, "
                          "entropy:T, learned[:T], verify:T, first-entropy:T, first-learned[:T], first-check:T")
    if x is None and base == "learned":
        x = default_threshold if default_threshold is not None else load_router(router).thresholds.get("post")
    if x is None:
        raise ConfigError(f"policy {spec!r} needs a threshold: {name}:T")
    score, t = _scorer(base, router), x

    def first_scored(p: TableProblem) -> list[tuple[float, Any]]:
        steps = p.steps[:1] if first_only else p.steps
        return [(1.0, _first_reaching([score(s) for s in steps], t))]

    checks = "none" if base not in ("verify", "check") else ("first" if first_only else "upto")
    return Policy(spec, first_scored, checks)


# -------------------------------------------------------------------------------------------------- outcomes


def outcome(problem: TableProblem, j: Any) -> tuple[float | None, Cost, bool]:
    """``(correct, (lrm, srm) tokens, beyond)`` when the first routed SRM step is ``j``. ``correct`` is
    None when that step has no usable counterfactual; ``beyond`` when it lies past the table's steps."""
    p = problem
    if j is None:
        return float(p.correct), (p.lrm_tokens, p.srm_tokens), False
    if j == "control":
        c = p.control or {}
        if c.get("gain") is None:
            return None, (0.0, 0.0), False
        return float(c["correct"]), (p.lrm_tokens, p.srm_tokens_before(0) + c["srm_tokens"]), False
    st = p.steps[j]
    if st.cf is None:
        return float(p.correct), (p.lrm_tokens, p.srm_tokens), True
    if st.cf.get("gain") is None:
        return None, (0.0, 0.0), False
    cost = (p.lrm_tokens + st.cf["lrm_tokens"], p.srm_tokens_before(j) + st.cf["srm_tokens"])
    return float(st.cf["correct"]), cost, False


def check_tokens(policy: Policy, problem: TableProblem, j: Any) -> float:
    """LRM prefill tokens the policy's checks cost when its first routed step is ``j`` (after the routed step
    the single-intervention view stops; a live ``verify`` also checks the steps after it)."""
    steps = problem.steps
    if policy.checks == "first":
        return float(steps[0].check_tokens) if steps else 0.0
    if policy.checks == "upto":
        upto = len(steps) if not isinstance(j, int) else j + 1
        return float(sum(s.check_tokens for s in steps[:upto]))
    return 0.0


@dataclass
class PolicyResult:
    spec: str
    correct: np.ndarray  # (n_problems,) expected correctness
    lrm_tokens: np.ndarray
    srm_tokens: np.ndarray
    check_tokens: np.ndarray
    routed: np.ndarray  # probability that some step was routed
    beyond: np.ndarray  # probability that the first routed step had no counterfactual (counted as not routed)

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if len(self.correct) else math.nan

    @property
    def lrm_share(self) -> float:
        total = self.lrm_tokens.sum() + self.srm_tokens.sum()
        return float(self.lrm_tokens.sum() / total) if total else 0.0


def evaluate(policy: Policy, problems: Sequence[TableProblem]) -> PolicyResult:
    """Every problem's expected outcome under ``policy`` (InvalidInputError if a needed counterfactual failed)."""
    n = len(problems)
    cols = {k: np.zeros(n) for k in ("correct", "lrm", "srm", "check", "routed", "beyond")}
    for i, p in enumerate(problems):
        for w, j in policy.routes(p):
            if w <= 0.0:
                continue
            c, (lt, st), past = outcome(p, j)
            ck = check_tokens(policy, p, j)
            if c is None:
                raise InvalidInputError(f"problem {p.id}: the counterfactual of its SRM step {j} failed; "
                                        "relabel the problem")
            cols["correct"][i] += w * c
            cols["lrm"][i] += w * lt
            cols["srm"][i] += w * st
            cols["check"][i] += w * ck
            cols["routed"][i] += w * (j is not None and not past)
            cols["beyond"][i] += w * past
    return PolicyResult(policy.spec, cols["correct"], cols["lrm"], cols["srm"], cols["check"], cols["routed"],
                        cols["beyond"])


def pgr(acc: float, low: float, high: float) -> float:
    """Share of the gap from ``low`` to ``high`` accuracy that ``acc`` recovers (nan without a gap)."""
    return (acc - low) / (high - low) if high != low else math.nan


# -------------------------------------------------------------------------------------------------- the report


def baseline_outcomes(records: Sequence[Mapping[str, Any]], methods: Sequence[str] = ("srm", "lrm")
                      ) -> dict[str, dict[str, float]]:
    """``{method: {problem id: correct}}`` of a bench folder's records (``results.jsonl``), for PGR."""
    out: dict[str, dict[str, float]] = {m: {} for m in methods}
    for r in records:
        m = r.get("method")
        if m in out and "correct" in r and not r.get("error"):
            out[m][str(r["id"])] = float(bool(r["correct"]))
    return out


def compare(problems: Sequence[TableProblem], policies: Sequence[Policy], *, versus: Sequence[str] = (),
            chosen_on: int = 0, baselines: Mapping[str, Mapping[str, float]] | None = None,
            n_boot: int = 5000, seed: int = 0) -> dict[str, Any]:
    """Every policy on every problem, summarised on the groups ``chosen`` (the first ``chosen_on`` problems:
    the ones thresholds were chosen on), ``new`` (the rest) and ``all``; paired differences against each
    policy named in ``versus``; PGR from ``srm`` and from ``srm^1`` toward ``lrm`` where ``baselines`` (bench
    records) has both for every problem of a group."""
    results = {p.spec: evaluate(p, problems) for p in policies}
    unknown = [v for v in versus if v not in results]
    if unknown:
        raise ConfigError(f"--versus {', '.join(unknown)} is not among --policies")
    ids = [p.id for p in problems]
    groups = {"all": np.arange(len(problems))}
    if chosen_on:
        groups = {"chosen": np.arange(min(chosen_on, len(problems))),
                  "new": np.arange(min(chosen_on, len(problems)), len(problems)), **groups}
    base = baselines or {}
    srm1 = results.get("srm^1")
    out: dict[str, Any] = {"n_problems": len(problems), "groups": {}}
    for g, idx in groups.items():
        rows = []
        have = {m: all(ids[i] in base.get(m, {}) for i in idx) and len(idx) > 0 for m in ("srm", "lrm")}
        acc_of = {m: float(np.mean([base[m][ids[i]] for i in idx])) for m in ("srm", "lrm") if have[m]}
        for spec, res in results.items():
            sub = PolicyResult(spec, res.correct[idx], res.lrm_tokens[idx], res.srm_tokens[idx],
                               res.check_tokens[idx], res.routed[idx], res.beyond[idx])
            row: dict[str, Any] = {"policy": spec, "n": len(idx), "accuracy": sub.accuracy,
                                   "lrm_token_share": sub.lrm_share, "routed": float(sub.routed.mean()),
                                   "beyond": float(sub.beyond.mean()),
                                   "check_tokens": float(sub.check_tokens.mean()) if len(idx) else 0.0}
            if "lrm" in acc_of:
                if "srm" in acc_of:
                    row["pgr_from_srm"] = pgr(sub.accuracy, acc_of["srm"], acc_of["lrm"])
                if srm1 is not None:
                    row["pgr_from_srm1"] = pgr(sub.accuracy, float(srm1.correct[idx].mean()), acc_of["lrm"])
            row["versus"] = {v: paired_difference(res.correct[idx], results[v].correct[idx], n_resamples=n_boot,
                                                  seed=seed) for v in versus if v != spec}
            rows.append(row)
        out["groups"][g] = {"n": len(idx), "baselines": acc_of, "rows": rows}
    return out


def _f(x: Any, nd: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def compare_markdown(summary: Mapping[str, Any], *, command: str = "") -> str:
    """The comparison as markdown: one table per group, then the paired differences."""
    lines = ["# Single-intervention policies on the counterfactual table", ""]
    if command:
        lines += ["```", command, "```", ""]
    for g, block in summary["groups"].items():
        base = ", ".join(f"{m} {v:.3f}" for m, v in block["baselines"].items()) or "no srm/lrm records given"
        lines += [f"## {g} ({block['n']} problems; alone: {base})", "",
                  "| policy | accuracy | LRM token share | routed | past the table | LRM check tokens | "
                  "PGR from srm | PGR from srm^1 |", "|---|---|---|---|---|---|---|---|"]
        for r in block["rows"]:
            lines.append(f"| `{r['policy']}` | {_f(r['accuracy'])} | {_f(r['lrm_token_share'])} | "
                         f"{_f(r['routed'], 2)} | {_f(r['beyond'], 2)} | {_f(r['check_tokens'], 1)} | "
                         f"{_f(r.get('pgr_from_srm'), 2)} | {_f(r.get('pgr_from_srm1'), 2)} |")
        versus = sorted({v for r in block["rows"] for v in r["versus"]})
        if versus:
            lines += ["", "Paired accuracy differences (row − column; mean over problems, 95 % bootstrap interval "
                      "over problems, sign-flip p):", "",
                      "| policy | " + " | ".join(f"vs `{v}`" for v in versus) + " |",
                      "|---|" + "---|" * len(versus)]
            for r in block["rows"]:
                cells = []
                for v in versus:
                    d = r["versus"].get(v)
                    cells.append("—" if d is None else
                                 f"{d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}], p {d['p']:.3f}")
                lines.append(f"| `{r['policy']}` | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _family(spec: str) -> str:
    return spec.partition(":")[0]


def write_share_plot(summary: Mapping[str, Any], path: str | Any, group: str = "all") -> str | None:
    """Accuracy against LRM token share, one point per policy, the thresholds of one family joined left to
    right (PNG). Returns None when written, else why not (the report goes on without it)."""
    from ..figures import agg_figure, draw_png

    block = summary["groups"][group]

    def draw(tmp: Any) -> None:
        fig = agg_figure(7.5, 5.5)
        ax = fig.add_subplot(1, 1, 1)
        fams: dict[str, list[tuple[float, float, str]]] = {}
        for r in block["rows"]:
            fams.setdefault(_family(r["policy"]), []).append((r["lrm_token_share"], r["accuracy"], r["policy"]))
        for name, pts in fams.items():
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-" if len(pts) > 1 else "o", label=name, alpha=0.85)
            for x, y, spec in pts:
                ax.annotate(spec.partition(":")[2] or spec, (x, y), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")
        for m, acc in block["baselines"].items():
            ax.axhline(acc, ls="--", lw=0.8, color="grey")
            ax.annotate(f"{m} alone", (0.0, acc), fontsize=7, color="grey", xytext=(2, 2), textcoords="offset points")
        ax.set_xlabel("LRM token share (LRM tokens / all answer tokens)")
        ax.set_ylabel("accuracy (exact, from the table)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        ax.set_title(f"single-intervention policies, {group} ({block['n']} problems)")
        fig.tight_layout()
        fig.savefig(tmp, format="png")

    return draw_png(draw, path)
