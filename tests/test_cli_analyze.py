"""The `analyze` command through click's CliRunner, on small synthetic trace files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rankguide_edge.cli.analyze_cmd import analyze


def _traces(path: Path, n: int = 40, seed: int = 0, bad_line: bool = False) -> Path:
    """``n`` traces; ``rank.eff_norm.L23.win`` is lower in wrong ones; optionally a broken 3rd line."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        wrong = i % 3 == 0
        ns = int(rng.integers(3, 9))
        steps = [{"index": s, "signals": {"rank.eff_norm.L23.win": 0.5 - 0.2 * wrong + 0.05 * rng.normal(),
                                          "text.entropy_max": float(rng.normal()),
                                          "text.entropy_mean": float(rng.normal()),
                                          "fail.route": float(rng.random())}} for s in range(ns)]
        lines.append(json.dumps({"id": f"p{i}", "correct": not wrong, "finished": True, "n_tokens": 25 * ns,
                                 "n_steps": ns, "steps": steps}))
    if bad_line:
        lines.insert(2, '{"id": "broken", "correct": tru')
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(*args: str):
    return CliRunner().invoke(analyze, list(args), catch_exceptions=False)


def test_analyze_writes_report_and_prints_reading(tmp_path: Path) -> None:
    src = _traces(tmp_path / "t.jsonl")
    out = tmp_path / "res" / "deep"
    res = _run(str(src), "--out", str(out), "--bootstrap", "100")
    assert res.exit_code == 0, res.output
    assert "The strongest single signal is rank.eff_norm.L23.win" in res.stdout
    assert sorted(p.name for p in out.iterdir()) == ["analysis.json", "report.md", "roc.png", "trajectories.png"]
    assert (out / "roc.png").read_bytes()[:4] == b"\x89PNG"
    doc = json.loads((out / "analysis.json").read_text())
    assert doc["config"]["bootstrap"] == 100 and doc["counts"]["traces"] == 40


def test_analyze_without_matplotlib_writes_report_and_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A figure that cannot be drawn (matplotlib hidden from the import system, as when it is absent) is one
    note per figure; the report, the JSON and the exit code are those of a full run."""
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    out = tmp_path / "res"
    res = _run(str(_traces(tmp_path / "t.jsonl")), "--out", str(out), "--bootstrap", "50")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["analysis.json", "report.md"]
    notes = res.stderr.strip().splitlines()
    assert [n.split(":")[1].strip() for n in notes] == ["roc.png not drawn", "trajectories.png not drawn"]
    doc = json.loads((out / "analysis.json").read_text())
    assert len(doc["plot_notes"]) == 2 and set(doc["files"]) == {"analysis", "report"}


def test_analyze_json_digest_thresholds_and_no_plots(tmp_path: Path) -> None:
    src = _traces(tmp_path / "t.jsonl")
    out = tmp_path / "out"
    res = _run(str(src), "--out", str(out), "--json", "--no-plots", "--threshold", "0.3", "--threshold", "0.8",
               "--seed", "3")
    assert res.exit_code == 0, res.output
    digest = json.loads(res.stdout)
    assert digest["counts"]["wrong"] == 14 and digest["top"][0]["signal"] == "rank.eff_norm.L23.win"
    assert digest["top"][0]["direction"] == "low" and set(digest["logistic"]) >= {"entropy", "entropy+rank"}
    assert sorted(p.name for p in out.iterdir()) == ["analysis.json", "report.md"]
    full = json.loads((out / "analysis.json").read_text())
    aggs = {f["agg"] for f in full["features"] if f["signal"] == "fail.route"}
    assert {"first>0.3", "first>0.8"} <= aggs and full["config"]["seed"] == 3


def test_malformed_line_warns_by_default_and_fails_with_strict(tmp_path: Path) -> None:
    src = _traces(tmp_path / "t.jsonl", bad_line=True)
    res = _run(str(src), "--out", str(tmp_path / "a"), "--no-plots", "--bootstrap", "50")
    assert res.exit_code == 0
    assert f"warning: skipped 1 malformed line(s); first: {src}:3: not valid JSON" in res.stderr
    res = _run(str(src), "--out", str(tmp_path / "b"), "--strict")
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert res.stderr.startswith(f"error: {src}:3: not valid JSON") and not (tmp_path / "b").exists()


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    res = _run(str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "not found" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    small = _traces(tmp_path / "small.jsonl", n=8)
    res = _run(str(small), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "only 8 usable traces" in res.stderr
    res = _run(str(small), "--out", str(tmp_path / "o"), "--min-traces", "5", "--no-plots", "--bootstrap", "50")
    assert res.exit_code == 0, res.output
    res = _run(str(small), "--out", str(tmp_path / "o"), "--bootstrap", "5")
    assert res.exit_code == 2 and "--bootstrap" in res.stderr
