"""``rankguide-edge rank-study``: replay label files through the SRM with every layer tapped, and test whether
length-matched rank signals tell where routing helps beyond text and position."""

from __future__ import annotations

import shlex
import sys
from typing import TYPE_CHECKING, Any

import click

from rankguide_edge.engine.models import ModelPair
from rankguide_edge.fitting.rank_study_report import RankStudyConfig

from ._common import emit_json, handle_errors
from ._settings import pick, setting, settings

if TYPE_CHECKING:  # pragma: no cover
    from rankguide_edge.fitting.rank_study import Definitions


@click.command("rank-study")
@click.argument("labels", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Report folder: report.md, results.json, depth_profile.png.")
@setting(ModelPair, "srm", note="The labelled one.")
@settings(RankStudyConfig, "cache", "replay", "replay_only", "replay_limit", "window", "angle_k", "n_folds",
          "repeats", "n_boot", "seed", "n_ctx", "n_threads")
@click.option("--notes", type=click.Path(exists=True, dir_okay=False),
              help="Markdown inserted after the verdict (the reading of the numbers).")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict and file list as JSON.")
@handle_errors
def rank_study(labels: tuple[str, ...], out: str, srm: str, notes: str | None, as_json: bool, **opts: Any) -> None:
    """Test rank signals defined on fixed-size windows against "routing helps" in LABELS.

    The first LABELS file is where the definitions were chosen; every further file is reported on its own
    folds and, fitted on the first, as a test. Steps are teacher-forced through the SRM (every layer tapped,
    no generation) and cached per problem; the report says plainly whether any rank set adds held-out AUROC
    over text + position with a paired interval above 0. Models must run one at a time on a shared machine:
    use --replay-only to fill the cache, then --no-replay to score without holding the model."""
    from rankguide_edge.config import from_mapping

    c = from_mapping(RankStudyConfig, None, **pick(RankStudyConfig, opts))
    cache, replay, replay_only, replay_limit = c.cache, c.replay, c.replay_only, c.replay_limit
    window, angle_k, folds, repeats, boot, seed = c.window, c.angle_k, c.n_folds, c.repeats, c.n_boot, c.seed
    n_ctx, threads = c.n_ctx, c.n_threads
    import time

    from rankguide_edge.engine.models import resolve_model
    from rankguide_edge.errors import InvalidInputError
    from rankguide_edge.fitting.label import load_labels
    from rankguide_edge.fitting.rank_study import Definitions, missing_replays, model_id, replay_labels

    if replay_only and not replay:
        raise InvalidInputError("--replay-only with --no-replay does nothing: drop one of them")
    path = resolve_model(srm, progress=not as_json)
    ident = model_id(path)
    replay_notes: dict[str, str] = {}
    for lab in labels:
        _, records = load_labels(lab)
        todo = missing_replays(records, cache, ident)
        if replay and todo:
            from rankguide_edge.config import RuntimeConfig
            from rankguide_edge.engine import load_model

            t0 = time.perf_counter()
            with load_model(path, RuntimeConfig(n_ctx=n_ctx, n_threads=threads), progress=False) as model:
                s = replay_labels(model, records, cache, n_ctx=n_ctx, n_threads=threads, limit=replay_limit,
                                  progress=None if as_json else lambda pid: click.echo(f"replayed {pid}", err=True))
            replay_notes[lab] = (f"{s.replayed} problems replayed now ({s.tokens} tokens, {s.seconds:.0f} s, "
                                 f"{time.perf_counter() - t0:.0f} s with loading), {s.cached} cached, "
                                 f"{s.skipped} skipped")
            if not as_json:
                click.echo(f"{lab}: {replay_notes[lab]}", err=True)
        else:
            replay_notes[lab] = f"{len(records) - len(todo)} of {len(records)} records cached, {len(todo)} not"
    if replay_only:
        if as_json:
            emit_json({"replay": replay_notes})
        return
    _score(labels, out, cache, ident, Definitions(window=window, angle_k=angle_k), folds, repeats, boot, seed,
           notes, replay_notes, as_json)


def _score(labels: tuple[str, ...], out: str, cache: str, ident: str, defs: Definitions, folds: int, repeats: int,
           boot: int, seed: int, notes: str | None, replay_notes: dict[str, str], as_json: bool) -> None:
    from contextlib import ExitStack
    from pathlib import Path

    from rankguide_edge.fitting.rank_study_report import StudyRun, load_tables, run_study, verdict, write_report
    from rankguide_edge.fitting.rank_study_table import StudyConfig, resolve_layers

    cfg = StudyConfig(defs=defs, n_folds=folds, repeats=repeats, n_boot=boot, seed=seed)
    with ExitStack() as stack:
        try:  # one BLAS thread: the study shares the machine with model jobs
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(1))
        except ImportError:
            pass
        tables = load_tables(labels, cache, cfg, ident)
        studies = run_study(tables, cfg)
    cfg = resolve_layers(cfg, len(tables[0].layers))
    run = StudyRun(studies, cfg, list(labels), replay=replay_notes, n_layer=len(tables[0].layers),
                   n_embd=int(tables[0].pooled.shape[-1]),
                   command="rankguide-edge " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                   notes=Path(notes).read_text(encoding="utf-8") if notes else "")
    files = write_report(out, run)
    if as_json:
        emit_json({"verdict": verdict(studies), "files": files})
    else:
        for s in studies:
            click.echo(f"{s.name} ({s.mode}): {s.steps} steps, {s.problems} problems, {s.positives} help")
            for c in s.comparisons:
                ci = f"[{c.diff_ci[0]:+.3f}, {c.diff_ci[1]:+.3f}]" if c.diff_ci else "—"
                click.echo(f"  text+position {c.base.auroc:.3f} -> +{c.rank_set} {c.with_rank.auroc:.3f}: "
                           f"{c.diff:+.3f} {ci}")
        earned = [k for k, v in verdict(studies).items() if v]
        click.echo("earns the hot path: " + (", ".join(earned) if earned else "none"))
        click.echo("wrote " + ", ".join(files))
