"""`analyze`: AUROC arithmetic, length control, outputs and bad input, on synthetic trace files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rankguide_edge import stats as st
from rankguide_edge.config import from_mapping
from rankguide_edge.errors import ConfigError, InvalidInputError
from rankguide_edge.fitting.analyze import AnalyzeConfig, analyze, load_traces, run_analysis

PLANTED = "rank.eff_norm.L23.win"      # low in wrong traces, whatever their length
CONFOUNDED = "rep.max_jaccard"          # grows with the step index: its max is a length proxy
LEVELS = (4, 7, 10, 13, 16)             # steps per trace, 50 traces per level
WRONG_RATE = (0.1, 0.25, 0.45, 0.65, 0.85)


def make_records(seed: int = 0, per_level: int = 50, labels: bool = False) -> list[dict]:
    """Traces whose failure rate rises with length; PLANTED separates classes within every length."""
    rng = np.random.default_rng(seed)
    out = []
    for ns, rate in zip(LEVELS, WRONG_RATE, strict=True):
        n_wrong = round(per_level * rate)
        for j in range(per_level):
            wrong = j < n_wrong
            steps = []
            for s in range(ns):
                bad_step = labels and rng.random() < 0.3                 # step labels, class-independent
                sig = {
                    "step.index": float(s), "step.partial": 0.0,
                    PLANTED: 0.5 - 0.15 * wrong + 0.05 * rng.normal(),
                    "rank.eff_norm.L11.win": 0.5 + 0.05 * rng.normal(),
                    CONFOUNDED: s / 20 + 0.01 * rng.random(),
                    "text.entropy_max": 2.0 + rng.normal(), "text.entropy_mean": 0.6 + 0.1 * rng.normal(),
                    "kw.revalidation": float(bad_step) + 0.3 * rng.random(),
                    "fail.route": float(rng.random()),
                }
                if s % 2 == 0:
                    sig["kw.confident"] = float(rng.random())          # absent from odd steps
                step = {"index": s, "text": f"step {s}", "n_tokens": 30, "token_start": 30 * s,
                        "token_end": 30 * (s + 1), "ended_by": "delimiter", "signals": sig}
                if labels:
                    step["label"] = bad_step
                steps.append(step)
            out.append({"id": f"syn-{ns}-{j}", "kind": "gsm8k", "question": "q", "gold": "1",
                        "prediction": "2" if wrong else "1", "correct": not wrong, "finished": j % 7 != 0,
                        "n_tokens": 30 * ns, "n_steps": ns, "text": "...", "steps": steps})
    return out


def write_jsonl(path: Path, records: list, extra_lines: list[str] = ()) -> Path:
    lines = [json.dumps(r) for r in records] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _no_nan(text: str):
    def bad(const: str):
        raise AssertionError(f"{const} in JSON output")
    return json.loads(text, parse_constant=bad)


# --------------------------------------------------------------------------------------------- AUROC


def test_auroc_hand_computed_cases() -> None:
    assert st.auroc(np.array([1.0, 2, 3, 4]), np.array([0, 0, 1, 1], bool)) == 1.0
    assert st.auroc(np.array([1.0, 2, 3, 4]), np.array([1, 1, 0, 0], bool)) == 0.0
    # positives {1, 4} vs negatives {2, 3}: 2 of 4 pairs ordered
    assert st.auroc(np.array([1.0, 2, 3, 4]), np.array([1, 0, 0, 1], bool)) == 0.5
    # positives {1, 2} vs negatives {0, 1}: pairs 1>0, 1=1 (half), 2>0, 2>1 -> 3.5 / 4
    assert st.auroc(np.array([0.0, 1, 1, 2]), np.array([0, 0, 1, 1], bool)) == pytest.approx(0.875)
    assert st.auroc(np.full(6, 3.0), np.array([0, 1, 0, 1, 1, 0], bool)) == 0.5
    assert st.auroc(np.array([1.0, 2, 3]), np.ones(3, bool)) is None
    # NaN scores are left out: same as the 4-item perfect case
    assert st.auroc(np.array([1.0, np.nan, 2, 3, 4]), np.array([0, 1, 0, 1, 1], bool)) == 1.0


def test_weighted_auroc_equals_auroc_of_repeated_items() -> None:
    rng = np.random.default_rng(1)
    x = np.round(rng.normal(size=60), 1)                                   # many ties
    y = rng.random(60) < 0.4
    assert st.weighted_auroc(x, y, np.ones((1, 60)))[0] == pytest.approx(st.auroc(x, y))
    w = rng.integers(0, 4, size=(5, 60)).astype(float)
    for row in w:
        rep = row.astype(int)
        ref = st.auroc(np.repeat(x, rep), np.repeat(y, rep))
        assert st.weighted_auroc(x, y, row[None, :])[0] == pytest.approx(ref)


def test_bootstrap_keeps_class_sizes_and_brackets_the_estimate() -> None:
    rng = np.random.default_rng(2)
    y = rng.random(80) < 0.3
    x = rng.normal(size=80) + 1.0 * y
    w = st.bootstrap_weights(y, 300, seed=7)
    assert w.shape == (300, 80)
    assert np.all(w[:, y].sum(axis=1) == y.sum()) and np.all(w[:, ~y].sum(axis=1) == (~y).sum())
    assert np.array_equal(w, st.bootstrap_weights(y, 300, seed=7))
    est = st.estimate(x, y, w)
    lo, hi = est.ci
    assert lo < est.value < hi and 0.6 < est.value < 0.95 and hi - lo < 0.35


def test_length_bins_keep_ties_together() -> None:
    lengths = np.repeat([10.0, 20, 30, 40, 50], 10)
    bins = st.length_bins(lengths, 5)
    assert np.array_equal(bins, np.repeat(np.arange(5), 10))
    bins = st.length_bins(np.array([5.0] * 7 + [9.0] * 3), 5)
    assert len(set(bins[:7])) == 1 and len(set(bins[7:])) == 1


def test_cross_validated_logistic_finds_signal_and_not_noise() -> None:
    rng = np.random.default_rng(3)
    y = rng.random(200) < 0.4
    x = np.column_stack([rng.normal(size=200) + 1.5 * y, rng.normal(size=200)])
    x[rng.random(200) < 0.1, 1] = np.nan                                   # missing values are imputed
    folds = st.stratified_folds(y, 5, seed=0)
    assert set(np.bincount(folds[y])) <= {int(y.sum()) // 5, int(y.sum()) // 5 + 1}
    assert st.auroc(st.cross_validated_scores(x, y, folds, 1.0), y) > 0.8
    assert abs(st.auroc(st.cross_validated_scores(x[:, 1:], y, folds, 1.0), y) - 0.5) < 0.15
    coef = st.standardised_coefficients(x, y, 1.0)
    assert coef[0] > 1.0 and abs(coef[1]) < 0.5


# --------------------------------------------------------------------------------------------- analysis


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("analyze")
    src = write_jsonl(d / "traces.jsonl", make_records(), ['{"id": "x", "error": "context overflow"}'])
    return src, d / "out", analyze(src, d / "out")


def test_planted_signal_ranks_first_and_survives_length_control(synthetic) -> None:
    _, _, res = synthetic
    c = res.counts
    assert (c["traces"], c["wrong"], c["errors"], c["malformed"]) == (250, 113, 1, 0)
    top = res.features[0]
    assert top["signal"] == PLANTED and top["direction"] == "low" and top["auroc"] < 0.05
    assert top["length_control"] == "kept" and top["auroc_length_strat"] < 0.05
    assert res.feature(f"{PLANTED}:mean")["ci"][1] < 0.1
    length = res.feature("n_tokens")
    assert length["auroc"] > 0.7 and length["direction"] == "high"
    assert res.length["bins"] == 5 and res.length["bin_sizes"] == [50] * 5


def test_confounded_signal_drops_after_length_stratification(synthetic) -> None:
    _, _, res = synthetic
    row = res.feature(f"{CONFOUNDED}:max")
    assert row["auroc"] > 0.7 and row["significant"]
    assert abs(row["auroc_length_strat"] - 0.5) < 0.12 and row["length_control"] == "lost"
    assert any("do not" in s or "not survive" in s or "kept" not in s for s in res.reading)


def test_missing_and_constant_signals_give_no_nan(synthetic) -> None:
    _, out, res = synthetic
    for agg in ("max", "mean", "last"):
        row = res.feature(f"step.partial:{agg}")
        assert row["auroc"] == 0.5 and row["direction"] == "none" and row["length_control"] == "n.s."
    assert res.feature("kw.confident:mean")["n"] == 250                  # present on even steps only
    doc = _no_nan((out / "analysis.json").read_text())
    assert doc["counts"]["traces"] == 250 and len(doc["features"]) == len(res.features)


def test_outputs_exist_and_report_reads_the_numbers(synthetic) -> None:
    _, out, res = synthetic
    assert sorted(p.name for p in out.iterdir()) == ["analysis.json", "report.md", "roc.png", "trajectories.png"]
    for name in ("roc.png", "trajectories.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    report = (out / "report.md").read_text()
    first_row = next(line for line in report.splitlines() if line.startswith("| 1 |"))
    assert PLANTED in first_row and "**kept**" in first_row
    assert "| 250 | 113 | 137 | 1 | 0 |" in report                      # counts table
    assert "no step carries a label" in report
    assert f"The strongest single signal is {PLANTED}" in report
    assert "fail.route (max over steps" in report and res.combined["verdict"] in report
    traj = res.trajectories["signals"]
    assert set(traj) == {"fail.route", "text.entropy_mean", PLANTED}
    assert traj[PLANTED]["wrong"]["mean"][0] < traj[PLANTED]["correct"]["mean"][0] - 0.1


def test_logistic_and_combined_sections(synthetic) -> None:
    _, _, res = synthetic
    models = res.logistic["models"]
    assert models["entropy"]["features"] == ["text.entropy_max:max", "text.entropy_max:mean",
                                             "text.entropy_mean:max", "text.entropy_mean:mean"]
    assert f"{PLANTED}:mean" in models["entropy+rank"]["features"] and models["entropy+rank"]["auroc"] > 0.95
    assert models["entropy+rank+length"]["features"][-1] == "log_n_tokens"
    assert res.logistic["entropy+rank_minus_entropy"]["ci"][0] > 0.2
    cb = res.combined
    assert cb["best_rank"]["signal"] == PLANTED and cb["primary_layer"] == 23
    # both are noise whose max over steps grows with length: within length strata neither predicts anything
    d = cb["route_minus_entropy_length_strat"]
    assert cb["verdict_length_strat"] in ("does not beat", "does not significantly beat")
    assert d["ci"][0] < 0 < d["ci"][1]
    assert abs(cb["route"]["auroc_length_strat"] - 0.5) < 0.12
    expected = ("beats" if cb["route_minus_entropy"]["ci"][0] > 0 else "is worse than"
                if cb["route_minus_entropy"]["ci"][1] < 0 else None)
    assert expected is None or cb["verdict"] == expected


def test_first_crossing_feature(tmp_path: Path) -> None:
    recs = make_records(per_level=6)
    for r in recs:
        for s, step in enumerate(r["steps"]):
            step["signals"]["fail.route"] = 0.9 if (not r["correct"] and s == 1) else 0.1
    src = write_jsonl(tmp_path / "t.jsonl", recs)
    res = analyze(src, tmp_path / "out", thresholds=[0.5], plots=False)
    row = res.feature("fail.route:first>0.5")
    assert row["threshold"] == 0.5 and row["auroc"] == 0.0 and row["direction"] == "low"
    res = run_analysis(load_traces(src), AnalyzeConfig(bootstrap=50))
    assert {r["agg"] for r in res.features if r["kind"] == "first_cross"} == {"first>q50", "first>q75"}


def test_step_labels_give_step_level_auroc(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "t.jsonl", make_records(per_level=12, labels=True))
    res = analyze(src, tmp_path / "out", plots=False)
    sl = res.step_level
    assert sl["available"] and sl["signals"][0]["signal"] == "kw.revalidation"
    assert sl["signals"][0]["auroc"] > 0.95 and sl["n_labelled"] == res.counts["steps"]
    assert "labelled steps" in (tmp_path / "out" / "report.md").read_text()


# --------------------------------------------------------------------------------------------- bad input


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not found"):
        analyze(tmp_path / "nope.jsonl", tmp_path / "out")
    (tmp_path / "empty.jsonl").write_text("\n  \n")
    with pytest.raises(InvalidInputError, match="empty"):
        analyze(tmp_path / "empty.jsonl", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_malformed_lines_are_skipped_or_stop_with_strict(tmp_path: Path) -> None:
    recs = make_records(per_level=6)
    bad = ["{not json", json.dumps({"id": "b", "steps": []}), json.dumps({**recs[0], "correct": "yes"}),
           json.dumps({**recs[0], "steps": [{"signals": {"x": "high"}}]})]
    src = write_jsonl(tmp_path / "t.jsonl", recs[:3], bad + [json.dumps(r) for r in recs[3:]])
    res = analyze(src, tmp_path / "out", plots=False)
    assert res.counts["malformed"] == 4 and res.counts["traces"] == len(recs)
    assert res.warnings[0].startswith(f"{src}:4: not valid JSON")
    assert "'correct'" in res.warnings[2] and "not a number" in res.warnings[3]
    with pytest.raises(InvalidInputError, match=r"t\.jsonl:4: not valid JSON.*--strict"):
        analyze(src, tmp_path / "out2", strict=True)


def test_too_few_traces_or_one_class(tmp_path: Path) -> None:
    recs = make_records(per_level=6)
    src = write_jsonl(tmp_path / "few.jsonl", recs[:6], ['{"error": "x"}'])
    with pytest.raises(InvalidInputError, match=r"only 6 usable traces .*1 error records.*--min-traces"):
        analyze(src, tmp_path / "out")
    src = write_jsonl(tmp_path / "one.jsonl", [r for r in recs if r["correct"]])
    with pytest.raises(InvalidInputError, match="are correct; AUROC needs both"):
        analyze(src, tmp_path / "out")
    with pytest.raises(InvalidInputError, match="is a file"):
        analyze(write_jsonl(tmp_path / "ok.jsonl", recs), src, plots=False)


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="threshold_quantiles"):
        AnalyzeConfig(threshold_quantiles=(0.5, 1.5))
    with pytest.raises(ConfigError, match="unknown AnalyzeConfig key"):
        from_mapping(AnalyzeConfig, {"bootstraps": 10})
    cfg = from_mapping(AnalyzeConfig, {"thresholds": [0.2, 1]})
    assert cfg.thresholds == (0.2, 1)


def test_300_traces_20_steps_100_signals(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    keys = [f"sig.{i}" for i in range(96)] + ["text.entropy_max", "text.entropy_mean", "fail.route",
                                             f"{PLANTED}", "rank.novelty.L23", "fail.uncertainty"]
    lines = []
    for i in range(300):
        wrong = bool(rng.random() < 0.4)
        vals = rng.normal(size=(20, len(keys)))
        steps = [{"index": s, "signals": dict(zip(keys, vals[s].tolist(), strict=True))} for s in range(20)]
        lines.append(json.dumps({"id": str(i), "correct": not wrong, "finished": True,
                                 "n_tokens": int(rng.integers(200, 900)), "n_steps": 20, "steps": steps}))
    src = tmp_path / "big.jsonl"
    src.write_text("\n".join(lines) + "\n")
    res = analyze(src, tmp_path / "out", plots=False)
    assert res.counts["steps"] == 6000 and len(res.features) == 2 + 3 * 102 + 2 * 2


def test_length_stratified_samples_keep_resamples_that_lose_a_class_in_one_bin() -> None:
    """A resample that drew no wrong trace in one length bin averages the other bins instead of turning NaN
    (dropped NaNs would leave only the lucky resamples, and too narrow an interval)."""
    from rankguide_edge.stats import estimate, stratified_estimate

    scores = np.array([0.9, 0.1, 0.2, 0.3, 0.8, 0.4, 0.5, 0.6])
    wrong = np.array([1, 0, 0, 0, 1, 0, 0, 0], dtype=bool)
    bins = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    weights = np.ones((2, 8))
    weights[1, 4] = 0.0  # resample 1 lost bin 1's only wrong trace
    est = stratified_estimate(scores, wrong, bins, weights)
    assert est.value == pytest.approx(1.0) and est.samples[0] == pytest.approx(1.0)
    bin0 = estimate(scores[:4], wrong[:4], weights[:, :4]).samples[1]
    assert np.isfinite(est.samples[1]) and est.samples[1] == pytest.approx(bin0)
