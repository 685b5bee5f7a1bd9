"""`serve` and `bench serve` through the CLI: bad settings fail in one line before any model loads, a real
`serve` process answers the official client and stops cleanly on Ctrl-C, the benchmark reports its figures."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import openai
import pytest
from click.testing import CliRunner

from rankguide_edge.cli.main import main
from rankguide_edge.errors import ConfigError, UnknownModelError
from rankguide_edge.stats import quantile


def _run(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_serve_help_lists_the_endpoints_and_options() -> None:
    res = _run(["serve", "--help"])
    assert res.exit_code == 0
    for word in ("/v1/chat/completions", "--parallel", "--api-key", "--config", "--queue-size"):
        assert word in res.output


def test_serve_refuses_bad_settings_in_one_line(tmp_path: Path, tiny_gguf: Path) -> None:
    cfg = tmp_path / "server.toml"
    cfg.write_text('port = 8081\nworkers = 3\n')
    res = _run(["serve", "--config", str(cfg)])
    assert res.exit_code == ConfigError.exit_code and "unknown ServerConfig key(s) workers" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = _run(["serve", "--srm", str(tiny_gguf), "--policy", "judge", "--decide", "pre"])
    assert res.exit_code == 2 and "cannot decide" in res.stderr
    res = _run(["serve", "--srm", str(tmp_path / "missing.gguf"), "--lrm", "", "--port", "0"])
    assert res.exit_code == UnknownModelError.exit_code == 2 and "no such file" in res.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_serve_process_answers_and_stops_on_ctrl_c(tmp_path: Path, tiny_gguf: Path) -> None:
    port = _free_port()
    cfg = tmp_path / "server.json"
    cfg.write_text(json.dumps({"n_ctx": 512, "max_tokens": 24, "n_threads": 1, "model_name": "edge"}))
    cmd = [sys.executable, "-c", "from rankguide_edge.cli.main import main; main()", "serve", "--srm",
           str(tiny_gguf), "--lrm", str(tiny_gguf), "--port", str(port), "--config", str(cfg),
           "--api-key", "k", "--log-level", "warning"]
    # cwd outside the repo: `python -c` puts the cwd first on sys.path, and the source tree has no cli/
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy(),
                            cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    if json.load(r)["status"] == "ok":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.2)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0, timeout=120)
        resp = client.chat.completions.create(model="edge", messages=[{"role": "user", "content": "Add 2 and 3."}])
        assert resp.choices[0].message.content and resp.usage.completion_tokens <= 24
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, proc.stderr.read().decode() if proc.stderr else ""


def test_the_latency_quantile_interpolates_between_sorted_values() -> None:
    # sorted 1, 2, 4, 10: q = 0.5 sits half-way between 2 and 4, q = 0.95 at 4 + 0.85 * (10 - 4)
    assert quantile([10.0, 1.0, 4.0, 2.0], 0.5) == pytest.approx(3.0)
    assert quantile([10.0, 1.0, 4.0, 2.0], 0.95) == pytest.approx(9.1)
    assert quantile([7.0], 0.95) == 7.0
    assert math.isnan(quantile([], 0.5))


def test_bench_reports_overhead_and_concurrency(tiny_gguf: Path) -> None:
    res = _run(["bench", "serve", "--srm", str(tiny_gguf), "--lrm", str(tiny_gguf), "--n", "2", "--clients", "3",
                "--parallel", "2", "--max-tokens", "12", "--n-ctx", "256", "--threads", "1", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    over, conc = out["overhead"], out["concurrency"]
    assert over["same_text"] is True and len(over["api_s"]) == len(over["server_s"]) == 2
    # the medians are rounded to 0.1 ms: on the tiny model (a few ms) that alone moves their ratio by ~1 %
    rounding = over["ratio"] * (5e-5 / over["api_median_s"] + 5e-5 / over["server_median_s"]) + 5e-5
    assert abs(over["ratio"] - over["server_median_s"] / over["api_median_s"]) <= rounding
    assert conc["ok"] == 3 and conc["completion_tokens"] > 0 and conc["throughput_tok_s"] > 0
    assert conc["latency_p50_s"] <= conc["latency_p95_s"] <= conc["wall_s"] + 1e-6
    res = _run(["bench", "serve", "--srm", str(tiny_gguf), "--lrm", str(tiny_gguf), "--only", "concurrency",
                "--clients", "2", "--max-tokens", "8", "--n-ctx", "256", "--threads", "1", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["concurrency"]["ok"] == 2


def test_bench_load_table_retries_refused_requests_after_retry_after(tiny_gguf: Path) -> None:
    """No waiting place (--queue-size 0) and three clients on one worker: two are refused at once with a 503
    that says when to come back, wait that long, and are served; every request ends in the table."""
    args = ["bench", "serve", "--srm", str(tiny_gguf), "--lrm", str(tiny_gguf), "--only", "load",
            "--load-clients", "1,3", "--load-parallel", "1", "--requests", "2", "--queue-size", "0",
            "--max-tokens", "12", "--n-ctx", "256", "--threads", "1"]
    res = _run([*args, "--json"])
    assert res.exit_code == 0, res.output
    load = json.loads(res.stdout)["load"]
    assert (load["queue_size"], load["requests_per_client"]) == (0, 2)
    one, three = load["rows"]
    assert (one["clients"], three["clients"]) == (1, 3) and one["parallel"] == three["parallel"] == 1
    for row in (one, three):
        assert row["ok"] == row["requests"] == 2 * row["clients"]
        assert 0 < row["first_token_p50_s"] <= row["first_token_p95_s"] <= row["total_p95_s"] <= row["wall_s"]
        assert row["requests_per_min"] == pytest.approx(60 * row["ok"] / row["wall_s"], rel=0.1)  # wall_s rounded
        assert row["peak_rss_mib"] > 0
    assert one["refused_503"] == 0
    assert three["refused_503"] >= 2 and three["refused_with_retry_after"] == three["refused_503"]
    assert three["wall_s"] >= 1.0  # a refused client waited its Retry-After (at least 1 s) before trying again
    bad = _run([*args[:-4], "--load-clients", "1,x"])
    assert bad.exit_code == 2 and "comma list of positive integers" in bad.output


def test_bench_load_prints_its_table(tiny_gguf: Path) -> None:
    res = _run(["bench", "serve", "--srm", str(tiny_gguf), "--lrm", str(tiny_gguf), "--only", "load",
                "--load-clients", "2", "--load-parallel", "2", "--requests", "1", "--max-tokens", "8",
                "--n-ctx", "256", "--threads", "1"])
    assert res.exit_code == 0, res.output
    table = [line for line in res.stdout.splitlines() if line.startswith("| 2 | 2 |")]
    assert len(table) == 1 and table[0].count("|") == 8
