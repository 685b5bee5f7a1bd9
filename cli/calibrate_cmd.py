"""``rankguide-edge calibrate``: thresholds (and optional logistic weights) -> a router config file."""

from __future__ import annotations

import os
import shlex
import sys

import click

from rankguide_edge.engine.models import DEFAULT_SRM

from ._common import emit_json, gpu_option, handle_errors


@click.command()
@click.argument("source", type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Router config to write (JSON).")
@click.option("--target-lrm-share", type=click.FloatRange(0.0, 1.0),
              help="Share of steps the LRM should write (thresholds are quantiles of the step scores).")
@click.option("--max-latency-ratio", type=click.FloatRange(0.01, 100.0),
              help="Bench dir only: the most accurate threshold whose mean latency is at most R x the LRM's.")
@click.option("--profile", default=None, metavar="NAME|FILE",
              help="Bench dir only: price latency for --max-latency-ratio under this hardware profile "
                   "(measured, laptop+gpu-server, gpu-large-ratio or a TOML/JSON file; the GPU-size profiles "
                   "such as rtx4090 price runs in `bench report`).  [default: wall seconds]")
@click.option("--policy", default="rankguide", show_default=True,
              type=click.Choice(["rankguide", "entropy", "keywords", "judge"]), help="Policy to calibrate.")
@click.option("--fit", default="quantile", show_default=True, type=click.Choice(["quantile", "logistic"]),
              help="Thresholds only, or also fit logistic weights of step signals to trace outcomes.")
@click.option("--srm", default=DEFAULT_SRM, show_default=True,
              help="SRM that wrote the traces (replayed to calibrate the early decision point).")
@click.option("--lrm-first", default=0, show_default=True, type=click.IntRange(0, 1000),
              help="Write into the router that the LRM writes the first N steps (the plan) before the thresholds "
                   "decide; solve, chat, serve use it unless --lrm-first is given there.")
@click.option("--no-early", is_flag=True, help="Skip the replay; early gets the post threshold.")
@click.option("--holdout", default=0.0, show_default=True, type=click.FloatRange(0.0, 0.9),
              help="Keep this share of the traces (the last ones) out of the fit and report held-out AUROCs.")
@click.option("--limit", type=click.IntRange(1), help="Use only the first N traces.")
@click.option("--threads", default=0, show_default=True, type=click.IntRange(0, 1024), help="CPU threads (0: all).")
@gpu_option()
@click.option("--router-file", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Bench dir: calibrate only the runs that used this router file (methods rankguide~NAME of "
                   "`bench run --router-file NAME=FILE`, e.g. a learned router); its weights go into OUT.")
@click.option("--json", "as_json", is_flag=True, help="Print the router config as JSON.")
@handle_errors
def calibrate(source: str, out: str, target_lrm_share: float | None, max_latency_ratio: float | None,
              profile: str | None, policy: str, fit: str, srm: str, lrm_first: int, no_early: bool, holdout: float,
              limit: int | None, threads: int, n_gpu_layers: int, router_file: str | None,
              as_json: bool) -> None:
    """Choose routing thresholds from SOURCE and write a router config that solve, chat, serve and bench load
    with --router.

    SOURCE is a traces.jsonl written by `rankguide-edge trace` (thresholds are the quantiles that route the
    target share of steps at each decision point; --fit logistic also fits weights) or a bench directory with
    several thresholds per policy (`bench run --sweep ...`).
    """
    from rankguide_edge.collab.router import save_router
    from rankguide_edge.errors import InvalidInputError
    from rankguide_edge.fitting.calibrate import (
        CalibrateConfig,
        calibrate_bench,
        calibrate_traces,
        read_trace_records,
    )

    cfg = CalibrateConfig(policy=policy, target_lrm_share=target_lrm_share, max_latency_ratio=max_latency_ratio,
                          fit=fit, early=not no_early, holdout=holdout, profile=profile or "",
                          lrm_first=lrm_first, router_file=router_file or "")
    command = "rankguide-edge calibrate " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    if os.path.isdir(source):
        from rankguide_edge.bench.report import load_results

        results = os.path.join(source, "results.jsonl")
        if not os.path.exists(results):
            raise InvalidInputError(f"{source} holds no results.jsonl: give a `bench run` output dir or traces")
        ignored = [name for name, given in (("--fit logistic", fit != "quantile"), ("--holdout", holdout > 0),
                                            ("--limit", limit is not None), ("--no-early", no_early)) if given]
        if ignored:
            raise InvalidInputError(f"{', '.join(ignored)} apply to traces, not to a bench dir (its thresholds "
                                    "come from the runs' sweeps): drop them or pass a traces.jsonl")
        router = calibrate_bench(load_results(results), cfg, source=source, command=command)
    else:
        if max_latency_ratio is not None or profile or router_file:
            raise InvalidInputError("--max-latency-ratio, --profile and --router-file need a bench dir (latency "
                                    "and the runs of a router are measured there)")
        records = read_trace_records(source)
        if limit:
            records = records[:limit]
        replay = None
        if cfg.early:
            replay = _replayer(srm, records, threads, progress=not as_json, n_gpu_layers=n_gpu_layers)
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
