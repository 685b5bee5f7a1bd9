"""Whether this install can do the job: one pass over everything rankguide-edge depends on at run time.

:func:`run_doctor` gathers ``facts`` (JSON-ready: versions, llama.cpp backends and devices, the tap, cores,
the model cache, the packaged data sets, optional extras) and ``findings``: each one ``ok``, a ``note``
(works, but slower or with less) or a ``problem`` (something a command will fail on), with the fix in one
line. Nothing here loads a model or changes a file; hashing the pulled models (``verify_models``) is the
slow part (about 1 s per GB).
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

from . import __version__
from .errors import RankGuideError

LEVELS = ("ok", "note", "problem")

#: optional features -> (modules that must import, the rankguide-edge extra that installs them)
EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "server": (("fastapi", "uvicorn"), "server"),
    "plots": (("matplotlib",), ""),  # a core dependency: missing means a broken install
    "math": (("math_verify",), "math"),
    "fit": (("sklearn",), "fit"),  # router fit, calibrate, analyze
}


@dataclass(frozen=True)
class Finding:
    """One verdict: ``area`` (llama.cpp, tap, cpu, models, data, extras), ``level`` (ok, note, problem),
    what was found, and the fix (empty when there is nothing to do)."""

    area: str
    level: str
    text: str
    fix: str = ""


@dataclass
class DoctorReport:
    facts: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "problem"]

    def add(self, area: str, level: str, text: str, fix: str = "") -> None:
        self.findings.append(Finding(area, level, text, fix))

    def to_dict(self) -> dict[str, Any]:
        return {"facts": self.facts, "findings": [asdict(f) for f in self.findings],
                "problems": len(self.problems)}


def _llama(rep: DoctorReport) -> None:
    from .engine import _native

    try:
        info = _native.build_info()
    except RankGuideError as exc:  # not installed, wrong version, or its library does not load
        rep.facts["llama"] = {"error": str(exc)}
        rep.add("llama.cpp", "problem", "llama.cpp cannot be used", str(exc))
        return
    rep.facts["llama"] = info
    gpus = [d for d in info["devices"] if d["type"] != "CPU"]
    rep.add("llama.cpp", "ok", f"llama-cpp-python {info['llama_cpp_python']}, llama.cpp {info['llama_cpp']}, "
                               f"backends {', '.join(info['backends'])}")
    if not info["gpu_offload"] or not gpus:
        rep.add("llama.cpp", "note", "CPU only: no GPU backend or device, so --n-gpu-layers changes nothing",
                "for a GPU, rebuild llama-cpp-python with CUDA or Metal (README, \"On a GPU\")")
    else:
        rep.add("llama.cpp", "ok", "GPU offload available: " + ", ".join(f"{d['name']} ({d['description']})"
                                                                       for d in gpus))


def _tap(rep: DoctorReport) -> None:
    from .engine import _native

    info = rep.facts["tap"] = _native.tap_info()
    if info["kind"] == "native":
        rep.add("tap", "ok", f"native tap loaded ({info['library']})")
    else:
        rep.add("tap", "note", "native tap not loaded: hidden states are read by the slower Python fallback "
                               "(about 5 % slower decoding)",
                "reinstall with a C compiler and CMake present: pip install --force-reinstall --no-deps .")


def _cpu(rep: DoctorReport) -> None:
    cores = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    rep.facts["cpu"] = {"cores": cores, "usable": usable, "threads_0_means": cores,
                        "machine": platform.machine(), "processor": platform.processor()}
    if usable < cores:
        rep.add("cpu", "note", f"{usable} of {cores} cores are usable by this process, but --threads 0 starts "
                               f"{cores} threads", f"pass --threads {usable}")
    else:
        rep.add("cpu", "ok", f"{cores} cores; --threads 0 uses all of them")


def _models(rep: DoctorReport, verify_models: bool) -> None:
    from .engine import models as M

    rows = []
    try:
        manifests = M.list_manifests()
    except RankGuideError as exc:
        rep.add("models", "problem", "the model manifests cannot be read", str(exc))
        return
    for m in manifests:
        row: dict[str, Any] = {"name": m.name, "role": m.role, "size": m.size, "path": str(M.model_file(m.name)),
                               "pulled": M.is_pulled(m.name), "verified": None}
        if row["pulled"] and verify_models:
            result = M.verify(m.name)
            row["verified"] = result.ok
            if not result.ok:
                rep.add("models", "problem", f"{m.name}: {result.message.split(';')[0]}",
                        f"rankguide-edge models pull {m.name} --force")
        elif not row["pulled"] and M.model_file(m.name).exists():
            rep.add("models", "problem", f"{m.name}: the cached file is incomplete",
                    f"rankguide-edge models pull {m.name} --force")
        rows.append(row)
    rep.facts["models"] = {"cache": str(M.cache_dir()), "models": rows}
    missing = [r["name"] for r in rows if not r["pulled"] and r["role"] in ("srm", "lrm")]
    if missing:
        rep.add("models", "note", f"not pulled yet (the first command that needs them pulls them): "
                                  f"{', '.join(missing)}", "rankguide-edge models pull " + " ".join(missing))
    good = [r["name"] for r in rows if r["pulled"] and r["verified"] is not False]
    if good:
        rep.add("models", "ok", ("pulled and verified: " if verify_models else "pulled (not hashed): ")
                + ", ".join(good))


def _data(rep: DoctorReport) -> None:
    from .tasks.datasets import DATA_ENV, DATASET_ALIASES, packaged_data_dir, packaged_files, resolve_dataset_path

    try:
        files = packaged_files()
    except RankGuideError as exc:
        rep.facts["data"] = {"packaged": str(packaged_data_dir()), "error": str(exc)}
        rep.add("data", "problem", "the packaged benchmark sets cannot be read", str(exc))
        return
    rep.facts["data"] = {"packaged": str(packaged_data_dir()), "env": os.environ.get(DATA_ENV) or None,
                         "files": [asdict(f) for f in files]}
    bad = [f.name for f in files if not (f.present and f.intact)]
    if bad:
        rep.add("data", "problem", f"packaged data missing or damaged: {', '.join(bad)}",
                "reinstall rankguide-edge: pip install --force-reinstall --no-deps .")
    else:
        rep.add("data", "ok", "packaged sets intact: " + ", ".join(f"{f.aliases[0]} ({f.records})" for f in files))
    if os.environ.get(DATA_ENV):
        unresolved = []
        for alias in DATASET_ALIASES:
            try:
                resolve_dataset_path(alias)
            except RankGuideError:
                unresolved.append(alias)
        if unresolved:
            rep.add("data", "problem", f"${DATA_ENV} overrides the packaged sets but lacks {', '.join(unresolved)}",
                    f"add the files to {os.environ[DATA_ENV]}, or unset {DATA_ENV}")
        else:
            rep.add("data", "note", f"short names resolve to ${DATA_ENV} ({os.environ[DATA_ENV]}), not the package")


def _extra_requirements(extra: str) -> list[str]:
    """The requirement strings of one of rankguide-edge's extras, as installed (without the marker)."""
    try:
        reqs = metadata.requires("rankguide-edge") or []
    except metadata.PackageNotFoundError:
        return []
    return [r.split(";")[0].strip() for r in reqs if f'extra == "{extra}"' in r]


def _extras(rep: DoctorReport) -> None:
    facts: dict[str, Any] = {}
    for feature, (modules, extra) in EXTRAS.items():
        absent = [m for m in modules if importlib.util.find_spec(m) is None]
        versions: dict[str, str | None] = {}
        for m in modules:
            try:
                versions[m] = metadata.version(m.replace("_", "-"))
            except metadata.PackageNotFoundError:
                versions[m] = None
        facts[feature] = {"present": not absent, "versions": versions}
        if not absent:
            rep.add("extras", "ok", f"{feature}: " + ", ".join(f"{m} {v}" for m, v in versions.items()))
            continue
        wanted = _extra_requirements(extra) if extra else []
        fix = "pip install " + " ".join(f"'{r}'" for r in (wanted or absent))
        level = "note" if extra else "problem"
        rep.add("extras", level, f"{feature}: {', '.join(absent)} not installed", fix)
    rep.facts["extras"] = facts


def run_doctor(*, verify_models: bool = True) -> DoctorReport:
    """Check this install (see the module docstring); ``verify_models`` also hashes every pulled model."""
    rep = DoctorReport()
    rep.facts["rankguide_edge"] = __version__
    rep.facts["python"] = {"version": platform.python_version(), "executable": sys.executable,
                           "platform": platform.platform()}
    for check in (_llama, _tap, _cpu):
        check(rep)
    _models(rep, verify_models)
    _data(rep)
    _extras(rep)
    return rep


__all__ = ["EXTRAS", "LEVELS", "DoctorReport", "Finding", "run_doctor"]
