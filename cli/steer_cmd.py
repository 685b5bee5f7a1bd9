"""``rankguide-edge steer``: extract a steering vector from SRM traces, inspect control-vector files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from rankguide_edge.config import from_mapping
from rankguide_edge.engine.models import ModelPair
from rankguide_edge.fitting.trace import TraceConfig
from rankguide_edge.steering.extract import ExtractConfig

from ._common import apply_options, dataset_options, emit_json, handle_errors, load_config_file
from ._settings import pick, setting, settings


@click.group()
def steer() -> None:
    """Steering vectors in llama.cpp's control-vector format (see docs/STEERING.md).

    `extract` builds one from the SRM's own reasoning traces; `inspect` shows what a file holds. Apply a file
    with `--steer vec.gguf` on solve, chat, trace or bench.
    """


@steer.command()
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Control-vector .gguf to write.")
@apply_options(dataset_options("Traced first; the traces go to --traces, resumable.", required=False))
@click.option("--traces", default=None, type=click.Path(dir_okay=False),
              help="Traces JSONL from `rankguide-edge trace` to read (with --data: written/resumed there; "
                   "default with --data: OUT with the suffix .traces.jsonl). --limit and --offset apply to it "
                   "without --data.")
@setting(ModelPair, "srm", note="The one the traces come from.")
@settings(ExtractConfig, "layers", "filter", "signal", "fail_side", "band", "signal_source", "anchor",
          file="--config")
@setting(TraceConfig, "layers", flag="--trace-layers", note="Used when tracing --data.")
@setting(TraceConfig, "max_tokens", note="Used when tracing --data.")
@settings(ExtractConfig, "n_ctx", "n_threads", "n_gpu_layers", file="--config")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="JSON or TOML file of ExtractConfig keys (options given here win).")
@click.option("--signals-config", type=click.Path(exists=True, dir_okay=False),
              help="JSON or TOML file of SignalConfig keys (delimiter, failure scorer, ...).")
@click.option("--json", "as_json", is_flag=True, help="Print the extraction report as JSON.")
@handle_errors
def extract(out: str, traces: str | None, srm: str, trace_layers: str, max_tokens: int, config_file: str | None,
            signals_config: str | None, as_json: bool, **opts: Any) -> None:
    """Extract a steering vector: mean state of execution thoughts minus that of reflection/transition
    thoughts at the steering layers, after the rank-signal filter; write it to OUT as a control vector.

    The config files, layer lists, --data records and --traces file are checked before the SRM loads.
    """
    from tqdm import tqdm

    from rankguide_edge.engine import load_model
    from rankguide_edge.errors import ConfigError
    from rankguide_edge.signals.step import SignalConfig
    from rankguide_edge.steering.cvec_io import save_control_vector
    from rankguide_edge.steering.extract import check_steering_layers, extract_steering_vector, read_traces

    data = opts["path"]
    if not data and not traces:
        raise ConfigError("give --data (a dataset to trace first) or --traces (a traces JSONL to read)")
    cfg = ExtractConfig.from_mapping(load_config_file(config_file) if config_file else None,
                                     **pick(ExtractConfig, opts))
    check_steering_layers(cfg.layers)
    signal_cfg = SignalConfig.from_mapping(load_config_file(signals_config) if signals_config else None)
    traces_path = Path(traces) if traces else Path(out).with_suffix(".traces.jsonl")
    result_extra: dict[str, object] = {"out": out, "traces": str(traces_path)}
    # everything the user gave is read and checked here, before the SRM loads
    if data:
        from rankguide_edge.engine.layers import check_layer_spec, parse_layer_spec
        from rankguide_edge.fitting.trace import run_trace
        from rankguide_edge.tasks.datasets import DatasetConfig, LoadReport

        check_layer_spec(trace_layers)
        load = LoadReport(path=data)
        problems = from_mapping(DatasetConfig, None, **pick(DatasetConfig, opts)).load(load)
        result_extra["skipped_malformed"] = load.skipped
        if traces_path.exists():
            read_traces(traces_path, limit=0)  # a resumed traces file must be readable
    else:
        records = read_traces(traces_path, limit=opts["limit"], offset=opts["offset"])
    with load_model(srm, cfg.runtime(), progress=not as_json) as model:
        if data:
            parse_layer_spec(trace_layers, model.n_layer)  # the range, now that the model is known
            tcfg = TraceConfig(layers=trace_layers, max_tokens=max_tokens, n_ctx=cfg.n_ctx,
                               n_threads=cfg.n_threads)
            with tqdm(total=len(problems), desc="trace", unit="problem", disable=as_json) as bar:
                summary = run_trace(model, problems, traces_path, cfg=tcfg, signal_cfg=signal_cfg,
                                    model_name=srm, progress=lambda rec: bar.update(1))
            result_extra["trace"] = summary.to_dict()
            records = read_traces(traces_path, ids=[p.id for p in problems])
        with tqdm(total=len(records), desc="extract", unit="problem", disable=as_json) as bar:
            result = extract_steering_vector(model, records, cfg, signal_cfg=signal_cfg, model_name=srm,
                                             progress=lambda rec: bar.update(1))
    save_control_vector(result.vector, out)
    rep = result.report
    if as_json:
        emit_json(rep.to_dict() | result_extra)
        return
    click.echo(f"{rep.problems} problems used ({sum(rep.skipped.values())} skipped"
               + (f": {', '.join(f'{k} {v}' for k, v in sorted(rep.skipped.items()))}" if rep.skipped else "")
               + f"), filter {rep.filter}" + (f" on {rep.signal} (band {rep.band})" if rep.filter == "rank" else ""))
    for cls, c in rep.thoughts.items():
        click.echo(f"  {cls:<11} kept {c['kept']:>5} of {c['total']:>5}  (dropped {c['dropped']})")
    if rep.filter == "rank" and rep.threshold_execution is not None:
        cmp_exec, cmp_other = ("<=", ">=") if rep.fail_side == "high" else (">=", "<=")
        click.echo(f"  bands: execution {rep.signal} {cmp_exec} {rep.threshold_execution:.4g}, "
                   f"reflection/transition {cmp_other} {rep.threshold_other:.4g}; {rep.unscored} unscored")
    if rep.shared_token:
        click.echo(f"  {rep.shared_token} thoughts ended on the previous thought's delimiter token (dropped)")
    for layer in rep.layers:
        click.echo(f"  direction.{layer} (l_out-{layer}): norm {rep.norms[layer]:.4g}, "
                   f"{rep.norms[layer] / rep.state_norms[layer]:.1%} of the median state norm "
                   f"{rep.state_norms[layer]:.4g}")
    for w in rep.warnings:
        click.echo(f"warning: {w}", err=True)
    click.echo(f"wrote {out} ({rep.seconds:.1f} s)")


@steer.command()
@click.argument("path", type=click.Path(dir_okay=False))
@setting(ModelPair, "srm", default=None, note="Given, the file is checked to fit it.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def inspect(path: str, srm: str | None, as_json: bool) -> None:
    """Show a control-vector file: model hint, n_embd, directions (the layer each is added to) and norms."""
    from rankguide_edge.steering.cvec_io import check_against, describe, load_control_vector

    cv = load_control_vector(path)
    info = describe(cv, path)
    if srm:
        from rankguide_edge.engine import load_model

        with load_model(srm, progress=not as_json) as model:
            check_against(cv, model.n_embd, model.n_layer)
            info["fits"] = {"model": srm, "n_embd": model.n_embd, "n_layer": model.n_layer}
    if as_json:
        emit_json(info)
        return
    click.echo(f"{path}: model hint {cv.model_hint or '(none)'}, n_embd {cv.n_embd}, "
               f"{len(cv.directions)} direction(s)")
    for d in info["directions"]:
        rel = d["relative_norm"]
        click.echo(f"  direction.{d['direction']:<3} -> {d['acts_on']:<10} norm {d['norm']:.6g}"
                   + (f" ({rel:.1%} of a typical state)" if rel is not None else "")
                   + ("  (zero)" if d["zero"] else ""))
    for k, v in info["meta"].items():
        click.echo(f"  {k} = {v}")
    if srm:
        click.echo(f"fits {srm} (n_embd {info['fits']['n_embd']}, {info['fits']['n_layer']} layers)")
