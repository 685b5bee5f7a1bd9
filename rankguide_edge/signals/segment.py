"""Step segmentation of generated reasoning text.

A *step* ends at the token whose piece completes a delimiter occurrence (``"\\n\\n"`` by default), or at the
``max_step_tokens``-th token of the step, whichever comes first. A delimiter occurrence only ends a step when
the step has non-whitespace text before it, so runs of blank lines never produce empty steps: they become
leading whitespace of the next step.

Token-level and text-level views differ by design when a piece straddles a boundary: for ``".\\n\\nThe"`` the
*token* belongs to the step it ends (its hidden state is part of that step), while the *text* after the
delimiter (``"The"``) is carried over to the start of the next step's text. Concatenating all step texts
(plus the final partial one) always reproduces the generated text exactly.
"""

from __future__ import annotations

from ..errors import ConfigError

#: the step delimiter, a blank line: its one definition (collab, steering, tasks and the benchmarks import it)
DEFAULT_DELIMITER = "\n\n"


def _find_end(buf: str, delimiter: str, search_from: int, start: int = 0) -> int:
    """Index just past the first delimiter occurrence at or after ``search_from`` with non-whitespace text
    between ``start`` and it, or -1."""
    pos = buf.find(delimiter, max(start, search_from))
    while pos >= 0:
        if buf[start:pos].strip():
            return pos + len(delimiter)
        pos = buf.find(delimiter, pos + 1)
    return -1


class StepSegmenter:
    """Incremental segmenter fed one token piece at a time.

    ``feed(piece)`` returns True when the step just ended with this token; the completed step's text is then
    :attr:`last_step` and its token count :attr:`last_step_tokens`. ``flush()`` ends a final partial step.
    """

    def __init__(self, delimiter: str = DEFAULT_DELIMITER, max_step_tokens: int = 256) -> None:
        if not delimiter:
            raise ConfigError("the step delimiter is empty; pass a non-empty delimiter such as '\\n\\n'")
        if max_step_tokens < 1:
            raise ConfigError(f"max_step_tokens={max_step_tokens} must be at least 1")
        self.delimiter = delimiter
        self.max_step_tokens = int(max_step_tokens)
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next piece starts the first step of a new trace."""
        self._buf = ""
        self._n = 0
        self.last_step = ""
        self.last_step_tokens = 0
        self.n_steps = 0

    @property
    def text(self) -> str:
        """Text of the current (unfinished) step, including text carried over from the previous token."""
        return self._buf

    @property
    def n_tokens(self) -> int:
        """Tokens fed to the current (unfinished) step."""
        return self._n

    def feed(self, piece: str) -> bool:
        """Add one token's text piece; True when this token ends the step."""
        search_from = len(self._buf) - len(self.delimiter) + 1
        self._buf += piece
        self._n += 1
        end = _find_end(self._buf, self.delimiter, search_from)
        if end >= 0:
            self._finish(end)
            return True
        if self._n >= self.max_step_tokens:
            self._finish(len(self._buf))
            return True
        return False

    def flush(self) -> str:
        """End the current step at the end of generation and return its text ("" if nothing was fed)."""
        text = self._buf
        self.last_step, self.last_step_tokens = text, self._n
        if self._n or text:
            self.n_steps += 1
        self._buf, self._n = "", 0
        return text

    def _finish(self, end: int) -> None:
        self.last_step, self.last_step_tokens = self._buf[:end], self._n
        self._buf, self._n = self._buf[end:], 0
        self.n_steps += 1


def split_steps(text: str, delimiter: str = DEFAULT_DELIMITER) -> list[str]:
    """Split offline text into steps with the segmenter's rules (character level, no token cap).

    Each step keeps its trailing delimiter, whitespace-only runs join the next step, and
    ``"".join(split_steps(text)) == text``. The last element is the unterminated tail, if any.
    """
    if not delimiter:
        raise ConfigError("the step delimiter is empty; pass a non-empty delimiter such as '\\n\\n'")
    steps: list[str] = []
    start = 0
    while start < len(text):
        end = _find_end(text, delimiter, start, start)
        if end < 0:
            steps.append(text[start:])
            break
        steps.append(text[start:end])
        start = end
    return steps
