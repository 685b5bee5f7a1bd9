"""``rankguide-edge bench``: measurements: capture overhead, signal cost, and the method comparison (run, report)."""

from __future__ import annotations

import functools

import click

from rankguide_edge.config import RuntimeConfig
from rankguide_edge.engine.models import DEFAULT_LRM, DEFAULT_SRM

from ._common import apply_options, dataset_options, emit_json, gpu_option, handle_errors, remote_lrm_options


@click.group()
def bench() -> None:
    """Benchmarks: compare routing methods on a dataset (run, report) and time the tap, the signals and the
    server (capture, signals, serve).

    Every figure in docs/BENCHMARKS.md comes from one of these commands.
    """


@bench.command("capture")
@click.option("--model", "model_name", default=DEFAULT_SRM, show_default=True,
              help="Model name or GGUF path.")
@click.option("--layers", default="all", show_default=True, help="Tapped layers: all, last, 0,5,-1 or 20-23.")
@click.option("--tokens", default=64, show_default=True, type=click.IntRange(1, 4096), help="Tokens decoded per run.")
@click.option("--rounds", default=5, show_default=True, type=click.IntRange(1, 100),
              help="Rounds; each decodes N tokens with every way, alternating the order.")
@click.option("--threads", default=0, show_default=True, type=click.IntRange(0, 1024), help="CPU threads (0: all).")
@gpu_option()
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def capture(model_name: str, layers: str, tokens: int, rounds: int, threads: int, n_gpu_layers: int,
            as_json: bool) -> None:
    """Decode N tokens greedily with no tap, the native tap and the Python tap, alternating for R rounds,
    and report tokens/s (median over rounds) and the taps' slowdowns against no tap."""
    from tqdm import tqdm

    from rankguide_edge.bench.capture import run_capture_bench
    from rankguide_edge.engine import load_model
    from rankguide_edge.engine.layers import check_layer_spec, parse_layer_spec

    check_layer_spec(layers)  # syntax now; the range once the model is loaded
    cfg = RuntimeConfig(n_ctx=max(512, tokens + 256), n_threads=threads, n_gpu_layers=n_gpu_layers)
    with load_model(model_name, cfg) as model:
        tapped = parse_layer_spec(layers, model.n_layer)
        bar = tqdm(total=rounds * 3, desc="capture", unit="run", disable=as_json, leave=False)
        res = run_capture_bench(model, layers=tapped, tokens=tokens, rounds=rounds, config=cfg,
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
@click.option("--n-embd", default=896, show_default=True, type=click.IntRange(2, 65536), help="Hidden size.")
@click.option("--layers", default=4, show_default=True, type=click.IntRange(1, 256), help="Tapped layers.")
@click.option("--window", default=64, show_default=True, type=click.IntRange(2, 4096), help="Window W in tokens.")
@click.option("--steps", default=200, show_default=True, type=click.IntRange(1, 100000), help="Steps to time.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**31 - 1))
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
@apply_options(dataset_options("Dataset file or short name (gsm8k-test, gsm8k-train, math500, svamp)."))
@click.option("--methods", default="srm,lrm,rankguide", show_default=True,
              help="Comma list of policy[@post|early|pre][:threshold] (rankguide, entropy, keywords, judge, srm, "
                   "lrm), random[:p] (no p: matched to rankguide's LRM step share) and specdec[:k], e.g. "
                   "srm,lrm,rankguide@early:0.4,random,specdec:4.")
@click.option("--sweep", "sweeps", multiple=True, metavar="POLICY[@D]:V1,V2,...",
              help="Add one method per value, e.g. --sweep rankguide:0.2,0.4,0.6 --sweep entropy:0.5,0.7 "
                   "(repeatable).")
@click.option("--srm", default=DEFAULT_SRM, show_default=True,
              help="Small model: name or GGUF path.")
@click.option("--lrm", default=DEFAULT_LRM, show_default=True,
              help="Large model: name, GGUF path, or an OpenAI-compatible URL like http://host:8080/v1.")
@apply_options(remote_lrm_options())
@click.option("--max-tokens", default=768, show_default=True, type=click.IntRange(8, 262144),
              help="Token budget of each answer.")
@click.option("--random-p", default=None, type=click.FloatRange(0.0, 1.0),
              help="Routing probability of `random` methods given without one.  [default: rankguide's running "
                   "LRM step share in this run (0.2 before it has any, or without a rankguide method)]")
@click.option("--n-ctx", default=2048, show_default=True, type=click.IntRange(64, 262144),
              help="Context window in tokens (SRM, and a local LRM).")
@click.option("--threads", default=0, show_default=True, type=click.IntRange(0, 1024), help="CPU threads (0: all).")
@gpu_option()
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**31 - 1),
              help="Seed of sampling and of the random policy.")
@click.option("--router", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Router config (thresholds per decision point) for methods without an explicit threshold.")
@click.option("--router-file", "router_specs", multiple=True, metavar="NAME=FILE",
              help="Declare a router file (e.g. from `rankguide-edge router fit`) for methods written "
                   "rankguide~NAME (repeatable); FILE alone is named after its stem.")
@click.option("--steer", "steer_specs", multiple=True, metavar="NAME=FILE",
              help="Declare a control vector for methods written +NAME[*SCALE][/all|/boundary] (repeatable); "
                   "FILE alone is named after its stem.")
@click.option("--steer-where", default="all", show_default=True, type=click.Choice(["all", "boundary"]),
              help="Steer every token, or only generated step-delimiter tokens (a method's /all or /boundary "
                   "overrides it).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (results.jsonl).")
@handle_errors
def run(data: str, limit: int | None, offset: int, kind: str, on_error: str, question_field: str | None,
        answer_field: str | None, id_field: str | None, methods: str, sweeps: tuple[str, ...], srm: str, lrm: str,
        lrm_model: str | None, lrm_api_key: str | None, lrm_timeout: float, lrm_retries: int, max_tokens: int,
        random_p: float | None, n_ctx: int, threads: int, n_gpu_layers: int, seed: int, router: str | None,
        router_specs: tuple[str, ...], steer_specs: tuple[str, ...], steer_where: str, out: str) -> None:
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

    ms = method_list(methods, sweeps)
    steering = _named_files("--steer", steer_specs, "a control-vector .gguf")
    routers = _named_files("--router-file", router_specs, "a router file")
    check_steering(ms, steering)  # before any model loads
    check_routers(ms, routers)
    for router_file in [router, *routers.values()]:
        if router_file:
            load_router(router_file)  # a malformed router file fails now
    if not is_local(lrm) and any(m.policy == SPECDEC for m in ms):
        raise ConfigError("specdec needs a local LRM (a model name or GGUF path), not a server URL")
    problems = DatasetConfig(path=data, kind=kind, limit=limit, offset=offset, on_error=on_error,
                             question_field=question_field, answer_field=answer_field, id_field=id_field).load()
    rt = RuntimeConfig(n_ctx=n_ctx, n_threads=threads, seed=seed, n_gpu_layers=n_gpu_layers)
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
                             random_p=random_p, progress=lambda rec: bar.update(1), steering=steering,
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
@click.option("--profile", default="measured", show_default=True, metavar="NAME|FILE",
              help="Hardware profile for latency and pareto.png: measured, laptop+gpu-server, gpu-large-ratio, "
                   "rtx4090 (rates from each model's GGUF size), or a .toml/.json file with [srm]/[lrm] "
                   "decode_tok_s, prefill_tok_s, call_s (\"measured\" allowed).")
@click.option("--methods", default=None, metavar="LABEL,...",
              help="Report only these methods (labels as in results.jsonl); the problems compared are those "
                   "they all ran.  [default: every method in the file]")
@click.option("--versus", default=None, metavar="LABEL,...",
              help="Baselines every method is paired against (wins/losses, exact McNemar p), besides srm: "
                   "e.g. the matched 'entropy:0.52^1,random:0.21^1'. Each must be among the methods reported.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Write summary.json, summary.md and the plots here instead of DIR (created).")
@click.option("--no-plot", "--no-plots", "no_plot", is_flag=True,
              help="Skip pareto.png and share.png.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def report(run_dir: str, profile: str, methods: str | None, versus: str | None, out_dir: str | None,
           no_plot: bool, as_json: bool) -> None:
    """Summarise DIR/results.jsonl (or a committed results.jsonl.gz) into summary.json, summary.md, pareto.png
    (accuracy vs latency) and share.png (accuracy vs LRM token share: policies compared at matched LRM use)."""
    import json
    import os

    from rankguide_edge.bench.run import summarize, summary_markdown, write_pareto, write_share_plot
    from rankguide_edge.files import write_text_atomic

    chosen = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    results = os.path.join(run_dir, "results.jsonl")
    if not os.path.exists(results) and os.path.exists(results + ".gz"):  # a committed, compressed run
        results += ".gz"
    bases = [m.strip() for m in versus.split(",") if m.strip()] if versus else []
    summary = summarize(results, profile=profile, methods=chosen, versus=bases)
    target = out_dir or run_dir
    os.makedirs(target, exist_ok=True)
    for name, text in (("summary.json", json.dumps(summary, indent=2)), ("summary.md", summary_markdown(summary))):
        write_text_atomic(os.path.join(target, name), text)
    if not no_plot:  # after the text and JSON: a figure that cannot be drawn is one line, never a failed report
        from rankguide_edge.figures import draw_png

        for name, draw in (("pareto.png", write_pareto), ("share.png", write_share_plot)):
            note = draw_png(functools.partial(draw, summary), os.path.join(target, name))
            if note:
                click.echo(f"note: {note}", err=True)
    if as_json:
        emit_json(summary)
    else:
        click.echo(summary_markdown(summary))
