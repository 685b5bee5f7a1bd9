"""The rank study's rows: the labelled SRM steps of a label file with the new signals read from the replay
cache (:func:`build_table`), and the study's settings (:class:`StudyConfig`)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from .calibrate import feature_matrix
from .rank_study import Definitions, cache_file, cached_digest, load_replayed, record_digest, step_definitions
from .router_fit import group_features, load_steps

#: the feature sets added to text + position in the key test (``probe`` is the multi-row probe)
RANK_SETS = ("spectral", "angles", "tensor", "probe", "all_new")
#: the shipped rank signals, scored the same way for comparison
OLD_SIGNALS = ("rank.eff_norm.L23.win", "rank.eff_norm.L23.step", "tucker.eff_norm.mode1", "rank.novelty.L23")


@dataclass(frozen=True)
class StudyConfig:
    defs: Definitions = field(default_factory=Definitions)
    n_folds: int = 5
    repeats: int = 5
    n_boot: int = 2000
    l2: float = 10.0                                   #: as router fit's default (sklearn C = 1 / l2)
    probe_layers: tuple[int, ...] = ()                 #: () = the model's ``auto`` layers
    probe_dims: int = 4                                #: principal components per probe depth
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_folds < 2 or self.repeats < 1 or self.n_boot < 0 or self.probe_dims < 1 or self.l2 <= 0:
            raise InvalidInputError("rank study: need folds >= 2, repeats >= 1, boot >= 0, probe dims >= 1, l2 > 0")


def resolve_layers(cfg: StudyConfig, n_layer: int) -> StudyConfig:
    """``cfg`` with every empty layer tuple replaced by the ``auto`` layers of an ``n_layer``-layer model."""
    import dataclasses

    from ..engine.layers import parse_layer_spec

    auto = tuple(parse_layer_spec("auto", n_layer))
    defs = dataclasses.replace(cfg.defs, spec_layers=cfg.defs.spec_layers or auto,
                               angle_layers=cfg.defs.angle_layers or auto)
    return dataclasses.replace(cfg, defs=defs, probe_layers=cfg.probe_layers or auto)


# ------------------------------------------------------------------------------------------------ the table


@dataclass
class StudyTable:
    """The labelled SRM steps of one label file, with the new signals read from the replay cache."""

    name: str
    problem: np.ndarray                 # str (n,)
    y: np.ndarray                       # bool (n,): routing helps
    text_pos: np.ndarray                # float (n, p): router fit's text + position signals
    text_pos_names: tuple[str, ...]
    nuisance: np.ndarray                # float (n, 3): log step length, step position, first-SRM-step flag
    n_tokens: np.ndarray                # int (n,)
    new: dict[str, np.ndarray]          # signal -> float (n,) (NaN: undefined, e.g. a step shorter than W)
    old: dict[str, np.ndarray]          # the shipped rank signals of the label file
    pooled: np.ndarray                  # float (n, P, d): the step's mean row at the probe layers
    layers: tuple[int, ...]             # every replayed layer
    missing_problems: int = 0           # problems of the file without a (current) replay cache
    pooled_check: float = math.nan      # median cosine of the replayed vs the label file's pooled last row

    def __len__(self) -> int:
        return len(self.problem)

    @property
    def problems(self) -> int:
        return int(len(np.unique(self.problem)))

    def signal_set(self, which: str, defs: Definitions) -> list[str]:
        """The new signals of feature set ``which`` (``probe`` has none: it is the pooled rows)."""
        spectral = [f"spec.h2.L{il}" for il in defs.spec_layers] + ["spec.h2.slope"]
        angles = [f"angle.cos2.L{il}" for il in defs.angle_layers] + ["angle.cos2.mean"]
        tensor = ["tensor.erank.layer", "tensor.erank.token", "tensor.erank.hidden"]
        sets = {"spectral": spectral, "angles": angles, "tensor": tensor, "probe": [],
                "all_new": spectral + angles + tensor}
        return [k for k in sets[which] if k in self.new]


def build_table(name: str, records: Sequence[dict[str, Any]], cache_dir: str | os.PathLike[str], cfg: StudyConfig,
                srm: str | None = None, keep_rows: int = 64) -> StudyTable:
    """Rows of ``router fit`` (:func:`load_steps`) whose problem has a current replay cache (of SRM ``srm``, a
    :func:`model_id`, when given), with the new signals computed from the cache and only known labels kept."""
    from .label import decode_vector

    steps = load_steps(records)
    feats = group_features(steps, ("text", "position"))
    text_pos = feature_matrix(steps.signals, feats)
    new_rows: list[dict[str, float]] = []
    pooled_rows: list[np.ndarray | None] = []
    first, have = [], []
    checks: list[float] = []
    layers: tuple[int, ...] = ()
    missing = 0
    for rec in records:
        if "error" in rec or not rec.get("steps"):
            continue
        idx = [j for j, s in enumerate(rec["steps"]) if s["source"] == "srm" and s.get("signals")]
        if not idx:
            continue
        path = cache_file(cache_dir, str(rec["id"]))
        ok = path.exists() and (srm is None or cached_digest(path) == record_digest(rec, srm, keep_rows))
        rp = load_replayed(path) if ok else None
        if rp is None or len(rp.tails) != len(rec["steps"]):
            missing += 1
            for _ in idx:
                new_rows.append({})
                pooled_rows.append(None)
                have.append(False)
            first += [j == idx[0] for j in idx]
            continue
        layers = tuple(int(x) for x in rp.layers)
        pos = [layers.index(il) for il in resolve_layers(cfg, len(layers)).probe_layers if il in layers]
        for j in idx:
            prev = rp.tails[j - 1] if j > 0 else None
            new_rows.append(step_definitions(rp.tails[j], prev, layers, cfg.defs))
            pooled_rows.append(rp.pooled[j, pos].astype(np.float64))
            have.append(True)
            st = rec["steps"][j]
            if st.get("pooled"):
                a, b = decode_vector(st["pooled"]).astype(np.float64), rp.pooled[j, -1].astype(np.float64)
                checks.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-300)))
        first += [j == idx[0] for j in idx]
    if len(new_rows) != len(steps):
        raise InvalidInputError(f"{name}: {len(new_rows)} replayed rows for {len(steps)} labelled SRM steps: "
                                "re-run the replay (the label file changed under it)")
    keep = np.isfinite(steps.helps) & np.array(have, bool)
    if not keep.any():
        raise InvalidInputError(f"{name}: no labelled SRM step has a replay cache: run rank-study without "
                                "--no-replay first")
    names = sorted({k for r in new_rows for k in r})
    new = {k: np.array([r.get(k, math.nan) for r in new_rows])[keep] for k in names}
    old = {k: np.array([s.get(k, math.nan) for s in steps.signals])[keep] for k in OLD_SIGNALS}
    d = next((len(p[0]) for p in pooled_rows if p is not None), 0)
    n_p = next((len(p) for p in pooled_rows if p is not None), 0)
    pooled = np.stack([p if p is not None else np.full((n_p, d), np.nan) for p in pooled_rows])[keep]
    index = np.array([s.get("step.index", math.nan) for s in steps.signals])
    nuisance = np.column_stack([np.log(np.maximum(steps.n_tokens, 1)), index, np.array(first, float)])[keep]
    return StudyTable(name=name, problem=steps.problem[keep], y=steps.helps[keep] == 1, text_pos=text_pos[keep],
                      text_pos_names=feats, nuisance=nuisance, n_tokens=steps.n_tokens[keep], new=new, old=old,
                      pooled=pooled, layers=layers, missing_problems=missing,
                      pooled_check=float(np.median(checks)) if checks else math.nan)


# ------------------------------------------------------------------------------------------------ statistics
