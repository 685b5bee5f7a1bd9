"""``router fit``: learn a step router from intervention labels (``rankguide-edge label``) and say what it is worth.

Every SRM step of a label file is a row: its SRM-side features (what a router can read without calling the
LRM) and its labels. Two targets:

* ``gain`` -- "routing helps": the counterfactual in which the LRM wrote this step ends right where the
  un-intervened answer ended wrong (``gain == +1``). Known for the steps with a counterfactual, and for every
  step of a right-answered problem without one (routing cannot fix an answer that is already right; only
  its harm, gain -1 against 0, is then unknown);
* ``disagree`` -- a dense proxy every SRM step has: the LRM's teacher-forced check flags the step
  (``lrm.risk >= disagree_level``, see :mod:`rankguide_edge.collab.disagreement`).

Feature groups (ablations combine them): ``core`` (the twelve signals of ``calibrate --fit logistic``: entropy,
margins, length, the failure modes, repetition, the last layer's ranks and the layer-mode Tucker rank, a
compact set for few positives), ``text`` (entropy, margins, length, keywords, repetition), ``rank``
(windowed and whole-step ranks per layer, rank deltas, layer-mode Tucker ranks), ``fail`` (the hand-set
failure-mode scores), ``position`` (the step's index), and ``probe`` (the first ``probe_dims`` principal
components of the step's mean hidden row at the deepest tapped layer, fitted on the training folds; reported
in the ablations only: a router file holds signal weights, not a projection).

Validation holds out whole *problems* (``n_folds`` folds by problem; no step of a test problem is seen in
training), and scores every model on the ``gain`` label: AUROC and AUPRC of the out-of-fold scores (all folds
on one scale: features standardised over all rows, no intercept; see :func:`out_of_fold`), with a 95 %
interval from a bootstrap over problems. Single signals (entropy, ``fail.route``, the LRM's own
``lrm.*`` check) are reported on the same steps as references. The router written is an L2 logistic
regression fitted on all rows, its ``post`` threshold set so that, on the labelled traces, the LRM would write
about ``target_lrm_share`` of all answer tokens (the plan's included). The report also names the thresholds
at which ``entropy`` and ``verify`` (scored by the policies themselves) and the routing probability at which
``random`` give the LRM the same share on these traces: the settings the bench compares the router with.
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import stats
from ..collab.router import Router
from ..config import RuntimeConfig, bounded, same_as, validate
from ..errors import InvalidInputError
from .calibrate import feature_matrix, fit_logistic, logistic_features
from .label import decode_vector

GROUPS = ("core", "text", "rank", "fail", "position", "probe")
TARGETS = ("gain", "disagree")
#: the ablations every report shows (the fitted router's own feature set is added when it is not one of them)
ABLATIONS = (("text",), ("rank",), ("text", "rank"), ("text", "rank", "position"),
             ("text", "rank", "fail", "position"), ("text", "rank", "position", "probe"), ("core",),
             ("core", "position"))
#: single signals scored as they are (``-`` means low values route), on the same steps as the models
REFERENCES = ("text.entropy_max", "text.entropy_mean", "fail.route", "-rank.eff_norm.L{last}.win",
              "-tucker.eff_norm.mode1", "lrm.risk", "lrm.disagree_arith", "lrm.disagree", "-lrm.logprob_min")


@dataclass(frozen=True)
class FitConfig:
    target: str = bounded("gain", choices=TARGETS, help="gain: the LRM's step fixes the answer (counterfactual); "
                          "disagree: the LRM's check flags the step (dense proxy)")
    features: tuple[str, ...] = bounded(("text", "rank", "position"), sep=",",
                                        help="comma list of feature groups: core, text, rank, fail, position (probe "
                                             "is reported, not written)")
    l2: float = bounded(10.0, lo=0.0, hi=1e6, help="L2 penalty on standardised weights")
    n_folds: int = bounded(5, lo=2, hi=50, flag="--folds", help="folds by problem for the held-out AUROC/AUPRC")
    disagree_level: float = bounded(0.5, lo=0.0, hi=1.0, help="disagree target: lrm.risk at or above this")
    target_lrm_share: float = bounded(0.45, lo=0.0, hi=1.0, help="post threshold: the LRM writes about this share "
                                      "of answer tokens on the labelled traces (the plan's tokens included)")
    probe_dims: int = bounded(8, lo=1, hi=256, help="principal components of the pooled hidden row")
    n_boot: int = bounded(1000, lo=0, hi=100000, help="bootstrap resamples of problems for the intervals")
    seed: int = same_as(RuntimeConfig, "seed", help="seed of the folds and of the bootstrap")

    def __post_init__(self) -> None:
        validate(self)
        bad = [g for g in self.features if g not in GROUPS]
        if bad or not self.features:
            raise InvalidInputError(f"unknown feature group {bad[0] if bad else '(none)'!r}: use a comma list "
                                    f"of {', '.join(GROUPS)}")
        if "probe" in self.features:
            raise InvalidInputError("the probe is reported in the ablations but a router file holds signal "
                                    "weights only: drop 'probe' from --features")


@dataclass
class Steps:
    """The SRM steps of a label file as arrays (``n`` rows)."""

    problem: np.ndarray          # str (n,): problem id
    signals: list[dict[str, float]]
    lrm: list[dict[str, float]]
    gain: np.ndarray             # float (n,): -1, 0, +1, NaN without a counterfactual
    helps: np.ndarray            # float (n,): 1 routing fixes the answer, 0 it does not, NaN unknown
    n_tokens: np.ndarray         # int (n,): the SRM step's tokens
    lrm_tokens: np.ndarray       # float (n,): the LRM's tokens for this step in the counterfactual (NaN: none)
    pooled: list[np.ndarray | None]
    plan_tokens: dict[str, int] = field(default_factory=dict)    # per problem: tokens the LRM wrote in the plan
    srm_tokens: dict[str, int] = field(default_factory=dict)     # per problem: tokens the SRM wrote
    last_layer: int = 0

    def __len__(self) -> int:
        return len(self.problem)


def load_steps(records: Sequence[dict[str, Any]]) -> Steps:
    """Rows of every SRM step with signals in label ``records`` (error records are left out)."""
    prob, sigs, lrms, gain, helps, ntok, ltok, pooled = [], [], [], [], [], [], [], []
    plan: dict[str, int] = {}
    srm: dict[str, int] = {}
    last = 0
    for rec in records:
        if "error" in rec or not rec.get("steps"):
            continue
        pid = str(rec["id"])
        plan[pid] = sum(int(s["n_tokens"]) for s in rec["steps"] if s["source"] == "lrm")
        srm[pid] = sum(int(s["n_tokens"]) for s in rec["steps"] if s["source"] == "srm")
        for s in rec["steps"]:
            if s["source"] != "srm" or not s.get("signals"):
                continue
            prob.append(pid)
            sig = {k: float(v) for k, v in s["signals"].items() if v is not None}
            sigs.append(sig)
            lrms.append({k: float(v) for k, v in (s.get("lrm") or {}).items() if v is not None})
            cf = s.get("cf") or {}
            g = cf.get("gain")
            gain.append(float(g) if g is not None else math.nan)
            helps.append(float(g == 1) if g is not None else (0.0 if rec.get("correct") else math.nan))
            ntok.append(int(s["n_tokens"]))
            ltok.append(float(cf["lrm_tokens"]) if "lrm_tokens" in cf else math.nan)
            pooled.append(decode_vector(s["pooled"]) if s.get("pooled") else None)
            for k in sig:
                if k.startswith("rank.eff_norm.L") and k.endswith(".win"):
                    last = max(last, int(k.split(".L")[1].split(".")[0]))
    if not prob:
        raise InvalidInputError("the label file holds no SRM step with signals: label more problems "
                                "(every answer so far was written by the LRM's plan alone)")
    return Steps(np.array(prob), sigs, lrms, np.array(gain), np.array(helps), np.array(ntok), np.array(ltok), pooled,
                 plan, srm, last)


def group_features(steps: Steps, groups: Sequence[str]) -> tuple[str, ...]:
    """The signal names of feature ``groups`` (``probe`` excluded: see :func:`_probe`), sorted per group."""
    names = sorted({k for s in steps.signals for k in s})
    out: list[str] = []
    for g in groups:
        if g == "core":
            out += [k for k in logistic_features(steps.last_layer) if k in names]
        elif g == "text":
            out += [k for k in names if k.startswith(("text.", "kw.", "rep."))]
        elif g == "rank":
            out += [k for k in names if k.startswith(("rank.", "tucker.")) and not k.endswith(".rows")
                    and ".rows." not in k]
        elif g == "fail":
            out += [k for k in names if k.startswith("fail.")]
        elif g == "position":
            out += ["step.index"]
    return tuple(dict.fromkeys(out))


def problem_folds(problems: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold number (int ``(n,)``) of each row, the same for every row of a problem (``crc32(seed:id)``)."""
    return np.array([zlib.crc32(f"{seed}:{p}".encode()) % n_folds for p in problems])


def _probe(steps: Steps, train: np.ndarray, dims: int) -> np.ndarray:
    """The first ``dims`` principal components (fitted on ``train`` rows) of each row's pooled state."""
    d = next((len(v) for v in steps.pooled if v is not None), 0)
    if d == 0:
        return np.full((len(steps), dims), np.nan)
    x = np.stack([v if v is not None else np.full(d, np.nan) for v in steps.pooled]).astype(np.float64)
    return stats.principal_components(x, train, dims)


def target_labels(steps: Steps, cfg: FitConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(y, usable)``: bool ``(n,)`` labels of ``cfg.target`` and which rows carry one."""
    if cfg.target == "gain":
        return steps.helps == 1, np.isfinite(steps.helps)
    risk = np.array([r.get("lrm.risk", math.nan) for r in steps.lrm])
    return risk >= cfg.disagree_level, np.isfinite(risk)


def out_of_fold(steps: Steps, groups: Sequence[str], cfg: FitConfig, folds: np.ndarray) -> np.ndarray:
    """Held-out scores (float ``(n,)``; NaN where a fold could not be fitted) of a logistic model on feature
    ``groups`` trained for ``cfg.target``, each problem scored by a model that never saw it.

    The scores of all folds are ranked together, so they must share a scale: features are standardised once
    over all rows and a fold's score is ``x @ w`` without its intercept. (Scaling per training fold and adding
    each fold's intercept shifts whole folds against each other; with a few dozen positives that alone took a
    single-feature model from its feature's own AUROC of 0.69 to 0.56.)"""
    feats = group_features(steps, groups)
    base = feature_matrix(steps.signals, feats)
    y, usable = target_labels(steps, cfg)
    out = np.full(len(steps), np.nan)
    for f in np.unique(folds):
        test, train = folds == f, (folds != f) & usable
        x = base
        if "probe" in groups:
            x = np.hstack([base, _probe(steps, train, cfg.probe_dims)])
        if y[train].all() or not y[train].any():
            continue
        x = stats.standardize(x).fit  # imputed and scaled over all rows (label-free: leaks no held-out label)
        w, _ = stats.fit_logistic(x[train], y[train], cfg.l2)
        out[test] = x[test] @ w
    return out


@dataclass
class Score:
    name: str
    auroc: float | None
    auroc_ci: tuple[float, float] | None
    auprc: float | None
    n: int
    positives: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "auroc": self.auroc, "auroc_ci": self.auroc_ci, "auprc": self.auprc,
                "n": self.n, "positives": self.positives}


def score_on_gain(name: str, scores: np.ndarray, steps: Steps, n_boot: int, seed: int) -> Score:
    """AUROC (with a bootstrap-over-problems 95 % interval) and AUPRC of ``scores`` for "routing helps"."""
    keep = np.isfinite(steps.helps) & np.isfinite(scores)
    s, y, p = scores[keep], steps.helps[keep] == 1, steps.problem[keep]
    ci = None
    if n_boot and y.any() and not y.all():
        ids, inv = np.unique(p, return_inverse=True)

        def resampled_auroc(idx: np.ndarray) -> np.ndarray:  # idx (B, problems): problems drawn per resample
            return stats.weighted_auroc(s, y, stats.unit_counts(idx, len(ids))[:, inv])

        ci = stats.ci95(stats.bootstrap_distribution(resampled_auroc, len(ids), n_boot, seed))
    return Score(name, stats.auroc(s, y), ci, stats.average_precision(s, y), int(keep.sum()), int(y.sum()))


def reference_scores(steps: Steps) -> dict[str, np.ndarray]:
    out = {}
    for ref in REFERENCES:
        key = ref.lstrip("-").format(last=steps.last_layer)
        src = steps.lrm if key.startswith("lrm.") else steps.signals
        v = np.array([r.get(key, math.nan) for r in src])
        out[ref.format(last=steps.last_layer)] = -v if ref.startswith("-") else v
    return out


def lrm_token_share(steps: Steps, routed: np.ndarray) -> float:
    """Share of answer tokens the LRM writes on the labelled traces when the ``routed`` SRM steps go to it
    (a routed step costs its counterfactual LRM tokens, else as many as the SRM's step)."""
    cost = np.where(np.isfinite(steps.lrm_tokens), steps.lrm_tokens, steps.n_tokens)
    plan = sum(steps.plan_tokens.values())
    total = plan + sum(steps.srm_tokens.values())
    if total == 0:
        return 0.0
    lrm = plan + float(cost[routed].sum())
    return lrm / (total - float(steps.n_tokens[routed].sum()) + float(cost[routed].sum()))


#: the bench methods a fitted router is compared with at its own LRM token share: policy -> options
MATCHED_POLICIES: dict[str, dict[str, Any]] = {"entropy": {}, "verify": {}}


def policy_scores(steps: Steps, name: str, **options: Any) -> np.ndarray:
    """What policy ``name`` (built by the policy registry, as a run builds it) scores each labelled step at
    ``post``: from its signals, and for a policy that reads the LRM's check, from the step's ``lrm.*``
    features."""
    from ..collab.policies import StepView, make_policy

    policy = make_policy(name, **options)
    out = np.zeros(len(steps))
    for i, (sig, lrm) in enumerate(zip(steps.signals, steps.lrm, strict=True)):
        policy.reset()
        view = StepView("post", 0, "(step)", int(steps.n_tokens[i]), sig, check=functools.partial(_checked, lrm))
        out[i] = policy.score(view)
    return out


def _checked(features: dict[str, float], _text: str) -> dict[str, float] | None:
    """A labelled step's recorded LRM check, as the live check callable would return it."""
    return features or None


def share_threshold(scores: np.ndarray, steps: Steps, share: float) -> float:
    """The lowest threshold whose routed steps keep the LRM's token share at or below ``share`` (1.0 when the
    plan alone exceeds it: route nothing after the plan)."""
    t = stats.threshold_for_share(scores, share, routed_share=functools.partial(lrm_token_share, steps))
    return 1.0 if t is None else t


@dataclass
class FitResult:
    router: Router
    ablations: list[Score]
    references: list[Score]
    fitted: Score
    weights: list[tuple[str, float]]
    rows: int
    problems: int
    positives: int
    negatives: int
    harmful: int
    counterfactuals: int
    share_at_threshold: float
    routed_share: float
    #: bench methods at the router's LRM token share on these traces, e.g. {"entropy": 0.62, "random": 0.17}
    matched: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "problems": self.problems, "helps": self.positives,
                "does_not_help": self.negatives, "counterfactuals": self.counterfactuals, "harms": self.harmful,
                "fitted": self.fitted.to_dict(), "ablations": [a.to_dict() for a in self.ablations],
                "references": [r.to_dict() for r in self.references],
                "weights": [{"feature": f, "weight": w} for f, w in self.weights],
                "threshold": self.router.thresholds, "lrm_token_share_on_labels": self.share_at_threshold,
                "routed_step_share_on_labels": self.routed_share, "matched": self.matched,
                "router": self.router.to_dict()}


def fit_router(header: dict[str, Any], records: Sequence[dict[str, Any]], cfg: FitConfig, *, source: str = "",
               command: str = "") -> FitResult:
    """Validate every ablation and the configured model by problem-held-out folds, then fit the router."""
    steps = load_steps(records)
    folds = problem_folds(steps.problem, cfg.n_folds, cfg.seed)
    y, usable = target_labels(steps, cfg)
    if not y[usable].any():
        raise InvalidInputError(f"no step of the label file is positive for target {cfg.target!r}: label more "
                                "problems, or use --target disagree")
    ablations = []
    for groups in dict.fromkeys([*ABLATIONS, tuple(cfg.features)]):
        oof = out_of_fold(steps, groups, cfg, folds)
        ablations.append(score_on_gain("+".join(groups), oof, steps, cfg.n_boot, cfg.seed))
    fitted = next(a for a in ablations if a.name == "+".join(cfg.features))
    refs = [score_on_gain(k, v, steps, cfg.n_boot, cfg.seed) for k, v in reference_scores(steps).items()]
    feats = group_features(steps, cfg.features)
    x = feature_matrix(steps.signals, feats)
    model = fit_logistic(x[usable], y[usable], feats, cfg.l2)
    scores = np.array([model.score(s) for s in steps.signals])
    t = share_threshold(scores, steps, cfg.target_lrm_share)
    routed = scores >= t
    lrm_first = int((header.get("settings") or {}).get("lrm_first", 0))
    meta = {"target_lrm_share": cfg.target_lrm_share, "calibrated_points": ["post"],
            "fitted_on": {"labels": source, "target": cfg.target, "features": list(cfg.features), "l2": cfg.l2,
                          "rows": int(usable.sum()), "problems": int(len(np.unique(steps.problem))),
                          "heldout_auroc_gain": fitted.auroc, "heldout_auprc_gain": fitted.auprc},
            "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "command": command}
    router = Router(policy="rankguide", thresholds={"post": round(t, 6)}, logistic=model, lrm_first=lrm_first,
                    meta=meta)
    share = lrm_token_share(steps, routed)
    matched = {name: share_threshold(policy_scores(steps, name, **opts), steps, share)
               for name, opts in MATCHED_POLICIES.items()}
    matched["random"] = round(float(routed.mean()), 4)  # the routing probability of SRM steps after the plan
    order = np.argsort(-np.abs(model.weights))
    has_gain = np.isfinite(steps.gain)
    known = np.isfinite(steps.helps)
    return FitResult(router=router, ablations=ablations, references=refs, fitted=fitted,
                     weights=[(feats[i], round(float(model.weights[i]), 4)) for i in order[:15]],
                     rows=len(steps), problems=int(len(np.unique(steps.problem))),
                     positives=int((steps.helps[known] == 1).sum()), negatives=int((steps.helps[known] == 0).sum()),
                     harmful=int((steps.gain[has_gain] == -1).sum()), counterfactuals=int(has_gain.sum()),
                     share_at_threshold=round(share, 4), routed_share=round(float(routed.mean()), 4),
                     matched=matched)


def _fmt(x: float | None, nd: int = 3) -> str:
    return "—" if x is None else f"{x:.{nd}f}"


def fit_markdown(res: FitResult, header: dict[str, Any]) -> str:
    """The fit's report: the label counts, every ablation and reference on "routing helps", the weights."""
    fitted_on = res.router.meta.get("fitted_on", {})

    def table(scores: list[Score]) -> list[str]:
        out = ["| score | AUROC | 95 % CI (problems) | AUPRC | steps | helps |",
               "| --- | --- | --- | --- | --- | --- |"]
        for s in scores:
            ci = f"[{s.auroc_ci[0]:.3f}, {s.auroc_ci[1]:.3f}]" if s.auroc_ci else "—"
            out.append(f"| {s.name} | {_fmt(s.auroc)} | {ci} | {_fmt(s.auprc)} | {s.n} | {s.positives} |")
        return out

    base_rate = res.positives / max(1, res.positives + res.negatives)
    lines = [
        f"# Router fit on {fitted_on.get('labels', 'labels')}", "",
        f"Label file: {header.get('selection', '')}.", "",
        f"{res.rows} SRM steps of {res.problems} problems. \"Routing helps\" is known for "
        f"{res.positives + res.negatives} of them: {res.positives} where the LRM's step fixes the answer, "
        f"{res.negatives} where it does not (steps of right answers included: routing cannot fix those). "
        f"{res.counterfactuals} steps have a counterfactual; in {res.harmful} of them the LRM's step breaks a "
        f"right answer (−1). Base rate of \"routing helps\": {base_rate:.3f} (the AUPRC of a random score).",
        "",
        f"Target `{fitted_on.get('target')}`, L2 {fitted_on.get('l2')}, folds by problem. Held-out scores of "
        "logistic models on each feature group, judged on \"routing helps\":", "",
        *table(res.ablations), "",
        "Single signals on the same steps (`-` = low values route; `lrm.*` need the LRM's check, the rest are "
        "SRM-side):", "",
        *table(res.references), "",
        f"Router written: features `{'+'.join(fitted_on.get('features', []))}`, post threshold "
        f"{res.router.thresholds['post']:.4f}, which on these traces routes {res.routed_share:.1%} of SRM steps "
        f"and gives the LRM {res.share_at_threshold:.1%} of answer tokens (plan included; target "
        f"{res.router.meta.get('target_lrm_share')}).", "",
        "The same LRM token share on these traces, for the bench's comparisons with the LRM writing the plan: "
        + ", ".join(f"`{k}:{v:.4g}^{res.router.lrm_first}`" for k, v in res.matched.items())
        + " (random: the share of SRM steps routed).", "",
        "Largest standardised weights:", "",
        "| feature | weight |", "| --- | --- |",
        *[f"| {f} | {w:+.3f} |" for f, w in res.weights], "",
    ]
    return "\n".join(lines)
