"""``rankguide-edge label``: what routing each step would change, measured by intervening (resumable JSONL)."""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from rankguide_edge.config import RuntimeConfig, from_mapping
from rankguide_edge.engine.models import ModelPair
from rankguide_edge.fitting.label import LabelConfig

from ._common import apply_options, dataset_options, emit_json, handle_errors
from ._settings import pick, setting, settings


@click.command()
@apply_options(dataset_options("Label train problems: the router is judged on test."))
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Label file (JSONL, header line first); appended, resumable.")
@setting(ModelPair, "srm")
@setting(ModelPair, "lrm", note="Here a name or GGUF path: the disagreement check reads its token log-probabilities.")
@settings(LabelConfig, "lrm_first", "max_cf_steps", "cf_right_share", "control", "control_temperature",
          "control_top_p", "max_tokens", "max_step_tokens",
          "layers", "seed", "n_ctx", "n_threads")
@setting(RuntimeConfig, "n_gpu_layers")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@handle_errors
def label(out: str, lrm: str, srm: str, n_gpu_layers: int, as_json: bool, **opts: Any) -> None:
    """Label the steps of a dataset's answers with what routing them to the LRM changes.

    Each problem is solved un-intervened in the served regime (the LRM writes the plan, the SRM the rest).
    Every SRM step then gets the LRM's disagreement (one teacher-forced LRM prefill of the step: log-probs and
    argmax mismatches, overall and on digits and operators) and its SRM signals; the first K SRM steps of every
    wrong-answered problem (and of a seeded share of right-answered ones) also get a counterfactual: the LRM
    writes that step, the SRM continues greedily, and the gain (-1, 0, +1) is graded against the un-intervened
    answer. `rankguide-edge router fit` learns a router from the file."""
    from tqdm import tqdm

    from rankguide_edge.collab.backends_local import LocalBackend
    from rankguide_edge.collab.lrm import is_local
    from rankguide_edge.engine import load_model
    from rankguide_edge.engine.layers import check_layer_spec
    from rankguide_edge.errors import ConfigError
    from rankguide_edge.fitting.label import Labeller, header, run_labels
    from rankguide_edge.tasks.datasets import DatasetConfig, LoadReport

    if not is_local(lrm):
        raise ConfigError("label needs the LRM's token log-probabilities: give a model name or GGUF path to --lrm")
    cfg = from_mapping(LabelConfig, None, **pick(LabelConfig, opts))
    check_layer_spec(cfg.layers)
    dataset = from_mapping(DatasetConfig, None, **pick(DatasetConfig, opts))
    report = LoadReport(path=dataset.path)
    problems = dataset.load(report)
    runtime = dataclasses.replace(cfg.runtime(), n_gpu_layers=n_gpu_layers)  # a load setting, not a label one
    with load_model(srm, runtime, progress=not as_json) as srm_model, \
            LocalBackend(lrm, runtime, progress=not as_json) as backend, \
            Labeller(srm_model, backend, cfg) as labeller:
        head = header(cfg, srm_model.path, backend.model.path, labeller.signal_cfg)
        bar = tqdm(total=len(problems), desc="label", unit="problem", disable=as_json)
        stats = {"ok": 0, "n": 0, "pos": 0}

        def tick(rec: dict | None) -> None:
            if rec is not None and "correct" in rec:
                stats["n"] += 1
                stats["ok"] += int(rec["correct"])
                stats["pos"] += sum((st.get("cf") or {}).get("gain") == 1 for st in rec["steps"])
                bar.set_postfix(acc=f"{stats['ok']}/{stats['n']}", helps=stats["pos"])
            bar.update(1)

        summary = run_labels(labeller, problems, out, head=head, progress=tick)
        bar.close()
    result = summary.to_dict() | {"skipped_malformed": report.skipped}
    if as_json:
        emit_json(result)
    else:
        click.echo(f"labelled {summary.labelled} problems ({summary.correct} right un-intervened, "
                   f"{summary.with_counterfactuals} with counterfactuals: {summary.positive_gains} steps where "
                   f"the LRM's step fixes the answer, {summary.negative_gains} where it breaks it), "
                   f"{summary.skipped_existing} already in {out}, {summary.errors} errors, {summary.seconds:.0f} s")
