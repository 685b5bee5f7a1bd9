"""The latency model: counts by model and kind, profiles (shipped, files), hand-computed prices, and the
``measured`` fit recovering known per-token costs from a synthetic results.jsonl."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rankguide_edge.bench.latency import (
    GPUS,
    SHIPPED_PROFILES,
    TokenCounts,
    counts_of,
    fit_measured,
    gpu_rates,
    load_profile,
    overhead_seconds,
    predict_seconds,
    profile_check,
    profile_from_mapping,
    record_seconds,
    resolve,
)
from rankguide_edge.bench.report import load_results, summarize, summary_markdown
from rankguide_edge.bench.settings import identity_bytes, model_identity, run_model_bytes
from rankguide_edge.errors import ConfigError

# seconds per unit used to synthesise timings: SRM decode / prefill, LRM decode / prefill / call
TRUE = {"srm": (0.05, 0.004), "lrm": (0.12, 0.002, 0.3)}


def _usage(srm_dec=0, srm_pre=0, lrm_dec=0, lrm_pre=0, calls=0, disc=0):
    return {"srm_tokens": srm_dec, "srm_discarded_tokens": disc, "lrm_tokens": lrm_dec, "lrm_calls": calls,
            "lrm_failures": 0, "lrm_prefill_tokens": lrm_pre, "srm_prefill_tokens": srm_pre}


def test_counts_from_old_records_specdec_and_judge() -> None:
    old = {"usage": _usage(192, 103, 7, 40, 2, 11)}
    assert counts_of(old) == TokenCounts(192, 103, 7, 40, 2, 11, 0)
    spec = {"usage": {**_usage(50, 30, 13, 76, 13, 9), "lrm_verify_batches": 12, "lrm_discarded_tokens": 9}}
    c = counts_of(spec)
    assert c.lrm_decode == 12 and c.lrm_calls == 13 and c.lrm_discarded == 9
    judge = {"usage": {**_usage(100, 20, 10, 30, 1), "judge_calls": 5, "judge_prefill_tokens": 70}}
    assert counts_of(judge).lrm_calls == 6 and counts_of(judge).lrm_prefill == 100
    stored = {"usage": _usage(1, 1, 1, 1, 1), "counts": {"srm_decode": 9, "lrm_calls": 4}}
    assert counts_of(stored) == TokenCounts(srm_decode=9, lrm_calls=4)


def test_hand_computed_latency() -> None:
    prof = profile_from_mapping({"srm": {"decode_tok_s": 20, "prefill_tok_s": 200, "call_s": 0},
                                 "lrm": {"decode_tok_s": 10, "prefill_tok_s": 100, "call_s": 0.5}}, "hand")
    res = resolve(prof, fit_measured([]))
    rec = {"seconds": 10.0, "timing": {"srm": 4.0, "lrm": 4.5, "judge": 0.5}, "usage": _usage(40, 100, 30, 50, 3)}
    assert overhead_seconds(rec) == pytest.approx(1.0)
    # 40/20 + 100/200 + 30/10 + 50/100 + 3 * 0.5 + 1.0 overhead
    assert record_seconds(rec, res) == pytest.approx(2.0 + 0.5 + 3.0 + 0.5 + 1.5 + 1.0)
    large = resolve(load_profile("gpu-large-ratio"), fit_measured([]))
    assert predict_seconds(TokenCounts(srm_decode=300), large) == pytest.approx(1.0)  # its SRM decodes 300 tok/s
    gpu = SHIPPED_PROFILES["gpu-large-ratio"]
    assert gpu["srm"]["decode_tok_s"] == 6 * gpu["lrm"]["decode_tok_s"]
    assert gpu["lrm"]["prefill_tok_s"] == 20 * gpu["lrm"]["decode_tok_s"]


def _synthetic(path, n_problems=12, noise=0.03, seed=0):
    """A results.jsonl whose timings follow TRUE (with multiplicative noise) plus 0.2 s overhead per record."""
    rng = np.random.default_rng(seed)
    recs = []
    kinds = {"srm": ("srm", "post", 0.46), "lrm": ("lrm", "pre", 0.46), "rankguide:0.2": ("rankguide", "post", 0.2),
             "rankguide:0.6": ("rankguide", "post", 0.6), "specdec": ("specdec", "pre", 0.46)}
    for i in range(n_problems):
        for method, (policy, decide, thr) in kinds.items():
            sd = int(rng.integers(50, 300)) if policy != "lrm" else 0
            sp = int(rng.integers(80, 200)) + (int(rng.integers(0, 200)) if policy != "srm" else 0)
            ld = 0 if policy == "srm" else int(rng.integers(10, 250))
            lp = 0 if policy == "srm" else int(rng.integers(60, 400))
            calls = 0 if policy == "srm" else int(rng.integers(1, 8))
            srm_s = (sd * TRUE["srm"][0] + sp * TRUE["srm"][1]) * (1 + noise * rng.standard_normal())
            lrm_s = (ld * TRUE["lrm"][0] + lp * TRUE["lrm"][1] + calls * TRUE["lrm"][2]) * (
                1 + noise * rng.standard_normal())
            recs.append({"id": f"p{i}", "method": method, "policy": policy, "decide": decide, "threshold": thr,
                         "correct": bool(rng.random() < {"srm": 0.3, "lrm": 0.8}.get(policy, 0.55)),
                         "seconds": round(srm_s + lrm_s + 0.2, 4), "n_steps": 5, "lrm_steps": 5 if policy == "lrm"
                         else (2 if policy == "rankguide" else 0), "timing": {"srm": srm_s, "lrm": lrm_s},
                         "usage": _usage(sd, sp, ld, lp, calls)})
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return recs


def test_measured_fit_recovers_the_costs(tmp_path) -> None:
    recs = _synthetic(tmp_path / "results.jsonl")
    fit = fit_measured(recs)
    assert fit.n_srm == len(recs) and fit.n_lrm == len(recs) - 12  # srm records never call the LRM
    assert fit.srm.decode_s == pytest.approx(TRUE["srm"][0], rel=0.05)
    assert fit.srm.prefill_s == pytest.approx(TRUE["srm"][1], rel=0.15)
    assert fit.lrm.decode_s == pytest.approx(TRUE["lrm"][0], rel=0.05)
    assert fit.lrm.call_s == pytest.approx(TRUE["lrm"][2], rel=0.3)
    check = profile_check(recs, resolve(load_profile("measured"), fit))
    assert check["ok"] and abs(check["rel_error"]) < 0.02
    assert set(check["per_method_rel_error"]) == {"srm", "lrm", "rankguide:0.2", "rankguide:0.6", "specdec"}
    # laptop+gpu-server keeps the SRM as measured and prices the LRM at its fixed rates
    lap = resolve(load_profile("laptop+gpu-server"), fit)
    assert lap.srm == fit.srm and lap.lrm.decode_s == pytest.approx(1 / 60) and lap.lrm.call_s == 0.05


def test_summary_prices_every_profile(tmp_path) -> None:
    recs = _synthetic(tmp_path / "results.jsonl")
    s = summarize(tmp_path / "results.jsonl", profile="gpu-large-ratio")
    assert s["profile"] == "gpu-large-ratio" and s["profile_check"]["ok"]
    assert set(s["profiles"]) == set(SHIPPED_PROFILES)  # no run.json, so no model sizes: GPU profiles unpriced
    assert set(s["unpriced_profiles"]) == set(GPUS) and "GGUF size" in s["unpriced_profiles"]["rtx4090"]
    row = s["methods"]["lrm"]
    assert set(row["latency_s"]) == set(SHIPPED_PROFILES)
    lrm_recs = [r for r in recs if r["method"] == "lrm"]
    want = np.mean([sum(r["usage"][k] for k in ("lrm_tokens",)) / 50 + r["usage"]["lrm_prefill_tokens"] / 1000
                    + r["usage"]["srm_prefill_tokens"] / 6000 + 0.2 for r in lrm_recs])
    assert row["latency_s"]["gpu-large-ratio"] == pytest.approx(want, rel=1e-3)
    assert row["speedup_vs_lrm_by_profile"]["gpu-large-ratio"] == pytest.approx(1.0)
    assert s["methods"]["rankguide:0.2"]["threshold"] == 0.2 and s["methods"]["srm"]["lrm_calls"] == 0


def test_profile_files_and_bad_profiles(tmp_path) -> None:
    toml = tmp_path / "edge.toml"
    toml.write_text('description = "phone + cloud"\n[srm]\ndecode_tok_s = 25\nprefill_tok_s = "measured"\n'
                    '[lrm]\ndecode_tok_s = 80.0\nprefill_tok_s = 4000\ncall_s = 0.12\n')
    p = load_profile(str(toml))
    assert p.name == "edge" and p.srm.decode_tok_s == 25.0 and p.srm.prefill_tok_s is None
    assert p.srm.call_s is None and p.lrm.call_s == 0.12 and p.description == "phone + cloud"
    js = tmp_path / "p.json"
    js.write_text(json.dumps({"name": "mine", "lrm": {"decode_tok_s": 30}}))
    assert load_profile(str(js)).name == "mine" and load_profile(str(js)).srm.decode_tok_s is None
    for bad in ({"srm": {"decode_tok_s": "fast"}}, {"srm": {"decode_tok_s": -1}}, {"lrm": {"speed": 3}},
                {"gpu": {}}, {"srm": 5}):
        with pytest.raises(ConfigError):
            profile_from_mapping(bad)
    with pytest.raises(ConfigError, match="unknown profile"):
        load_profile("no-such-profile")
    broken = tmp_path / "broken.toml"
    broken.write_text("[srm\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_profile(str(broken))
    clash = tmp_path / "rtx4090.json"  # named after a shipped profile by its stem
    clash.write_text(json.dumps({"lrm": {"decode_tok_s": 30}}))
    with pytest.raises(ConfigError, match="shipped profile"):
        load_profile(str(clash))


def test_records_from_a_stopped_or_busy_machine_do_not_bend_the_fit(tmp_path) -> None:
    recs = _synthetic(tmp_path / "results.jsonl", n_problems=20)
    slow = [(recs[i]["id"], recs[i]["method"]) for i in (3, 40, 77)]
    for i in (3, 40, 77):  # SIGSTOPped mid-record: 30x the time its work takes, all of it inside the SRM
        extra = 29 * recs[i]["timing"]["srm"]
        recs[i]["timing"]["srm"] += extra
        recs[i]["seconds"] += extra
    fit = fit_measured(recs)
    assert sorted(fit.outliers) == sorted(slow)
    assert fit.srm.decode_s == pytest.approx(TRUE["srm"][0], rel=0.05)
    assert fit.srm.prefill_s == pytest.approx(TRUE["srm"][1], rel=0.15)
    assert fit.to_dict()["outliers"][0] == {"id": slow[0][0], "method": slow[0][1]}
    check = profile_check(recs, resolve(load_profile("measured"), fit), exclude=fit.outliers)
    assert check["ok"] and check["excluded_records"] == 3 and check["all_records_rel_error"] < -0.3
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    md = summary_markdown(summarize(tmp_path / "results.jsonl"))
    assert "3 records took more than 2× what their work predicts" in md


def test_a_clean_run_has_no_outliers(tmp_path) -> None:
    recs = _synthetic(tmp_path / "results.jsonl", noise=0.15)
    fit = fit_measured(recs)
    assert fit.outliers == () and profile_check(recs, resolve(load_profile("measured"), fit))["excluded_records"] == 0


# ------------------------------------------------------------------------------------------ GPU profiles

#: GGUF sizes of the default pair (bench100's run.json)
SRM_BYTES, LRM_BYTES = 491_400_064, 1_117_320_768


@pytest.mark.parametrize("name", sorted(GPUS))
def test_gpu_rates_reproduce_their_published_points_and_follow_size(name: str) -> None:
    spec = GPUS[name]
    assert gpu_rates(spec, spec.decode_ref_bytes)["decode_tok_s"] == pytest.approx(spec.decode_ref_tok_s)
    assert gpu_rates(spec, spec.prefill_ref_bytes)["prefill_tok_s"] == pytest.approx(spec.prefill_ref_tok_s)
    sizes = [1e8, SRM_BYTES, LRM_BYTES, 4e9, 2e10]
    rates = [gpu_rates(spec, b) for b in sizes]
    for small, big, b in zip(rates, rates[1:], sizes[1:], strict=False):
        assert small["decode_tok_s"] > big["decode_tok_s"] and small["prefill_tok_s"] > big["prefill_tok_s"]
        # never faster than reading the weights at the stated share of the bandwidth
        assert big["decode_tok_s"] <= spec.efficiency * spec.bandwidth_gb_s * 1e9 / b
    assert all(r["call_s"] == 0.0 for r in rates) and spec.token_overhead_s > 0


def test_on_a_gpu_the_default_pair_is_not_six_times_apart() -> None:
    """Decode time grows with the weights read: 491 MB against 1.12 GB is a ~1.7x ratio on an RTX 4090 (the
    fixed per-token overhead shrinks it further), far from gpu-large-ratio's 6x."""
    p = load_profile("rtx4090", {"srm": SRM_BYTES, "lrm": LRM_BYTES})
    ratio = p.srm.decode_tok_s / p.lrm.decode_tok_s
    assert 1.4 < ratio < LRM_BYTES / SRM_BYTES
    large = SHIPPED_PROFILES["gpu-large-ratio"]
    assert large["srm"]["decode_tok_s"] / large["lrm"]["decode_tok_s"] == 6


def test_run_json_sizes_price_the_gpu_profiles(tmp_path) -> None:
    recs = _synthetic(tmp_path / "results.jsonl")
    srm = tmp_path / "s.gguf"
    srm.write_bytes(b"x" * 1000)
    assert identity_bytes(model_identity(srm)) == 1000 and identity_bytes("http://host/v1") is None
    (tmp_path / "run.json").write_text(json.dumps({"settings": {
        "srm": f"srm.gguf ({SRM_BYTES} bytes)", "lrm": f"lrm.gguf ({LRM_BYTES} bytes)"}, "sessions": []}))
    assert run_model_bytes(tmp_path) == {"srm": SRM_BYTES, "lrm": LRM_BYTES}
    s = summarize(tmp_path / "results.jsonl", profile="rtx4090")
    assert s["profile"] == "rtx4090" and not s["unpriced_profiles"] and "rtx4090" in s["profiles"]
    rates = gpu_rates(GPUS["rtx4090"], LRM_BYTES)
    assert s["profiles"]["rtx4090"]["lrm"]["decode_tok_s"] == pytest.approx(rates["decode_tok_s"])
    lrm = [r for r in recs if r["method"] == "lrm"]
    want = np.mean([r["usage"]["lrm_tokens"] / rates["decode_tok_s"]
                    + r["usage"]["lrm_prefill_tokens"] / rates["prefill_tok_s"]
                    + r["usage"]["srm_prefill_tokens"] / gpu_rates(GPUS["rtx4090"], SRM_BYTES)["prefill_tok_s"]
                    + 0.2 for r in lrm])
    assert s["methods"]["lrm"]["latency_s"]["rtx4090"] == pytest.approx(want, rel=1e-3)
    # an LRM given as a URL has no size: the report says so, and choosing the profile is an error
    (tmp_path / "run.json").write_text(json.dumps({"settings": {"srm": f"srm.gguf ({SRM_BYTES} bytes)",
                                                                "lrm": "http://10.0.0.2:8080/v1"}}))
    s = summarize(tmp_path / "results.jsonl")
    assert "size of the LRM is unknown" in s["unpriced_profiles"]["rtx4090"]
    assert "Not priced under `rtx4090`" in summary_markdown(s)
    with pytest.raises(ConfigError, match="size of the LRM is unknown"):
        summarize(tmp_path / "results.jsonl", profile="rtx4090")


def test_a_compressed_results_file_reads_like_the_plain_one(tmp_path) -> None:
    import gzip

    recs = _synthetic(tmp_path / "results.jsonl")
    with gzip.open(tmp_path / "results.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in recs))
    assert load_results(tmp_path / "results.jsonl.gz") == load_results(tmp_path / "results.jsonl") == recs
