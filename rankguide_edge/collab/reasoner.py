"""The step loop: the SRM drafts, a policy scores, the LRM rewrites the steps that score at or above the threshold.

One :class:`Reasoner` owns the SRM's tapped context and borrows an LRM backend (or owns it: ``own_lrm``, as
the :class:`~.solver.Solver` front builds it from a spec). Per step:

* ``post``:  the SRM drafts the whole step; the policy scores it; if routed, the draft is rolled back out of
  the SRM's KV cache and the LRM writes the step from the same prefix;
* ``early``: the SRM drafts; after ``early_tokens`` (then every ``early_every`` tokens) the policy scores the
  partial draft and may stop it at once and hand the step to the LRM;
* ``pre``:   before drafting, the policy scores the previous SRM step's signals; if routed the LRM writes the
  step and the SRM drafts nothing. After an LRM step there are no fresh SRM signals, so the next step is
  drafted by the SRM (``pre`` never routes twice in a row).

A step the LRM wrote is appended to the SRM's context (one prefill batch), so the SRM continues from it; the
LRM backend keeps its own cache warm lazily (it prefills SRM-written text only when next called). After
``revalidation_k`` consecutive revalidation-heavy SRM steps the step is routed whatever the score. When the
LRM fails (unreachable, error, empty text) the SRM's step is kept and the step says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..config import RuntimeConfig, SamplingConfig, bounded, from_mapping, same_as, validate
from ..engine.context import STEER_WHERE
from ..engine.layers import parse_layer_spec
from ..engine.model import Model
from ..engine.prompts import chat_tokens
from ..errors import ContextOverflowError, InvalidInputError
from ..signals.step import SignalConfig, StepSignalComputer
from ..steering.apply import apply_steering
from .backends import LRMBackend, StepRequest
from .events import EventSink, Token
from .policies import DECISION_POINTS, StepView, available_policies
from .router import Router, load_router
from .routing import StepRouter
from .stepping import DraftStep, draft_step, join_drafts

#: what the SRM keeps of the last prompt it read (see ``ReasonerConfig.prefix_reuse``)
PREFIX_REUSE = ("exact", "all", "off")


@dataclass(frozen=True)
class ReasonerConfig:
    policy: str = bounded("rankguide", registry=available_policies,
                          help="routing policy; srm never routes, lrm lets the LRM write every step")
    threshold: float | None = bounded(None, lo=0.0, hi=1.0, help="route a step when the policy score >= threshold",
                                      unset="the router's threshold for the decision point")
    router: str = bounded("", path="file", help="router file from `rankguide-edge router fit` or `calibrate`",
                          unset="the shipped one, learned from intervention labels on GSM8K train problems of the "
                                "default pair")
    decide: str = bounded("post", choices=DECISION_POINTS, help="judge the finished step (post), its first tokens "
                          "(early) or predict it (pre); the shipped router has a threshold for post only")
    early_tokens: int = bounded(8, lo=1, hi=4096, help="early: first check after this many draft tokens")
    early_every: int = bounded(4, lo=1, hi=4096, help="early: then check every this many tokens")
    revalidation_k: int = bounded(3, lo=0, hi=1000, help="route after K consecutive revalidation steps; 0 = off")
    revalidation_level: float = bounded(0.5, lo=0.0, hi=1.0, help="fail.revalidation at or above it counts")
    max_tokens: int = bounded(768, lo=8, hi=262144, help="token budget of the whole answer")
    max_step_tokens: int = same_as(SignalConfig, "max_step_tokens")
    max_lrm_share: float = bounded(1.0, lo=0.0, hi=1.0, help="stop routing once this share of steps is LRM's")
    lrm_first: int | None = bounded(None, lo=0, hi=1000, help="the LRM writes the first N steps (the plan) "
                                    "whatever the score, then the policy decides",
                                    unset="the router's value (1 in the shipped router) when the policy is the "
                                          "router's, else 0")
    route_steps: int = bounded(0, lo=0, hi=1000, help="the policy may route only the first N SRM steps after the "
                               "plan; 1 with policy verify is the first-step check", unset="any step")
    temperature: float = same_as(SamplingConfig, "temperature")
    top_p: float = same_as(SamplingConfig, "top_p")
    seed: int = same_as(RuntimeConfig, "seed", help="seed of the sampler (and of the random policy)")
    layers: str = bounded("auto", help="SRM layers tapped for signals: auto (4 evenly spaced, ending at the last), "
                                       "all, last, or a list like 5,11,17,23 or 20-23")
    random_p: float = bounded(0.2, lo=0.0, hi=1.0, help="routing probability of the random policy")
    steer: str = bounded("", path="file", unset="no steering",
                         help="steer the SRM with this control-vector .gguf (from `rankguide-edge steer extract`, "
                              "llama.cpp's cvector-generator or repeng)")
    steer_scale: float = bounded(1.0, lo=-64.0, hi=64.0, help="multiplier of the steering vector (0 = no effect)")
    steer_where: str = bounded("all", choices=STEER_WHERE,
                               help="add the vector on every token, or only on generated step-delimiter tokens")
    prefix_reuse: str = bounded("exact", choices=PREFIX_REUSE,
                                help="what the SRM keeps of the last prompt it read: exact (whole prefill blocks, "
                                     "answers equal a cold start's), all (every common token, like llama-server's "
                                     "cache; faster, may differ in near-ties) or off")

    def __post_init__(self) -> None:
        validate(self)
        if self.policy == "lrm":  # the LRM writes every step: drafting with the SRM first would be pure waste
            object.__setattr__(self, "decide", "pre")


def check_reasoner_config(cfg: ReasonerConfig, *, decide_option: str = "--decide") -> StepRouter:
    """The :class:`~.routing.StepRouter` a :class:`Reasoner` with ``cfg`` would use, checked without a model:
    the policy exists and can decide at ``cfg.decide``, and the router file (if any) exists and is well formed.
    Else ConfigError or InvalidInputError. ``decide_option`` is how the fix names the decision point
    (``decide`` for the server)."""
    return StepRouter(cfg, decide_option=decide_option)


def check_question(question: str) -> str:
    """``question`` unless it is empty or blank (InvalidInputError)."""
    if not question.strip():
        raise InvalidInputError("the question is empty: give the problem to solve")
    return question


@dataclass
class StepRecord:
    index: int
    text: str
    source: str  # "srm" | "lrm"
    routed: bool
    score: float | None
    reason: str  # why it was routed (or would have been): policy, revalidation or first
    failure: dict[str, float] = field(default_factory=dict)
    srm_tokens: int = 0  # drafted by the SRM for this step (kept or thrown away)
    discarded_tokens: int = 0
    lrm_tokens: int = 0
    lrm_prefill_tokens: int = 0
    lrm_error: str | None = None
    seconds: float = 0.0
    #: the LRM's teacher-forced check of the draft (``lrm.*`` features) when the policy asked for one
    check: dict[str, float] | None = None
    #: with ``Reasoner(details=True)``: every signal of the kept SRM step, its token ids, and the mean of its
    #: hidden rows at the deepest tapped layer (float32 ``(n_embd,)``, the input of a hidden-state probe)
    signals: dict[str, float] | None = None
    token_ids: list[int] | None = None
    pooled: Any = None


@dataclass
class SolveResult:
    answer_text: str
    steps: list[StepRecord]
    finished: bool
    timing: dict[str, float]
    usage: dict[str, int]
    policy: str
    threshold: float
    decide: str
    steering: dict[str, Any] | None = None  # {"file", "layers", "scale", "where"} when the SRM was steered
    lrm_first: int = 0  # the first steps handed to the LRM before the policy decided (the plan)

    @property
    def lrm_share(self) -> float:
        return sum(s.source == "lrm" for s in self.steps) / len(self.steps) if self.steps else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lrm_share"] = self.lrm_share
        return d


def pooled_state(hidden: dict[int, Any]) -> Any:
    """The mean hidden row of a step at its deepest tapped layer (float32 ``(n_embd,)``), None without rows."""
    if not hidden:
        return None
    rows = hidden[max(hidden)]
    return rows.mean(axis=0).astype("float32") if len(rows) else None


class Reasoner:
    """SRM + LRM collaboration over one SRM context. Not thread-safe: one solve at a time."""

    def __init__(self, srm: Model, lrm: LRMBackend | None, config: ReasonerConfig | None = None, *,
                 signals: SignalConfig | None = None, runtime: RuntimeConfig | None = None,
                 details: bool = False, own_lrm: bool = False, routing: StepRouter | None = None) -> None:
        """``routing``: the config's router when the caller built it already (it is then not built again)."""
        self.srm, self.lrm = srm, lrm
        self._own_lrm = own_lrm  # close() closes the backend too
        self.details = details  # keep every SRM step's signals and token ids in its StepRecord (label files)
        self.config = config or ReasonerConfig()
        self.signal_cfg = signals or SignalConfig(max_step_tokens=self.config.max_step_tokens)
        self.runtime = runtime or RuntimeConfig(seed=self.config.seed)
        layers = parse_layer_spec(self.config.layers, srm.n_layer)
        self.ctx = srm.context(self.runtime, tap_layers=layers)
        self.computer = StepSignalComputer(self.signal_cfg)
        try:
            self.routing = routing if routing is not None else StepRouter(self.config)
            self.routing.check_backend(lrm)
            self._steer_state = self._apply_steering(self.config)
        except BaseException:
            self.ctx.close()
            raise

    def reconfigure(self, **changes: Any) -> None:
        """Change policy/threshold/decision point/steering between solves (chat's /policy, /threshold, /steer)."""
        cfg = from_mapping(ReasonerConfig, {**asdict(self.config), **changes})  # unknown keys: ConfigError
        routing = StepRouter(cfg, load_router(cfg.router) if cfg.router != self.config.router else self.router)
        routing.check_backend(self.lrm)
        # naming the file again re-reads it if it changed (chat's /steer after a new `steer extract`)
        if self._steering_key(cfg) != self._steering_key(self.config) or (cfg.steer and "steer" in changes):
            self._steer_state = self._apply_steering(cfg)
        self.routing, self.config = routing, cfg

    @property
    def router(self) -> Router:
        """The router file in force."""
        return self.routing.file

    @property
    def policy(self) -> Any:
        """The routing policy in force (the router's)."""
        return self.routing.policy

    @property
    def threshold(self) -> float:
        """The routing threshold in force (the router's rule: :mod:`.routing`)."""
        return self.routing.threshold

    @property
    def lrm_first(self) -> int:
        """How many first steps the LRM writes (the router's rule: :mod:`.routing`)."""
        return self.routing.plan

    @staticmethod
    def _steering_key(cfg: ReasonerConfig) -> tuple[str, float, str]:
        return (cfg.steer, cfg.steer_scale, cfg.steer_where)

    def _apply_steering(self, cfg: ReasonerConfig) -> dict[str, Any] | None:
        return apply_steering(self.ctx, cfg.steer or None, cfg.steer_scale, cfg.steer_where,
                              self.signal_cfg.delimiter)

    @property
    def steering(self) -> dict[str, Any] | None:
        """The steering in force: ``{"file", "layers", "scale", "where"}`` or None."""
        return self._steer_state

    def close(self) -> None:
        self.ctx.close()
        if self._own_lrm and self.lrm is not None:
            self.lrm.close()
            self.lrm = None

    def __enter__(self) -> Reasoner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the loop -----------------------------------------------------------------------------------------------

    def solve(self, messages: str | Sequence[tuple[str, str]], on_event: EventSink | None = None) -> SolveResult:
        """Answer ``messages`` (a str is one user message). ``on_event(kind, payload)`` streams progress in the
        event model of :mod:`.events`: ("token", Token) as either model writes, final when no policy can
        withdraw it, ("discard", n_chars) when a draft is thrown away, ("step", StepRecord) when a step is kept."""
        msgs = [("user", messages)] if isinstance(messages, str) else list(messages)
        check_question(msgs[-1][1] if msgs else "")
        cfg = self.config
        routing = self.routing
        emit = on_event or (lambda kind, payload: None)
        t_start = time.perf_counter()
        timing = {"srm": 0.0, "lrm": 0.0, "signals": 0.0, "lrm_check": 0.0}
        usage = {"srm_tokens": 0, "srm_discarded_tokens": 0, "lrm_tokens": 0, "lrm_calls": 0,
                 "lrm_failures": 0, "lrm_prefill_tokens": 0, "srm_prefill_tokens": 0, "lrm_checks": 0,
                 "lrm_check_prefill_tokens": 0}
        ctx = self.ctx
        prompt = chat_tokens(self.srm, msgs)
        if len(prompt) + 1 > ctx.n_ctx:
            raise ContextOverflowError(f"the question takes {len(prompt)} tokens but the SRM context holds "
                                       f"{ctx.n_ctx}: shorten it or raise --n-ctx")
        # the SRM keeps what an earlier solve already read of this prompt (a conversation's earlier turns, a
        # shared system prompt); "exact" only what a cold start would have computed the same
        if cfg.prefix_reuse == "off":
            ctx.reset()
        usage["srm_reused_tokens"] = ctx.keep_prefix(prompt, exact=cfg.prefix_reuse == "exact")
        ctx.reseed(cfg.seed)  # a solve's sampling depends on its seed only, not on earlier solves
        self.computer.reset()
        routing.reset()
        seg = self.signal_cfg.segmenter()
        # text the SRM has not read yet (the prompt, then LRM steps): fed right before it next drafts, so a run
        # whose remaining steps all go to the LRM (policy lrm) never spends SRM time on them
        pending: list[int] = prompt[usage["srm_reused_tokens"]:]

        def catch_up() -> None:
            if pending:
                t0 = time.perf_counter()
                ctx.prefill(pending)
                timing["srm"] += time.perf_counter() - t0
                usage["srm_prefill_tokens"] += len(pending)
                pending.clear()

        problem = msgs[-1][1]
        sampling = SamplingConfig(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens)
        steps: list[StepRecord] = []
        prefix = ""
        used = 0
        finished = False
        prev_signals: dict[str, float] = {}
        while used < cfg.max_tokens and ctx.n_past + len(pending) < ctx.n_ctx - 1:
            budget = min(cfg.max_tokens - used, ctx.n_ctx - 1 - ctx.n_past - len(pending))
            t_step = time.perf_counter()
            n0 = ctx.n_past
            before: tuple[Any, ...] | None = None  # signal state before this step's draft was scored
            can_route = self.lrm is not None and routing.may_route([s.source for s in steps])
            lrm_allowed = can_route and cfg.policy != "srm" and routing.in_window(len(steps))
            draft: DraftStep | None = None
            score: float | None = None
            reason = "policy"
            signals: dict[str, float] = {}
            checked: dict[str, float] = {}
            point = routing.point
            # the plan goes to the LRM, no draft (policy srm too: "the LRM plans, the SRM executes")
            first = can_route and routing.plans(len(steps))
            if first:
                reason = "first"
            else:
                score = point.before(routing, lambda: StepView(  # called at once: binds this iteration's state
                    "pre", len(steps), "", 0, prev_signals, prefix, problem=problem))  # noqa: B023
            if not first and not (lrm_allowed and routing.routes(score)):
                early = point.during(routing) if lrm_allowed else None

                # draft_step below calls this only during this iteration, so the loop's current step and
                # prefix are the ones meant (B023 warns about closures that outlive their iteration)
                def check_early(partial: DraftStep, check: Any = early) -> bool:
                    s0 = time.perf_counter()
                    sig = self.computer.compute_partial(partial.hidden, partial.stats, partial.text)
                    timing["signals"] += time.perf_counter() - s0
                    return bool(check(StepView("early", len(steps), partial.text, partial.n_tokens,  # noqa: B023
                                               sig, prefix, problem=problem)))  # noqa: B023

                # final: no decision after the draft can hand it to the LRM (decided before the draft, and the
                # revalidation streak cannot reach its limit with this step)
                draft_final = not lrm_allowed or (point.decided_before and not routing.streak_may_force())
                catch_up()
                n0 = ctx.n_past
                draft = draft_step(ctx, seg, sampling, budget, early=check_early if early is not None else None,
                                   early_from=cfg.early_tokens, early_every=cfg.early_every,
                                   on_token=self._token_sink(emit, "srm", len(steps), draft_final))
                timing["srm"] += draft.seconds
                usage["srm_tokens"] += draft.n_tokens
                if draft.ended_by == "early":
                    score = early.last if early is not None else None
                elif draft.n_tokens:
                    before = self.computer.snapshot()  # undone if the draft is routed away
                    signals = self._signals(draft, timing)
                    prev_signals = signals
                    done = draft
                    # scored only where the score can route (a policy's score may cost an LRM check)
                    score = None if not lrm_allowed else point.after(routing, lambda: StepView(
                        "post", len(steps), done.text, done.n_tokens, signals, prefix,  # noqa: B023
                        judge=self._judge(msgs, prefix), problem=problem,  # noqa: B023
                        check=self._check(msgs, prefix, checked, usage, timing)))  # noqa: B023
            route = first or (lrm_allowed and routing.routes(score) and (draft is None or draft.n_tokens > 0))
            if not route and lrm_allowed and draft is not None and draft.n_tokens:
                if routing.revalidation_forces(signals):
                    route, reason = True, "revalidation"
            record = StepRecord(index=len(steps), text="", source="srm", routed=route, score=score, reason=reason,
                                failure={k: v for k, v in signals.items() if k.startswith("fail.")},
                                srm_tokens=draft.n_tokens if draft else 0, check=checked or None)
            if route:
                assert self.lrm is not None
                t1 = time.perf_counter()
                withdrawn = draft is None or not draft.n_tokens  # the draft's discard event went out
                lrm_token = self._token_sink(emit, "lrm", len(steps), True)

                draft_chars = len(draft.text) if draft is not None else 0

                def on_text(text: str, sink: Callable[[str], None] = lrm_token, chars: int = draft_chars) -> None:
                    nonlocal withdrawn
                    if not withdrawn:  # the LRM writes: its draft is gone (before its first token)
                        withdrawn = True
                        emit("discard", chars)
                    sink(text)

                reply = self.lrm.write_step(StepRequest(
                    messages=msgs, prefix=prefix, max_tokens=min(cfg.max_step_tokens, budget),
                    stop=(self.signal_cfg.delimiter,), temperature=cfg.temperature, seed=cfg.seed,
                    on_text=on_text))
                timing["lrm"] += time.perf_counter() - t1
                usage["lrm_calls"] += 1
                usage["lrm_prefill_tokens"] += reply.prefill_tokens
                lrm_ends = not reply.text and reply.finished  # end of generation at once: the answer is complete
                if (reply.ok and reply.text) or lrm_ends:
                    if draft is not None and draft.n_tokens:
                        ctx.rollback(n0)
                        usage["srm_discarded_tokens"] += draft.n_tokens
                        record.discarded_tokens = draft.n_tokens
                        if not withdrawn:
                            emit("discard", len(draft.text))
                        if before is not None:  # the draft's signals were recorded: forget them
                            self.computer.restore(before)
                    if lrm_ends:
                        finished = True
                        break
                    self.computer.note_step(reply.text)
                    seg.reset()
                    toks = self.srm.tokenize(reply.text)
                    room = ctx.n_ctx - 1 - ctx.n_past - len(pending)
                    pending.extend(toks[: max(0, room)])
                    usage["lrm_tokens"] += reply.n_tokens
                    record.text, record.source = reply.text, "lrm"
                    record.lrm_tokens, record.lrm_prefill_tokens = reply.n_tokens, reply.prefill_tokens
                    used += reply.n_tokens  # the answer budget counts tokens of the model that wrote them
                    finished = reply.finished
                    routing.note_lrm_step()
                    # "pre" must not keep routing on the signals of the SRM step that triggered this one: the
                    # next decision waits for fresh SRM evidence (without this, one bad step routed the rest)
                    prev_signals = {}
                else:
                    usage["lrm_failures"] += 1
                    record.lrm_error = reply.error or "empty reply"
                    record.routed = False
            if record.source == "srm":
                if draft is None or draft.ended_by == "early":
                    # the LRM failed after "pre" routing or an early stop: the SRM writes (the rest of) the step
                    catch_up()
                    # after "pre" the step is the SRM's for good; after an early stop it continues a draft whose
                    # first tokens went out as non-final, and stays so until the step is kept
                    rest = draft_step(ctx, seg, sampling, budget - (draft.n_tokens if draft else 0),
                                      on_token=self._token_sink(emit, "srm", len(steps), draft is None),
                                      shown=len(seg.text) if draft is not None else 0)
                    timing["srm"] += rest.seconds
                    usage["srm_tokens"] += rest.n_tokens
                    record.srm_tokens += rest.n_tokens
                    draft = rest if draft is None else join_drafts(draft, rest)
                    if draft.n_tokens:
                        prev_signals = self._signals(draft, timing)
                        record.failure = {k: v for k, v in prev_signals.items() if k.startswith("fail.")}
                record.text = draft.text
                if self.details:
                    record.signals, record.token_ids = dict(prev_signals), list(draft.token_ids)
                    record.pooled = pooled_state(draft.hidden)
                used += draft.n_tokens
                finished = draft.ended_by == "eog"
                if not draft.n_tokens and not draft.text:
                    break
            record.seconds = time.perf_counter() - t_step
            prefix += record.text
            steps.append(record)
            emit("step", record)
            if finished:
                break
        timing["total"] = time.perf_counter() - t_start
        return SolveResult(answer_text=prefix, steps=steps, finished=finished,
                           timing={k: round(v, 4) for k, v in timing.items()}, usage=usage,
                           policy=cfg.policy, threshold=routing.threshold, decide=cfg.decide,
                           steering=self._steer_state, lrm_first=routing.plan)

    @staticmethod
    def _token_sink(emit: EventSink, source: str, step: int, final: bool) -> Callable[[str], None]:
        return lambda text: emit("token", Token(text, source, step, final))

    def _signals(self, draft: DraftStep, timing: dict[str, float]) -> dict[str, float]:
        s0 = time.perf_counter()
        out = self.computer.compute(draft.hidden, draft.stats, draft.text)
        timing["signals"] += time.perf_counter() - s0
        return out

    def _check(self, msgs: list[tuple[str, str]], prefix: str, out: dict[str, float], usage: dict[str, int],
               timing: dict[str, float]) -> Callable[[str], dict[str, float] | None] | None:
        """For policies that read the LRM's view of a draft (``verify``): a callable that runs the LRM's
        teacher-forced check of a step once, meters it and keeps its features in ``out``."""
        check_step = getattr(self.lrm, "check_step", None)
        if check_step is None or not self.routing.uses_lrm_check:
            return None

        def run(step: str) -> dict[str, float] | None:
            if out:
                return out
            t0 = time.perf_counter()
            result = check_step(msgs, prefix, step)
            timing["lrm_check"] += time.perf_counter() - t0
            if result is None:
                return None
            usage["lrm_checks"] += 1
            usage["lrm_check_prefill_tokens"] += result.prefill_tokens
            out.update(result.features)
            return out

        return run

    def _judge(self, msgs: list[tuple[str, str]], prefix: str) -> Callable[[str], int | None] | None:
        if self.lrm is None or self.config.policy != "judge":
            return None
        lrm = self.lrm
        return lambda step: lrm.rate(msgs, prefix, step)
