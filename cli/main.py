"""``rankguide-edge``: the console entry point. Sub-commands live one module each and stay thin."""

from __future__ import annotations

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
  6    the LRM backend failed persistently
  130  interrupted (Ctrl-C)"""


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog=EXIT_CODES)
@click.version_option(__version__, prog_name="rankguide-edge")
def main() -> None:
    """Small and large GGUF reasoning models solving together, routed by tensor-rank signals.

    Models are named (see `rankguide-edge models list`) or given as a path to any GGUF file.
    """


def _register() -> None:
    from . import (
        analyze_cmd,
        bench_cmd,
        calibrate_cmd,
        doctor_cmd,
        generate_cmd,
        label_cmd,
        models_cmd,
        rank_study_cmd,
        router_cmd,
        serve_cmd,
        solve_cmd,
        steer_cmd,
        trace_cmd,
    )

    main.add_command(solve_cmd.solve)
    main.add_command(solve_cmd.chat)
    main.add_command(models_cmd.models)
    main.add_command(generate_cmd.generate)
    main.add_command(trace_cmd.trace)
    main.add_command(label_cmd.label)
    main.add_command(router_cmd.router)
    main.add_command(rank_study_cmd.rank_study)
    main.add_command(analyze_cmd.analyze)
    main.add_command(bench_cmd.bench)
    main.add_command(calibrate_cmd.calibrate)
    main.add_command(steer_cmd.steer)
    main.add_command(serve_cmd.serve)
    main.add_command(doctor_cmd.doctor)
    bench_cmd.bench.add_command(serve_cmd.bench_serve)


_register()

if __name__ == "__main__":  # pragma: no cover
    main()
