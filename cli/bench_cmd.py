"""``rankguide-edge bench``: measurements: capture overhead, signal cost, and the method comparison (run, report)."""

from __future__ import annotations

import functools
from typing import Any

import click

from rankguide_edge.bench.capture import CaptureConfig
from rankguide_edge.bench.run import BenchRunConfig, ReportConfig
from rankguide_edge.collab.reasoner import ReasonerConfig
from rankguide_edge.config import RuntimeConfig, from_mapping
from rankguide_edge.engine.models import DEFAULT_SRM, ModelPair
from rankguide_edge.signals.bench import SignalsBenchConfig

from ._common import apply_options, dataset_options, emit_json, handle_errors, remote_lrm_options
from ._settings import pick, setting, settings


@click.group()
def bench() -> None:
    """Benchmarks: compare routing methods on a dataset (run, report) and time the tap, the signals and the
    server (capture, signals, serve).

    Every figure in docs/BENCHMARKS.md comes from one of these commands.
    """


@bench.command("capture")
@click.option("--model", "model_name", default=DEFAULT_SRM, show_default=True, help="Model name or GGUF path.")
@settings(CaptureConfig, "layers", "tokens", "rounds")
@settings(RuntimeConfig, "n_threads", "n_gpu_layers")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def capture(model_name: str, layers: str, tokens: int, rounds: int, n_threads: int, n_gpu_layers: int,
            as_json: bool) -> None:
    """Decode N tokens greedily with no tap, the native tap and the Python tap, alternating for R rounds,
    and report tokens/s (median over rounds) and the taps' slowdowns against no tap."""
    from tqdm import tqdm

    from rankguide_edge.bench.capture import run_capture_bench
    from rankguide_edge.engine import load_model
    from rankguide_edge.engine.layers import check_layer_spec, parse_layer_spec

    check_layer_spec(layers)  # syntax now; the range once the model is loaded
    cfg = RuntimeConfig(n_ctx=max(512, tokens + 256), n_threads=n_threads, n_gpu_layers=n_gpu_layers)
    with load_model(model_name, cfg) as loaded:
        tapped = parse_layer_spec(layers, loaded.n_layer)
        bar = tqdm(total=rounds * 3, desc="capture", unit="run", disable=as_json, leave=False)
        res = run_capture_bench(loaded, layers=tapped, tokens=tokens, rounds=rounds, config=cfg,
                                progress=lambda r, w: bar.update(1))
        bar.close()
    if as_json:
        emit_json(res.to_dict())
        return
    click.echo(f"model {res.model}: {res.n_layer_tapped} tapped layers, {tokens} tokens x {rounds} rounds")
    click.echo(f"  no tap      {res.tok_s_plain:8.2f} tok/s")
    click.echo(f"  native tap  {res.tok_s_native:8.2f} tok/s   slowdown {100 * res.native_overhead:+.2f}%")
    click.echo(f"  python tap  {res.tok_s_python:8.2f} tok/s   slowdown {100 * res.python_overhead:+.2f}%")


@bench.command("signals")
@settings(SignalsBenchConfig, "n_embd", "layers", "window", "steps", "seed")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def signals(n_embd: int, layers: int, window: int, steps: int, seed: int, as_json: bool) -> None:
    """Time computing every rank and text signal of one step on random hidden states (no model needed)."""
    from rankguide_edge.signals.bench import benchmark_signals

    res = benchmark_signals(n_embd=n_embd, layers=layers, window=window, steps=steps, seed=seed)
    if as_json:
        emit_json(res)
        return
    click.echo(f"signals per step (n_embd {n_embd}, {layers} layers, W {window}, {steps} steps): "
               f"median {res['median_ms']:.3f} ms, p95 {res['p95_ms']:.3f} ms; "
               f"partial (early decision) median {res['partial_median_ms']:.3f} ms")


@bench.command("run")
@apply_options(dataset_options())
@setting(BenchRunConfig, "methods")
@setting(BenchRunConfig, "sweeps")
@setting(ModelPair, "srm")
@setting(ModelPair, "lrm")
@apply_options(remote_lrm_options())
@setting(ReasonerConfig, "max_tokens")
@setting(BenchRunConfig, "random_p")
@setting(RuntimeConfig, "n_ctx", default=2048, note="The SRM's, and a local LRM's.")
@settings(RuntimeConfig, "n_threads", "n_gpu_layers")
@setting(ReasonerConfig, "seed")
@setting(ReasonerConfig, "router", note="For methods without an explicit threshold or ~NAME.")
@settings(BenchRunConfig, "router_files", "steering")
@setting(ReasonerConfig, "steer_where", note="A method's /all or /boundary overrides it.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (results.jsonl).")
@handle_errors
def run(srm: str, lrm: str, lrm_model: str | None, lrm_api_key: str | None, lrm_timeout: float, lrm_retries: int,
        max_tokens: int, n_ctx: int, n_threads: int, n_gpu_layers: int, seed: int, router: str | None,
        steer_where: str, out: str, **opts: Any) -> None:
    """Run every method on every problem, interleaved per problem; resumable. Then `bench report OUT`.

    Bad methods, steering declarations, router file or dataset records fail before any model loads.
    """
    from tqdm import tqdm

    from rankguide_edge.bench.run import (
        SPECDEC,
        check_routers,
        check_steering,
        completed_runs,
        method_list,
        run_bench,
    )
    from rankguide_edge.collab.lrm import RemoteOptions, is_local, open_backend
    from rankguide_edge.collab.router import load_router
    from rankguide_edge.collab.routing import needs_lrm
    from rankguide_edge.engine import load_model
    from rankguide_edge.errors import ConfigError
    from rankguide_edge.tasks.datasets import DatasetConfig

    bench_cfg = from_mapping(BenchRunConfig, None, **pick(BenchRunConfig, opts))
    ms = method_list(bench_cfg.methods, bench_cfg.sweeps)
    steering = _named_files("--steer", bench_cfg.steering, "a control-vector .gguf")
    routers = _named_files("--router-file", bench_cfg.router_files, "a router file")
    check_steering(ms, steering)  # before any model loads
    check_routers(ms, routers)
    for router_file in [router, *routers.values()]:
        if router_file:
            load_router(router_file)  # a malformed router file fails now
    if not is_local(lrm) and any(m.policy == SPECDEC for m in ms):
        raise ConfigError("specdec needs a local LRM (a model name or GGUF path), not a server URL")
    problems = from_mapping(DatasetConfig, None, **pick(DatasetConfig, opts)).load()
    rt = RuntimeConfig(n_ctx=n_ctx, n_threads=n_threads, seed=seed, n_gpu_layers=n_gpu_layers)
    with load_model(srm, rt) as model:
        backend = None
        if any(needs_lrm(m.policy, m.lrm_first) for m in ms):
            backend = open_backend(lrm, runtime=rt, template_model=model, progress=True,
                                   remote=RemoteOptions(model=lrm_model, api_key=lrm_api_key, timeout=lrm_timeout,
                                                        retries=lrm_retries))
        bar = tqdm(total=len(problems) * len(ms), initial=completed_runs(out, problems, ms), desc="bench",
                   unit="run")
        try:
            path = run_bench(model, backend, problems, ms, out, runtime=rt, max_tokens=max_tokens, seed=seed,
                             random_p=bench_cfg.random_p, progress=lambda rec: bar.update(1), steering=steering,
                             steer_where=steer_where, router=router or "", routers=routers)
        finally:
            bar.close()
            if backend is not None:
                backend.close()
    click.echo(f"results in {path}; summarise with `rankguide-edge bench report {out}`")


def _named_files(option: str, specs: tuple[str, ...], what: str) -> dict[str, str]:
    """``NAME=FILE`` declarations (``FILE`` alone is named after its stem) as a name -> path table."""
    import os

    from rankguide_edge.errors import ConfigError

    table: dict[str, str] = {}
    for spec in specs:
        name, eq, path = spec.partition("=")
        if not eq:
            name, path = os.path.splitext(os.path.basename(spec))[0], spec
        if not os.path.isfile(path):
            raise ConfigError(f"{option} {spec}: {path} is not a file; give NAME=FILE of {what}")
        if name in table:
            raise ConfigError(f"{option}: the name {name!r} is declared twice")
        table[name] = path
    return table


@bench.command("report")
@click.argument("run_dir", metavar="DIR", type=click.Path(exists=True, file_okay=False))
@settings(ReportConfig, "profile", "methods", "versus")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Write summary.json, summary.md and the plots here instead of DIR (created).")
@setting(ReportConfig, "plots")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def report(run_dir: str, profile: str, methods: tuple[str, ...], versus: tuple[str, ...], out_dir: str | None,
           plots: bool, as_json: bool) -> None:
    """Summarise DIR/results.jsonl (or a committed results.jsonl.gz) into summary.json, summary.md, pareto.png
    (accuracy vs latency) and share.png (accuracy vs LRM token share: policies compared at matched LRM use)."""
    import json
    import os

    from rankguide_edge.bench.run import summarize, summary_markdown, write_pareto, write_share_plot
    from rankguide_edge.files import write_text_atomic

    chosen = list(methods) or None
    results = os.path.join(run_dir, "results.jsonl")
    if not os.path.exists(results) and os.path.exists(results + ".gz"):  # a committed, compressed run
        results += ".gz"
    summary = summarize(results, profile=profile, methods=chosen, versus=list(versus))
    target = out_dir or run_dir
    os.makedirs(target, exist_ok=True)
    for name, text in (("summary.json", json.dumps(summary, indent=2)), ("summary.md", summary_markdown(summary))):
        write_text_atomic(os.path.join(target, name), text)
    if plots:  # after the text and JSON: a figure that cannot be drawn is one line, never a failed report
        from rankguide_edge.figures import draw_png

        for name, draw in (("pareto.png", write_pareto), ("share.png", write_share_plot)):
            note = draw_png(functools.partial(draw, summary), os.path.join(target, name))
            if note:
                click.echo(f"note: {note}", err=True)
    if as_json:
        emit_json(summary)
    else:
        click.echo(summary_markdown(summary))


def _add_bench_serve() -> None:
    from .serve_cmd import bench_serve

    bench.add_command(bench_serve)


_add_bench_serve()  # `bench serve` lives with `serve`, whose settings it shares
