"""`rankguide-edge doctor` on this install, and on installs made to lack something (an empty model cache, a
damaged model file, a data folder without the sets, a missing extra, no native tap): each problem is named
with its fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from rankguide_edge.cli.main import main
from rankguide_edge.engine.models import CACHE_ENV, DEFAULT_LRM, DEFAULT_SRM, TEST_MODEL, get_manifest


def _doctor(*args: str) -> tuple[int, dict]:
    res = CliRunner().invoke(main, ["doctor", "--json", *args], catch_exceptions=False)
    return res.exit_code, json.loads(res.stdout)


def _findings(doc: dict, area: str, level: str) -> list[dict]:
    return [f for f in doc["findings"] if f["area"] == area and f["level"] == level]


def test_this_install_is_healthy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANKGUIDE_EDGE_DATA", raising=False)
    code, doc = _doctor("--quick")
    facts = doc["facts"]
    assert facts["llama"]["llama_cpp_python"] == "0.3.36" and "CPU" in facts["llama"]["backends"]
    assert facts["llama"]["llama_cpp"] and facts["llama"]["ggml"]
    assert facts["tap"]["kind"] == "native"
    assert facts["cpu"]["cores"] >= 1 and 1 <= facts["cpu"]["usable"] <= facts["cpu"]["cores"]
    assert {f["aliases"][0] for f in facts["data"]["files"]} == {"gsm8k", "gsm8k-train", "math500", "svamp"}
    assert all(f["present"] and f["intact"] for f in facts["data"]["files"])
    assert all(e["present"] for e in facts["extras"].values())  # the test extra installs all of them
    assert {m["name"] for m in facts["models"]["models"]} >= {DEFAULT_SRM, DEFAULT_LRM, TEST_MODEL}
    assert code == 0 and doc["problems"] == 0
    assert all(f["fix"] for f in doc["findings"] if f["level"] != "ok")  # every note and problem says what to do


def test_the_text_screen_names_each_part(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANKGUIDE_EDGE_DATA", raising=False)
    res = CliRunner().invoke(main, ["doctor", "--quick"], catch_exceptions=False)
    for word in ("llama-cpp-python 0.3.36", "backends", "tap ", "cores", "model cache", "gsm8k-train", "extras",
                 "no problems found"):
        assert word in res.output, word


def test_an_empty_cache_and_a_bare_data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    (tmp_path / "data" / "svamp").mkdir(parents=True)
    (tmp_path / "data" / "svamp" / "SVAMP.json").write_text("[]")
    monkeypatch.setenv("RANKGUIDE_EDGE_DATA", str(tmp_path / "data"))
    code, doc = _doctor()
    assert code == 1
    [data] = _findings(doc, "data", "problem")
    assert "gsm8k-train" in data["text"] and "svamp" not in data["text"] and "unset RANKGUIDE_EDGE_DATA" in data["fix"]
    [pull] = _findings(doc, "models", "note")
    assert pull["fix"] == f"rankguide-edge models pull {DEFAULT_SRM} {DEFAULT_LRM}"
    assert not any(m["pulled"] for m in doc["facts"]["models"]["models"])


def test_a_damaged_model_is_found_by_its_hash_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.delenv("RANKGUIDE_EDGE_DATA", raising=False)
    model = tmp_path / "models" / f"{TEST_MODEL}.gguf"
    model.parent.mkdir()
    with model.open("wb") as fh:  # the right size, the wrong bytes (sparse: costs no disk)
        fh.truncate(get_manifest(TEST_MODEL).size)
    code, doc = _doctor("--quick")
    assert code == 0 and not _findings(doc, "models", "problem")  # the size alone looks right
    code, doc = _doctor()
    [bad] = _findings(doc, "models", "problem")
    assert code == 1 and TEST_MODEL in bad["text"] and bad["fix"] == f"rankguide-edge models pull {TEST_MODEL} --force"
    row = next(m for m in doc["facts"]["models"]["models"] if m["name"] == TEST_MODEL)
    assert row["pulled"] is True and row["verified"] is False


def test_a_missing_extra_names_the_packages_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if it were not installed: find_spec returns None
    code, doc = _doctor("--quick")
    [note] = [f for f in _findings(doc, "extras", "note") if f["text"].startswith("server")]
    assert "fastapi" in note["text"] and "'fastapi>=0.110'" in note["fix"] and "'uvicorn>=0.29'" in note["fix"]
    assert doc["facts"]["extras"]["server"]["present"] is False


def test_without_the_native_tap_it_says_the_fallback_is_used(tmp_path: Path) -> None:
    """A fresh process (the tap library is loaded once per process) told to load a tap that is not there."""
    exe = Path(sys.executable).with_name("rankguide-edge")
    env = {**os.environ, "RANKGUIDE_EDGE_TAP_LIB": str(tmp_path / "librgtap.so")}
    out = subprocess.run([str(exe), "doctor", "--json", "--quick"], env=env, capture_output=True, text=True,
                         timeout=120)
    doc = json.loads(out.stdout)
    assert doc["facts"]["tap"]["kind"] == "python"
    [note] = _findings(doc, "tap", "note")
    assert "Python fallback" in note["text"] and "pip install --force-reinstall" in note["fix"]
