"""``rankguide-edge models ...`` through click's CliRunner (needs the installed package: rankguide_edge.cli)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from rankguide_edge.cli.models_cmd import models
from rankguide_edge.engine.models import CACHE_ENV, DEFAULT_LRM, DEFAULT_SRM, MANIFESTS_ENV, TEST_MODEL


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(root))
    monkeypatch.delenv(MANIFESTS_ENV, raising=False)
    return root


def run(*args: str) -> tuple[int, str]:
    """Exit code and everything printed (stdout and stderr)."""
    result = CliRunner().invoke(models, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_help_texts_describe_every_command() -> None:
    code, out = run("--help")
    assert code == 0
    for command in ("list", "pull", "path", "verify"):
        assert command in out
    code, out = run("pull", "--help")
    assert code == 0 and "--force" in out and "--keep-wheels" in out and "SRM" in out


def test_list_reports_the_known_models(cache: Path) -> None:
    code, out = run("list", "--json")
    assert code == 0
    records = {r["name"]: r for r in json.loads(out)}
    assert {DEFAULT_SRM, DEFAULT_LRM, TEST_MODEL, "gemma-3-270m"} <= set(records)
    srm = records[DEFAULT_SRM]
    assert (srm["role"], srm["architecture"], srm["n_layer"], srm["n_embd"]) == ("srm", "qwen2", 24, 896)
    assert srm["pulled"] is False and srm["path"].startswith(str(cache))
    code, out = run("list")
    assert code == 0 and "NAME" in out and "PULLED" in out and TEST_MODEL in out and str(cache) in out


def test_errors_are_one_line_with_the_fix(cache: Path) -> None:
    code, out = run("path", "no-such-model")
    assert code == 2 and "error: unknown model 'no-such-model'" in out and TEST_MODEL in out
    code, out = run("path", TEST_MODEL)
    assert code == 5 and f"rankguide-edge models pull {TEST_MODEL}" in out
    code, out = run("pull", "no-such-model")  # rejected before anything is downloaded
    assert code == 2 and not cache.exists()
    code, out = run("verify")
    assert code == 0 and "no model is pulled" in out


@pytest.mark.network
def test_pull_path_and_verify(cache: Path) -> None:
    code, out = run("pull", "--quiet", TEST_MODEL)
    assert code == 0, out
    name, path = out.strip().split("\t")
    assert name == TEST_MODEL and Path(path).is_file()
    code, out = run("path", TEST_MODEL)
    assert code == 0 and out.strip() == path
    code, out = run("verify", "--json")
    assert code == 0
    (result,) = json.loads(out)
    assert result["ok"] is True and result["name"] == TEST_MODEL and result["path"] == path
    code, out = run("list", "--json")
    assert {r["name"]: r["pulled"] for r in json.loads(out)}[TEST_MODEL] is True
    # damage one byte: verify must fail with the fix, for the named model and for "every pulled model"
    with open(path, "r+b") as fh:
        fh.seek(1_000_000)
        byte = fh.read(1)
        fh.seek(1_000_000)
        fh.write(bytes([byte[0] ^ 0x55]))
    for args in (("verify", TEST_MODEL), ("verify",)):
        code, out = run(*args)
        assert code == 5 and "FAILED" in out and "--force" in out
    code, out = run("pull", "-q", "--force", TEST_MODEL)
    assert code == 0
    code, out = run("verify", TEST_MODEL)
    assert code == 0 and out.startswith("STATUS") and "ok" in out
