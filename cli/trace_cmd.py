"""``rankguide-edge trace``: the SRM alone on a dataset, every step's signals to JSONL (resumable)."""

from __future__ import annotations

import dataclasses

import click

from rankguide_edge.engine.models import DEFAULT_SRM

from ._common import apply_options, dataset_options, emit_json, gpu_option, handle_errors, steer_options


@click.command()
@apply_options(dataset_options("Dataset file (GSM8K/MATH500 jsonl, SVAMP json, generic jsonl) or a short name: "
                               "gsm8k, gsm8k-train, gsm8k-test, math500, svamp."))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output JSONL; appended, resumable.")
@click.option("--srm", default=DEFAULT_SRM, show_default=True, help="SRM name or GGUF path.")
@click.option("--layers", default="auto", show_default=True,
              help="Tapped layers: auto (4 evenly spaced, ending at the last), all, last, 5,11,17,23, 20-23.")
@click.option("--max-tokens", default=768, show_default=True, type=click.IntRange(8, 32768))
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(0.0, 10.0), help="0 = greedy.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**31 - 1))
@click.option("--n-ctx", default=2048, show_default=True, type=click.IntRange(64, 262144))
@click.option("--threads", default=0, show_default=True, type=click.IntRange(0, 1024), help="CPU threads (0: all).")
@gpu_option()
@click.option("--window", default=None, type=click.IntRange(2, 4096),
              help="Sliding rank window W (tokens).  [default: 32, or the --signals-config value]")
@click.option("--delimiter", default=None, help="Step delimiter (default: a blank line).")
@click.option("--max-step-tokens", default=None, type=click.IntRange(1),
              help="A step ends after this many tokens.  [default: 256, or the --signals-config value]")
@click.option("--signals-config", type=click.Path(exists=True, dir_okay=False),
              help="JSON or TOML file of SignalConfig keys (see docs/SIGNALS.md); unknown keys are errors.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@apply_options(steer_options())
@handle_errors
def trace(data: str, out: str, limit: int | None, offset: int, kind: str, on_error: str, question_field: str | None,
          answer_field: str | None, id_field: str | None, srm: str, layers: str,
          max_tokens: int, temperature: float, seed: int, n_ctx: int, threads: int, n_gpu_layers: int,
          window: int | None,
          delimiter: str | None, max_step_tokens: int | None, signals_config: str | None, as_json: bool,
          steer: str | None, steer_scale: float, steer_where: str) -> None:
    """Run the SRM alone on a dataset and write one JSON object per problem to OUT: id, question, gold,
    prediction, correct, and steps[] with text, token range and every signal. Ids already in OUT are skipped."""
    from tqdm import tqdm

    from rankguide_edge.engine import load_model
    from rankguide_edge.engine.layers import check_layer_spec, parse_layer_spec
    from rankguide_edge.fitting.trace import TraceConfig, run_trace
    from rankguide_edge.signals.step import SignalConfig
    from rankguide_edge.tasks.datasets import DatasetConfig, LoadReport

    from ._common import load_config_file

    check_layer_spec(layers)  # syntax now; the range once the model is loaded
    report = LoadReport(path=data)
    problems = DatasetConfig(path=data, kind=kind, limit=limit, offset=offset, on_error=on_error,
                             question_field=question_field, answer_field=answer_field, id_field=id_field
                             ).load(report)
    signal_cfg = SignalConfig.from_mapping(load_config_file(signals_config) if signals_config else None,
                                           window=window, delimiter=delimiter, max_step_tokens=max_step_tokens)
    cfg = TraceConfig(layers=layers, max_tokens=max_tokens, temperature=temperature, n_ctx=n_ctx,
                      n_threads=threads, seed=seed, steer=steer or "", steer_scale=steer_scale,
                      steer_where=steer_where)
    # a model setting, not a trace setting: contexts ignore it, so it stays out of TraceConfig and the trace file
    loaded = dataclasses.replace(cfg.runtime(), n_gpu_layers=n_gpu_layers)
    with load_model(srm, loaded, progress=not as_json) as model:
        parse_layer_spec(layers, model.n_layer)  # fail fast on a bad layer list
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
