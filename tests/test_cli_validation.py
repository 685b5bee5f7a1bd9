"""Bad input fails with exit 2 and a one-line message *before* any model loads.

Most tests pass a model path that does not exist together with the bad option: had the command loaded the
model first, the error would be the missing file (exit 5), not the bad option.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from rankguide_edge.cli.main import main
from rankguide_edge.engine.layers import check_layer_spec, parse_layer_spec
from rankguide_edge.errors import ConfigError, InvalidInputError, LayerIndexError


def _run(args: list[str], input: str | None = None):
    return CliRunner().invoke(main, args, input=input, catch_exceptions=False)


def _fails_early(res, *words: str) -> None:
    """Exit 2, one line on stderr naming each of ``words``, and nothing about the (missing) model."""
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err
    assert "no such file" not in err and "missing.gguf" not in err


@pytest.fixture()
def missing(tmp_path: Path) -> str:
    return str(tmp_path / "missing.gguf")


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "mini.jsonl"
    path.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?", "answer": "4"}\n'
                    '{"question": "no answer here"}\n')
    return path


# ------------------------------------------------------------------------------------------------ solve / chat


def test_solve_and_chat_check_question_policy_and_router_before_loading(missing: str, tmp_path: Path) -> None:
    _fails_early(_run(["solve", "   ", "--srm", missing]), "the question is empty")
    _fails_early(_run(["solve", "hi", "--srm", missing, "--policy", "judge", "--decide", "early"]),
                 "policy 'judge' cannot decide at 'early'", "--decide post")
    _fails_early(_run(["solve", "hi", "--srm", missing, "--policy", "keywords", "--decide", "pre"]),
                 "policy 'keywords' cannot decide at 'pre'", "--decide post or early")
    broken = tmp_path / "router.json"
    broken.write_text("{not json")
    _fails_early(_run(["solve", "hi", "--srm", missing, "--router", str(broken)]), "router file", "calibrate")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"policy": "rankguide", "thresholds": {"later": 0.3}}))
    _fails_early(_run(["solve", "hi", "--srm", missing, "--router", str(wrong)]), "not a router config")
    res = _run(["solve", "hi", "--srm", missing, "--router", str(tmp_path / "none.json")])
    assert res.exit_code == 2 and "does not exist" in res.output
    _fails_early(_run(["chat", "--srm", missing, "--policy", "judge", "--decide", "pre"]), "cannot decide")
    _fails_early(_run(["chat", "--srm", missing, "--router", str(broken)]), "router file")
    # a good configuration gets as far as the model, which is missing (the check did not refuse it)
    res = _run(["solve", "hi", "--srm", missing, "--policy", "keywords", "--decide", "early"])
    assert res.exit_code == 2 and "no such file" in res.stderr


def test_the_server_keeps_its_check_and_wording(tmp_path: Path) -> None:
    from rankguide_edge.collab.reasoner import ReasonerConfig, check_reasoner_config
    from rankguide_edge.server.settings import ServerConfig
    from rankguide_edge.server.settings import check_reasoner_config as server_check

    with pytest.raises(InvalidInputError, match="cannot decide at 'early': use decide post$"):
        ServerConfig(policy="judge", decide="early").reasoner_config()
    with pytest.raises(InvalidInputError, match="use --decide post or early$"):
        check_reasoner_config(ReasonerConfig(policy="keywords", decide="pre"))
    with pytest.raises(InvalidInputError, match="use decide post or early$"):
        server_check(ReasonerConfig(policy="keywords", decide="pre"))
    broken = tmp_path / "r.json"
    broken.write_text("[]")
    with pytest.raises(ConfigError, match="router"):
        ServerConfig(router=str(broken)).reasoner_config()
    assert ServerConfig(policy="random", decide="pre").reasoner_config().decide == "pre"


def test_chat_threshold_that_is_not_a_number_is_one_clear_line(tiny_gguf: Path) -> None:
    res = _run(["chat", "--srm", str(tiny_gguf), "--policy", "srm", "--n-ctx", "256"],
               input="/threshold abc\n/threshold 0.25\n/steer x.gguf big\n/quit\n")
    assert res.exit_code == 0, res.output
    assert "error: /threshold takes a number in [0, 1] or auto, not 'abc'" in res.stdout
    assert "could not convert" not in res.stdout and "threshold 0.250" in res.stdout
    assert "error: /steer SCALE takes a number, not 'big'" in res.stdout


# ------------------------------------------------------------------------------------------------ bench run


def test_bench_run_rejects_methods_in_its_own_syntax_before_loading(missing: str, dataset: Path,
                                                                    tmp_path: Path) -> None:
    base = ["bench", "run", "--data", str(dataset), "--srm", missing, "--lrm", missing, "--out",
            str(tmp_path / "out")]
    _fails_early(_run(base + ["--methods", "srm,judge@early"]),
                 "policy 'judge' cannot decide at 'early' (method 'judge@early'): write judge or judge@post")
    _fails_early(_run(base + ["--methods", "keywords@pre:0.5"]),
                 "write keywords, keywords@post or keywords@early")
    _fails_early(_run(base + ["--methods", "srm,lrm,srm"]), "method srm listed twice")
    res = _run(base + ["--methods", "^x"])
    _fails_early(res, "method '^x' names no policy")
    assert "unknown policy ''" not in res.stderr
    broken = tmp_path / "router.json"
    broken.write_text("{")
    _fails_early(_run(base + ["--methods", "srm", "--router", str(broken)]), "router file")
    assert not (tmp_path / "out").exists()


def test_bench_run_has_on_error_and_the_dataset_hint_is_true(missing: str, dataset: Path, tmp_path: Path) -> None:
    base = ["bench", "run", "--data", str(dataset), "--srm", missing, "--methods", "srm", "--out",
            str(tmp_path / "out")]
    res = _run(base)
    _fails_early(res, "mini.jsonl:3", "--on-error skip")
    res = _run(base + ["--on-error", "skip"])  # the bad record is skipped: the run gets as far as the model
    assert res.exit_code == 2 and "no such file" in res.stderr


def test_bench_run_takes_the_remote_lrm_options() -> None:
    res = _run(["bench", "run", "--help"])
    assert res.exit_code == 0
    for opt in ("--lrm-model", "--lrm-api-key", "RANKGUIDE_EDGE_LRM_API_KEY", "--lrm-timeout", "Seconds per attempt",
                "--lrm-retries",
                "--on-error", "Skip this many records"):
        assert opt in res.output, opt


def test_parse_methods_messages() -> None:
    from rankguide_edge.bench.run import parse_methods

    with pytest.raises(ConfigError, match=r"write judge or judge@post$"):
        parse_methods("judge@pre")
    with pytest.raises(ConfigError, match="methods rankguide, srm listed twice"):
        parse_methods("srm,rankguide,srm,rankguide")
    with pytest.raises(ConfigError, match="names no policy"):
        parse_methods("^1")
    assert [m.decide for m in parse_methods("judge,judge@post:0.4,keywords@early,lrm@post")] == [
        "post", "post", "early", "post"]


# ------------------------------------------------------------------------------------------------ steer extract


def test_steer_extract_reads_its_input_before_loading(missing: str, dataset: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "vec.gguf")
    base = ["steer", "extract", "--srm", missing, "--out", out]
    _fails_early(_run(base + ["--traces", str(tmp_path / "none.jsonl")]), "trace file", "not found")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "steps": []}\n{oops\n{"id": "b", "steps": []}\n')
    _fails_early(_run(base + ["--traces", str(bad)]), "bad.jsonl:2 is not valid JSON")
    _fails_early(_run(base + ["--data", str(dataset)]), "mini.jsonl:3", "--on-error skip")
    res = _run(base + ["--data", str(dataset), "--on-error", "skip"])
    assert res.exit_code == 2 and "no such file" in res.stderr
    _fails_early(_run(base + ["--traces", str(bad), "--layers", "mid-x"]), "bad layer list 'mid-x'")
    _fails_early(_run(base + ["--data", str(dataset), "--trace-layers", "3,a"]), "bad layer list '3,a'")
    assert not Path(out).exists()


def test_steer_extract_config_n_ctx_applies(tiny_gguf: Path, tmp_path: Path) -> None:
    steps = ["Compute 5 times 4 and write the result down. " * 12 + "\n\n", "Wait, let me check that again.\n\n",
             "So the answer is 20."]
    recs = [{"id": f"q{i}", "kind": "gsm8k", "question": f"What is (2 + 3) * {i + 4}?", "model": "tiny",
             "steps": [{"index": j, "text": t} for j, t in enumerate(steps)], "text": "".join(steps)}
            for i in range(2)]
    traces = tmp_path / "t.jsonl"
    traces.write_text("".join(json.dumps(r) + "\n" for r in recs))
    cfg = tmp_path / "x.toml"
    cfg.write_text('n_ctx = 256\nfilter = "none"\n')  # (llama.cpp gives no smaller context)
    args = ["steer", "extract", "--traces", str(traces), "--srm", str(tiny_gguf), "--out", str(tmp_path / "v.gguf"),
            "--config", str(cfg)]
    res = _run(args)  # every trace is longer than the file's 256-token context
    assert res.exit_code == 2 and "seen {'execution': 0, 'reflection': 0" in res.stderr, res.output
    res = _run(args + ["--n-ctx", "1024", "--json"])  # the option wins over the file
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["skipped"].get("too_long", 0) == 0


# ------------------------------------------------------------------------------------------------ layer lists


def test_layer_lists_are_checked_before_loading(missing: str, dataset: Path, tmp_path: Path) -> None:
    _fails_early(_run(["generate", "hi", "--model", missing, "--layers", "1-x"]), "bad layer list '1-x'")
    _fails_early(_run(["trace", "--data", str(dataset), "--out", str(tmp_path / "t.jsonl"), "--srm", missing,
                       "--layers", "two"]), "bad layer list 'two'")
    _fails_early(_run(["bench", "capture", "--model", missing, "--layers", "5-3"]), "bad layer list '5-3'")
    res = _run(["generate", "hi", "--model", missing, "--layers", "none"])  # good syntax: on to the model
    assert res.exit_code == 2 and "no such file" in res.stderr


def test_layer_spec_syntax_and_range() -> None:
    for good in ("auto", "all", "last", "0,5,-1", "20-23", "-3--1", " 1 , 2 ", "1,5-3"):
        assert check_layer_spec(good) == good
    assert check_layer_spec("none", extra_words=("none",)) == "none"
    for bad in ("", "x", "1-", "5-3", "1;2", "none"):
        with pytest.raises(LayerIndexError, match="bad layer list"):
            check_layer_spec(bad)
    assert parse_layer_spec("0,5,-1", 24) == [0, 5, 23]
    assert parse_layer_spec("-3--1", 24) == [21, 22, 23]
    assert parse_layer_spec("-2-1", 24) == [0, 1, 22, 23]
    assert parse_layer_spec("1,5-3", 24) == [1]
    assert parse_layer_spec([0, -1], 4) == [0, 3] and parse_layer_spec([], 4) == []
    assert parse_layer_spec("auto", 24) == [5, 11, 17, 23]
    with pytest.raises(LayerIndexError, match="layer 24 is out of range for a 24-layer model"):
        parse_layer_spec("20-30", 24)
    with pytest.raises(LayerIndexError, match="layer -30 is out"):
        parse_layer_spec("-30--1", 24)
    with pytest.raises(LayerIndexError, match="layer 24 is out"):
        parse_layer_spec("0-1000000000000", 24)


def test_a_huge_layer_range_is_refused_without_being_expanded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The range is checked at its ends: no range longer than the model's layer count is ever built."""
    from rankguide_edge.engine import layers

    lengths: list[int] = []

    def spy(*args: int) -> range:
        r = range(*args)
        lengths.append(len(r))
        return r

    monkeypatch.setattr(layers, "range", spy, raising=False)  # the module's global shadows the builtin
    assert parse_layer_spec("20-23", 24) == [20, 21, 22, 23] and lengths == [4]  # the spy sees the expansion
    with pytest.raises(LayerIndexError, match="layer 24 is out"):
        parse_layer_spec("0-1000000000000", 24)
    with pytest.raises(LayerIndexError, match="layer -1000000000000 is out"):
        parse_layer_spec("-1000000000000--1", 24)
    assert max(lengths) <= 24


# ------------------------------------------------------------------------------------------------ messages, help


def test_model_name_messages(missing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANKGUIDE_EDGE_CACHE", str(tmp_path / "cache"))
    res = _run(["models", "pull", "nope"])
    assert res.exit_code == 2 and "unknown model 'nope'" in res.stderr and ".gguf" not in res.stderr
    res = _run(["models", "verify", "nope"])
    assert res.exit_code == 2 and ".gguf" not in res.stderr
    res = _run(["generate", "hi", "--model", "nope"])  # where a path works, the message says so
    assert res.exit_code == 2 and "a path to a .gguf file also works" in res.stderr


def test_plot_flags_have_both_spellings(tmp_path: Path) -> None:
    for flag in ("--no-plot", "--no-plots"):
        res = _run(["bench", "report", str(tmp_path), flag])
        assert "No such option" not in res.output and "results.jsonl" in res.output, res.output
        res = _run(["analyze", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "a"), flag])
        assert "No such option" not in res.output and "none.jsonl" in res.output, res.output


def test_help_texts() -> None:
    res = _run(["--help"])
    assert "Exit codes:" in res.output and "130" in res.output  # which codes: tests/test_exit_codes.py
    helps = {
        ("solve",): ("Token budget of the whole answer", "0 = greedy", "Seed of the sampler", "Context window",
                     "goes to stderr", "Seconds per attempt", "--lrm-retries"),
        ("chat",): ("Token budget of the whole answer", "Context window"),
        ("generate",): ("Nucleus sampling",),
        ("trace",): ("Record format and answer kind", "[default: window of", "else 32]",
                     "[default: max_step_tokens of", "else 256]"),
        ("bench", "run"): ("Small model: name or GGUF path", "CPU threads", "Skip this many records"),
        ("bench", "serve"): ("Run only this benchmark", "Routing policy; srm never routes", "--json"),
        ("serve",): ("Least severe server log messages",),
        ("steer", "extract"): ("[default: n_ctx of --config, else 4096]", "[default: n_threads of --config"),
        ("bench",): ("compare routing methods",),
    }
    for cmd, words in helps.items():
        out = _run([*cmd, "--help"]).output
        for w in words:
            assert w in " ".join(out.split()), (cmd, w)
    assert "Benchmarks: compare" in _run(["--help"]).output


def test_bench_serve_report_lines() -> None:
    from rankguide_edge.server.bench import report_lines

    lines = report_lines({"overhead": {"n": 5, "ratio": 1.02, "api_s": [0.1, 0.2]},
                          "concurrency": {"clients": 8, "throughput_tok_s": 40.5}})
    assert lines == ["overhead: n 5, ratio 1.02", "concurrency: clients 8, throughput_tok_s 40.5"]
