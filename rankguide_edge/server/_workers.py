"""The worker pool behind the server: N threads, each owning one solver (one SRM context), fed FIFO.

A request becomes a :class:`Job`. :meth:`WorkerPool.submit` queues it (or refuses it when the queue is full);
the first free worker applies the job's per-request settings with ``solver.reconfigure(**changes)``, runs
``solver.chat`` and restores the server's defaults afterwards, so settings never leak between requests. The
worker reports through ``job.sink(kind, payload)``, called from the worker thread:

* ``("started", None)`` -- the first token or step exists (the prompt was accepted);
* ``("delta", (text, {"step": i, "source": "srm"|"lrm"}))`` -- new answer text as soon as it can never be
  withdrawn: final tokens one by one, a draft a policy could still replace only once its step is kept (so
  drafts the LRM replaces are never sent), with stop strings cut;
* ``("done", Outcome)``, ``("error", exception)`` or ``("cancelled", reason)`` -- exactly one of them, last.

Cancelling a job (client gone, timeout) makes the solver's event sink raise a private exception at the next
token, which aborts the step loop; the next solve resets the context.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..collab.events import FinalText
from ..errors import RankGuideError
from .metrics import Metrics

log = logging.getLogger("rankguide_edge.server")

Sink = Callable[[str, Any], None]


class SolverLike(Protocol):
    """What a worker needs from a solver (:class:`~rankguide_edge.collab.solver.Solver` fits).

    ``srm`` (a loaded Model, optional) is used to count prompt tokens.
    """

    config: Any  # ReasonerConfig

    def chat(self, messages: Sequence[tuple[str, str]], on_event: Callable[[str, Any], None] | None = None
             ) -> Any: ...

    def reconfigure(self, **changes: Any) -> None: ...

    def close(self) -> None: ...


SolverFactory = Callable[[int], SolverLike]


class QueueFull(Exception):
    """Private: the pool cannot take another request now."""


class _Abort(Exception):
    """Private: raised from the event sink to end a solve early (``reason``: stop, disconnect, timeout)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass
class Job:
    """One request for a worker.

    ``messages``: ``(role, content)`` pairs. ``changes``: ReasonerConfig fields to apply for this request only.
    ``stop``: stop strings cut from the answer. ``deadline``: ``time.monotonic()`` value after which the job
    is cancelled with reason ``timeout`` (None = never).
    """

    messages: list[tuple[str, str]]
    changes: dict[str, Any]
    stop: tuple[str, ...]
    sink: Sink
    deadline: float | None = None
    enqueued: float = dataclasses.field(default_factory=time.monotonic)
    queue_seconds: float = 0.0
    cancel_reason: str | None = None
    _cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    _state: str = "new"  # new -> queued -> running -> finished

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()


@dataclasses.dataclass
class Outcome:
    """A finished request. ``text``: the answer (stop strings cut). ``finish_reason``: ``stop`` (the model
    ended, or a stop string) or ``length``. ``steps``: the kept StepRecords. ``usage``: the reasoner's usage
    dict (srm_tokens, srm_discarded_tokens, lrm_tokens, lrm_calls, lrm_failures, ...)."""

    text: str
    finish_reason: str
    prompt_tokens: int
    steps: list[Any]
    usage: dict[str, int]
    policy: str
    threshold: float
    decide: str
    finished: bool
    timing: dict[str, float]
    queue_seconds: float
    lrm_available: bool
    steering: dict[str, Any] | None = None

    @property
    def srm_kept_tokens(self) -> int:
        return max(0, self.usage.get("srm_tokens", 0) - self.usage.get("srm_discarded_tokens", 0))

    @property
    def completion_tokens(self) -> int:
        return self.srm_kept_tokens + self.usage.get("lrm_tokens", 0)


def first_stop(text: str, stops: Sequence[str], start: int = 0) -> int | None:
    """Index where the earliest stop string begins in ``text`` at or after ``start``, else None."""
    best: int | None = None
    for s in stops:
        i = text.find(s, start) if s else -1
        if i >= 0 and (best is None or i < best):
            best = i
    return best


def usage_of_steps(steps: Sequence[Any]) -> dict[str, int]:
    """A usage dict summed over StepRecords (when a solve was stopped before it returned its own)."""
    return {
        "srm_tokens": sum(s.srm_tokens for s in steps),
        "srm_discarded_tokens": sum(s.discarded_tokens for s in steps),
        "lrm_tokens": sum(s.lrm_tokens for s in steps),
        "lrm_calls": sum(1 for s in steps if s.source == "lrm" or s.lrm_error),
        "lrm_failures": sum(1 for s in steps if s.lrm_error),
        "lrm_prefill_tokens": sum(s.lrm_prefill_tokens for s in steps),
    }


class _Collector:
    """The solver's event sink for one job: checks cancellation on every event and turns the text that can never
    be withdrawn (final tokens at once, the rest of a step when it is kept: :class:`~rankguide_edge.collab.events.
    FinalText`) into deltas, holding back the last ``len(longest stop) - 1`` characters so a stop string split
    across two deltas is still cut."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.stops = tuple(s for s in job.stop if s)
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.final = FinalText()
        self.text = ""
        self.sent = 0
        self.steps: list[Any] = []
        self.started = False
        self.stopped = False
        self._last_info: dict[str, Any] = {"step": 0, "source": "srm"}

    def __call__(self, kind: str, payload: Any) -> None:
        job = self.job
        if job.cancelled:
            raise _Abort(job.cancel_reason or "cancelled")
        if job.deadline is not None and time.monotonic() > job.deadline:
            job.cancel_reason = "timeout"
            job._cancel.set()
            raise _Abort("timeout")
        if kind not in ("token", "step"):
            return
        if not self.started:
            self.started = True
            job.sink("started", None)
        if kind == "step":
            self.steps.append(payload)
        new = self.final.advance(kind, payload)
        if not new:
            return
        self._last_info = {"step": payload.step if kind == "token" else payload.index, "source": payload.source}
        before = len(self.text)
        full = self.text + new
        hit = first_stop(full, self.stops, max(0, before - self.hold)) if self.stops else None
        if hit is not None:
            self.text = full[:hit]
            self.stopped = True
            self.flush()
            raise _Abort("stop")
        self.text = full
        upto = max(self.sent, len(self.text) - self.hold)
        self._emit(upto)

    def _emit(self, upto: int) -> None:
        if upto > self.sent:
            self.job.sink("delta", (self.text[self.sent:upto], dict(self._last_info)))
            self.sent = upto

    def flush(self) -> None:
        """Send whatever text is still held back."""
        self._emit(len(self.text))


class WorkerPool:
    """``parallel`` worker threads over solvers made by ``factory(index)``; at most ``queue_size`` jobs wait.

    Jobs are served first in, first out. :attr:`defaults` is the first solver's ReasonerConfig as a dict: the
    settings every request starts from.
    """

    def __init__(self, factory: SolverFactory, parallel: int = 1, queue_size: int = 16,
                 metrics: Metrics | None = None) -> None:
        self.factory = factory
        self.parallel = parallel
        self.queue_size = queue_size
        self.metrics = metrics or Metrics()
        self.defaults: dict[str, Any] = {}
        self.lrm_available = False
        self._solvers: list[SolverLike] = []
        self._threads: list[threading.Thread] = []
        self._waiting: collections.deque[Job] = collections.deque()
        self._running: set[int] = set()
        self._jobs_running: list[Job] = []
        self._cond = threading.Condition()
        self._closing = False

    # -- life -------------------------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return bool(self._threads)

    def start(self) -> None:
        """Make the solvers (loads the models) and start the worker threads; a second call does nothing."""
        if self._threads:
            return
        try:
            for i in range(self.parallel):
                self._solvers.append(self.factory(i))
        except BaseException:
            self._close_solvers()
            raise
        self.defaults = dataclasses.asdict(self._solvers[0].config)
        self.lrm_available = bool(getattr(self._solvers[0], "lrm", None))
        self.metrics.gauge_fn("workers", lambda: float(len(self._threads)))
        self.metrics.gauge_fn("workers_busy", lambda: float(self.busy))
        self.metrics.gauge_fn("queue_depth", lambda: float(self.queued))
        for i, solver in enumerate(self._solvers):
            t = threading.Thread(target=self._loop, args=(solver,), name=f"rankguide-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def close(self, timeout: float = 30.0) -> None:
        """Cancel every job, stop the threads and close the solvers (and the factory, when it has close())."""
        with self._cond:
            self._closing = True
            waiting = list(self._waiting)
            self._waiting.clear()
            for job in self._jobs_running:
                job.cancel_reason = job.cancel_reason or "shutdown"
                job._cancel.set()
            self._cond.notify_all()
        for job in waiting:
            self._finish_cancelled(job, "shutdown")
        for t in self._threads:
            t.join(timeout=timeout)
        self._threads.clear()
        self._close_solvers()
        close = getattr(self.factory, "close", None)
        if callable(close):
            close()

    def _close_solvers(self) -> None:
        for s in self._solvers:
            try:
                s.close()
            except Exception:
                log.exception("closing a solver failed")
        self._solvers.clear()

    # -- queue --------------------------------------------------------------------------------------------------

    @property
    def busy(self) -> int:
        return len(self._running)

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def submit(self, job: Job) -> None:
        """Queue ``job``; :class:`QueueFull` when ``queue_size`` jobs already wait (or the pool is closing)."""
        with self._cond:
            idle = len(self._threads) - len(self._running)
            if self._closing or len(self._waiting) >= self.queue_size + max(0, idle):
                raise QueueFull()
            job.enqueued = time.monotonic()
            job._state = "queued"
            self._waiting.append(job)
            self._cond.notify()

    def cancel(self, job: Job, reason: str) -> None:
        """Cancel ``job``: a waiting job leaves the queue at once, a running one stops at its next token."""
        with self._cond:
            if job._state == "finished" or job.cancelled:
                return
            job.cancel_reason = reason
            job._cancel.set()
            waiting = job._state == "queued"
            if waiting:
                self._waiting.remove(job)
                job._state = "finished"
        if waiting:
            self._finish_cancelled(job, reason)

    def _finish_cancelled(self, job: Job, reason: str) -> None:
        self.metrics.inc("requests_cancelled_total", reason=reason)
        job.sink("cancelled", reason)

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the mean completion time times the queue length per worker."""
        total = count = 0.0
        for endpoint in ("/v1/chat/completions", "/v1/completions"):
            s, n = self.metrics.histogram_sum("request_duration_seconds", endpoint=endpoint)
            total, count = total + s, count + n
        mean = total / count if count else 1.0
        return int(min(600, max(1, round(mean * (1 + self.queued) / max(1, self.parallel)))))

    # -- workers ------------------------------------------------------------------------------------------------

    def _loop(self, solver: SolverLike) -> None:
        ident = threading.get_ident()
        while True:
            with self._cond:
                while not self._waiting and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                job = self._waiting.popleft()
                job._state = "running"
                self._running.add(ident)
                self._jobs_running.append(job)
            try:
                self._serve(solver, job)
            except BaseException:
                log.exception("worker crashed on a job")
            finally:
                with self._cond:
                    job._state = "finished"
                    self._running.discard(ident)
                    self._jobs_running.remove(job)

    def _restore(self, solver: SolverLike) -> None:
        if dataclasses.asdict(solver.config) != self.defaults:
            solver.reconfigure(**self.defaults)

    def _serve(self, solver: SolverLike, job: Job) -> None:
        job.queue_seconds = time.monotonic() - job.enqueued
        self.metrics.observe("queue_wait_seconds", job.queue_seconds)
        if job.deadline is not None and time.monotonic() > job.deadline:
            job.cancel_reason = "timeout"
            job._cancel.set()
        if job.cancelled:
            self._finish_cancelled(job, job.cancel_reason or "cancelled")
            return
        collector = _Collector(job)
        try:
            self._restore(solver)  # in case a previous restore failed
            if job.changes:
                solver.reconfigure(**job.changes)
            prompt_tokens = _count_prompt(solver, job.messages)
            result = None
            try:
                result = solver.chat(job.messages, on_event=collector)
            except _Abort as stop:
                if stop.reason != "stop":
                    self._account(collector.steps, usage_of_steps(collector.steps), 0)
                    self._finish_cancelled(job, stop.reason)
                    return
            collector.flush()
            outcome = self._outcome(solver, job, collector, result, prompt_tokens)
            self._account(outcome.steps, outcome.usage, prompt_tokens)
            job.sink("done", outcome)
        except _Abort as stop:  # cancelled while applying settings
            self._finish_cancelled(job, stop.reason)
        except RankGuideError as exc:
            job.sink("error", exc)
        except Exception as exc:
            log.exception("request failed")
            job.sink("error", exc)
        finally:
            try:
                self._restore(solver)
            except Exception:
                log.exception("restoring the server's default settings failed; retried before the next job")

    def _outcome(self, solver: SolverLike, job: Job, col: _Collector, result: Any, prompt_tokens: int) -> Outcome:
        cfg = solver.config
        reasoner = getattr(solver, "reasoner", solver)
        if result is not None:
            steps, usage, finished = list(result.steps), dict(result.usage), bool(result.finished)
            timing = dict(result.timing)
            steering = getattr(result, "steering", None)
            policy, threshold, decide = result.policy, result.threshold, result.decide
        else:  # a stop string ended it
            steps, usage, finished, timing = col.steps, usage_of_steps(col.steps), True, {}
            steering = getattr(reasoner, "steering", None)
            policy, decide = cfg.policy, cfg.decide
            threshold = getattr(reasoner, "threshold", cfg.threshold)  # the one in force (router's when None)
        reason = "stop" if (col.stopped or finished) else "length"
        return Outcome(text=col.text, finish_reason=reason, prompt_tokens=prompt_tokens, steps=steps, usage=usage,
                       policy=policy, threshold=threshold, decide=decide, finished=finished,
                       timing=timing, queue_seconds=round(job.queue_seconds, 4),
                       lrm_available=bool(getattr(solver, "lrm", None)), steering=steering)

    def _account(self, steps: Sequence[Any], usage: dict[str, int], prompt_tokens: int) -> None:
        m = self.metrics
        kept_srm = max(0, usage.get("srm_tokens", 0) - usage.get("srm_discarded_tokens", 0))
        m.inc("prompt_tokens_total", prompt_tokens)
        m.inc("prompt_reused_tokens_total", usage.get("srm_reused_tokens", 0))
        m.inc("completion_tokens_total", kept_srm, source="srm")
        m.inc("completion_tokens_total", usage.get("lrm_tokens", 0), source="lrm")
        m.inc("srm_discarded_tokens_total", usage.get("srm_discarded_tokens", 0))
        for src in ("srm", "lrm"):
            m.inc("steps_total", sum(1 for s in steps if s.source == src), source=src)
        m.inc("steps_routed_total", sum(1 for s in steps if s.source == "lrm" or s.lrm_error))
        m.inc("lrm_calls_total", usage.get("lrm_calls", 0))
        m.inc("lrm_failures_total", usage.get("lrm_failures", 0))


def _count_prompt(solver: SolverLike, messages: list[tuple[str, str]]) -> int:
    srm = getattr(solver, "srm", None)
    if srm is None or not hasattr(srm, "chat_prompt"):
        return 0
    from ..engine.prompts import chat_tokens

    return len(chat_tokens(srm, messages))
