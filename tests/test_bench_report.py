"""`bench report` statistics on hand-made records: paired wins/losses with the exact McNemar p-value (against
srm, and a steered method against its unsteered self), answers that hit the token cap, and the Markdown row."""

from __future__ import annotations

import json
import math

import pytest

from rankguide_edge.bench.report import (
    _sign_test,
    _sweep_of,
    _wilson,
    summarize,
    summary_markdown,
    write_pareto,
    write_share_plot,
)
from rankguide_edge.errors import InvalidInputError


def _usage(srm: int, lrm: int) -> dict[str, int]:
    return {"srm_tokens": srm, "srm_discarded_tokens": 0, "lrm_tokens": lrm, "lrm_calls": 1 if lrm else 0,
            "lrm_failures": 0, "lrm_prefill_tokens": 2 * lrm, "srm_prefill_tokens": 80}


def _write(path, correct: dict[str, str], finished: dict[str, str] | None = None) -> None:
    """One record per (problem, method); ``correct[method]`` is a string of 0/1 per problem."""
    policy = {"srm": "srm", "lrm": "lrm", "rankguide": "rankguide", "srm+v*0.5": "srm",
              "rankguide+v*0.5/boundary": "rankguide"}
    recs = []
    for i in range(len(next(iter(correct.values())))):
        for m, bits in correct.items():
            lrm = 120 if policy[m] == "lrm" else (40 if policy[m] == "rankguide" else 0)
            srm = 0 if policy[m] == "lrm" else 200
            recs.append({"id": f"p{i}", "method": m, "policy": policy[m], "decide": "post", "threshold": 0.5,
                         "correct": bits[i] == "1", "seconds": 1.0 + 0.01 * (srm + 3 * lrm),
                         "finished": (finished or {}).get(m, "1" * len(bits))[i] == "1",
                         "n_steps": 4, "lrm_steps": 4 if policy[m] == "lrm" else (1 if lrm else 0),
                         "timing": {"srm": 0.01 * srm, "lrm": 0.03 * lrm}, "usage": _usage(srm, lrm)})
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def _sign_test_by_enumeration(wins: int, losses: int) -> float:
    """The oracle: every one of the 2**n ways ``n`` discordant problems can fall, equally likely under "both
    methods are equally good"; the share of them whose split is at least as uneven as the observed one."""
    n = wins + losses
    observed = abs(wins - losses)
    as_uneven = sum(abs(2 * bin(ways).count("1") - n) >= observed for ways in range(2 ** n))
    return as_uneven / 2 ** n


@pytest.mark.parametrize("wins,losses", [(0, 0), (3, 3), (5, 0), (0, 5), (1, 9), (9, 1), (2, 7), (6, 4),
                                         (0, 1), (4, 8), (11, 1)])
def test_sign_test_is_the_exact_two_sided_binomial(wins: int, losses: int) -> None:
    assert _sign_test(wins, losses) == pytest.approx(_sign_test_by_enumeration(wins, losses), rel=1e-12)


def test_sign_test_hand_computed_values() -> None:
    assert _sign_test(5, 0) == pytest.approx(2 / 32)  # both all-wins and all-losses: 2 of 32
    assert _sign_test(1, 9) == pytest.approx(22 / 1024)  # 0 or 1 of one side, either side: 2 * (1 + 10)


def test_wilson_interval_is_where_the_score_test_stops_rejecting() -> None:
    """Each bound is a p at which the score statistic |k/n - p| / sqrt(p(1-p)/n) is exactly 1.95996 (the
    definition of Wilson's interval, not its closed form); the ends are exactly 0 and 1."""
    z = 1.959963984540054  # the 97.5th normal percentile
    for n in (1, 7, 10, 100, 1686):
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            lo, hi = _wilson(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0
            for bound, at_end in ((lo, k == 0), (hi, k == n)):
                if at_end:
                    assert bound == (0.0 if bound == lo else 1.0)
                else:
                    assert abs(k / n - bound) / math.sqrt(bound * (1 - bound) / n) == pytest.approx(z, rel=1e-9)
    assert _wilson(0, 0) == (0.0, 0.0)


def test_wilson_interval_hand_computed_values() -> None:
    assert _wilson(5, 10) == pytest.approx((0.236593, 0.763407), abs=1e-6)  # centre 0.5, half-width by hand
    assert _wilson(0, 10) == pytest.approx((0.0, 0.277533), abs=1e-6)  # z^2 / (n + z^2)


def test_paired_comparisons_and_token_cap(tmp_path) -> None:
    path = tmp_path / "results.jsonl"
    _write(path, {"srm": "0011000000", "lrm": "1111111000", "rankguide": "1011100000",
                  "srm+v*0.5": "0001000000", "rankguide+v*0.5/boundary": "1111100000"},
           finished={"srm+v*0.5": "0000011111"})
    s = summarize(path)
    m = s["methods"]
    assert m["srm"]["vs_srm"] is None and m["srm"]["vs_unsteered"] is None
    # rankguide gets p0 and p4 that srm misses, and misses nothing srm gets
    assert m["rankguide"]["vs_srm"] == {"wins": 2, "losses": 0, "p": pytest.approx(0.5)}
    assert m["lrm"]["vs_srm"]["wins"] == 5 and m["lrm"]["vs_srm"]["losses"] == 0
    # a steered method is also compared with the same method unsteered
    assert m["srm+v*0.5"]["vs_unsteered"] == {"wins": 0, "losses": 1, "p": 1.0}
    assert m["rankguide+v*0.5/boundary"]["vs_unsteered"] == {"wins": 1, "losses": 0, "p": 1.0}
    assert m["rankguide"]["vs_unsteered"] is None
    assert m["srm+v*0.5"]["unfinished"] == 5 and m["srm"]["unfinished"] == 0
    assert m["srm"]["mean_tokens"] == 200 and m["rankguide"]["mean_tokens"] == 240
    # PGR keeps the unsteered srm as its floor even though a steered srm is listed
    assert m["rankguide"]["pgr"] == pytest.approx((0.4 - 0.2) / (0.7 - 0.2))
    md = summary_markdown(s)
    row = next(line for line in md.splitlines() if line.startswith("| rankguide+v*0.5/boundary |"))
    assert "+3/−0, p 0.25" in row and "+1/−0, p 1.00" in row
    header = next(line for line in md.splitlines() if line.startswith("| method |"))
    assert header.count("|") == row.count("|")
    # one table prices every method under every profile, lrm at 1.00x in each
    per_profile = md.split("under each hardware profile:")[1]
    assert "| method | measured | laptop+gpu-server | gpu-large-ratio |" in per_profile
    lrm_row = next(line for line in per_profile.splitlines() if line.startswith("| lrm |"))
    assert lrm_row.count("(1.00×)") == 3


def test_paired_against_named_baselines(tmp_path) -> None:
    path = tmp_path / "results.jsonl"
    _write(path, {"srm": "0011000000", "lrm": "1111111000", "rankguide": "1011100000"})
    s = summarize(path, versus=["rankguide", "lrm", "rankguide"])
    assert s["vs_table"] == ["rankguide", "lrm"]
    m = s["methods"]
    # lrm gets p1, p5, p6 that rankguide misses; rankguide gets nothing lrm misses
    assert m["lrm"]["vs"] == {"rankguide": {"wins": 3, "losses": 0, "p": pytest.approx(0.25)}}
    assert m["srm"]["vs"]["rankguide"] == {"wins": 0, "losses": 2, "p": pytest.approx(0.5)}
    assert m["srm"]["vs"]["lrm"] == {"wins": 0, "losses": 5, "p": pytest.approx(2 / 32)}
    assert "rankguide" not in m["rankguide"]["vs"]  # never against itself
    md = summary_markdown(s)
    assert "| method | vs rankguide | vs lrm |" in md
    assert "| srm | +0/−2, p 0.50 | +0/−5, p 0.06 |" in md
    assert "| rankguide | — | +0/−3, p 0.25 |" in md
    assert "vs rankguide" not in summary_markdown(summarize(path))  # no table without baselines
    with pytest.raises(InvalidInputError, match="baseline random is not among the methods reported"):
        summarize(path, versus=["random"])
    with pytest.raises(InvalidInputError, match="baseline lrm"):
        summarize(path, methods=["srm", "rankguide"], versus=["lrm"])


def test_a_threshold_sweep_is_one_curve() -> None:
    same = {"entropy:0.41^1", "entropy:0.63^1", "entropy^1"}
    assert {_sweep_of(m) for m in same} == {"entropy^1"}
    assert _sweep_of("rankguide~learned:0.158^1") == _sweep_of("rankguide~learned^1") == "rankguide~learned^1"
    apart = ["entropy", "entropy^2", "entropy@early:0.5", "rankguide~learned^1", "rankguide^1", "specdec:4",
             "random:0.2", "srm+v*0.5/boundary", "srm+v*0.25/boundary", "srm"]
    assert len({_sweep_of(m) for m in apart}) == len(apart)  # another plan length, point, router or steering
    assert _sweep_of("random:0.2") == "random" and _sweep_of("specdec:4") == "specdec"


def test_pareto_draws_a_method_with_no_correct_answer(tmp_path) -> None:
    # Wilson's lower bound at k = 0 is 0 up to rounding; the error bar must not go negative (matplotlib raises)
    path = tmp_path / "results.jsonl"
    _write(path, {"srm": "0" * 11, "lrm": "1" * 10 + "0", "rankguide": "1" + "0" * 10, "srm+v*0.5": "0" * 11})
    s = summarize(path)
    assert s["methods"]["srm"]["accuracy_ci95"][0] == 0.0
    png = write_pareto(s, tmp_path / "pareto.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    share = write_share_plot(s, tmp_path / "share.png")  # accuracy against LRM token share
    assert share.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_method_selection_and_the_methods_that_limit_the_set(tmp_path) -> None:
    path = tmp_path / "results.jsonl"
    _write(path, {"srm": "0011000000", "lrm": "1111111000", "rankguide": "1011100000"})
    with open(path, "a") as fh:  # a fourth method that ran only the first 4 problems
        for line in path.read_text().splitlines()[: 4 * 3 : 3]:
            fh.write(json.dumps({**json.loads(line), "method": "srm+v*0.5"}) + "\n")
    every = summarize(path)
    assert every["problems"] == 4 and every["short_methods"] == ["srm+v*0.5"]
    assert every["problems_per_method"] == {"srm": 10, "lrm": 10, "rankguide": 10, "srm+v*0.5": 4}
    assert "srm+v*0.5 limit the set" in summary_markdown(every)
    chosen = summarize(path, methods=["srm", "lrm", "rankguide"])
    assert chosen["problems"] == 10 and chosen["short_methods"] == [] and list(chosen["methods"]) == [
        "srm", "lrm", "rankguide"]
    assert "limit the set" not in summary_markdown(chosen)
    with pytest.raises(InvalidInputError, match="no records of judge"):
        summarize(path, methods=["srm", "judge"])


def test_pgr_has_a_bootstrap_interval_around_it(tmp_path) -> None:
    path = tmp_path / "results.jsonl"
    _write(path, {"srm": "0011000000" * 3, "lrm": "1111111000" * 3, "rankguide": "1011100000" * 3})
    r = summarize(path)["methods"]
    lo, hi = r["rankguide"]["pgr_ci95"]
    assert r["rankguide"]["pgr"] == pytest.approx(0.4) and lo < 0.4 < hi and hi - lo < 1.0
    assert r["lrm"]["pgr_ci95"] == (1.0, 1.0) and r["srm"]["pgr_ci95"] == (0.0, 0.0)
    assert summarize(path)["methods"]["rankguide"]["pgr_ci95"] == (lo, hi)  # seeded: reproducible


def test_specdec_reports_acceptance_not_a_token_share(tmp_path) -> None:
    path = tmp_path / "results.jsonl"
    _write(path, {"srm": "01", "lrm": "11"})
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    for i in range(2):
        usage = {**_usage(100, 20), "specdec_accepted": 75, "lrm_verify_batches": 20}
        recs.append({**recs[0], "id": f"p{i}", "method": "specdec", "policy": "specdec", "k": 4,
                     "correct": True, "usage": usage})
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    s = summarize(path)
    assert s["methods"]["specdec"]["lrm_token_share"] is None
    assert s["methods"]["specdec"]["acceptance"] == pytest.approx(0.75)
    md = summary_markdown(s)
    assert "accepted: specdec 0.75" in md
    for texts, agree in (({"lrm": "a", "specdec": "b"}, 0.0), ({"lrm": "a", "specdec": "a"}, 1.0)):
        for r in recs:
            r["text"] = texts.get(r["method"], "srm")
        path.write_text("".join(json.dumps(r) + "\n" for r in recs))
        assert summarize(path)["methods"]["specdec"]["same_text_as_lrm"] == agree


@pytest.mark.parametrize("line, message", [
    ("[1]", "a record must be a JSON object, not list"),
    ('{"a": 1}', "field 'id' is missing"),
    ('{"id": "p9", "method": "srm"}', "field 'correct' is missing"),
])
def test_a_malformed_record_is_named_by_its_line(tmp_path, line: str, message: str) -> None:
    path = tmp_path / "results.jsonl"
    _write(path, {"srm": "01", "lrm": "11"})
    path.write_text(path.read_text() + line + "\n" + path.read_text().splitlines()[0] + "\n")
    with pytest.raises(InvalidInputError, match=rf"results.jsonl:5 is not a bench record \({message}"):
        summarize(path)


def test_a_file_of_one_torn_line_holds_no_complete_record(tmp_path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text('{"id": "p0", "meth')
    with pytest.raises(InvalidInputError, match="holds no complete record"):
        summarize(path)


def test_a_problem_a_method_failed_on_is_left_out_and_named(tmp_path) -> None:
    path = tmp_path / "results.jsonl"
    _write(path, {"srm": "0011", "lrm": "1111", "rankguide": "1011"})
    lines = path.read_text().splitlines()
    # rankguide could not solve p1 (a library error): the run wrote an error record instead
    lines = [ln for ln in lines if not ('"p1"' in ln and '"rankguide"' in ln)]
    lines.append(json.dumps({"id": "p1", "method": "rankguide", "policy": "rankguide",
                             "error": "ContextOverflowError: the context of 512 tokens is full"}))
    path.write_text("\n".join(lines) + "\n")
    s = summarize(path)
    assert s["problems"] == 3 and s["errors"] == {"rankguide": ["p1"]}
    assert s["methods"]["srm"]["n"] == 3 and s["methods"]["rankguide"]["correct"] == 3
    assert "Left out, because a method failed on them" in summary_markdown(s)
    assert summarize(path, methods=["srm", "lrm"])["problems"] == 4  # without rankguide, p1 counts again


def test_problems_whose_records_come_from_different_sessions_are_counted(tmp_path) -> None:
    path = tmp_path / "results.jsonl"
    _write(path, {"srm": "0011000000", "lrm": "1111111000", "rankguide": "1011100000"})
    assert summarize(path)["mixed_session_problems"] == 0  # no record names a session: nothing to say
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    for r in recs:  # one session wrote everything, then lrm's last 3 problems came from a resumed run
        late = r["method"] == "lrm" and r["id"] in ("p7", "p8", "p9")
        r["session"] = "2026-11-30T06:00:00Z" if late else "2026-11-29T20:00:00Z"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    s = summarize(path)
    assert s["mixed_session_problems"] == 3
    assert "On 3 of these problems the methods ran in different bench sessions" in summary_markdown(s)
    assert summarize(path, methods=["srm", "rankguide"])["mixed_session_problems"] == 0
