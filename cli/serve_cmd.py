"""``rankguide-edge serve``: a local OpenAI-compatible endpoint (chat and text completions, streaming, metrics)."""

from __future__ import annotations

from typing import Any

import click

from rankguide_edge.collab.policies import DECISION_POINTS, available_policies
from rankguide_edge.collab.reasoner import PREFIX_REUSE
from rankguide_edge.engine.models import DEFAULT_LRM, DEFAULT_SRM

from ._common import gpu_option, handle_errors, load_config_file

POLICIES = available_policies()  # the registry decides, so a registered policy is a choice here too


@click.command()
@click.option("--host", default=None, help="Address to listen on [default: 127.0.0.1].")
@click.option("--port", default=None, type=click.IntRange(0, 65535), help="TCP port [default: 8080].")
@click.option("--srm", default=None, help=f"Small model: name or GGUF path [default: {DEFAULT_SRM}].")
@click.option("--lrm", default=None,
              help="Large model: name, GGUF path or OpenAI-compatible URL; '' for none "
                   f"[default: {DEFAULT_LRM}].")
@click.option("--lrm-model", default=None, help="Model name to send to a remote LRM.")
@click.option("--lrm-api-key", default=None, envvar="RANKGUIDE_EDGE_LRM_API_KEY",
              help="API key of a remote LRM (or $RANKGUIDE_EDGE_LRM_API_KEY).")
@click.option("--policy", default=None, type=click.Choice(POLICIES), help="Default routing policy [rankguide].")
@click.option("--threshold", default=None, type=click.FloatRange(0.0, 1.0),
              help="Default routing threshold [the router's for the decision point].")
@click.option("--decide", default=None, type=click.Choice(DECISION_POINTS),
              help="Default decision point [post].")
@click.option("--router", default=None, type=click.Path(dir_okay=False),
              help="Router file from `rankguide-edge calibrate` [the shipped default].")
@click.option("--lrm-first", default=None, type=click.IntRange(0, 1000),
              help="Default number of first steps (the plan) the LRM writes [the router's: 1 in the shipped "
                   "one, for its policy].")
@click.option("--api-key", default=None, envvar="RANKGUIDE_EDGE_API_KEY",
              help="Require 'Authorization: Bearer KEY' on /v1/* (or $RANKGUIDE_EDGE_API_KEY).")
@click.option("--model-name", default=None, help="Model id clients send [rankguide-edge].")
@click.option("--parallel", default=None, type=click.IntRange(1, 64),
              help="Workers (one SRM context each; models are shared) [1].")
@click.option("--queue-size", default=None, type=click.IntRange(0, 100000),
              help="Requests allowed to wait for a worker; more get 503 [16].")
@click.option("--max-tokens", default=None, type=click.IntRange(8, 262144),
              help="Answer budget when a request gives none [512].")
@click.option("--n-ctx", default=None, type=click.IntRange(64, 262144), help="Context window [4096].")
@click.option("--prefix-reuse", default=None, type=click.Choice(PREFIX_REUSE),
              help="What a worker's SRM keeps of the last prompt it read: exact (whole prefill blocks; answers "
                   "equal a cold start's), all (every common token, like llama-server's cache; faster, may "
                   "differ in near-ties) or off [exact].")
@click.option("--threads", "n_threads", default=None, type=click.IntRange(0, 1024),
              help="CPU threads per context (0: all) [0].")
@gpu_option(default=None)
@click.option("--request-timeout", default=None, type=click.FloatRange(0, 86400),
              help="Seconds a request may take, queue wait included; 0 = no limit [600].")
@click.option("--steer-dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="Folder of control-vector .gguf files that requests may name in rankguide.steer (by file "
                   "name, e.g. \"seal\"); without it, requests cannot steer.")
@click.option("--config", "config_file", default=None, type=click.Path(dir_okay=False),
              help="TOML or JSON file of server settings (flat keys, as in docs/SERVER.md); options override it.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              help="Least severe server log messages printed (on stderr).")
@handle_errors
def serve(config_file: str | None, log_level: str, **opts: Any) -> None:
    """Serve the SRM+LRM collaboration as an OpenAI-compatible API on http://HOST:PORT/v1.

    Endpoints: POST /v1/chat/completions and /v1/completions (stream or not), GET /v1/models, /health and
    /metrics (Prometheus). Requests may add a `rankguide` object ({policy, threshold, decide, steer,
    steer_scale, steer_where, max_lrm_share, lrm_first}); responses carry the routing summary in `rankguide`.
    """
    from rankguide_edge.server import require_server_deps
    from rankguide_edge.server.settings import ServerConfig

    require_server_deps()
    data = load_config_file(config_file) if config_file else {}
    settings = ServerConfig.from_mapping(data, **opts)
    settings.reasoner_config()  # bad policy/threshold combinations fail here, before any model loads
    from rankguide_edge.server.runner import serve as run

    click.echo(f"rankguide-edge serve: loading {settings.srm}"
               + (f" and {settings.lrm}" if settings.lrm and settings.policy != "srm" else "")
               + f" ({settings.parallel} worker{'s' if settings.parallel > 1 else ''})", err=True)
    run(settings, log_level=log_level, progress=True)


def _int_list(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        out = ()
    if not out or min(out) < 1:
        raise click.BadParameter(f"{value!r} is not a comma list of positive integers, e.g. 1,2,4")
    return out


@click.command("serve")
@click.option("--srm", default=DEFAULT_SRM, show_default=True, help="Small model: name or path.")
@click.option("--lrm", default=DEFAULT_LRM, show_default=True,
              help="Large model: name, path or URL; '' for none.")
@click.option("--policy", default="rankguide", show_default=True, type=click.Choice(POLICIES),
              help="Routing policy of the served solver.")
@click.option("--n", "n", default=5, show_default=True, type=click.IntRange(1, 1000),
              help="Alternations of the overhead benchmark (Python API vs HTTP, same solver).")
@click.option("--clients", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Concurrent streaming clients.")
@click.option("--parallel", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Workers of the concurrency benchmark.")
@click.option("--max-tokens", default=64, show_default=True, type=click.IntRange(8, 262144),
              help="Token budget of each request.")
@click.option("--n-ctx", default=2048, show_default=True, type=click.IntRange(64, 262144),
              help="Context window in tokens.")
@click.option("--threads", default=0, show_default=True, type=click.IntRange(0, 1024), help="CPU threads (0: all).")
@gpu_option()
@click.option("--only", default=None, type=click.Choice(["overhead", "concurrency", "load"]),
              help="Run only this benchmark.  [default: overhead and concurrency; load only when named]")
@click.option("--load-clients", default="1,2,4,8,16", show_default=True, callback=_int_list,
              help="load: concurrent client counts, comma-separated.")
@click.option("--load-parallel", default="1,2", show_default=True, callback=_int_list,
              help="load: --parallel values (one server each), comma-separated.")
@click.option("--requests", default=2, show_default=True, type=click.IntRange(1, 1000),
              help="load: requests each client sends one after another.")
@click.option("--queue-size", default=8, show_default=True, type=click.IntRange(0, 100000),
              help="load: requests allowed to wait for a worker (more get 503 with Retry-After).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (with the per-run timings).")
@handle_errors
def bench_serve(srm: str, lrm: str, policy: str, n: int, clients: int, parallel: int, max_tokens: int, n_ctx: int,
                threads: int, n_gpu_layers: int, only: str | None, load_clients: tuple[int, ...],
                load_parallel: tuple[int, ...], requests: int, queue_size: int, as_json: bool) -> None:
    """Server benchmarks: HTTP overhead over the Python API, throughput/latency of concurrent streams, and
    (--only load) the sizing table: clients x --parallel -> requests/min, p50/p95 first token and total, 503s,
    peak memory.

    Prints one line per benchmark (the load table as markdown), or with --json one object: {"overhead":
    {...medians, ratio...}, "concurrency": {...tokens/s, p50/p95...}, "load": {"rows": [...]}}.
    """
    from rankguide_edge.server import require_server_deps
    from rankguide_edge.server.bench import bench_concurrency, bench_load, bench_overhead, report_lines
    from rankguide_edge.server.settings import ServerConfig

    from ._common import emit_json

    require_server_deps()
    settings = ServerConfig(srm=srm, lrm=lrm, policy=policy, n_ctx=n_ctx, n_threads=threads, parallel=parallel,
                            n_gpu_layers=n_gpu_layers, port=0)
    report = {}
    if only in (None, "overhead"):
        report["overhead"] = bench_overhead(settings, n=n, max_tokens=max_tokens)
    if only in (None, "concurrency"):
        report["concurrency"] = bench_concurrency(settings, clients=clients, max_tokens=max_tokens)
    if only == "load":
        def progress(row: dict[str, Any]) -> None:
            click.echo(f"load: --parallel {row['parallel']}, {row['clients']} clients: "
                       f"{row['requests_per_min']} requests/min, {row['refused_503']} refused", err=True)

        report["load"] = bench_load(settings, clients=load_clients, parallel=load_parallel, requests=requests,
                                    queue_size=queue_size, max_tokens=max_tokens, on_row=progress)
    if as_json:
        emit_json(report)
    else:
        click.echo("\n".join(report_lines(report)))
