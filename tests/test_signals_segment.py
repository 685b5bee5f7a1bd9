"""Step segmentation: incremental and offline, delimiter edge cases."""

from __future__ import annotations

import pytest

from rankguide_edge.errors import ConfigError
from rankguide_edge.signals.segment import StepSegmenter, split_steps


def _feed_all(seg: StepSegmenter, pieces: list[str]) -> tuple[list[bool], list[str]]:
    ended, steps = [], []
    for p in pieces:
        done = seg.feed(p)
        ended.append(done)
        if done:
            steps.append(seg.last_step)
    return ended, steps


def test_delimiter_split_across_pieces() -> None:
    seg = StepSegmenter()
    ended, steps = _feed_all(seg, ["First", " step.", "\n", "\n", "Second"])
    assert ended == [False, False, False, True, False]
    assert steps == ["First step.\n\n"]
    assert seg.last_step_tokens == 4
    assert seg.text == "Second" and seg.n_tokens == 1


def test_delimiter_inside_a_piece_carries_the_rest() -> None:
    seg = StepSegmenter()
    ended, steps = _feed_all(seg, ["So x = 2", ".\n\nThe", " next"])
    assert ended == [False, True, False]
    assert steps == ["So x = 2.\n\n"]
    assert seg.text == "The next"
    assert seg.n_tokens == 1  # the carried text's token belonged to the finished step


def test_blank_lines_never_make_empty_steps() -> None:
    seg = StepSegmenter()
    ended, _ = _feed_all(seg, ["\n\n", "\n", "\n\n", "Hello", "\n\n"])
    assert ended == [False, False, False, False, True]
    assert seg.last_step == "\n\n\n\n\nHello\n\n"
    ended, _ = _feed_all(seg, ["\n", "\n", "\n"])
    assert ended == [False, False, False]


def test_max_step_tokens_forces_an_end() -> None:
    seg = StepSegmenter(max_step_tokens=3)
    ended, steps = _feed_all(seg, ["a", "b", "c", "d", "e", "f", "g"])
    assert ended == [False, False, True, False, False, True, False]
    assert steps == ["abc", "def"]
    assert seg.n_steps == 2


def test_custom_delimiter_and_flush_and_reset() -> None:
    seg = StepSegmenter(delimiter="\n")
    ended, steps = _feed_all(seg, ["a", "\nb", "\n", "tail"])
    assert ended == [False, True, True, False]
    assert steps == ["a\n", "b\n"]
    assert seg.flush() == "tail"
    assert seg.n_steps == 3 and seg.text == "" and seg.n_tokens == 0
    seg.reset()
    assert seg.n_steps == 0 and seg.last_step == ""
    assert StepSegmenter().flush() == ""


def test_several_delimiters_in_one_piece_end_one_step_per_token() -> None:
    seg = StepSegmenter()
    assert seg.feed("A\n\nB\n\nC") is True
    assert seg.last_step == "A\n\n"
    assert seg.text == "B\n\nC"
    # the next token's arrival re-scans only the new tail, so "B\n\n" ends with a later delimiter
    assert seg.feed("\n\n") is True
    assert seg.last_step == "B\n\nC\n\n"


def test_invalid_settings() -> None:
    with pytest.raises(ConfigError):
        StepSegmenter(delimiter="")
    with pytest.raises(ConfigError):
        StepSegmenter(max_step_tokens=0)
    with pytest.raises(ConfigError):
        split_steps("x", delimiter="")


@pytest.mark.parametrize("text", [
    "", "no delimiter at all", "One.\n\nTwo.\n\nThree.", "\n\n\nLeading.\n\n\n\nGap.\n\n",
    "a\n\nb\n\n", "x\n\n\n", "  \n\n  \n\n",
])
def test_split_steps_is_lossless_and_matches_the_segmenter(text: str) -> None:
    steps = split_steps(text)
    assert "".join(steps) == text
    assert all(s.strip() for s in steps[:-1])
    seg = StepSegmenter(max_step_tokens=10_000)
    streamed = [seg.last_step for ch in text if seg.feed(ch)]
    tail = seg.flush()
    assert streamed + ([tail] if tail else []) == steps


def test_split_steps_examples() -> None:
    assert split_steps("One.\n\nTwo.\n\nThree.") == ["One.\n\n", "Two.\n\n", "Three."]
    assert split_steps("\n\n\nA\n\n\nB") == ["\n\n\nA\n\n", "\nB"]
    assert split_steps("Step 1: a Step 2: b", delimiter="Step") == ["Step 1: a Step", " 2: b"]
