"""The `generate` and `bench capture` commands on the generated tiny GGUF, and version checking."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from click.testing import CliRunner

from rankguide_edge.cli.main import main


def _run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_generate_json_reports_tapped_states(tiny_gguf) -> None:
    res = _run("generate", "hello there", "--model", str(tiny_gguf), "--max-tokens", "8", "--layers", "0,-1",
               "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["tokens"] == 8 and out["tapped_layers"] == [0, 2] and out["tap"] == "native"
    assert out["hidden_states"] == 2 * 8 and out["n_embd"] == 64 and out["text"]


def test_generate_streams_text(tiny_gguf) -> None:
    ref = json.loads(_run("generate", "hi", "--model", str(tiny_gguf), "--max-tokens", "6", "--json").output)
    res = _run("generate", "hi", "--model", str(tiny_gguf), "--max-tokens", "6", "--layers", "none")
    assert res.exit_code == 0
    assert res.stdout.startswith(ref["text"])


def test_generate_bad_input_gives_one_line_errors(tiny_gguf, tmp_path) -> None:
    res = _run("generate", "hi", "--model", str(tiny_gguf), "--layers", "7")
    assert res.exit_code == 2 and "out of range" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = _run("generate", "   ", "--model", str(tiny_gguf))
    assert res.exit_code == 2 and "empty" in res.stderr
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"\x00" * 64)
    res = _run("generate", "hi", "--model", str(junk))
    assert res.exit_code == 2 and "not a GGUF" in res.stderr
    res = _run("generate", "hi", "--model", "no-such-model")
    assert res.exit_code == 2 and "known models" in res.stderr


def test_bench_capture_json_keys(tiny_gguf) -> None:
    res = _run("bench", "capture", "--model", str(tiny_gguf), "--tokens", "4", "--rounds", "2", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    for key in ("tok_s_plain", "tok_s_native", "tok_s_python", "native_overhead", "python_overhead"):
        assert key in out
    assert out["tok_s_plain"] > 0 and out["tok_s_native"] > 0 and out["tok_s_python"] > 0
    # properties, not the formula again: each figure is a median of its rounds, and the overhead says which
    # way the native tap moved decoding
    for way in ("plain", "native", "python"):
        rounds = out["per_round"][way]
        assert len(rounds) == 2 and min(rounds) <= out[f"tok_s_{way}"] <= max(rounds)
    assert (out["native_overhead"] > 0) == (out["tok_s_native"] < out["tok_s_plain"])
    assert (out["python_overhead"] > 0) == (out["tok_s_python"] < out["tok_s_plain"])
    assert -1 < out["native_overhead"] < 1
    assert out["n_layer_tapped"] == 3 and len(out["per_round"]["plain"]) == 2


def test_wrong_llama_cpp_python_version_is_a_clear_error(tmp_path) -> None:
    """A different installed llama-cpp-python version is refused before llama_cpp is imported."""
    fake = tmp_path / "site"
    info = fake / "llama_cpp_python-0.2.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: llama_cpp_python\nVersion: 0.2.0\n")
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(fake)!r})
        from rankguide_edge.engine import _native
        from rankguide_edge.errors import DependencyError
        try:
            _native.lib()
        except DependencyError as exc:
            print("ERR", exc)
        print("imported", "llama_cpp" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path).stdout
    assert "ERR llama-cpp-python 0.2.0 is installed" in out and "pip install llama-cpp-python==0.3.36" in out
    assert "imported False" in out


def test_import_has_no_side_effects(tmp_path) -> None:
    code = ("import sys, rankguide_edge, rankguide_edge.engine, rankguide_edge.engine.model, "
            "rankguide_edge.engine.context, rankguide_edge.engine.models, rankguide_edge.cli.main; "
            "print('llama_cpp' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path).stdout
    assert out.strip() == "False"
