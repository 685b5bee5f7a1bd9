"""``rankguide-edge solve`` and ``chat``: the SRM writes steps, the LRM rewrites the ones the policy flags."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from rankguide_edge.collab.reasoner import ReasonerConfig
from rankguide_edge.config import RuntimeConfig
from rankguide_edge.engine.models import ModelPair

from ._common import apply_options, emit_json, handle_errors, remote_lrm_options, steer_options
from ._settings import pick, setting, settings


def collab_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by solve and chat: the models, the remote LRM, the reasoner and runtime settings."""
    return apply_options([
        setting(ModelPair, "srm"), setting(ModelPair, "lrm"), *remote_lrm_options(),
        settings(ReasonerConfig, "policy", "threshold", "router", "decide", "lrm_first", "max_tokens", "temperature",
                 "seed"),
        setting(RuntimeConfig, "n_ctx", note="The SRM's, and a local LRM's."),
        setting(ReasonerConfig, "prefix_reuse", note="In chat: what is kept of the earlier turns."),
        settings(RuntimeConfig, "n_threads", "n_gpu_layers"),
        *steer_options(),
    ])(fn)


def open_solver(progress: bool, **opts: Any):  # noqa: ANN201
    """The :class:`~rankguide_edge.Solver` of solve's and chat's options (their names are the fields')."""
    from rankguide_edge import Solver
    from rankguide_edge.collab.lrm import RemoteOptions
    from rankguide_edge.config import from_mapping

    cfg = from_mapping(ReasonerConfig, None, **pick(ReasonerConfig, opts))
    runtime = from_mapping(RuntimeConfig, None, **pick(RuntimeConfig, opts))
    remote = RemoteOptions(model=opts["lrm_model"], api_key=opts["lrm_api_key"], timeout=opts["lrm_timeout"],
                           retries=opts["lrm_retries"])
    return Solver(opts["srm"], opts["lrm"], config=cfg, runtime=runtime, remote=remote, progress=progress)


def _number_arg(what: str, text: str, expected: str = "a number") -> float:
    """A chat command's number argument (InvalidInputError naming the command when it is not one)."""
    from rankguide_edge.errors import InvalidInputError

    try:
        return float(text)
    except ValueError:
        raise InvalidInputError(f"{what} takes {expected}, not {text.strip()!r}") from None


def _threshold_arg(arg: str) -> float | None:
    """``/threshold X`` (a number in [0, 1]) or ``/threshold auto`` (None: the router's threshold)."""
    return None if arg.strip() == "auto" else _number_arg("/threshold", arg, "a number in [0, 1] or auto")


def _marker(source: str) -> str:
    return click.style("[LRM]", fg="magenta", bold=True) if source == "lrm" else click.style("[SRM]", fg="cyan")


class StepPrinter:
    """Prints a solve's events (the one event model, ``collab.events``) as they arrive: each step after its
    [SRM]/[LRM] marker, token by token where tokens stream, its trailing blank lines replaced by its note.

    ``drafts`` True (chat): SRM drafts show live, and one the LRM replaces ends with "↩ routed". False (solve):
    only final text shows, so nothing printed is ever withdrawn. ``scores``: each step ends with its score.
    """

    def __init__(self, *, drafts: bool, scores: bool) -> None:
        self.drafts, self.scores = drafts, scores
        self.shown = ""  # the current step's text printed so far (its trailing whitespace held back)
        self.held = ""
        self.source: str | None = None

    def __call__(self, kind: str, payload: Any) -> None:
        if kind == "token" and (payload.final or self.drafts):
            self._write(payload.source, payload.text)
        elif kind == "discard" and self.source is not None:
            sys.stdout.write(click.style(" ↩ routed", fg="yellow") + "\n")
            self._reset()
        elif kind == "step":
            done = self.shown + self.held
            self._write(payload.source, payload.text[len(done):] if payload.text.startswith(done) else payload.text)
            note = f"  (score {payload.score:.2f})" if self.scores and payload.score is not None else ""
            if payload.lrm_error:
                note += click.style(f"  [LRM failed: {payload.lrm_error}; kept the SRM step]", fg="yellow")
            sys.stdout.write(note + "\n")
            self._reset()
        sys.stdout.flush()

    def _reset(self) -> None:
        self.shown, self.held, self.source = "", "", None

    def _write(self, source: str, text: str) -> None:
        if not text:
            return
        if self.source != source:
            sys.stdout.write(_marker(source) + " ")
            self.source = source
        body = (self.held + text).rstrip()
        if body:
            sys.stdout.write(body)
            self.shown += body
        self.held = (self.held + text)[len(body):]


@click.command()
@click.argument("question")
@collab_options
@click.option("--kind", default="generic", show_default=True, type=click.Choice(["generic", "gsm8k", "svamp", "math"]),
              help="Answer format: numeric kinds end with 'The answer is N', math with \\boxed{}.")
@click.option("--json", "as_json", is_flag=True, help="Print the full result (steps, timing, usage) as JSON.")
@handle_errors
def solve(question: str, kind: str, as_json: bool, **opts: Any) -> None:
    """Solve QUESTION step by step: the SRM drafts each step and the LRM rewrites the steps the policy flags.

    Steps print with an [SRM] or [LRM] marker on stdout, then the final answer; a cost summary (steps, tokens,
    seconds) goes to stderr. Bad input (an empty question, a policy that cannot decide at --decide, a broken
    --router file) fails before any model loads.
    """
    from rankguide_edge.collab.reasoner import check_question

    check_question(question)
    with open_solver(progress=not as_json, **opts) as solver:  # steps print as they are written, final text only
        out = solver.solve(question, kind=kind, on_event=None if as_json else StepPrinter(drafts=False, scores=True))
    if as_json:
        emit_json(out.to_dict())
        return
    r = out.result
    click.echo(click.style(f"answer: {out.answer}", bold=True))
    click.echo(f"[{len(r.steps)} steps, {sum(s.source == 'lrm' for s in r.steps)} by the LRM; "
               f"{r.usage['srm_tokens']} SRM tokens ({r.usage['srm_discarded_tokens']} thrown away), "
               f"{r.usage['lrm_tokens']} LRM tokens in {r.usage['lrm_calls']} calls; {r.timing['total']:.1f} s]",
               err=True)


@click.command()
@collab_options
@handle_errors
def chat(**opts: Any) -> None:
    """Interactive multi-turn chat. Both models' tokens stream as they are written; LRM steps are marked.

    Commands: /reset (forget the conversation), /policy NAME, /threshold X (or auto: the router's),
    /decide post|early|pre, /steer FILE [SCALE] or /steer off, /stats, /quit. Ctrl-C or Ctrl-D leaves.
    """
    from rankguide_edge.errors import RankGuideError

    with open_solver(progress=True, **opts) as solver:
        history: list[tuple[str, str]] = []
        totals = {"turns": 0, "steps": 0, "lrm_steps": 0, "srm_tokens": 0, "lrm_tokens": 0, "seconds": 0.0}
        click.echo(f"rankguide-edge chat — policy {solver.config.policy}, threshold {solver.threshold:.3f}, "
                   f"decide {solver.config.decide}. /quit to leave.")
        while True:
            try:
                line = input(click.style("you> ", bold=True))
            except (EOFError, KeyboardInterrupt):
                click.echo("")
                return
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                cmd, _, arg = line.partition(" ")
                try:
                    if cmd in ("/quit", "/exit"):
                        return
                    if cmd == "/reset":
                        history.clear()
                        click.echo("conversation forgotten")
                    elif cmd == "/policy":
                        solver.reconfigure(policy=arg.strip())
                        click.echo(f"policy {solver.config.policy}")
                    elif cmd == "/threshold":
                        solver.reconfigure(threshold=_threshold_arg(arg))
                        click.echo(f"threshold {solver.threshold:.3f}")
                    elif cmd == "/decide":
                        solver.reconfigure(decide=arg.strip())
                        click.echo(f"decide {solver.config.decide}")
                    elif cmd == "/steer":
                        path, _, scale = arg.strip().partition(" ")
                        if path in ("", "off"):
                            solver.reconfigure(steer="")
                        else:
                            solver.reconfigure(steer=path, **({"steer_scale": _number_arg("/steer SCALE", scale)}
                                                              if scale else {}))
                        st = solver.steering
                        click.echo("steering off" if st is None else
                                   f"steering {st['file']} x{st['scale']} on layers {st['layers']} ({st['where']})")
                    elif cmd == "/stats":
                        click.echo(", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in totals.items()))
                    else:
                        click.echo("commands: /reset /policy NAME /threshold X|auto /decide post|early|pre "
                                   "/steer FILE [SCALE]|off /stats /quit")
                except (RankGuideError, ValueError) as exc:
                    click.echo(f"error: {exc}")
                continue
            history.append(("user", line))
            try:  # drafts show live; one the LRM replaces is marked "↩ routed"
                result = solver.chat(history, on_event=StepPrinter(drafts=True, scores=False))
            except KeyboardInterrupt:
                click.echo(click.style("\n(interrupted)", fg="yellow"))
                history.pop()
                continue
            sys.stdout.write("\n")
            history.append(("assistant", result.answer_text))
            totals["turns"] += 1
            totals["steps"] += len(result.steps)
            totals["lrm_steps"] += sum(s.source == "lrm" for s in result.steps)
            totals["srm_tokens"] += result.usage["srm_tokens"]
            totals["lrm_tokens"] += result.usage["lrm_tokens"]
            totals["seconds"] += result.timing["total"]
