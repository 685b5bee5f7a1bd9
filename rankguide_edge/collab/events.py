"""The one event model of a solve, shared by ``solve``, ``chat``, the Python API's event stream and the server.

:meth:`~rankguide_edge.collab.reasoner.Reasoner.solve` calls ``on_event(kind, payload)`` with:

* ``("token", Token)`` -- text as it is written, by either model. ``Token.final`` True: the text can never be
  withdrawn (an LRM step; an SRM step no policy can hand to the LRM: policy ``srm``, decisions made ``pre``
  before drafting, a step past the LRM share). False: a draft a ``post``/``early`` decision may still replace.
* ``("discard", n_chars)`` -- the non-final tokens of the current step are withdrawn (the draft was routed);
  it comes before the first token of the LRM's replacement.
* ``("step", StepRecord)`` -- a step is kept; its text is final.

Invariants (tested): the texts of all final tokens, in order, always spell a prefix of the answer; after each
``step`` event the answer so far is the kept steps' texts joined. So a client that shows final tokens at once
and, at each ``step``, whatever of the step it has not shown yet, never shows text that later disappears. A
backend that cannot stream (a remote LRM) sends no tokens: its step arrives whole with the ``step`` event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Token:
    """Text one model just wrote: ``text`` (a token's piece, cut at the step's end), ``source`` "srm" or "lrm",
    ``step`` the index of the step it belongs to, ``final`` whether it can never be withdrawn."""

    text: str
    source: str
    step: int
    final: bool


EventSink = Callable[[str, Any], None]


class FinalText:
    """The text a consumer may show for good, from the event stream: final tokens at once, and at each kept step
    whatever of it was not shown yet. ``advance(kind, payload)`` returns the new text to show ("" if none)."""

    def __init__(self) -> None:
        self.kept = ""  # the kept steps' texts
        self.text = ""  # kept + final tokens of the unfinished step: never withdrawn

    def advance(self, kind: str, payload: Any) -> str:
        before = len(self.text)
        if kind == "token" and payload.final:
            self.text += payload.text
        elif kind == "step":
            self.kept += payload.text
            if not self.text.startswith(self.kept):  # the step was not (all) streamed as final tokens
                self.text = self.kept
        return self.text[before:]


__all__ = ["EventSink", "FinalText", "Token"]
