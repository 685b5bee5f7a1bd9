"""Do the new rank signals (:mod:`.rank_study`) tell the steps where routing helps, beyond text and position?

Rows are the SRM steps of a label file with a known "routing helps" label (``cf.gain == +1``; steps of right
answers without a counterfactual count as 0), exactly the rows and label of ``router fit``. Every estimate
is held out by problem: stratified group folds (``n_folds``, repeated ``repeats`` times with other shuffles;
each row's score is the mean of its out-of-fold scores over the repeats), and every interval is a 95 %
percentile bootstrap over problems.

* **single signals**: the direction (high or low routes) is chosen on the training folds; *residualised*
  means the signal minus its least-squares fit on log step length, step position and a first-SRM-step flag,
  the fit made on the training folds;
* **the probe**: each step's mean row at several depths, reduced per depth to a few principal components on
  the training folds, then an L2 logistic regression (residualised: every component residualised as above);
* **the key test**: logistic models on the text + position signals (``router fit``'s ``text`` and ``position``
  groups, imported) with and without a rank set, on the same folds; the AUROC difference gets a *paired*
  bootstrap interval. A rank set earns the hot path only if that interval excludes 0.

For a second (test) label file the same numbers are computed on its own folds, and once more *transferred*:
every direction, residualisation, projection and weight fitted on all rows of the first file and applied to
the second unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import stats as st
from ..errors import DependencyError, InvalidInputError
from .rank_study_table import OLD_SIGNALS, RANK_SETS, StudyConfig, StudyTable, resolve_layers


def _sklearn(module: str) -> Any:
    """A scikit-learn module, imported on first use (it is an optional dependency)."""
    import importlib

    try:
        return importlib.import_module(f"sklearn.{module}")
    except ImportError:
        raise DependencyError("the rank study needs scikit-learn: pip install scikit-learn") from None


def fold_aurocs(scores: np.ndarray, folds: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Held-out AUROC over the pairs of a positive and a negative row **scored in the same test fold**, for
    each repeat (``scores`` and ``folds`` ``(R, n)``), averaged over the repeats; ``(B,)`` for the rows of
    ``weights``. Pairs across folds are left out: a fold's direction, residualisation or intercept then
    cannot shift it against another fold. NaN scores are left out."""
    w = np.atleast_2d(np.asarray(weights, np.float64))
    out = np.zeros(len(w))
    for s, fs in zip(np.atleast_2d(scores), np.atleast_2d(folds), strict=True):
        num, den = np.zeros(len(w)), np.zeros(len(w))
        for f in np.unique(fs):
            m = (fs == f) & np.isfinite(s)
            a, b = st.auroc_parts(s[m], positive[m], w[:, m])
            num, den = num + a, den + b
        out += st.auroc_from_parts(num, den)
    return out / len(np.atleast_2d(scores))


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """:func:`rankguide_edge.stats.auroc` as a float (NaN where a class is empty)."""
    v = st.auroc(scores, positive)
    return math.nan if v is None else v


def problem_bootstrap(problem: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, n)`` row weights: how often each row's problem is drawn in each resample of the problems."""
    ids, inv = np.unique(problem, return_inverse=True)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(ids), np.full(len(ids), 1.0 / len(ids)), size=n_boot)
    return counts[:, inv].astype(np.float64)


def _ci(samples: np.ndarray) -> tuple[float, float] | None:
    """:func:`rankguide_edge.stats.ci95`, None with fewer than 10 finite resamples."""
    return st.ci95(samples) if int(np.isfinite(samples).sum()) >= 10 else None


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation over the rows where both are finite (NaN with fewer than 3)."""
    from scipy import stats as sps

    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return math.nan
    return float(sps.spearmanr(a[ok], b[ok]).statistic)


def fold_sets(table: StudyTable, cfg: StudyConfig) -> list[np.ndarray]:
    """One fold number per row for each repeat: stratified by the label, grouped by problem."""
    stratified_group_kfold = _sklearn("model_selection").StratifiedGroupKFold
    if table.problems < cfg.n_folds:
        raise InvalidInputError(f"{table.name}: {table.problems} problems cannot make {cfg.n_folds} folds: "
                                "label more problems or lower --folds")
    out = []
    for r in range(cfg.repeats):
        folds = np.zeros(len(table), int)
        splitter = stratified_group_kfold(n_splits=cfg.n_folds, shuffle=True, random_state=cfg.seed + r)
        for f, (_, test) in enumerate(splitter.split(np.zeros(len(table)), table.y, table.problem)):
            folds[test] = f
        out.append(folds)
    return out


def _design(z: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones(len(z)), z])


def residualise(v: np.ndarray, z: np.ndarray, train: np.ndarray) -> np.ndarray:
    """``v`` minus its least-squares fit on ``z`` (with an intercept) made on the ``train`` rows (all rows
    returned; ``v`` may be ``(n,)`` or ``(n, k)``)."""
    x = _design(z)
    beta, *_ = np.linalg.lstsq(x[train], v[train], rcond=None)
    return np.asarray(v - x @ beta)


@dataclass
class Scored:
    """Held-out scores of one signal or model and their AUROC (over same-fold pairs, mean over repeats)."""

    name: str
    scores: np.ndarray                  # float (R, n): per repeat, NaN where undefined
    folds: np.ndarray                   # int (R, n): the test fold of each row in each repeat
    auroc: float
    ci: tuple[float, float] | None
    n: int
    positives: int
    spearman_length: float = math.nan   # of the raw signal with log step length
    direction: str = ""                 # "high" / "low" / "mixed" (single signals: which values route)
    insample: float = math.nan          # single signals: AUROC of the value itself (high routes), all rows

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "auroc": _round(self.auroc), "ci": _round_pair(self.ci), "n": self.n,
                "helps": self.positives, "spearman_log_length": _round(self.spearman_length),
                "direction": self.direction, "insample_auroc_high_routes": _round(self.insample)}


def _round(x: float | None) -> float | None:
    return round(float(x), 4) if x is not None and math.isfinite(x) else None


def _round_pair(p: tuple[float, float] | None) -> list[float | None] | None:
    return [_round(p[0]), _round(p[1])] if p else None


def score(name: str, scores: np.ndarray, folds: np.ndarray, table: StudyTable, boot: np.ndarray,
          **extra: Any) -> Scored:
    """:class:`Scored` of held-out ``scores`` (``(R, n)``) in ``folds`` (``(R, n)``), with the bootstrap
    interval over problems (``boot``: :func:`problem_bootstrap` weights)."""
    scores, folds = np.atleast_2d(scores), np.atleast_2d(folds)
    ok = np.isfinite(scores).all(axis=0)
    a = float(fold_aurocs(scores, folds, table.y, np.ones((1, len(table))))[0]) if ok.any() else math.nan
    ci = _ci(fold_aurocs(scores, folds, table.y, boot)) if boot.size and ok.any() else None
    return Scored(name, scores, folds, a, ci, int(ok.sum()), int(table.y[ok].sum()), **extra)


def heldout_single(v: np.ndarray, table: StudyTable, folds: list[np.ndarray], residualised: bool
                   ) -> tuple[np.ndarray, str]:
    """Out-of-fold scores (``(R, n)``) of one signal: its direction (and, residualised, its fit on the
    nuisances) taken from the training folds. Returns ``(scores, direction)``."""
    out = np.full((len(folds), len(table)), np.nan)
    signs: set[int] = set()
    ok = np.isfinite(v)
    for r, fs in enumerate(folds):
        for f in np.unique(fs):
            train, test = ok & (fs != f), ok & (fs == f)
            if not test.any() or not train.any():
                continue
            x = residualise(np.where(ok, v, 0.0), table.nuisance, train) if residualised else v
            tr_auc = auroc(x[train], table.y[train])
            sign = 1 if not math.isfinite(tr_auc) or tr_auc >= 0.5 else -1
            signs.add(sign)
            out[r, test] = sign * x[test]
    direction = "mixed" if len(signs) > 1 else ("high" if signs == {1} else "low")
    return out, direction


def _impute_scale(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``x`` with NaN set to ``ref``'s column means, then standardised by ``ref``'s statistics."""
    return st.standardize(ref, x).apply


def _probe_features(pooled: np.ndarray, fit_rows: np.ndarray, dims: int) -> np.ndarray:
    """Per probe depth, the first ``dims`` principal components (fitted on ``fit_rows``) of every row."""
    cols = []
    for p in range(pooled.shape[1]):
        x = pooled[:, p]
        ok = np.isfinite(x).all(axis=1)
        fit = x[fit_rows & ok]
        mean = fit.mean(axis=0)
        _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
        proj = np.full((len(x), dims), np.nan)
        k = min(dims, vt.shape[0])
        proj[ok, :k] = (x[ok] - mean) @ vt[:k].T
        cols.append(proj)
    return np.hstack(cols)


def _logistic(x: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """Weights of :func:`rankguide_edge.stats.fit_logistic` (intercept unpenalised, dropped: scores rank)."""
    return st.fit_logistic(x, y, l2)[0]


def model_matrix(table: StudyTable, names: Sequence[str], text_pos: bool) -> np.ndarray:
    cols = [table.text_pos] if text_pos else []
    if names:
        cols.append(np.column_stack([table.new[k] for k in names]))
    return np.hstack(cols) if cols else np.zeros((len(table), 0))


def heldout_model(table: StudyTable, folds: list[np.ndarray], cfg: StudyConfig, names: Sequence[str], *,
                  text_pos: bool, probe: bool = False, residualised: bool = False) -> np.ndarray:
    """Out-of-fold logistic scores (``(R, n)``) on text + position (when asked), the new signals ``names`` and
    the probe's components. Missing values (a step shorter than the window) are imputed with the column
    mean and every column standardised (label-free); the probe's projection and any residualisation are
    fitted on the training folds."""
    base = model_matrix(table, names, text_pos)
    out = np.zeros((len(folds), len(table)))
    for r, fs in enumerate(folds):
        for f in np.unique(fs):
            train, test = fs != f, fs == f
            x = base
            if probe:
                x = np.hstack([x, _probe_features(table.pooled, train, cfg.probe_dims)])
            if residualised:
                x = residualise(_impute_scale(x, x), table.nuisance, train)
            x = _impute_scale(x, x)
            w = _logistic(x[train], table.y[train], cfg.l2)
            out[r, test] = x[test] @ w
    return out


# ------------------------------------------------------------------------------------------------ transfer


def transfer_single(v_train: np.ndarray, train: StudyTable, v_test: np.ndarray, test: StudyTable,
                    residualised: bool) -> np.ndarray:
    """``test``'s scores of one signal, its direction (and residualisation) fitted on every row of ``train``."""
    ok = np.isfinite(v_train)
    if residualised:
        x = _design(train.nuisance)
        beta, *_ = np.linalg.lstsq(x[ok], v_train[ok], rcond=None)
        r_train, r_test = v_train - x @ beta, v_test - _design(test.nuisance) @ beta
    else:
        r_train, r_test = v_train, v_test
    sign = 1 if auroc(r_train[ok], train.y[ok]) >= 0.5 else -1
    return np.asarray(sign * r_test)


def transfer_model(train: StudyTable, test: StudyTable, cfg: StudyConfig, names: Sequence[str], *,
                   text_pos: bool, probe: bool = False, residualised: bool = False) -> np.ndarray:
    """Fit on every row of ``train`` and score ``test`` unchanged (imputation, scaling, projection, weights)."""
    xa, xb = model_matrix(train, names, text_pos), model_matrix(test, names, text_pos)
    if probe:
        both = np.concatenate([train.pooled, test.pooled])
        fit_rows = np.r_[np.ones(len(train), bool), np.zeros(len(test), bool)]
        pcs = _probe_features(both, fit_rows, cfg.probe_dims)
        xa, xb = np.hstack([xa, pcs[: len(train)]]), np.hstack([xb, pcs[len(train):]])
    if residualised:
        za, zb = _design(train.nuisance), _design(test.nuisance)
        xa_s, xb_s = _impute_scale(xa, xa), _impute_scale(xb, xa)
        beta, *_ = np.linalg.lstsq(za, xa_s, rcond=None)
        xa, xb = xa_s - za @ beta, xb_s - zb @ beta
    xa, xb = _impute_scale(xa, xa), _impute_scale(xb, xa)
    w = _logistic(xa, train.y, cfg.l2)
    return np.asarray(xb @ w)


# ------------------------------------------------------------------------------------------------ the study


@dataclass
class Comparison:
    rank_set: str
    base: Scored
    with_rank: Scored
    diff: float
    diff_ci: tuple[float, float] | None

    @property
    def earns(self) -> bool:
        """The rule: the rank set adds held-out AUROC with an interval above 0."""
        return self.diff_ci is not None and self.diff_ci[0] > 0

    def to_dict(self) -> dict[str, Any]:
        return {"rank_set": self.rank_set, "text_position": self.base.to_dict(),
                "with_rank": self.with_rank.to_dict(), "auroc_difference": _round(self.diff),
                "difference_ci": _round_pair(self.diff_ci), "interval_excludes_0_above": self.earns}


def compare(name: str, base: np.ndarray, with_rank: np.ndarray, folds: np.ndarray, table: StudyTable,
            boot: np.ndarray) -> Comparison:
    """AUROC of ``with_rank`` minus ``base`` (both ``(R, n)`` on the same folds), with a paired bootstrap over
    problems (the same resamples for both)."""
    sb = score("text+position", base, folds, table, boot)
    sr = score(f"text+position+{name}", with_rank, folds, table, boot)
    ci = None
    if boot.size:
        ci = _ci(fold_aurocs(with_rank, folds, table.y, boot) - fold_aurocs(base, folds, table.y, boot))
    return Comparison(name, sb, sr, sr.auroc - sb.auroc, ci)


@dataclass
class FileStudy:
    """Everything measured on one label file (``mode``: ``cv`` on its own folds, or ``transfer`` from the
    first file)."""

    name: str
    mode: str
    steps: int
    problems: int
    positives: int
    missing_problems: int
    pooled_check: float
    single_raw: list[Scored]
    single_resid: list[Scored]
    first_step: list[Scored]
    comparisons: list[Comparison]
    profile: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"labels": self.name, "mode": self.mode, "steps": self.steps, "problems": self.problems,
                "helps": self.positives, "problems_without_replay": self.missing_problems,
                "pooled_check_median_cosine": _round(self.pooled_check),
                "single_raw": [s.to_dict() for s in self.single_raw],
                "single_residualised": [s.to_dict() for s in self.single_resid],
                "first_srm_step_raw": [s.to_dict() for s in self.first_step],
                "comparisons": [c.to_dict() for c in self.comparisons], "profile": self.profile}


def single_names(table: StudyTable, cfg: StudyConfig) -> list[str]:
    """The single signals the report scores: the summaries, the chosen layers, the tensor ranks."""
    d = cfg.defs
    names = ["spec.h2.mean", "spec.h2.slope", "spec.h2.argmin", "spec.h1.mean",
             *[f"spec.h2.L{il}" for il in d.spec_layers], "angle.cos2.mean",
             *[f"angle.cos2.L{il}" for il in d.angle_layers], "tensor.erank.layer", "tensor.erank.token",
             "tensor.erank.hidden"]
    return [k for k in names if k in table.new]


#: the nuisances scored as single signals (raw only: residualised on themselves they are constant)
NUISANCES = ("nuisance: log step length", "nuisance: step position", "nuisance: first SRM step")


def _values(table: StudyTable, key: str) -> np.ndarray | None:
    if key in table.new:
        return table.new[key]
    if key in table.old:
        return table.old[key]
    if key in table.text_pos_names:
        return table.text_pos[:, table.text_pos_names.index(key)]
    if key in NUISANCES:
        return table.nuisance[:, NUISANCES.index(key)]
    return None


def _profile(table: StudyTable, singles: dict[tuple[str, bool], Scored]) -> dict[str, Any]:
    """Per layer: mean h2 / cos2 of helping and other steps, and their held-out AUROC, raw and residualised."""
    out: dict[str, Any] = {"layers": list(table.layers)}
    for fam in ("spec.h2", "angle.cos2"):
        for resid in (False, True):
            key = f"{fam}.{'resid' if resid else 'raw'}"
            rows = [singles.get((f"{fam}.L{il}", resid)) for il in table.layers]
            out[key] = {"auroc": [_round(s.auroc) if s else None for s in rows],
                        "ci": [_round_pair(s.ci) if s else None for s in rows]}
        for lab, m in (("helps", table.y), ("other", ~table.y)):
            means, ses = [], []
            for il in table.layers:
                v = table.new.get(f"{fam}.L{il}", np.full(len(table), np.nan))[m]
                v = v[np.isfinite(v)]
                means.append(_round(float(v.mean())) if len(v) else None)
                ses.append(_round(float(v.std(ddof=1) / math.sqrt(len(v)))) if len(v) > 1 else None)
            out[f"{fam}.mean.{lab}"] = means
            out[f"{fam}.se.{lab}"] = ses
    return out


def _singles(table: StudyTable, cfg: StudyConfig, keys: Sequence[str], boot: np.ndarray,
             folds: list[np.ndarray], train: StudyTable | None, resids: Sequence[bool]
             ) -> dict[tuple[str, bool], Scored]:
    out: dict[tuple[str, bool], Scored] = {}
    loglen = table.nuisance[:, 0]
    fold_arr = np.stack(folds) if folds else np.zeros((1, len(table)), int)
    for k in keys:
        v = _values(table, k)
        if v is None:
            continue
        for resid in resids:
            if resid and k in NUISANCES:
                continue
            if train is None:
                s, direction = heldout_single(v, table, folds, resid)
            else:
                vt = _values(train, k)
                if vt is None:
                    continue
                s, direction = transfer_single(vt, train, v, table, resid)[None], "fixed on train"
            ok = np.isfinite(v)
            x = residualise(np.where(ok, v, 0.0), table.nuisance, ok) if resid else v
            ins = auroc(x[ok], table.y[ok]) if ok.any() else math.nan
            out[(k, resid)] = score(k, s, fold_arr, table, boot, spearman_length=spearman(v, loglen),
                                    direction=direction, insample=ins)
    return out


def subset(table: StudyTable, keep: np.ndarray, name: str) -> StudyTable:
    """The rows ``keep`` of ``table`` as a table of their own."""
    return StudyTable(name=name, problem=table.problem[keep], y=table.y[keep], text_pos=table.text_pos[keep],
                      text_pos_names=table.text_pos_names, nuisance=table.nuisance[keep],
                      n_tokens=table.n_tokens[keep], new={k: v[keep] for k, v in table.new.items()},
                      old={k: v[keep] for k, v in table.old.items()}, pooled=table.pooled[keep],
                      layers=table.layers, missing_problems=table.missing_problems, pooled_check=table.pooled_check)


def study_file(table: StudyTable, cfg: StudyConfig, train: StudyTable | None = None) -> FileStudy:
    """Every single-signal score, the probe and the key comparisons on ``table``: on its own folds, or (with
    ``train``) fitted on ``train`` and applied to ``table``."""
    cfg = resolve_layers(cfg, len(table.layers))
    boot = problem_bootstrap(table.problem, cfg.n_boot, cfg.seed) if cfg.n_boot else np.zeros((0, len(table)))
    folds = fold_sets(table, cfg) if train is None else []
    fold_arr = np.stack(folds) if folds else np.zeros((1, len(table)), int)
    names = single_names(table, cfg)
    listed = [*names, *OLD_SIGNALS, "text.entropy_max", *NUISANCES]
    profile_names = [f"{fam}.L{il}" for fam in ("spec.h2", "angle.cos2") for il in table.layers]
    singles = _singles(table, cfg, list(dict.fromkeys([*listed, *profile_names])), boot, folds, train,
                       (False, True))
    raw_list = [singles[(k, False)] for k in listed if (k, False) in singles]
    resid_list = [singles[(k, True)] for k in listed if (k, True) in singles]

    def run(names_: Sequence[str], *, tp: bool, probe: bool = False, resid: bool = False) -> np.ndarray:
        if train is None:
            return heldout_model(table, folds, cfg, names_, text_pos=tp, probe=probe, residualised=resid)
        return transfer_model(train, table, cfg, names_, text_pos=tp, probe=probe, residualised=resid)[None]

    probe_name = f"probe (mean rows at L{','.join(map(str, cfg.probe_layers))}, {cfg.probe_dims} PCs each)"
    raw_list.append(score(probe_name, run([], tp=False, probe=True), fold_arr, table, boot))
    resid_list.append(score(probe_name, run([], tp=False, probe=True, resid=True), fold_arr, table, boot))
    base = run([], tp=True)
    comps = []
    for rs in RANK_SETS:
        probe = rs in ("probe", "all_new")
        comps.append(compare(rs, base, run(table.signal_set(rs, cfg.defs), tp=True, probe=probe), fold_arr,
                             table, boot))
    # the first SRM step after the plan alone (where most of the routing gain is), on the same folds
    first = table.nuisance[:, 2] == 1
    first_list: list[Scored] = []
    if first.any() and table.y[first].any() and not table.y[first].all():
        sub = subset(table, first, f"{table.name} (first SRM step)")
        sub_train = subset(train, train.nuisance[:, 2] == 1, train.name) if train is not None else None
        sub_folds = [fs[first] for fs in folds]
        sub_boot = boot[:, first]
        got = _singles(sub, cfg, [*names, *OLD_SIGNALS, "text.entropy_max", NUISANCES[0]], sub_boot, sub_folds,
                       sub_train, (False,))
        first_list = list(got.values())
    return FileStudy(table.name, "transfer" if train is not None else "cv", len(table), table.problems,
                     int(table.y.sum()), table.missing_problems, table.pooled_check, raw_list, resid_list,
                     first_list, comps, _profile(table, singles))


__all__ = ["NUISANCES", "Comparison", "FileStudy", "auroc", "compare", "fold_aurocs", "fold_sets", "heldout_model",
           "heldout_single", "problem_bootstrap", "residualise", "spearman", "study_file"]
