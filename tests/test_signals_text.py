"""Token statistics, keyword counting and repetition signals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rankguide_edge.errors import InvalidInputError
from rankguide_edge.signals import text as T


def _pattern(words: tuple[str, ...] = T.REVALIDATION_WORDS):
    return T.compile_keywords(words)


@pytest.mark.parametrize("text,count", [
    ("Wait, that is wrong.", 1),
    ("The waiter brought it.", 0),
    ("WAIT. wait! Wait?", 3),
    ("awaits nothing; waited", 0),
    ("Let me\n  check this.", 1),
    ("let me checkout", 0),
    ("I will double-check and double check.", 2),
    ("double-checking is not listed", 0),
    ("re-check then recheck", 2),
    ("Let\u2019s check.", 1),
    ("Hmm, actually no.", 2),
])
def test_revalidation_keywords_respect_word_boundaries(text: str, count: int) -> None:
    assert T.count_keywords(text, _pattern()) == count


def test_overlapping_phrases_count_once_longest_first() -> None:
    pat = _pattern(T.CONFIDENT_WORDS)
    assert T.count_keywords("So the answer is 5.", pat) == 1
    assert T.count_keywords("The answer is 5, clearly, and therefore certain.", pat) == 3
    unc = _pattern(T.UNCERTAINTY_WORDS)
    assert T.count_keywords("Maybe. I think it might be, possibly; I'm not sure.", unc) == 5
    assert T.count_keywords("Mighty mice", unc) == 0


def test_custom_and_empty_keyword_lists() -> None:
    pat = T.compile_keywords(["foo bar", "C++"])
    assert T.count_keywords("FOO   bar and c++ twice c++", pat) == 3
    assert T.compile_keywords([]) is None
    assert T.compile_keywords(["", "  "]) is None
    assert T.count_keywords("anything", None) == 0
    assert T.count_keywords("", pat) == 0


def test_token_stats_validation_and_helpers() -> None:
    st = T.TokenStats([0.1, 0.2], [[-0.1, -2.0], [-0.5, -1.0]], ["a", "b"])
    assert st.entropy.dtype == np.float32 and st.top_logprobs.shape == (2, 2)
    assert len(st) == 2 and st.text == "ab"
    assert len(st.head(1)) == 1 and st.head(5).pieces == ("a", "b")
    with pytest.raises(InvalidInputError):
        T.TokenStats([0.1, 0.2], [[-0.1, -2.0]], ["a", "b"])
    with pytest.raises(InvalidInputError):
        T.TokenStats([0.1], [[-0.1]], ["a", "b"])
    empty = T.TokenStats.empty(5)
    assert len(empty) == 0 and empty.top_logprobs.shape == (0, 5)
    assert len(T.TokenStats([], [], ())) == 0


def test_token_features_values() -> None:
    st = T.TokenStats([0.5, 1.5, 0.0], np.log([[0.7, 0.2], [0.4, 0.35], [0.99, 0.005]]), ())
    f = T.token_features(st)
    assert f["n_tokens"] == 3
    assert f["entropy_mean"] == pytest.approx(2.0 / 3.0)
    assert f["entropy_max"] == pytest.approx(1.5)
    assert f["top1_mean"] == pytest.approx((0.7 + 0.4 + 0.99) / 3, rel=1e-6)
    assert f["margin_min"] == pytest.approx(0.05, rel=1e-5)


def test_token_features_fallbacks_and_empty() -> None:
    one = T.token_features(T.TokenStats([0.3], np.log([[0.8]]), ()))
    assert one["top1_mean"] == pytest.approx(0.8) and one["margin_min"] == pytest.approx(0.6)
    none = T.token_features(T.TokenStats([0.3], np.zeros((1, 0)), ()))
    assert none["top1_mean"] == pytest.approx(math.exp(-0.3), rel=1e-6)
    bad = T.token_features(T.TokenStats([np.nan], [[np.nan, -np.inf]], ()))
    assert all(math.isfinite(v) for v in bad.values())
    empty = T.token_features(T.TokenStats.empty(3))
    assert empty == {k: 0.0 for k in empty}


def test_arithmetic_expressions_are_canonical() -> None:
    assert T.arithmetic_expressions("So 3 \u00d7 4 = 12 and 4*3=12.") == ["3 * 4", "3 * 4"]
    assert T.arithmetic_expressions("12 - 5 = 7, 5 - 12 = -7") == ["12 - 5", "5 - 12"]
    assert T.arithmetic_expressions("2.50 + 1 = 3.5 and 1 + 2.5 = 3.5") == ["1 + 2.5", "1 + 2.5"]
    assert T.arithmetic_expressions("$6 \\times 7 = 42$, 2 + 3 + 4 = 9") == ["6 * 7", "2 + 3 + 4"]
    assert T.arithmetic_expressions("x2 + 3 = 5; no maths here; 7 = 7") == []


def test_repetition_tracker() -> None:
    rt = T.RepetitionTracker(ngram=8, min_words=3)
    first = "We compute 12 * 7 = 84 for the total cost."
    assert rt.measure(first) == {"max_jaccard": 0.0, "ngram_containment": 0.0, "arith_total": 1.0,
                                 "arith_repeats": 0.0}
    rt.add(first)
    same = rt.measure(first)
    assert same["max_jaccard"] == pytest.approx(1.0)
    assert same["ngram_containment"] == pytest.approx(1.0)
    assert same["arith_repeats"] == 1.0
    other = rt.measure("Completely unrelated sentence about geometry here")
    assert other["max_jaccard"] < 0.2 and other["ngram_containment"] < 0.2 and other["arith_total"] == 0
    assert rt.n_steps == 1  # measure() does not record
    partial = rt.measure("Let me recheck: 7 * 12 = 84, and 5 + 5 = 10, 5+5=10.")
    assert partial["arith_total"] == 3 and partial["arith_repeats"] == 2
    rt.add("ok")  # too short for Jaccard
    assert rt.measure("ok")["max_jaccard"] == 0.0
    rt.reset()
    assert rt.n_steps == 0 and rt.measure(first)["max_jaccard"] == 0.0


def test_jaccard_takes_the_best_earlier_step() -> None:
    rt = T.RepetitionTracker()
    rt.add("alpha beta gamma delta")
    rt.add("alpha beta epsilon zeta eta theta")
    m = rt.measure("alpha beta gamma delta epsilon")
    assert m["max_jaccard"] == pytest.approx(4 / 5)


def test_jaccard_matches_brute_force_on_random_traces() -> None:
    rng = np.random.default_rng(3)
    vocab = [f"w{i}" for i in range(300)]
    texts = [" ".join(rng.choice(vocab, size=int(rng.choice([1, 2, 5, 20, 60])))) for _ in range(120)]
    rt = T.RepetitionTracker(min_words=3)
    for i, text in enumerate(texts):
        words = T.word_set(text)
        best = 0.0
        if len(words) >= 3:
            for prev in texts[:i]:
                pw = T.word_set(prev)
                if len(pw) >= 3:
                    best = max(best, len(words & pw) / len(words | pw))
        assert rt.measure(text)["max_jaccard"] == pytest.approx(best, abs=1e-12)
        rt.add(text)
