"""The one solver front: settings in, a Reasoner with its LRM out; what the CLI, the server's workers, ``bench
run``, ``label`` and users call.

>>> from rankguide_edge import Solver
>>> with Solver() as s:   # the default SRM and LRM  # doctest: +SKIP
...     out = s.solve("A baker makes 12 trays of 8 muffins and sells 75. How many are left?", kind="gsm8k")
...     out.answer, out.result.lrm_share

A :class:`Solver` checks its settings and builds the router in force once, before any model loads
(:func:`~.reasoner.check_reasoner_config`: policy, decision point, router file), then attaches the LRM under the
one rule for when a solver needs one (:attr:`~.routing.StepRouter.needs_lrm`) and reads an LRM spec the one way
(:func:`~.lrm.open_lrm`: a URL is remote, a name or path local). Models and backends it opens are its own and
closed with it; ones it is handed are borrowed (the server shares loaded weights among its workers, ``bench``
one LRM backend among its methods).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import RuntimeConfig
from ..engine import load_model
from ..engine.models import DEFAULT_LRM, DEFAULT_SRM
from ..engine.prompts import prompt_for
from .events import EventSink
from .lrm import RemoteOptions, open_lrm
from .reasoner import Reasoner, ReasonerConfig, SolveResult, check_question, check_reasoner_config

if TYPE_CHECKING:
    from ..engine.model import Model
    from ..signals.step import SignalConfig
    from .backends import LRMBackend
    from .router import Router


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
    """An SRM (tapped) and the LRM its settings call, solving together. Not thread-safe: one solve at a time.

    ``srm``: a model name or GGUF path (loaded with ``runtime`` and owned) or a loaded Model (borrowed).
    ``lrm``: a model name, GGUF path or OpenAI-compatible URL (opened when the settings call an LRM, and owned;
    a local one may borrow the loaded weights ``lrm_model``; a remote one is reached with ``remote``), an open
    backend (borrowed), or None. ``details``: keep every SRM step's signals and token ids (``label``).
    """

    def __init__(self, srm: str | os.PathLike[str] | Model = DEFAULT_SRM,
                 lrm: str | LRMBackend | None = DEFAULT_LRM, *, config: ReasonerConfig | None = None,
                 signals: SignalConfig | None = None, runtime: RuntimeConfig | None = None,
                 remote: RemoteOptions | None = None, lrm_model: Model | None = None, details: bool = False,
                 progress: bool = True) -> None:
        self.config = config or ReasonerConfig()
        routing = check_reasoner_config(self.config)  # before any model loads; the router is read once here
        self.runtime = runtime or RuntimeConfig(seed=self.config.seed)
        self._own_srm = isinstance(srm, (str, os.PathLike))
        self.srm: Model = load_model(srm, self.runtime, progress=progress) if isinstance(srm, (str, os.PathLike)) \
            else srm
        self.srm_name = os.fspath(srm) if isinstance(srm, (str, os.PathLike)) else self.srm.path
        spec = lrm if isinstance(lrm, str) else None
        self.lrm_name = spec if spec and routing.needs_lrm else None
        backend: LRMBackend | None = None
        try:
            if spec is not None:
                backend = open_lrm(self.config, spec, routing=routing, runtime=self.runtime, template_model=self.srm,
                                   model=lrm_model, progress=progress, remote=remote)
            elif lrm is not None and not isinstance(lrm, str) and routing.needs_lrm:
                backend = lrm
            self.reasoner = Reasoner(self.srm, backend, self.config, signals=signals, runtime=self.runtime,
                                     details=details, own_lrm=spec is not None, routing=routing)
        except BaseException:
            if spec is not None and backend is not None:
                backend.close()
            if self._own_srm:
                self.srm.close()
            raise

    @property
    def lrm(self) -> LRMBackend | None:
        """The LRM backend, None when this solver has none."""
        return self.reasoner.lrm

    @property
    def threshold(self) -> float:
        """The routing threshold in force (the router's rule)."""
        return self.reasoner.threshold

    @property
    def router(self) -> Router:
        """The router file in force."""
        return self.reasoner.router

    @property
    def steering(self) -> dict[str, Any] | None:
        """The steering in force: ``{"file", "layers", "scale", "where"}`` or None."""
        return self.reasoner.steering

    def solve(self, question: str, *, kind: str | None = "generic", on_event: EventSink | None = None) -> Answer:
        """Solve one question. ``kind`` (gsm8k, svamp, math, generic) adds the answer-format instruction and
        picks the answer extractor; ``kind=None`` sends the question as is."""
        from ..tasks.answers import extract_answer

        check_question(question)
        text = prompt_for(question, kind) if kind else question
        result = self.reasoner.solve(text, on_event=on_event)
        return Answer(question=question, answer=extract_answer(result.answer_text, kind or "generic"),
                      result=result)

    def chat(self, messages: str | Sequence[tuple[str, str]], on_event: EventSink | None = None) -> SolveResult:
        """One assistant turn for a conversation of ``(role, content)`` messages (a str is one user message)."""
        return self.reasoner.solve(messages if isinstance(messages, str) else list(messages), on_event=on_event)

    def reconfigure(self, **changes: Any) -> None:
        """Change settings between solves (chat's /policy, the server's per-request fields, bench's matched p)."""
        self.reasoner.reconfigure(**changes)
        self.config = self.reasoner.config

    def close(self) -> None:
        self.reasoner.close()  # and the LRM backend it owns
        if self._own_srm:
            self.srm.close()

    def __enter__(self) -> Solver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Answer", "Solver"]
