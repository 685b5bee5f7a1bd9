"""``rankguide-edge serve``: a local OpenAI-compatible endpoint (chat and text completions, streaming, metrics)."""

from __future__ import annotations

from typing import Any

import click

from rankguide_edge.server.bench import ServeBenchConfig
from rankguide_edge.server.settings import ServerConfig

from ._common import handle_errors, load_config_file
from ._settings import setting, settings


@click.command()
@settings(ServerConfig, "host", "port", "srm", "lrm", "lrm_model", "lrm_api_key", "policy", "threshold", "decide",
          "router", "lrm_first", "api_key", "model_name", "parallel", "queue_size", "max_tokens", "n_ctx",
          "prefix_reuse", "n_threads", "n_gpu_layers", "request_timeout", "steer_dir", file="--config")
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

    require_server_deps()
    data = load_config_file(config_file) if config_file else {}
    server = ServerConfig.from_mapping(data, **opts)
    server.reasoner_config()  # bad policy/threshold combinations fail here, before any model loads
    from rankguide_edge.server.runner import serve as run

    click.echo(f"rankguide-edge serve: loading {server.srm}"
               + (f" and {server.lrm}" if server.lrm and server.policy != "srm" else "")
               + f" ({server.parallel} worker{'s' if server.parallel > 1 else ''})", err=True)
    run(server, log_level=log_level, progress=True)

@click.command("serve")
@settings(ServerConfig, "srm", "lrm", "policy")
@settings(ServeBenchConfig, "n", "clients")
@settings(ServerConfig, "parallel", "max_tokens", "n_ctx", "n_threads", "n_gpu_layers", max_tokens=64, n_ctx=2048)
@settings(ServeBenchConfig, "only", "load_clients", "load_parallel", "requests")
@setting(ServerConfig, "queue_size", default=8, note="In the load benchmark.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (with the per-run timings).")
@handle_errors
def bench_serve(srm: str, lrm: str, policy: str, n: int, clients: int, parallel: int, max_tokens: int, n_ctx: int,
                n_threads: int, n_gpu_layers: int, only: str | None, load_clients: tuple[int, ...],
                load_parallel: tuple[int, ...], requests: int, queue_size: int, as_json: bool) -> None:
    """Server benchmarks: HTTP overhead over the Python API, throughput/latency of concurrent streams, and
    (--only load) the sizing table: clients x --parallel -> requests/min, p50/p95 first token and total, 503s,
    peak memory.

    Prints one line per benchmark (the load table as markdown), or with --json one object: {"overhead":
    {...medians, ratio...}, "concurrency": {...tokens/s, p50/p95...}, "load": {"rows": [...]}}.
    """
    from rankguide_edge.server import require_server_deps
    from rankguide_edge.server.bench import bench_concurrency, bench_load, bench_overhead, report_lines

    from ._common import emit_json

    require_server_deps()
    server = ServerConfig(srm=srm, lrm=lrm, policy=policy, n_ctx=n_ctx, n_threads=n_threads, parallel=parallel,
                          n_gpu_layers=n_gpu_layers, port=0)
    report = {}
    if only in (None, "overhead"):
        report["overhead"] = bench_overhead(server, n=n, max_tokens=max_tokens)
    if only in (None, "concurrency"):
        report["concurrency"] = bench_concurrency(server, clients=clients, max_tokens=max_tokens)
    if only == "load":
        def progress(row: dict[str, Any]) -> None:
            click.echo(f"load: --parallel {row['parallel']}, {row['clients']} clients: "
                       f"{row['requests_per_min']} requests/min, {row['refused_503']} refused", err=True)

        report["load"] = bench_load(server, clients=load_clients, parallel=load_parallel, requests=requests,
                                    queue_size=queue_size, max_tokens=max_tokens, on_row=progress)
    if as_json:
        emit_json(report)
    else:
        click.echo("\n".join(report_lines(report)))
