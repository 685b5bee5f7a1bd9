"""`--n-gpu-layers` on every command that loads a model and in the server config, proved on a CPU build: the
value reaches llama.cpp's model parameters, and `-1` (all layers) still runs where there is no GPU backend."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from click.testing import CliRunner

from rankguide_edge.cli.main import main
from rankguide_edge.config import RuntimeConfig, SamplingConfig
from rankguide_edge.engine import _native
from rankguide_edge.engine.model import Model
from rankguide_edge.errors import ConfigError
from rankguide_edge.server.settings import ServerConfig

#: every command that loads a model (steer inspect --srm reads only the model's shape: nothing to offload)
MODEL_COMMANDS = ["generate", "solve", "chat", "serve", "trace", "label", "calibrate", "bench run", "bench capture",
                  "bench serve", "steer extract"]

NATIVE_LOG = "rankguide_edge.engine._native"


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_every_model_loading_command_offers_the_option(command: str) -> None:
    res = CliRunner().invoke(main, [*command.split(), "--help"], catch_exceptions=False)
    text = " ".join(res.output.split())  # help text is wrapped to the terminal width
    assert res.exit_code == 0 and "--n-gpu-layers" in text and "-1 = all" in text


def _loads(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == NATIVE_LOG and "llama_model_load_from_file" in r.getMessage()]


def test_the_value_reaches_llama_cpp_from_generate_and_bench_run(tiny_gguf, tmp_path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger=NATIVE_LOG):
        res = CliRunner().invoke(main, ["generate", "Hello", "--model", str(tiny_gguf), "--max-tokens", "4",
                                        "--n-ctx", "128", "--threads", "1", "--n-gpu-layers", "-1", "--json"],
                                 catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert [m.endswith("n_gpu_layers=-1, use_extra_bufts=False)") for m in _loads(caplog)] == [True]
    caplog.clear()
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "a", "question": "1+1?", "answer": "#### 2"}) + "\n")
    with caplog.at_level(logging.DEBUG, logger=NATIVE_LOG):
        res = CliRunner().invoke(main, ["bench", "run", "--data", str(data), "--methods", "srm,lrm", "--srm",
                                        str(tiny_gguf), "--lrm", str(tiny_gguf), "--max-tokens", "8", "--n-ctx",
                                        "256", "--threads", "1", "--n-gpu-layers", "7", "--out",
                                        str(tmp_path / "run")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    loads = _loads(caplog)
    assert len(loads) == 2 and all("n_gpu_layers=7," in m for m in loads)  # the SRM and the local LRM


def test_minus_one_runs_on_a_cpu_only_build_and_changes_nothing(tiny_gguf) -> None:
    """Every layer requested on the GPU: the model loads with -1 in its parameters and decodes; on a build
    without a GPU backend the tokens and tapped states equal those of a CPU load bit for bit."""
    info = _native.build_info()
    sampling = SamplingConfig(max_tokens=12)
    runs = {}
    for n in (0, -1):
        with Model(tiny_gguf, n_gpu_layers=n) as model:
            assert model.load_params == {"n_gpu_layers": n, "use_extra_bufts": False}
            with model.context(RuntimeConfig(n_ctx=128, n_threads=1, n_gpu_layers=n), tap_layers=[0, -1]) as ctx:
                events = list(ctx.generate(model.tokenize("Once upon", add_special=True), sampling))
        runs[n] = ([e.id for e in events], np.stack([e.hidden[0] for e in events if e.hidden]))
    assert len(runs[-1][0]) == 12
    if not info["gpu_offload"]:  # this CI machine: CPU only, so -1 must not change a single bit
        assert runs[0][0] == runs[-1][0]
        assert np.array_equal(runs[0][1], runs[-1][1])


def test_the_server_config_takes_it_and_passes_it_to_each_model(tiny_gguf) -> None:
    from rankguide_edge.server.solvers import SharedModelSolvers

    settings = ServerConfig.from_mapping({"srm": str(tiny_gguf), "lrm": str(tiny_gguf), "n_gpu_layers": -1,
                                          "n_ctx": 256, "n_threads": 1})
    assert settings.runtime_config().n_gpu_layers == -1
    solvers = SharedModelSolvers(settings)
    try:
        solver = solvers(0)
        assert solver.srm.load_params["n_gpu_layers"] == -1
        solver.close()
    finally:
        solvers.close()
    with pytest.raises(ConfigError, match="n_gpu_layers"):
        ServerConfig.from_mapping({"n_gpu_layers": -2})
    with pytest.raises(ConfigError, match="unknown ServerConfig key"):
        ServerConfig.from_mapping({"gpu_layers": 10})


def test_build_info_names_the_compiled_backends() -> None:
    info = _native.build_info()
    assert "CPU" in info["backends"] and info["llama_cpp_python"] == "0.3.36"
    assert info["ggml"] and any(d["type"] == "CPU" for d in info["devices"])
    assert info["gpu_offload"] == any(d["type"] in ("GPU", "integrated GPU") for d in info["devices"])
