"""``rankguide-edge trace``: the SRM alone on a dataset, every step's signals to JSONL (resumable)."""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from rankguide_edge.config import RuntimeConfig, from_mapping
from rankguide_edge.engine.models import ModelPair
from rankguide_edge.fitting.trace import TraceConfig
from rankguide_edge.signals.step import SignalConfig

from ._common import apply_options, dataset_options, emit_json, handle_errors
from ._settings import pick, setting, settings


@click.command()
@apply_options(dataset_options())
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output JSONL; appended, resumable.")
@setting(ModelPair, "srm")
@settings(TraceConfig, "layers", "max_tokens", "temperature", "seed", "n_ctx", "n_threads")
@setting(RuntimeConfig, "n_gpu_layers")
@settings(SignalConfig, "window", "delimiter", "max_step_tokens", file="--signals-config")
@click.option("--signals-config", type=click.Path(exists=True, dir_okay=False),
              help="JSON or TOML file of SignalConfig keys (see docs/SIGNALS.md); unknown keys are errors.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@settings(TraceConfig, "steer", "steer_scale", "steer_where")
@handle_errors
def trace(out: str, srm: str, n_gpu_layers: int, window: int | None, delimiter: str | None,
          max_step_tokens: int | None, signals_config: str | None, as_json: bool, **opts: Any) -> None:
    """Run the SRM alone on a dataset and write one JSON object per problem to OUT: id, question, gold,
    prediction, correct, and steps[] with text, token range and every signal. Ids already in OUT are skipped."""
    from tqdm import tqdm

    from rankguide_edge.engine import load_model
    from rankguide_edge.engine.layers import check_layer_spec, parse_layer_spec
    from rankguide_edge.fitting.trace import run_trace
    from rankguide_edge.tasks.datasets import DatasetConfig, LoadReport

    from ._common import load_config_file

    cfg = from_mapping(TraceConfig, None, **pick(TraceConfig, opts))
    check_layer_spec(cfg.layers)  # syntax now; the range once the model is loaded
    dataset = from_mapping(DatasetConfig, None, **pick(DatasetConfig, opts))
    report = LoadReport(path=dataset.path)
    problems = dataset.load(report)
    signal_cfg = SignalConfig.from_mapping(load_config_file(signals_config) if signals_config else None,
                                           window=window, delimiter=delimiter, max_step_tokens=max_step_tokens)
    # a model setting, not a trace setting: contexts ignore it, so it stays out of TraceConfig and the trace file
    loaded = dataclasses.replace(cfg.runtime(), n_gpu_layers=n_gpu_layers)
    with load_model(srm, loaded, progress=not as_json) as model:
        parse_layer_spec(cfg.layers, model.n_layer)  # fail fast on a bad layer list
        bar = tqdm(total=len(problems), desc="trace", unit="problem", disable=as_json)
        stats = {"ok": 0, "n": 0}

        def tick(rec: dict | None) -> None:
            if rec is not None and "correct" in rec:
                stats["n"] += 1
                stats["ok"] += int(rec["correct"])
                bar.set_postfix(acc=f"{stats['ok']}/{stats['n']}")
            bar.update(1)

        summary = run_trace(model, problems, out, cfg=cfg, signal_cfg=signal_cfg, model_name=srm, progress=tick)
        bar.close()
    result = summary.to_dict() | {"skipped_malformed": report.skipped}
    if as_json:
        emit_json(result)
    else:
        click.echo(f"traced {summary.traced} problems ({summary.correct} correct), {summary.skipped_existing} "
                   f"already in {out}, {summary.errors} errors, {report.skipped} malformed records skipped, "
                   f"{summary.seconds:.0f} s")
