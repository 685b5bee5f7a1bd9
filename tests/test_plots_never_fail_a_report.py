"""Figures after a plain install, and a report that survives a figure it cannot draw.

"matplotlib cannot be imported" is produced for real by hiding its modules from the import system
(``sys.modules[name] = None`` makes ``import name`` raise ImportError), as on a machine where it is absent.
"""

from __future__ import annotations

import gzip
import json
import sys
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner

from rankguide_edge.cli.main import main

REPO = Path(__file__).resolve().parents[1]
BENCH100 = REPO / "docs" / "figures" / "bench100" / "results.jsonl.gz"


def _hide_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)


def _small_run(folder: Path, problems: int = 6) -> Path:
    """The committed bench100 records of the first ``problems`` problems for srm, lrm and rankguide."""
    keep = []
    with gzip.open(BENCH100, "rt", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            if rec["method"] in ("srm", "lrm", "rankguide"):
                keep.append(rec)
    ids = list(dict.fromkeys(r["id"] for r in keep))[:problems]
    folder.mkdir()
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in keep if r["id"] in ids))
    return folder


def test_matplotlib_is_a_core_dependency() -> None:
    reqs = metadata.requires("rankguide-edge") or []
    core = [r for r in reqs if "extra ==" not in r]
    assert any(r.startswith("matplotlib") for r in core), core


def test_bench_report_draws_both_figures(tmp_path: Path) -> None:
    run = _small_run(tmp_path / "run")
    res = CliRunner().invoke(main, ["bench", "report", str(run)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    for name in ("pareto.png", "share.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_bench_report_without_matplotlib_writes_text_and_says_why(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    run = _small_run(tmp_path / "run")
    _hide_matplotlib(monkeypatch)
    res = CliRunner().invoke(main, ["bench", "report", str(run), "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["problems"] == 6
    assert json.loads((run / "summary.json").read_text())["problems"] == 6 and (run / "summary.md").is_file()
    notes = res.stderr.strip().splitlines()
    assert len(notes) == 2 and all(n.startswith("note: ") and "matplotlib" in n for n in notes), notes
    assert sorted(p.name for p in run.iterdir()) == ["results.jsonl", "summary.json", "summary.md"]
