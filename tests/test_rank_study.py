"""The rank study (issue 23, item 3): closed-form checks of every new definition on synthetic arrays, the held-out
statistics on synthetic tables, and the teacher-forced all-layer replay on the tiny GGUF and on SmolLM2 (where a
real label file gives an exact oracle: the label run's own pooled row of every SRM step)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rankguide_edge.errors import InvalidInputError
from rankguide_edge.fitting.rank_study import (
    Definitions,
    cache_file,
    depth_slope,
    effective_rank,
    load_replayed,
    missing_replays,
    model_id,
    principal_cosines,
    replay_labels,
    spectral_entropies,
    step_definitions,
    subspace_overlap,
    tensor_eranks,
)
from rankguide_edge.fitting.rank_study_eval import (
    auroc,
    compare,
    fold_aurocs,
    fold_sets,
    heldout_model,
    heldout_single,
    problem_bootstrap,
    residualise,
    spearman,
)
from rankguide_edge.fitting.rank_study_table import StudyConfig, StudyTable, build_table
from rankguide_edge.stats import weighted_auroc

RNG = np.random.default_rng(7)


def _orthonormal(n: int, k: int, rng: np.random.Generator, *, against_ones: bool = False) -> np.ndarray:
    """``n × k`` orthonormal columns (also orthogonal to the all-ones vector when asked: centring keeps them)."""
    x = rng.standard_normal((n, k + 1))
    if against_ones:
        x[:, 0] = 1.0
    q, _ = np.linalg.qr(x)
    return q[:, 1:] if against_ones else q[:, :k]


def _window(n: int, d: int, k: int, rng: np.random.Generator, scale: float = 3.0) -> np.ndarray:
    """``n`` centred rows spanning a known ``k``-dim subspace with ``k`` equal singular values."""
    return scale * _orthonormal(n, k, rng, against_ones=True) @ _orthonormal(d, k, rng).T


# ------------------------------------------------------------------------------------------------ definitions


@pytest.mark.parametrize("k", [1, 3, 7, 15])
def test_k_equal_directions_give_entropy_log_k_and_effective_rank_k(k: int) -> None:
    x = _window(16, 96, k, RNG) + RNG.standard_normal(96)  # a constant row offset is removed by centring
    h1, h2 = spectral_entropies(x)
    assert h1 == pytest.approx(math.log(k), abs=1e-9)
    assert h2 == pytest.approx(math.log(k), abs=1e-9)
    assert effective_rank(np.r_[np.full(k, 2.5), np.zeros(4)]) == pytest.approx(k)


def test_renyi2_is_at_most_shannon_and_both_are_scale_and_order_invariant() -> None:
    x = RNG.standard_normal((16, 64)) * np.linspace(0.1, 3, 64)
    h1, h2 = spectral_entropies(x)
    assert 0 < h2 <= h1 <= math.log(15) + 1e-12
    y1, y2 = spectral_entropies(7.0 * x[RNG.permutation(16)])
    assert (float(y1), float(y2)) == pytest.approx((float(h1), float(h2)), abs=1e-9)
    # batched over layers: one value per window
    b1, b2 = spectral_entropies(np.stack([x, 2 * x, x[::-1]]))
    assert b1 == pytest.approx([float(h1)] * 3, abs=1e-9) and b2 == pytest.approx([float(h2)] * 3, abs=1e-9)
    assert np.isnan(spectral_entropies(np.ones((16, 8)))[1])  # constant rows: nothing to measure


def test_identical_subspaces_have_principal_angles_zero_and_orthogonal_ones_ninety() -> None:
    a = RNG.standard_normal((16, 80))
    # another window over the same rows' span: rescaled, reordered, shifted -> angles 0 (cos 1)
    b = 0.3 * a[RNG.permutation(16)] + RNG.standard_normal(80)
    assert principal_cosines(a, a, 4) == pytest.approx(np.ones(4), abs=1e-9)
    assert subspace_overlap(a, b, 4) == pytest.approx(1.0, abs=1e-9)
    v = _orthonormal(80, 8, RNG)
    c, d = _orthonormal(16, 4, RNG, against_ones=True), _orthonormal(16, 4, RNG, against_ones=True)
    assert subspace_overlap(c @ v[:, :4].T, d @ v[:, 4:].T, 4) == pytest.approx(0.0, abs=1e-9)


def test_a_known_principal_angle_is_recovered() -> None:
    theta = 0.6
    v = _orthonormal(40, 3, RNG)
    u = _orthonormal(16, 2, RNG, against_ones=True)
    a = u @ np.stack([2.0 * v[:, 0], v[:, 1]])                                 # span{v0, v1}
    rot = np.cos(theta) * v[:, 1] + np.sin(theta) * v[:, 2]
    b = u @ np.stack([v[:, 0], rot])                                            # span{v0, rotated v1}
    cos = principal_cosines(a, b, 2)
    assert cos == pytest.approx([1.0, math.cos(theta)], abs=1e-9)
    assert subspace_overlap(a, b, 2) == pytest.approx((1 + math.cos(theta) ** 2) / 2, abs=1e-9)
    assert np.isnan(principal_cosines(a, b, 3)).all()  # a window of two directions has no third angle


def test_tensor_layer_mode_counts_distinct_layer_patterns() -> None:
    w = RNG.standard_normal((12, 48))
    same = np.stack([w * s for s in (1.0, 5.0, 0.2, 3.0)])  # every layer the same window up to scale
    got = tensor_eranks(same)
    assert got["layer"] == pytest.approx(1.0, abs=1e-9)
    v = _orthonormal(48, 8, RNG)
    u = _orthonormal(12, 2, RNG, against_ones=True)
    orth = np.stack([u @ v[:, 2 * i: 2 * i + 2].T for i in range(4)])  # four layers in orthogonal subspaces
    got = tensor_eranks(orth)
    assert got["layer"] == pytest.approx(4.0, abs=1e-9)
    assert got["token"] == pytest.approx(2.0, abs=1e-9)   # every slice uses the same two token patterns
    assert got["hidden"] == pytest.approx(8.0, abs=1e-9)  # eight orthogonal hidden directions, equal energy
    assert math.isnan(tensor_eranks(np.zeros((3, 12, 8)))["layer"])


def test_depth_slope_of_a_linear_profile() -> None:
    assert depth_slope(np.linspace(2.0, 1.0, 24)) == pytest.approx(-1.0)
    assert math.isnan(depth_slope(np.array([1.0, np.nan, 2.0])))


def test_length_matched_window_makes_the_signals_independent_of_step_length() -> None:
    """A short and a long step ending in the same W rows get the same entropy profile and tensor ranks, and
    a step shorter than W gets no value (never a padded or shortened window)."""
    defs = Definitions(window=16, angle_k=4, angle_layers=(0, 2), spec_layers=(0, 2))
    layers = [0, 1, 2]
    tail = RNG.standard_normal((3, 16, 32))
    short = np.concatenate([RNG.standard_normal((3, 4, 32)), tail], axis=1)    # a 20-token step
    long_ = np.concatenate([RNG.standard_normal((3, 90, 32)) * 9, tail], axis=1)  # a 106-token step
    prev = RNG.standard_normal((3, 30, 32))
    a, b = step_definitions(short, prev, layers, defs), step_definitions(long_, prev, layers, defs)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-12), k
    tiny = step_definitions(RNG.standard_normal((3, 15, 32)), prev, layers, defs)
    assert all(math.isnan(v) for v in tiny.values())
    first = step_definitions(short, None, layers, defs)  # no previous step: no angle, the rest defined
    assert math.isnan(first["angle.cos2.mean"]) and math.isfinite(first["spec.h2.mean"])


def test_bad_definition_knobs_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="window"):
        Definitions(window=8, angle_k=8)


# ------------------------------------------------------------------------------------------------ statistics


def _brute_auroc(s: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    num = den = 0.0
    for i in np.flatnonzero(y):
        for j in np.flatnonzero(~y):
            num += w[i] * w[j] * (1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0)
            den += w[i] * w[j]
    return num / den


def test_weighted_auroc_matches_the_pair_count_with_ties() -> None:
    s = np.round(RNG.standard_normal(40), 1)
    y = RNG.random(40) < 0.3
    w = RNG.integers(0, 3, size=(3, 40)).astype(float)
    got = weighted_auroc(s, y, w)
    assert got == pytest.approx([_brute_auroc(s, y, row) for row in w])
    assert auroc(s, y) == pytest.approx(_brute_auroc(s, y, np.ones(40)))


def test_fold_auroc_counts_only_pairs_within_a_fold() -> None:
    s = RNG.standard_normal(60)
    y = RNG.random(60) < 0.4
    folds = np.repeat([0, 1, 2], 20)
    one = fold_aurocs(s[None], np.zeros((1, 60), int), y, np.ones((1, 60)))[0]
    assert one == pytest.approx(auroc(s, y))
    # shifting a whole fold moves a pooled AUROC but not the within-fold one
    shifted = s + 10 * (folds == 1)
    assert fold_aurocs(shifted[None], folds[None], y, np.ones((1, 60)))[0] == pytest.approx(
        fold_aurocs(s[None], folds[None], y, np.ones((1, 60)))[0])


def test_bootstrap_draws_whole_problems() -> None:
    problem = np.repeat(np.array(["a", "b", "c", "d"]), [1, 2, 3, 4])
    w = problem_bootstrap(problem, 50, 0)
    assert w.shape == (50, 10)
    for name in "abcd":
        rows = w[:, problem == name]
        assert (rows == rows[:, :1]).all()  # every step of a problem drawn together
    assert (w[:, problem == "a"].sum(axis=1) + w[:, problem == "b"][:, 0] + w[:, problem == "c"][:, 0]
            + w[:, problem == "d"][:, 0] == 4).all()


def test_residualising_removes_an_exact_linear_dependence() -> None:
    z = RNG.standard_normal((50, 3))
    v = 2.0 + z @ np.array([1.0, -3.0, 0.5])
    train = np.arange(50) < 30
    assert np.abs(residualise(v, z, train)).max() < 1e-9
    assert spearman(v, v ** 3) == pytest.approx(1.0) and spearman(v, -v) == pytest.approx(-1.0)


def _table(n_problems: int, rng: np.random.Generator, *, informative: float) -> StudyTable:
    """A synthetic table: 4 steps per problem, a text signal that carries the label, a nuisance-free rank
    signal carrying ``informative`` of it, and a noise signal."""
    n = 4 * n_problems
    problem = np.repeat(np.array([f"p{i}" for i in range(n_problems)]), 4)
    y = rng.random(n) < 0.2
    text = y * 1.0 + rng.standard_normal(n)
    rank = informative * y + rng.standard_normal(n)
    idx = np.tile(np.arange(1, 5, dtype=float), n_problems)
    nuisance = np.column_stack([np.log(rng.integers(10, 80, n)), idx, (idx == 1).astype(float)])
    new = {"spec.h2.L0": rank, "spec.h2.slope": rng.standard_normal(n)}
    return StudyTable(name="synthetic", problem=problem, y=y, text_pos=np.column_stack([text, idx]),
                      text_pos_names=("text.entropy_max", "step.index"), nuisance=nuisance,
                      n_tokens=np.exp(nuisance[:, 0]).astype(int), new=new, old={},
                      pooled=rng.standard_normal((n, 2, 8)), layers=(0,))


def test_heldout_direction_is_found_for_a_signal_that_carries_the_label() -> None:
    t = _table(120, np.random.default_rng(1), informative=2.0)
    cfg = StudyConfig(repeats=2, n_boot=0)
    folds = fold_sets(t, cfg)
    for sign, direction in ((1, "high"), (-1, "low")):
        s, got = heldout_single(sign * t.new["spec.h2.L0"], t, folds, residualised=True)
        assert got == direction
        assert fold_aurocs(s, np.stack(folds), t.y, np.ones((1, len(t))))[0] > 0.8
    for fs in folds:  # problem-grouped: no problem in two folds
        assert all(len(set(fs[t.problem == p])) == 1 for p in np.unique(t.problem))


def test_the_key_test_credits_a_rank_signal_only_when_it_adds_information() -> None:
    cfg = StudyConfig(repeats=2, n_boot=300)
    for informative, earns in ((2.5, True), (0.0, False)):
        t = _table(150, np.random.default_rng(2), informative=informative)
        folds = fold_sets(t, cfg)
        boot = problem_bootstrap(t.problem, cfg.n_boot, 0)
        base = heldout_model(t, folds, cfg, [], text_pos=True)
        with_rank = heldout_model(t, folds, cfg, ["spec.h2.L0"], text_pos=True)
        c = compare("spectral", base, with_rank, np.stack(folds), t, boot)
        assert c.earns is earns, (informative, c.diff, c.diff_ci)


def test_too_few_problems_for_the_folds_is_a_one_line_error() -> None:
    t = _table(3, np.random.default_rng(3), informative=1.0)
    with pytest.raises(InvalidInputError, match="lower --folds"):
        fold_sets(t, StudyConfig())


# ------------------------------------------------------------------------------------------------ replay


def _labels_file(path: Path, records: list[dict]) -> Path:
    head = {"format": "rankguide-edge/labels", "version": 1, "settings": {}, "selection": "test"}
    path.write_text("".join(json.dumps(r) + "\n" for r in [head, *records]), encoding="utf-8")
    return path


PLAN = "First we find how many apples are in the boxes, then we subtract the ones eaten.\n\n"
STEP1 = "There are 3 boxes with 4 apples each, so 3 * 4 = 12 apples in all of the boxes together.\n\n"
STEP2 = "Tom eats 2 apples, so 12 - 2 = 10 apples are left. The answer is 10."


def _record(pid: str) -> dict:
    return {"id": pid, "kind": "gsm8k", "question": "Tom has 3 boxes of 4 apples and eats 2. How many are left?",
            "correct": False, "steps": [
                {"index": 0, "source": "lrm", "text": PLAN, "n_tokens": 5},
                {"index": 1, "source": "srm", "text": STEP1, "n_tokens": 20, "signals": {"step.index": 1.0},
                 "cf": {"gain": 1}},
                {"index": 2, "source": "srm", "text": STEP2, "n_tokens": 15, "signals": {"step.index": 2.0},
                 "cf": {"gain": 0}}]}


def test_replay_taps_every_layer_caches_per_problem_and_resumes(tiny, tmp_path: Path) -> None:
    recs = [_record("a"), _record("b")]
    cache = tmp_path / "cache"
    s = replay_labels(tiny, recs, cache, keep_rows=8, n_ctx=1024, n_threads=1, limit=1)
    assert (s.replayed, s.cached) == (1, 0)  # the limit: one problem per call
    s = replay_labels(tiny, recs, cache, keep_rows=8, n_ctx=1024, n_threads=1)
    assert (s.replayed, s.cached) == (1, 1)  # resumed: only the missing one
    rp = load_replayed(cache_file(cache, "a"))
    assert list(rp.layers) == list(range(tiny.n_layer))
    assert rp.sources == ["lrm", "srm", "srm"]
    toks = [tiny.tokenize(t) for t in (PLAN, STEP1, STEP2)]
    assert list(rp.n_tokens) == [len(t) for t in toks]
    for tail, n in zip(rp.tails, rp.n_tokens, strict=True):
        assert tail.shape == (tiny.n_layer, min(8, n), tiny.n_embd) and np.isfinite(tail).all()
    assert rp.pooled.shape == (3, tiny.n_layer, tiny.n_embd)
    # another step text makes the cache stale; other keep_rows too
    changed = dict(recs[0], steps=[*recs[0]["steps"][:2], dict(recs[0]["steps"][2], text=STEP2 + " Done.")])
    ident = model_id(tiny.path)
    assert missing_replays([changed, recs[1]], cache, ident, keep_rows=8) == ["a"]
    assert missing_replays(recs, cache, ident, keep_rows=16) == ["a", "b"]


def test_replayed_rows_are_the_rows_of_one_continuous_pass(tiny, tmp_path: Path) -> None:
    """The step-by-step replay in batches of 32 gives the rows of feeding prompt + steps in one go."""
    from rankguide_edge.config import RuntimeConfig
    from rankguide_edge.engine.prompts import chat_tokens, prompt_for

    rec = _record("a")
    replay_labels(tiny, [rec], tmp_path, keep_rows=64, n_ctx=1024, n_threads=1)
    rp = load_replayed(cache_file(tmp_path, "a"))
    prompt = chat_tokens(tiny, prompt_for(rec["question"], "gsm8k"))
    steps = [tiny.tokenize(st["text"]) for st in rec["steps"]]
    with tiny.context(RuntimeConfig(n_ctx=1024, n_threads=1), tap_layers=list(range(tiny.n_layer))) as ctx:
        ctx.eval(prompt, hidden=False)
        flat = [t for s in steps for t in s]
        rows = {il: [] for il in range(tiny.n_layer)}
        for start in range(0, len(flat), 8):
            h = ctx.eval(flat[start:start + 8], logits="all")
            for il in rows:
                rows[il].append(h[il])
    full = np.stack([np.concatenate(rows[il]) for il in range(tiny.n_layer)])
    at = 0
    for j, s in enumerate(steps):
        part = full[:, at:at + len(s)]
        np.testing.assert_allclose(rp.tails[j].astype(np.float32), part[:, -64:], rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(rp.pooled[j], part.mean(axis=1), rtol=1e-3, atol=1e-4)
        at += len(s)


def test_build_table_reads_the_cache_into_the_router_rows(tiny, tmp_path: Path) -> None:
    recs = [_record("a"), _record("b")]
    replay_labels(tiny, recs, tmp_path, n_ctx=1024, n_threads=1)
    cfg = StudyConfig(defs=Definitions(window=4, angle_k=2, angle_layers=(0, 2), spec_layers=(0, 2)),
                      probe_layers=(0, 2))
    t = build_table("tiny", recs, tmp_path, cfg, srm=model_id(tiny.path))
    assert len(t) == 4 and t.problems == 2 and int(t.y.sum()) == 2
    assert t.pooled.shape == (4, 2, tiny.n_embd)
    assert np.isfinite(t.new["spec.h2.L1"]).all() and np.isfinite(t.new["angle.cos2.mean"]).all()
    assert list(t.nuisance[:, 2]) == [1.0, 0.0, 1.0, 0.0]  # the first SRM step flag
    # a cache of another model is not read
    with pytest.raises(InvalidInputError, match="replay"):
        build_table("tiny", recs, tmp_path, cfg, srm="other.gguf (1 bytes)")


def test_cli_replays_then_refuses_to_score_two_problems_in_five_folds(tiny_gguf, tmp_path: Path) -> None:
    from rankguide_edge.cli.main import main

    labels = _labels_file(tmp_path / "labels.jsonl", [_record("a"), _record("b")])
    cache, out = tmp_path / "cache", tmp_path / "out"
    args = ["rank-study", str(labels), "--out", str(out), "--cache", str(cache), "--srm", str(tiny_gguf),
            "--threads", "1", "--n-ctx", "1024"]
    res = CliRunner().invoke(main, [*args, "--replay-only", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert sorted(p.name[:1] for p in cache.glob("*.npz")) == ["a", "b"]
    res = CliRunner().invoke(main, [*args, "--no-replay", "--window", "4", "--angle-k", "2"])
    assert res.exit_code == 2 and "lower --folds" in res.output
    assert not out.exists() or not (out / "report.md").exists()


def test_replay_reproduces_the_label_runs_own_pooled_rows(smol, tmp_path: Path) -> None:
    """A real label file (SmolLM2 as SRM and LRM): the replay feeds each SRM step's recorded token ids after the
    same chat prompt, so its mean deepest-layer row is the label run's ``pooled`` row of that step (up to the
    rounding of batched against one-token decoding)."""
    from rankguide_edge.collab.backends_local import LocalBackend
    from rankguide_edge.config import RuntimeConfig
    from rankguide_edge.fitting.label import LabelConfig, Labeller, decode_vector
    from rankguide_edge.tasks.datasets import Problem

    cfg = LabelConfig(max_tokens=48, max_step_tokens=16, max_cf_steps=1, cf_right_share=1.0, n_ctx=1024)
    problem = Problem(id="tom", question="Tom has 3 boxes of 4 apples and eats 2. How many apples are left?",
                      gold="10", kind="gsm8k", source="test")
    with LocalBackend(smol, RuntimeConfig(n_ctx=1024)) as lrm, Labeller(smol, lrm, cfg) as lab:
        rec = json.loads(json.dumps(lab.label(problem)))
    srm_steps = [j for j, st in enumerate(rec["steps"]) if st["source"] == "srm"]
    assert srm_steps and all(rec["steps"][j]["token_ids"] for j in srm_steps)
    replay_labels(smol, [rec], tmp_path, n_ctx=1024, n_threads=2)
    rp = load_replayed(cache_file(tmp_path, "tom"))
    deepest = smol.n_layer - 1  # the label run's "auto" layers end at the last layer
    refs = {j: decode_vector(rec["steps"][j]["pooled"]).astype(np.float64) for j in srm_steps}
    for j in srm_steps:
        assert rp.n_tokens[j] == len(rec["steps"][j]["token_ids"])
        got = rp.pooled[j, deepest].astype(np.float64)
        err = {i: float(np.linalg.norm(r - got) / np.linalg.norm(r)) for i, r in refs.items()}
        # batched prefill rounds differently from one-token decoding (~1.5 % here); another step is ~45 % away
        assert err[j] < 0.05, (j, err)
        assert all(err[j] < 0.2 * e for i, e in err.items() if i != j), (j, err)


def test_report_states_the_rule_and_writes_markdown_json_and_figure(tmp_path: Path) -> None:
    from rankguide_edge.fitting.rank_study_report import StudyRun, run_study, verdict, write_report

    cfg = StudyConfig(repeats=1, n_boot=100, probe_layers=(0,),
                      defs=Definitions(spec_layers=(0,), angle_layers=(0,)))
    train, test = (_table(100, np.random.default_rng(s), informative=0.0) for s in (4, 5))
    studies = run_study([train, test], cfg)
    assert [s.mode for s in studies] == ["cv", "cv", "transfer"]
    assert verdict(studies) == {"spectral": False, "angles": False, "tensor": False, "probe": False,
                                "all_new": False}
    files = write_report(tmp_path, StudyRun(studies, cfg, ["a.jsonl", "b.jsonl"], notes="A note.", n_layer=1,
                                            n_embd=8))
    assert sorted(Path(f).name for f in files) == ["depth_profile.png", "report.md", "results.json"]
    text = (tmp_path / "report.md").read_text()
    assert "No rank definition earns the hot path" in text and "A note." in text
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["verdict"]["spectral"] is False and len(data["studies"]) == 3
    first = data["studies"][0]["comparisons"][0]
    assert first["rank_set"] == "spectral" and first["difference_ci"] is not None
