"""Commands find the benchmark sets by short name in the installed package, from any working directory."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rankguide_edge.cli.main import main
from rankguide_edge.tasks.datasets import load_problems, resolve_dataset_path


def test_bench_run_on_the_packaged_gsm8k_test(tiny_gguf, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANKGUIDE_EDGE_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # nothing beside this folder: the data must come from the package
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["bench", "run", "--data", "gsm8k-test", "--limit", "2", "--methods", "srm",
                                    "--srm", str(tiny_gguf), "--max-tokens", "8", "--n-ctx", "512", "--threads", "1",
                                    "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    expected = load_problems(resolve_dataset_path("gsm8k-test"), limit=2)
    assert [(r["id"], r["gold"]) for r in recs] == [(p.id, p.gold) for p in expected]
    assert recs[0]["id"] == "gsm8k-test-472" and recs[0]["gold"] == "6"


def test_an_unset_data_folder_names_the_variable(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANKGUIDE_EDGE_DATA", str(tmp_path))
    res = CliRunner().invoke(main, ["bench", "run", "--data", "math500", "--limit", "1", "--methods", "srm",
                                    "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and "RANKGUIDE_EDGE_DATA" in res.output and "\n" not in res.output.strip()
