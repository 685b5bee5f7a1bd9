"""``rankguide-edge calibrate``: thresholds (and optional logistic weights) -> a router config file."""

from __future__ import annotations

import os
import shlex
import sys
from typing import Any

import click

from rankguide_edge.config import RuntimeConfig, from_mapping
from rankguide_edge.engine.models import ModelPair
from rankguide_edge.fitting.calibrate import CalibrateConfig

from ._common import emit_json, handle_errors
from ._settings import pick, setting, settings


@click.command()
@click.argument("source", type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Router config to write (JSON).")
@settings(CalibrateConfig, "target_lrm_share", "max_latency_ratio", "profile", "policy", "fit")
@setting(ModelPair, "srm", note="The SRM that wrote the traces (replayed to calibrate the early decision point).")
@settings(CalibrateConfig, "lrm_first", "early", "holdout", "limit")
@settings(RuntimeConfig, "n_threads", "n_gpu_layers")
@setting(CalibrateConfig, "router_file")
@click.option("--json", "as_json", is_flag=True, help="Print the router config as JSON.")
@handle_errors
def calibrate(source: str, out: str, srm: str, n_threads: int, n_gpu_layers: int, as_json: bool,
              **opts: Any) -> None:
    """Choose routing thresholds from SOURCE and write a router config that solve, chat, serve and bench load
    with --router.

    SOURCE is a traces.jsonl written by `rankguide-edge trace` (thresholds are the quantiles that route the
    target share of steps at each decision point; --fit logistic also fits weights) or a bench directory with
    several thresholds per policy (`bench run --sweep ...`).
    """
    from rankguide_edge.collab.router import save_router
    from rankguide_edge.errors import InvalidInputError
    from rankguide_edge.fitting.calibrate import calibrate_bench, calibrate_traces, read_trace_records

    cfg = from_mapping(CalibrateConfig, None, **pick(CalibrateConfig, opts))
    command = "rankguide-edge calibrate " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    if os.path.isdir(source):
        from rankguide_edge.bench.report import load_results

        results = os.path.join(source, "results.jsonl")
        if not os.path.exists(results):
            raise InvalidInputError(f"{source} holds no results.jsonl: give a `bench run` output dir or traces")
        ignored = [name for name, given in (("--fit logistic", cfg.fit != "quantile"), ("--holdout", cfg.holdout > 0),
                                            ("--limit", cfg.limit is not None), ("--no-early", not cfg.early))
                   if given]
        if ignored:
            raise InvalidInputError(f"{', '.join(ignored)} apply to traces, not to a bench dir (its thresholds "
                                    "come from the runs' sweeps): drop them or pass a traces.jsonl")
        router = calibrate_bench(load_results(results), cfg, source=source, command=command)
    else:
        if cfg.max_latency_ratio is not None or cfg.profile or cfg.router_file:
            raise InvalidInputError("--max-latency-ratio, --profile and --router-file need a bench dir (latency "
                                    "and the runs of a router are measured there)")
        records = read_trace_records(source)
        if cfg.limit:
            records = records[:cfg.limit]
        replay = None
        if cfg.early:
            replay = _replayer(srm, records, n_threads, progress=not as_json, n_gpu_layers=n_gpu_layers)
        router = calibrate_traces(records, cfg, replay=replay, source=source, command=command)
    save_router(router, out)
    if as_json:
        emit_json(router.to_dict())
        return
    th = router.thresholds
    click.echo(f"wrote {out}: policy {router.policy}, thresholds post {th['post']:.3f}, early {th['early']:.3f}, "
               f"pre {th['pre']:.3f}" + (", logistic weights" if router.logistic else "")
               + (f", the LRM writes the first {router.lrm_first} step(s)" if router.lrm_first else ""))
    ho = router.meta.get("holdout")
    if ho:
        click.echo(f"held out {ho['n']} traces ({ho['wrong']} wrong), AUROC for 'ends wrong' (mean over steps): "
                   f"router {ho['auroc.router.mean']}, fail.route {ho['auroc.fail.route.mean']}, "
                   f"entropy_max {ho['auroc.text.entropy_max.mean']}")


def _replayer(srm: str, records: list, threads: int, progress: bool, n_gpu_layers: int = 0):  # noqa: ANN202
    def replay(recs: list):  # noqa: ANN202
        from tqdm import tqdm

        from rankguide_edge.config import RuntimeConfig
        from rankguide_edge.engine import load_model
        from rankguide_edge.fitting.replay import replay_traces

        usable = [r for r in recs if r.get("steps") and not r.get("error")]
        layers = sorted({int(x) for r in usable for x in (r.get("layers") or [])})
        with load_model(srm, RuntimeConfig(n_threads=threads, n_gpu_layers=n_gpu_layers), progress=progress) as model:
            if not layers:
                from rankguide_edge.engine.layers import parse_layer_spec
                layers = parse_layer_spec("auto", model.n_layer)
            bar = tqdm(total=len(usable), desc="replay", unit="trace", disable=not progress)
            for item in replay_traces(model, usable, layers=model.check_layers(layers), n_threads=threads):
                bar.update(1)
                yield item
            bar.close()

    return replay
