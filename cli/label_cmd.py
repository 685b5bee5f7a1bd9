"""``rankguide-edge label``: what routing each step would change, measured by intervening (resumable JSONL)."""

from __future__ import annotations

import dataclasses

import click

from rankguide_edge.engine.models import DEFAULT_LRM, DEFAULT_SRM

from ._common import apply_options, dataset_options, emit_json, gpu_option, handle_errors


@click.command()
@apply_options(dataset_options("Dataset file or short name (gsm8k-train, gsm8k-test, math500, svamp). Label "
                               "train problems: the router is judged on test."))
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Label file (JSONL, header line first); appended, resumable.")
@click.option("--srm", default=DEFAULT_SRM, show_default=True, help="SRM name or GGUF path.")
@click.option("--lrm", default=DEFAULT_LRM, show_default=True,
              help="LRM name or GGUF path (local: the disagreement check reads its token log-probabilities).")
@click.option("--lrm-first", default=1, show_default=True, type=click.IntRange(0, 1000),
              help="The regime labelled: the LRM writes the first N steps (the shipped router's plan), the SRM "
                   "the rest.")
@click.option("--max-cf-steps", default=8, show_default=True, type=click.IntRange(0, 1000),
              help="Counterfactuals (LRM writes the step, SRM continues, answer graded) for the first K SRM steps.")
@click.option("--cf-right-share", default=0.2, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="Share of right-answered problems that get counterfactuals (every wrong one does; seeded by id).")
@click.option("--control/--no-control", default=False, show_default=True,
              help="Also a control for the first SRM step of every counterfactual problem: the SRM re-drafts it "
                   "sampled (seeded by id) and continues greedily.")
@click.option("--max-tokens", default=768, show_default=True, type=click.IntRange(8, 32768),
              help="Token budget of one answer.")
@click.option("--max-step-tokens", default=256, show_default=True, type=click.IntRange(4, 32768),
              help="A step ends after this many tokens.")
@click.option("--layers", default="auto", show_default=True, help="Tapped SRM layers (see trace --layers).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**31 - 1))
@click.option("--n-ctx", default=2048, show_default=True, type=click.IntRange(64, 262144))
@click.option("--threads", default=0, show_default=True, type=click.IntRange(0, 1024), help="CPU threads (0: all).")
@gpu_option()
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@handle_errors
def label(data: str, out: str, limit: int | None, offset: int, kind: str, on_error: str,
          question_field: str | None, answer_field: str | None, id_field: str | None, srm: str, lrm: str,
          lrm_first: int, max_cf_steps: int, cf_right_share: float, control: bool, max_tokens: int,
          max_step_tokens: int, layers: str, seed: int, n_ctx: int, threads: int, n_gpu_layers: int,
          as_json: bool) -> None:
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
    from rankguide_edge.fitting.label import LabelConfig, Labeller, header, run_labels
    from rankguide_edge.tasks.datasets import DatasetConfig, LoadReport

    if not is_local(lrm):
        raise ConfigError("label needs the LRM's token log-probabilities: give a model name or GGUF path to --lrm")
    check_layer_spec(layers)
    report = LoadReport(path=data)
    problems = DatasetConfig(path=data, kind=kind, limit=limit, offset=offset, on_error=on_error,
                             question_field=question_field, answer_field=answer_field, id_field=id_field
                             ).load(report)
    cfg = LabelConfig(lrm_first=lrm_first, max_cf_steps=max_cf_steps, cf_right_share=cf_right_share,
                      control=control,
                      max_tokens=max_tokens, max_step_tokens=max_step_tokens, layers=layers, seed=seed,
                      n_ctx=n_ctx, n_threads=threads)
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
