"""``rankguide-edge``: the console entry point. Sub-commands live one module each and stay thin."""

from __future__ import annotations

import importlib

import click

from rankguide_edge import __version__

EXIT_CODES = """\b
Exit codes:
  0    success
  1    any other error
  2    bad usage, option, config file or input (dataset, layer list, router file, policy at --decide,
       unknown model name, missing model file, a file that is not GGUF)
  3    a required package is missing
  4    llama.cpp or the native tap failed
  5    a model could not be pulled, verified or loaded (not pulled yet, download or checksum failed)
  130  interrupted (Ctrl-C)"""


#: command name -> (module, attribute). A command's module is imported when the command runs or a help text
#: lists it: options are generated from config dataclasses, so each command pays for importing its own configs
#: (``analyze`` needs scipy for its statistics), not for every other command's
COMMANDS: dict[str, tuple[str, str]] = {
    "solve": ("solve_cmd", "solve"), "chat": ("solve_cmd", "chat"), "models": ("models_cmd", "models"),
    "generate": ("generate_cmd", "generate"), "trace": ("trace_cmd", "trace"), "label": ("label_cmd", "label"),
    "router": ("router_cmd", "router"), "analyze": ("analyze_cmd", "analyze"), "bench": ("bench_cmd", "bench"),
    "calibrate": ("calibrate_cmd", "calibrate"), "steer": ("steer_cmd", "steer"), "serve": ("serve_cmd", "serve"),
    "doctor": ("doctor_cmd", "doctor"), "rank-study": ("rank_study_cmd", "rank_study"),
}


class _Commands(click.Group):
    """The sub-commands of :data:`COMMANDS`, each imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attr = COMMANDS[cmd_name]
        command: click.Command = getattr(importlib.import_module(f"{__package__}.{module}"), attr)
        return command


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog=EXIT_CODES)
@click.version_option(__version__, prog_name="rankguide-edge")
def main() -> None:
    """Small and large GGUF reasoning models solving together, routed by tensor-rank signals.

    Models are named (see `rankguide-edge models list`) or given as a path to any GGUF file.
    """


if __name__ == "__main__":  # pragma: no cover
    main()
