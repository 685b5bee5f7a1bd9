"""``rankguide-edge doctor``: can this install do the job? Versions, backends, tap, cores, models, data, extras."""

from __future__ import annotations

import sys

import click

from ._common import emit_json, handle_errors

_MARK = {"ok": "ok  ", "note": "note", "problem": "FIX "}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print facts and findings as one JSON object.")
@click.option("--quick", is_flag=True, help="Do not hash the pulled models (checks their size only).")
@handle_errors
def doctor(as_json: bool, quick: bool) -> None:
    """Check the install: llama-cpp-python and llama.cpp versions, compiled backends and devices, native tap
    or Python fallback, cores, the model cache (pulled and verified), the packaged data sets and the optional
    extras. Each problem comes with its fix. Exits 1 when a problem was found, else 0."""
    from rankguide_edge.doctor import run_doctor

    rep = run_doctor(verify_models=not quick)
    if as_json:
        emit_json(rep.to_dict())
    else:
        _print(rep)
    if rep.problems:
        sys.exit(1)


def _print(rep) -> None:  # noqa: ANN001
    f = rep.facts
    llama = f.get("llama", {})
    click.echo(f"rankguide-edge {f['rankguide_edge']}, Python {f['python']['version']} ({f['python']['platform']})")
    if "error" not in llama:
        devices = "; ".join(f"{d['type']} {d['name']}: {d['description']}" for d in llama["devices"])
        click.echo(f"llama.cpp    llama-cpp-python {llama['llama_cpp_python']}, llama.cpp {llama['llama_cpp']}, "
                   f"ggml {llama['ggml']} ({llama['ggml_commit']})")
        click.echo(f"backends     {', '.join(llama['backends'])}; devices: {devices}; "
                   f"GPU offload {'yes' if llama['gpu_offload'] else 'no'}")
    click.echo(f"tap          {f['tap']['kind']}" + (f" ({f['tap']['library']})" if f['tap']['library'] else ""))
    cpu = f["cpu"]
    click.echo(f"cpu          {cpu['cores']} cores, {cpu['usable']} usable; --threads 0 = {cpu['threads_0_means']}")
    models = f.get("models")
    if models:
        click.echo(f"model cache  {models['cache']}")
        for m in models["models"]:
            state = ("verified" if m["verified"] else "DAMAGED" if m["verified"] is False else "pulled") \
                if m["pulled"] else "not pulled"
            click.echo(f"  {m['name']:<30} {m['role']:<5} {m['size'] / 1e6:7.0f} MB  {state}")
    data = f.get("data", {})
    for d in data.get("files", []):
        state = "ok" if d["present"] and d["intact"] else "MISSING OR DAMAGED"
        click.echo(f"data         {', '.join(d['aliases']):<24} {d['records']:>5} records  {state}")
    extras = f.get("extras", {})
    click.echo("extras       " + ", ".join(f"{k} {'yes' if v['present'] else 'no'}" for k, v in extras.items()))
    click.echo("")
    for item in rep.findings:
        if item.level == "ok":
            continue
        click.echo(f"{_MARK[item.level]} [{item.area}] {item.text}" + (f"\n       fix: {item.fix}" if item.fix else ""))
    n = len(rep.problems)
    click.echo(f"{n} problem{'s' if n != 1 else ''} found" if n else "no problems found")
