"""`solve` and `chat` through the CLI on the generated tiny GGUF (as both SRM and LRM) and SmolLM2."""

from __future__ import annotations

import json

import click
from click.testing import CliRunner

from rankguide_edge.cli.main import main


def _run(args: list[str], input: str | None = None):
    return CliRunner().invoke(main, args, input=input, catch_exceptions=False)


def test_solve_json_has_steps_timing_and_usage(tiny_gguf) -> None:
    res = _run(["solve", "What is 2 plus 2?", "--srm", str(tiny_gguf), "--lrm", str(tiny_gguf), "--policy",
                "random", "--max-tokens", "24", "--n-ctx", "256", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert {"answer", "text", "steps", "timing", "usage", "lrm_share"} <= set(out)
    assert {"total", "srm", "lrm", "signals"} <= set(out["timing"])
    assert {"srm_tokens", "lrm_tokens", "lrm_calls"} <= set(out["usage"])
    for st in out["steps"]:
        assert st["source"] in ("srm", "lrm") and {"text", "routed", "score", "reason", "seconds"} <= set(st)
    assert "".join(s["text"] for s in out["steps"]) == out["text"]


def test_solve_marks_lrm_steps(tiny_gguf) -> None:
    res = _run(["solve", "hello", "--srm", str(tiny_gguf), "--lrm", str(tiny_gguf), "--policy", "lrm",
                "--max-tokens", "12", "--n-ctx", "256"])
    assert res.exit_code == 0, res.output
    assert "[LRM]" in res.stdout and "[SRM]" not in res.stdout and "answer:" in res.stdout


def test_solve_bad_input(tiny_gguf) -> None:
    res = _run(["solve", "  ", "--srm", str(tiny_gguf), "--policy", "srm"])
    assert res.exit_code == 2 and "empty" in res.stderr
    res = _run(["solve", "hi", "--srm", str(tiny_gguf), "--policy", "judge", "--decide", "pre"])
    assert res.exit_code == 2 and "cannot decide" in res.stderr
    res = _run(["solve", "word " * 400, "--srm", str(tiny_gguf), "--policy", "srm", "--n-ctx", "64"])
    assert res.exit_code == 2 and "n-ctx" in res.stderr
    # an unreachable remote LRM does not fail the answer: the SRM's steps are kept and marked
    res = _run(["solve", "hi", "--srm", str(tiny_gguf), "--lrm", "http://127.0.0.1:9/v1", "--policy", "lrm",
                "--max-tokens", "8", "--n-ctx", "256", "--lrm-timeout", "0.5", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["steps"] and all(s["source"] == "srm" and s["lrm_error"] for s in out["steps"])


def test_chat_commands_and_turns(tiny_gguf) -> None:
    script = "\n".join(["/policy srm", "/threshold 0.3", "/decide early", "/policy nope", "say hi", "/stats",
                        "/reset", "/quit"]) + "\n"
    res = _run(["chat", "--srm", str(tiny_gguf), "--lrm", str(tiny_gguf), "--max-tokens", "8", "--n-ctx", "256"],
               input=script)
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "policy srm" in out and "threshold 0.3" in out and "decide early" in out
    assert "error: unknown policy 'nope'" in out
    assert "turns 1" in out and "conversation forgotten" in out


def test_chat_leaves_cleanly_on_end_of_input(tiny_gguf) -> None:
    res = _run(["chat", "--srm", str(tiny_gguf), "--policy", "srm", "--n-ctx", "256"], input="")
    assert res.exit_code == 0


def test_chat_streams_the_shipped_plan_step_first(tiny_gguf) -> None:
    """The shipped router lets the LRM write step 0: chat shows it as [LRM] with no empty [SRM] marker before."""
    res = _run(["chat", "--srm", str(tiny_gguf), "--lrm", str(tiny_gguf), "--threshold", "1.0", "--max-tokens", "24",
                "--n-ctx", "256"], input="say hi\n/stats\n/quit\n")
    assert res.exit_code == 0, res.output
    answer = click.unstyle(res.stdout).split("you> ")[1]
    assert answer.lstrip().startswith("[LRM]") and "[SRM] [LRM]" not in answer
    assert "lrm_steps 0" not in res.stdout


def test_remote_lrm_timeout_and_retries_are_in_help_with_remote_configs_defaults() -> None:
    from rankguide_edge.collab.backends_remote import RemoteConfig

    for cmd in (["solve"], ["chat"], ["bench", "run"]):
        res = _run([*cmd, "--help"])
        text = " ".join(res.output.split())
        assert res.exit_code == 0
        assert "--lrm-timeout FLOAT RANGE" in text and f"[default: {RemoteConfig.timeout}; 0.1<=x<=3600.0]" in text
        assert "--lrm-retries INTEGER RANGE" in text and "Retry-After" in text
        assert f"[default: {RemoteConfig.retries}; 0<=x<=20]" in text
