"""Server parts that need no model: the settings, the Prometheus exposition, request bodies and the way kept
steps become stream deltas (stop strings cut across step boundaries)."""

from __future__ import annotations

import math

import pytest
from _exposition import samples as parse_exposition

from rankguide_edge.collab.events import Token
from rankguide_edge.collab.reasoner import StepRecord
from rankguide_edge.errors import ConfigError, InvalidInputError
from rankguide_edge.server import ServerConfig
from rankguide_edge.server._workers import Job, _Abort, _Collector, first_stop, usage_of_steps
from rankguide_edge.server.metrics import Metrics
from rankguide_edge.server.schemas import ChatCompletionRequest, CompletionRequest, RequestError


def test_server_config_bounds_unknown_keys_and_secrets() -> None:
    cfg = ServerConfig.from_mapping({"port": 9000, "parallel": 2, "threshold": 0.3}, api_key="k", host=None)
    assert (cfg.port, cfg.parallel, cfg.threshold, cfg.api_key, cfg.host) == (9000, 2, 0.3, "k", "127.0.0.1")
    assert cfg.reasoner_config().threshold == 0.3 and cfg.runtime_config().n_ctx == cfg.n_ctx
    # the plan length: the router's unless the operator sets one (0 turns the shipped plan off)
    assert cfg.reasoner_config().lrm_first is None
    assert ServerConfig.from_mapping({"lrm_first": 0}).reasoner_config().lrm_first == 0
    with pytest.raises(ConfigError, match="lrm_first"):
        ServerConfig.from_mapping({"lrm_first": -1})
    assert cfg.public_dict()["api_key"] == "***" and cfg.public_dict()["lrm_api_key"] == ""
    with pytest.raises(ConfigError, match="unknown ServerConfig key"):
        ServerConfig.from_mapping({"prot": 1})
    with pytest.raises(ConfigError, match="parallel"):
        ServerConfig.from_mapping({"parallel": 0})
    with pytest.raises(ConfigError, match="port"):
        ServerConfig.from_mapping({"port": "80"})
    with pytest.raises(ConfigError):
        ServerConfig(policy="nonsense").reasoner_config()


def test_steering_is_by_name_from_the_servers_folder(tmp_path) -> None:
    (tmp_path / "seal.gguf").write_bytes(b"")
    (tmp_path / ".hidden.gguf").write_bytes(b"")
    (tmp_path / "notes.txt").write_bytes(b"")
    cfg = ServerConfig(steer_dir=str(tmp_path))
    assert cfg.steering_vectors() == ["seal"]
    assert cfg.steering_file("seal") == cfg.steering_file("seal.gguf") == str(tmp_path / "seal.gguf")
    assert cfg.steering_file("") == ""  # no steering
    for bad in ("../seal", str(tmp_path / "seal.gguf"), ".hidden", "notes", "seal.txt"):
        with pytest.raises(InvalidInputError, match="offers, seal"):
            cfg.steering_file(bad)
    with pytest.raises(InvalidInputError, match="--steer-dir"):
        ServerConfig().steering_file("seal")
    with pytest.raises(ConfigError, match="not a folder"):
        ServerConfig(steer_dir=str(tmp_path / "seal.gguf"))


def test_metrics_exposition_counts_and_histograms() -> None:
    m = Metrics(buckets=(0.1, 1.0))
    m.inc("requests_total", endpoint="/v1/completions", status=200)
    m.inc("requests_total", endpoint="/v1/completions", status=200)
    m.inc("completion_tokens_total", 7, source="lrm")
    for v in (0.05, 0.5, 5.0):
        m.observe("request_duration_seconds", v, endpoint="/v1/completions")
    m.gauge_fn("queue_depth", lambda: 3)
    text = m.render()
    s = parse_exposition(text)
    assert s['rankguide_requests_total{endpoint="/v1/completions",status="200"}'] == 2
    assert s['rankguide_completion_tokens_total{source="lrm"}'] == 7
    assert s['rankguide_request_duration_seconds_bucket{endpoint="/v1/completions",le="0.1"}'] == 1
    assert s['rankguide_request_duration_seconds_bucket{endpoint="/v1/completions",le="1"}'] == 2
    assert s['rankguide_request_duration_seconds_bucket{endpoint="/v1/completions",le="+Inf"}'] == 3
    assert math.isclose(s['rankguide_request_duration_seconds_sum{endpoint="/v1/completions"}'], 5.55)
    assert s["rankguide_queue_depth"] == 3
    assert "# TYPE rankguide_requests_total counter" in text and text.endswith("\n")
    assert m.histogram_sum("request_duration_seconds", endpoint="/v1/completions")[1] == 3
    with pytest.raises(KeyError):
        m.inc("no_such_metric")
    with pytest.raises(KeyError):
        m.observe("requests_total", 1.0)  # a counter is not a histogram


def _step(i: int, text: str, source: str = "srm", **kw: object) -> StepRecord:
    return StepRecord(index=i, text=text, source=source, routed=source == "lrm", score=None, reason="policy",
                      srm_tokens=len(text), **kw)  # type: ignore[arg-type]


def _collect(stops: tuple[str, ...], steps: list[StepRecord]) -> tuple[list[tuple[str, object]], _Collector, bool]:
    events: list[tuple[str, object]] = []
    col = _Collector(Job(messages=[("user", "q")], changes={}, stop=stops, sink=lambda k, p: events.append((k, p))))
    stopped = False
    try:
        for st in steps:  # an SRM draft's first token (not final: never sent), an LRM step token by token
            if st.source == "srm":
                col("token", Token(st.text[:1], "srm", st.index, False))
            else:
                for ch in st.text:
                    col("token", Token(ch, "lrm", st.index, True))
            col("step", st)
    except _Abort as a:
        assert a.reason == "stop"
        stopped = True
    col.flush()
    return events, col, stopped


def test_steps_become_deltas_and_stop_strings_are_cut_across_steps() -> None:
    steps = [_step(0, "First we add.\n\n"), _step(1, "Then END", "lrm"), _step(2, "HERE we stop.\n\n")]
    events, col, stopped = _collect((), steps)
    deltas = [p[0] for k, p in events if k == "delta"]
    assert events[0] == ("started", None) and deltas == [steps[0].text, *steps[1].text, steps[2].text]
    assert not stopped
    assert [p[1]["source"] for k, p in events if k == "delta"] == ["srm"] + ["lrm"] * 8 + ["srm"]

    events, col, stopped = _collect(("ENDHERE",), steps)  # the stop spans steps 1 and 2
    text = "".join(p[0] for k, p in events if k == "delta")
    assert stopped and col.stopped and text == "First we add.\n\nThen " == col.text
    assert len(col.steps) == 3

    events, col, stopped = _collect(("zzz", "add"), steps)
    assert stopped and "".join(p[0] for k, p in events if k == "delta") == "First we "


def test_a_cancelled_job_aborts_at_the_next_event() -> None:
    job = Job(messages=[("user", "q")], changes={}, stop=(), sink=lambda k, p: None)
    col = _Collector(job)
    col("token", Token("a", "srm", 0, True))
    job.cancel_reason = "disconnect"
    job._cancel.set()
    with pytest.raises(_Abort) as info:
        col("token", Token("b", "srm", 0, True))
    assert info.value.reason == "disconnect"


def test_first_stop_and_usage_of_steps() -> None:
    assert first_stop("abcabc", ["c", "bc"]) == 1 and first_stop("abc", ["x"]) is None
    assert first_stop("abcabc", ["a"], start=1) == 3
    steps = [_step(0, "ab"), _step(1, "cd", "lrm", lrm_tokens=3, discarded_tokens=2), _step(2, "e", lrm_error="down")]
    u = usage_of_steps(steps)
    assert u["srm_tokens"] == 5 and u["srm_discarded_tokens"] == 2 and u["lrm_tokens"] == 3
    assert u["lrm_calls"] == 2 and u["lrm_failures"] == 1


def test_request_bodies_map_openai_fields_to_reasoner_settings() -> None:
    req = ChatCompletionRequest.model_validate({
        "model": "m", "messages": [{"role": "developer", "content": "be brief"},
                                   {"role": "user", "content": [{"type": "text", "text": "hi "},
                                                                {"type": "text", "text": "there"}]}],
        "max_completion_tokens": 20, "max_tokens": 99, "temperature": 0.5, "seed": 3, "stop": "###",
        "user": "ignored", "frequency_penalty": 0.1, "rankguide": {"threshold": 0.2, "steer_scale": 2}})
    assert req.pairs() == [("system", "be brief"), ("user", "hi there")]
    assert req.changes() == {"max_tokens": 20, "temperature": 0.5, "seed": 3, "threshold": 0.2, "steer_scale": 2.0}
    assert req.stops() == ("###",)
    req.check_supported()
    with pytest.raises(RequestError, match="n > 1"):
        ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                              "n": 3}).check_supported()
    with pytest.raises(RequestError, match="one prompt"):
        CompletionRequest.model_validate({"model": "m", "prompt": ["a", "b"]}).pairs()
    assert CompletionRequest.model_validate({"model": "m", "prompt": ["a"]}).pairs() == [("user", "a")]


def test_server_settings_take_the_reasoner_fields_from_reasoner_config() -> None:
    import dataclasses

    from rankguide_edge.collab.policies import DECISION_POINTS
    from rankguide_edge.collab.reasoner import ReasonerConfig
    from rankguide_edge.server.settings import REASONER_FIELDS, ServerConfig

    assert set(REASONER_FIELDS) == {"policy", "threshold", "router", "decide", "lrm_first", "max_tokens",
                                    "max_step_tokens", "seed", "prefix_reuse"}
    ours = {f.name: f for f in dataclasses.fields(ServerConfig)}
    theirs = {f.name: f for f in dataclasses.fields(ReasonerConfig)}
    for name in REASONER_FIELDS:  # same bounds and choices; the server's answer budget alone has its own default
        assert [ours[name].metadata[k] for k in ("lo", "hi", "choices")] == \
               [theirs[name].metadata[k] for k in ("lo", "hi", "choices")], name
        assert ours[name].default == theirs[name].default or name == "max_tokens"
    assert ours["decide"].metadata["choices"] == DECISION_POINTS
    settings = ServerConfig(policy="entropy", threshold=0.3, decide="early", lrm_first=2, max_tokens=64,
                            max_step_tokens=32, seed=7)
    cfg = settings.reasoner_config()
    assert {n: getattr(cfg, n) for n in REASONER_FIELDS} == {n: getattr(settings, n) for n in REASONER_FIELDS}
