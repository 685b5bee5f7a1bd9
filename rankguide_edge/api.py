"""The Python API the CLI, the server and the benchmark share: open a solver, ask it questions.

>>> with Solver() as s:   # the default SRM and LRM (engine.models.DEFAULT_SRM, DEFAULT_LRM)  # doctest: +SKIP
...     out = s.solve("A baker makes 12 trays of 8 muffins and sells 75. How many are left?")
...     out.answer, out.result.lrm_share
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .collab.backends import LRMBackend
from .collab.events import EventSink
from .collab.lrm import RemoteOptions, config_needs_lrm
from .collab.reasoner import ReasonerConfig, SolveResult, check_question, check_reasoner_config
from .collab.solver import open_reasoner
from .config import RuntimeConfig
from .engine import load_model
from .engine.models import DEFAULT_LRM, DEFAULT_SRM
from .engine.prompts import prompt_for
from .signals.step import SignalConfig
from .tasks.answers import extract_answer


@dataclass
class Answer:
    """A solved question: the extracted final ``answer`` (None when none was found) and the full result."""

    question: str
    answer: str | None
    result: SolveResult

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question, "answer": self.answer, "text": self.result.answer_text,
                **{k: v for k, v in self.result.to_dict().items() if k != "answer_text"}}


class Solver:
    """An SRM (local GGUF, tapped) and an optional LRM (local GGUF or OpenAI-compatible URL) solving together.

    ``lrm=None``, or a config that never calls an LRM (policy ``srm`` without a plan: ``collab.lrm``'s rule),
    loads no LRM. ``lrm_*`` reach a remote LRM (None: RemoteConfig's defaults). Owns the models it loaded; close
    it (or use ``with``). A config the reasoner would refuse (policy, decision point, router file) fails before
    any model loads.
    """

    def __init__(self, srm: str | os.PathLike[str] = DEFAULT_SRM, lrm: str | None = DEFAULT_LRM, *,
                 config: ReasonerConfig | None = None, signals: SignalConfig | None = None,
                 runtime: RuntimeConfig | None = None, lrm_model: str | None = None,
                 lrm_api_key: str | None = None, lrm_timeout: float | None = None, lrm_retries: int | None = None,
                 progress: bool = True) -> None:
        self.config = check_reasoner_config(config or ReasonerConfig())  # before any model loads
        self.runtime = runtime or RuntimeConfig(seed=self.config.seed)
        self.srm_name = os.fspath(srm)
        self.lrm_name = lrm if (lrm and config_needs_lrm(self.config)) else None
        self.srm = load_model(srm, self.runtime, progress=progress)
        try:
            self.reasoner = open_reasoner(
                self.srm, self.config, lrm=self.lrm_name, runtime=self.runtime, signals=signals, progress=progress,
                remote=RemoteOptions(model=lrm_model, api_key=lrm_api_key, timeout=lrm_timeout, retries=lrm_retries))
        except BaseException:
            self.srm.close()
            raise

    @property
    def lrm(self) -> LRMBackend | None:
        """The LRM backend (owned by the reasoner), None when this solver has none."""
        return self.reasoner.lrm

    def solve(self, question: str, *, kind: str | None = "generic", on_event: EventSink | None = None) -> Answer:
        """Solve one question. ``kind`` (gsm8k, svamp, math, generic) adds the answer-format instruction and
        picks the answer extractor; ``kind=None`` sends the question as is."""
        check_question(question)
        text = prompt_for(question, kind) if kind else question
        result = self.reasoner.solve(text, on_event=on_event)
        return Answer(question=question, answer=extract_answer(result.answer_text, kind or "generic"),
                      result=result)

    def chat(self, messages: Sequence[tuple[str, str]], on_event: EventSink | None = None) -> SolveResult:
        """One assistant turn for a conversation of ``(role, content)`` messages."""
        return self.reasoner.solve(list(messages), on_event=on_event)

    def reconfigure(self, **changes: Any) -> None:
        self.reasoner.reconfigure(**changes)
        self.config = self.reasoner.config

    def close(self) -> None:
        self.reasoner.close()  # and the LRM backend it owns
        self.srm.close()

    def __enter__(self) -> Solver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
