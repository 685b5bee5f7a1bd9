"""``bench run``: methods compared on the same problems, interleaved, resumable (``bench report``: :mod:`.report`).

A method is a routing policy at a decision point and threshold, written ``policy[@decide][:threshold]``
(``srm``, ``lrm``, ``rankguide``, ``rankguide@early:0.4``, ``entropy:0.6``, ``keywords``, ``judge``...), or

* ``random[@decide][:p]`` -- route each step with probability ``p``. Without ``:p`` (and without an explicit
  ``random_p``) it is the matched-rate control: before each problem, ``p`` is set to the LRM step share that
  the first plain ``rankguide`` method of the list (unsteered, no ``^N``; else the first ``rankguide``
  method) has reached so far in this output folder (resumed records included: its LRM steps over its
  steps); until that method has a step, ``p`` is 0.2. The ``p`` used is stored in each record
  (``random_p``), and the method it follows (``random_matched_to``);
* ``specdec[:k]`` -- lossless greedy speculative decoding, the SRM drafting ``k`` (default 4) tokens per LRM
  verify batch (:mod:`rankguide_edge.collab.specdec`); needs a local LRM sharing the SRM's vocabulary.

Any method but specdec and lrm may add ``^N`` after its threshold: the LRM writes the first N steps (the plan)
whatever the score (``rankguide^1``, ``entropy:0.6^1``; ``srm^1``: the LRM plans, the SRM writes the rest).
A routing policy may then add ``#N``: it may route only the first N SRM steps after the plan
(``verify:0.99^1#1``, the first-step check; ``random:0.3^1#1``, first-step random).
And ``+NAME[*SCALE][/WHERE]``: the SRM is steered by the control vector declared as ``NAME``
(``--steer NAME=FILE``) at ``SCALE`` (default 1), on every token (``/all``) or only on step delimiters
(``/boundary``; default: the run's ``steer_where``), e.g. ``srm+seal*0.25`` or ``rankguide+rank*1/boundary``.

Sweeps (``--sweep rankguide:0.2,0.4,0.6``) expand to one method per value (:func:`expand_sweeps`). For every
problem every method runs once, in an order that rotates per problem so that machine drift hits all methods
alike. One SRM model and one LRM backend serve all methods. Results go to ``DIR/results.jsonl`` one line per
(problem, method) as they finish; a rerun skips pairs already there. A problem a method cannot solve
because of a library error (a prompt longer than the context, an LRM server gone) gets an ``error``
record and the run goes on; the report leaves such problems out and names them (delete the line to
retry). ``DIR/run.json`` keeps the settings that make records comparable (models, token budget, seed, router,
steering files); a rerun with other values is refused (:mod:`.settings`), and each record names its run's
``session``. Each record carries ``counts``: the work by model and kind that :mod:`.latency` prices under hardware
profiles.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..collab.backends import RATE_PROMPT, LRMBackend, StepReply, StepRequest
from ..collab.backends_local import common_prefix
from ..collab.policies import DECISION_POINTS, available_policies, decision_points
from ..collab.reasoner import ReasonerConfig
from ..collab.routing import needs_lrm
from ..collab.solver import Solver
from ..config import RuntimeConfig, bounded, same_as, validate
from ..engine.context import STEER_WHERE
from ..engine.model import Model
from ..errors import ConfigError, RankGuideError
from ..jsonl import append_jsonl, read_records
from ..tasks.answers import grade, prompt_for
from ..tasks.datasets import Problem
from .latency import counts_of
from .report import summarize, summary_markdown, write_pareto, write_share_plot
from .settings import file_digest, model_identity, router_identity, start_session

SPECDEC = "specdec"
#: routing probability of a ``random`` method before the matched rankguide method has any step
RANDOM_FALLBACK_P = 0.2


@dataclass(frozen=True)
class Method:
    """One benchmarked method. ``rate``: the fixed routing probability of a ``random`` method (None: matched
    rate); ``k``: drafts per verify batch of ``specdec``."""

    label: str
    policy: str
    decide: str = "post"
    threshold: float | None = None  # None: the router's threshold for the decision point
    rate: float | None = None
    k: int | None = None
    steer: str | None = None  # name of a declared control vector
    steer_scale: float = 1.0
    steer_where: str | None = None  # all | boundary; None: the run's default
    lrm_first: int = 0  # the LRM writes this many first steps
    route_steps: int = 0  # the policy may route only the first N SRM steps after the plan (0: any)
    router: str | None = None  # name of a declared router file (``rankguide~NAME``); None: the run's router


def _number(item: str, text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"bad {what} {text!r} in method {item!r}: give a number in [0, 1]") from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{what} {value} in method {item!r} is outside [0, 1]")
    return value


def _parse_one(item: str) -> Method:
    base, plus, steer = item.partition("+")
    base, hash_, window = base.partition("#")
    base, caret, first = base.partition("^")
    m = _parse_base(item, base)
    if hash_:
        if m.policy in (SPECDEC, "srm", "lrm"):
            raise ConfigError(f"{m.policy} routes no chosen steps for #N to limit ({item!r}): use it with a "
                              "routing policy, e.g. verify:0.99^1#1 (the first-step check)")
        if not window.isdigit() or not 0 < int(window) <= 1000:
            raise ConfigError(f"bad step window {window!r} in method {item!r}: write #N, N in 1..1000 (the "
                              "policy may route only the first N SRM steps after the plan)")
        m = dataclasses.replace(m, route_steps=int(window))
    if caret:
        if m.policy in (SPECDEC, "lrm"):
            raise ConfigError(f"{m.policy} has no SRM steps for ^N to hand to the LRM ({item!r}): use it with "
                              "srm (the LRM plans, the SRM writes the rest) or a routing policy")
        if not first.isdigit() or not 0 < int(first) <= 1000:
            raise ConfigError(f"bad first-steps count {first!r} in method {item!r}: write ^N, N in 1..1000")
        m = dataclasses.replace(m, lrm_first=int(first))
    if not plus:
        return m
    steer, slash, where = steer.partition("/")
    if slash and where not in STEER_WHERE:
        raise ConfigError(f"bad steering place {where!r} in method {item!r}: write /{' or /'.join(STEER_WHERE)}")
    name, star, scale = steer.partition("*")
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"bad steering {steer!r} in method {item!r}: write +NAME, +NAME*SCALE or "
                          "+NAME*SCALE/boundary, NAME declared with --steer NAME=FILE")
    if m.policy == SPECDEC:
        raise ConfigError(f"specdec is lossless: it cannot be steered ({item!r})")
    try:
        value = float(scale) if star else 1.0
    except ValueError:
        raise ConfigError(f"bad steering scale {scale!r} in method {item!r}: give a number") from None
    if not -64.0 <= value <= 64.0:
        raise ConfigError(f"steering scale {value} in method {item!r} is outside [-64, 64]")
    return dataclasses.replace(m, steer=name, steer_scale=value, steer_where=where or None)


def _parse_base(item: str, base: str) -> Method:
    head, _, val = base.partition(":")
    policy, at, decide = head.partition("@")
    policy, tilde, router = policy.partition("~")
    if tilde:
        if policy != "rankguide" or not router.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"bad router in method {item!r}: write rankguide~NAME, NAME declared with "
                              "--router-file NAME=FILE")
        return dataclasses.replace(_parse_base(item, base.replace(f"~{router}", "", 1)), router=router)
    if policy == SPECDEC:
        if at:
            raise ConfigError(f"specdec takes no decision point: write {SPECDEC} or {SPECDEC}:K, not {item!r}")
        try:
            k = int(val) if val else 4
        except ValueError:
            raise ConfigError(f"bad draft length {val!r} in method {item!r}: write specdec:K, K in 1..64") from None
        if not 1 <= k <= 64:
            raise ConfigError(f"draft length {k} in method {item!r} is outside 1..64")
        return Method(item, SPECDEC, "pre", None, None, k)
    choices = ', '.join(available_policies() + [SPECDEC])
    if not policy:
        raise ConfigError(f"method {item!r} names no policy: write POLICY[@decide][:threshold][^N][+NAME], "
                          f"POLICY one of {choices}")
    if policy not in available_policies():
        raise ConfigError(f"unknown policy {policy!r} in method {item!r}; use {choices}")
    default = "pre" if policy == "lrm" else "post"
    decide = decide or default
    if decide not in DECISION_POINTS:
        raise ConfigError(f"bad decision point {decide!r} in method {item!r}; use {', '.join(DECISION_POINTS)}")
    points = decision_points(policy)
    if decide not in points:
        ways = ([policy] if default in points else []) + [f"{policy}@{p}" for p in points]
        spelled = f"{', '.join(ways[:-1])} or {ways[-1]}" if len(ways) > 1 else ways[0]
        raise ConfigError(f"policy {policy!r} cannot decide at {decide!r} (method {item!r}): write {spelled}")
    if policy == "random":
        rate = _number(item, val, "routing probability") if val else None
        return Method(item, policy, decide, None, rate)
    return Method(item, policy, decide, _number(item, val, "threshold") if val else None)


def parse_methods(spec: str | Sequence[str]) -> list[Method]:
    """``"srm,lrm,rankguide@early:0.4,random,specdec:4"`` -> methods; labels are the spec items themselves."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not items:
        raise ConfigError("no methods given: use e.g. --methods srm,lrm,rankguide")
    out = [_parse_one(item) for item in items]
    twice = sorted({m.label for m in out if [n.label for n in out].count(m.label) > 1})
    if twice:
        raise ConfigError(f"{'method' if len(twice) == 1 else 'methods'} {', '.join(twice)} listed twice in "
                          "--methods: list each method once")
    return out


def expand_sweeps(sweeps: Iterable[str]) -> list[str]:
    """``["rankguide:0.2,0.4", "entropy@early:0.5"]`` -> ``["rankguide:0.2", "rankguide:0.4",
    "entropy@early:0.5"]``: one method spec per value (thresholds; ``random``: rates; ``specdec``: k). A suffix
    after the values applies to each: ``entropy:0.3,0.5^1`` -> ``entropy:0.3^1``, ``entropy:0.5^1``."""
    out: list[str] = []
    for sweep in sweeps:
        head, sep, values = sweep.strip().partition(":")
        cut = min([i for i in (values.find("^"), values.find("#"), values.find("+")) if i >= 0], default=len(values))
        values, suffix = values[:cut], values[cut:]
        vals = [v.strip() + suffix for v in values.split(",") if v.strip()]
        if not sep or not vals:
            raise ConfigError(f"bad sweep {sweep!r}: write POLICY[@decide]:v1,v2,... e.g. rankguide:0.2,0.4,0.6")
        if head.partition("@")[0] in ("srm", "lrm"):
            raise ConfigError(f"sweep {sweep!r}: srm and lrm have no threshold to sweep")
        out.extend(f"{head}:{v}" for v in vals)
    return out


def method_list(methods: str | Sequence[str], sweeps: Iterable[str] = ()) -> list[Method]:
    """:func:`parse_methods` of ``methods`` plus the expanded ``sweeps`` (a sweep point already listed is kept
    once)."""
    items = [s.strip() for s in (methods.split(",") if isinstance(methods, str) else methods) if s.strip()]
    for extra in expand_sweeps(sweeps):
        if extra not in items:
            items.append(extra)
    return parse_methods(items)


class _MeteredBackend:
    """Forwards to an LRM backend and meters its judge calls (``rate``), which the reasoner's usage omits:
    calls, seconds and prefilled tokens -- measured on a local backend's context (tokens it had to feed),
    estimated elsewhere as the SRM-token length of the rated step plus the judge instruction."""

    def __init__(self, inner: LRMBackend, srm: Model) -> None:
        self.inner, self.srm = inner, srm
        self.name = inner.name
        self.reset()

    def reset(self) -> None:
        self.judge_calls, self.judge_prefill, self.judge_s = 0, 0, 0.0

    def clear_cache(self) -> None:
        """Forget the LRM's cached conversation (local backends), so that no method finds the problem's prompt
        already prefilled by the method before it (servers keep their own caches)."""
        clear = getattr(self.inner, "clear_cache", None)
        if clear is not None:
            clear()

    def write_step(self, req: StepRequest) -> StepReply:
        return self.inner.write_step(req)

    def __getattr__(self, name: str) -> Any:
        # optional capabilities of the wrapped backend (``check_step``, which the reasoner meters itself)
        if name == "check_step":
            return getattr(self.inner, name)
        raise AttributeError(name)

    def rate(self, messages: Sequence[tuple[str, str]], prefix: str, step: str, prompt: str = RATE_PROMPT
             ) -> int | None:
        ctx = getattr(self.inner, "context", None)
        before = list(ctx.tokens) if ctx is not None and hasattr(ctx, "tokens") else None
        t0 = time.perf_counter()
        out = self.inner.rate(messages, prefix, step, prompt)
        self.judge_s += time.perf_counter() - t0
        self.judge_calls += 1
        if before is not None and ctx is not None:
            after = ctx.tokens
            self.judge_prefill += 0 if after == before else len(after) - min(common_prefix(before, after),
                                                                             len(after) - 1)
        else:
            self.judge_prefill += len(self.srm.tokenize(step + "\n\n" + prompt))
        return out

    def close(self) -> None:
        self.inner.close()


class _MatchedRate:
    """The running LRM step share of one rankguide method, the routing probability of matched ``random``."""

    def __init__(self, label: str | None, records: Iterable[dict[str, Any]]) -> None:
        self.label, self.lrm_steps, self.steps = label, 0, 0
        for r in records:
            self.add(r)

    def add(self, rec: dict[str, Any]) -> None:
        if self.label is not None and rec.get("method") == self.label:
            self.lrm_steps += int(rec.get("lrm_steps", 0))
            self.steps += int(rec.get("n_steps", 0))

    @property
    def p(self) -> float:
        return self.lrm_steps / self.steps if self.steps else RANDOM_FALLBACK_P


def matched_label(methods: Sequence[Method]) -> str | None:
    """The method whose LRM step share the matched ``random`` control follows: the first unsteered
    ``rankguide`` method without ``^N`` (else the first ``rankguide`` method; None without one)."""
    ranks = [m for m in methods if m.policy == "rankguide"]
    plain = [m for m in ranks if not m.steer and not m.lrm_first]
    return (plain or ranks)[0].label if ranks else None


def _local_model(lrm: LRMBackend | None) -> Model | None:
    model = getattr(lrm, "model", None)
    return model if isinstance(model, Model) else None


def _check_declared(used: set[str], declared: Mapping[str, str], what: str, option: str, example: str) -> None:
    """Every name ``used`` by a method is ``declared`` (name -> file) and every declared name used: a file no
    method names would leave the user believing the run used it."""
    unknown = sorted(used - set(declared))
    if unknown:
        raise ConfigError(f"methods use undeclared {what}(s) {', '.join(unknown)}: add {option} NAME=FILE")
    unused = sorted(set(declared) - used)
    if unused:
        raise ConfigError(f"{what}(s) {', '.join(unused)} declared but no method uses them: write a method as "
                          f"e.g. {example.format(unused[0])}, or drop {option} {unused[0]}=FILE")


def check_steering(methods: Sequence[Method], steering: Mapping[str, str]) -> None:
    """Every ``+NAME`` of ``methods`` is declared in ``steering`` (name -> file), and every declared one used."""
    _check_declared({m.steer for m in methods if m.steer}, steering, "vector", "--steer", "srm+{}*0.25")


def check_routers(methods: Sequence[Method], routers: Mapping[str, str]) -> None:
    """Every ``~NAME`` of ``methods`` is declared in ``routers`` (name -> file), and every declared one used."""
    _check_declared({m.router for m in methods if m.router}, routers, "router", "--router-file", "rankguide~{}^1")


def completed_runs(out_dir: str | Path, problems: Iterable[Problem], methods: Sequence[Method]) -> int:
    """How many of the ``problems`` x ``methods`` runs ``out_dir``/results.jsonl already holds: a rerun skips
    them (the starting point of a resumed run's progress bar)."""
    wanted = {(str(p.id), m.label) for p in problems for m in methods}
    held = {(str(r["id"]), str(r["method"]))
            for r in read_records(Path(out_dir) / "results.jsonl", missing_ok=True)}
    return len(wanted & held)


@dataclass(frozen=True)
class BenchRunConfig:
    """What ``bench run`` compares besides the reasoner, runtime and dataset settings (the CLI derives from it)."""

    methods: str = bounded("srm,lrm,rankguide", help="comma list of policy[@post|early|pre][:threshold] (rankguide, "
                           "entropy, keywords, judge, srm, lrm), random[:p] (no p: matched to rankguide's LRM step "
                           "share) and specdec[:k], e.g. srm,lrm,rankguide@early:0.4,random,specdec:4")
    sweeps: tuple[str, ...] = bounded((), flag="--sweep", metavar="POLICY[@D]:V1,V2,...",
                                      help="add one method per value, e.g. --sweep rankguide:0.2,0.4,0.6 --sweep "
                                           "entropy:0.5,0.7 (repeatable)")
    random_p: float | None = same_as(ReasonerConfig, "random_p", default=None,
                                     help="routing probability of `random` methods given without one",
                                     unset=f"rankguide's running LRM step share in this run ({RANDOM_FALLBACK_P} "
                                           "before it has any, or without a rankguide method)")
    router_files: tuple[str, ...] = bounded((), flag="--router-file", metavar="NAME=FILE",
                                            help="declare a router file (e.g. from `rankguide-edge router fit`) for "
                                                 "methods written rankguide~NAME (repeatable); FILE alone is named "
                                                 "after its stem")
    steering: tuple[str, ...] = bounded((), flag="--steer", metavar="NAME=FILE",
                                        help="declare a control vector for methods written +NAME[*SCALE][/all|"
                                             "/boundary] (repeatable); FILE alone is named after its stem")

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True)
class ReportConfig:
    """What ``bench report`` summarises and how it prices latency."""

    profile: str = bounded("measured", metavar="NAME|FILE",
                           help="hardware profile for latency and pareto.png: measured, laptop+gpu-server, "
                                "gpu-large-ratio, rtx4090 (rates from each model's GGUF size), or a .toml/.json file "
                                "with [srm]/[lrm] decode_tok_s, prefill_tok_s, call_s (\"measured\" allowed)")
    methods: tuple[str, ...] = bounded((), sep=",", metavar="LABEL,...", unset="every method in the file",
                                       help="report only these methods (labels as in results.jsonl); the problems "
                                            "compared are those they all ran")
    versus: tuple[str, ...] = bounded((), sep=",", metavar="LABEL,...", unset="srm only",
                                      help="baselines every method is paired against (wins/losses, exact McNemar "
                                           "p), besides srm: e.g. the matched 'entropy:0.52^1,random:0.21^1'. Each "
                                           "must be among the methods reported")
    plots: bool = bounded(True, aliases=("--no-plot",), help="write pareto.png and share.png")

    def __post_init__(self) -> None:
        validate(self)


def run_bench(srm: Model, lrm: LRMBackend | None, problems: Iterable[Problem], methods: Sequence[Method],
              out_dir: str | Path, *, runtime: RuntimeConfig, max_tokens: int = 768, seed: int = 0,
              random_p: float | None = None, progress: Callable[[dict[str, Any]], None] | None = None,
              steering: Mapping[str, str] | None = None, steer_where: str = "all", router: str = "",
              routers: Mapping[str, str] | None = None) -> Path:
    """Run every method on every problem (interleaved); return the results file.

    ``random_p``: routing probability of ``random`` methods written without a rate; None = matched to the
    first rankguide method (see the module docstring), or 0.2 when the list has none. ``steering``: control
    vector name -> file for methods written ``+NAME``; ``router``: router config (thresholds) of all methods
    but those written ``rankguide~NAME``, which use ``routers[NAME]``.
    """
    steering = dict(steering or {})
    routers = dict(routers or {})
    check_steering(methods, steering)
    check_routers(methods, routers)
    from ..collab.specdec import SpecDecConfig, SpecDecoder

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    previous = read_records(results, missing_ok=True)
    done = {(str(r["id"]), str(r["method"])) for r in previous}
    with_lrm = [m.label for m in methods if needs_lrm(m.policy, m.lrm_first)]
    if with_lrm and lrm is None:
        raise ConfigError(f"methods {', '.join(with_lrm)} need an LRM: pass --lrm")
    lrm_model = _local_model(lrm)
    if any(m.policy == SPECDEC for m in methods) and lrm_model is None:
        raise ConfigError("specdec needs a local LRM (a model name or GGUF path), not a server URL")
    lrm_id = (model_identity(lrm_model.path) if lrm_model is not None
              else (getattr(lrm, "base_url", None) or getattr(lrm, "name", None)) if lrm is not None else None)
    session = start_session(out, {"srm": model_identity(srm.path), "lrm": lrm_id, "max_tokens": max_tokens,
                                  "seed": seed, "router": router_identity(router),
                                  "steering": {n: file_digest(f) for n, f in steering.items()},
                                  "routers": {n: file_digest(f) for n, f in routers.items()}},
                            threads=runtime.n_threads)
    match_label = matched_label(methods)
    matched = _MatchedRate(match_label if random_p is None else None, previous)
    meters: dict[str, _MeteredBackend] = {}
    solvers: dict[str, Any] = {}
    try:
        for m in methods:
            if m.policy == SPECDEC:
                assert lrm_model is not None and m.k is not None
                solvers[m.label] = SpecDecoder(srm, lrm_model, SpecDecConfig(k=m.k, max_tokens=max_tokens),
                                               runtime=runtime)
                continue
            p = m.rate if m.rate is not None else (random_p if random_p is not None else RANDOM_FALLBACK_P)
            cfg = ReasonerConfig(
                policy=m.policy, decide=m.decide, threshold=m.threshold, max_tokens=max_tokens, seed=seed,
                random_p=p, router=routers[m.router] if m.router else router,
                steer=steering[m.steer] if m.steer else "", steer_scale=m.steer_scale,
                steer_where=m.steer_where or steer_where, lrm_first=m.lrm_first, route_steps=m.route_steps)
            # one shared backend, borrowed by every method that calls an LRM, each through its own meter
            solver = solvers[m.label] = Solver(
                srm, _MeteredBackend(lrm, srm) if lrm is not None else None, config=cfg, runtime=runtime,
                progress=False)
            if isinstance(solver.lrm, _MeteredBackend):
                meters[m.label] = solver.lrm
        with append_jsonl(results) as sink:
            for i, problem in enumerate(problems):
                order = list(methods[i % len(methods):]) + list(methods[: i % len(methods)])
                p_matched = matched.p  # fixed before the problem, whatever the methods' rotation
                for m in order:
                    if (problem.id, m.label) in done:
                        continue
                    if meters.get(m.label) is not None:  # every method meets the problem with a cold LRM cache
                        meters[m.label].clear_cache()
                    try:
                        rec = _solve_one(solvers[m.label], meters.get(m.label), m, problem, p_matched,
                                         random_p is None and m.rate is None, matched.label)
                    except RankGuideError as exc:  # e.g. a prompt longer than the context: record, go on
                        rec = {"id": problem.id, "method": m.label, "policy": m.policy,
                               "error": f"{type(exc).__name__}: {exc}"}
                    rec["session"] = session
                    matched.add(rec)
                    sink.write(rec)
                    if progress:
                        progress(rec)
    finally:
        for s in solvers.values():
            s.close()
    return results


def _solve_one(solver: Any, meter: _MeteredBackend | None, m: Method, problem: Problem, p_matched: float,
               match_rate: bool, matched_to: str | None = None) -> dict[str, Any]:
    p_used = None
    if m.policy == "random":
        if match_rate:
            solver.reconfigure(random_p=p_matched)
        p_used = solver.config.random_p
    if meter is not None:
        meter.reset()
    t0 = time.perf_counter()
    res = solver.chat(prompt_for(problem.question, problem.kind))
    wall = time.perf_counter() - t0
    usage, timing = dict(res.usage), dict(res.timing)
    if m.policy == "judge" and meter is not None:
        usage["judge_calls"], usage["judge_prefill_tokens"] = meter.judge_calls, meter.judge_prefill
        timing["judge"] = round(meter.judge_s, 4)
    pred, correct = grade(res.answer_text, problem)
    rec: dict[str, Any] = {
        "id": problem.id, "method": m.label, "policy": m.policy, "decide": m.decide,
        "threshold": None if m.policy == SPECDEC else res.threshold, "gold": problem.gold, "prediction": pred,
        "correct": correct, "seconds": round(wall, 3),
        "finished": res.finished, "n_steps": len(res.steps), "lrm_steps": sum(s.source == "lrm" for s in res.steps),
        "timing": timing, "usage": usage,
        "steps": [{"source": s.source, "srm_tokens": s.srm_tokens, "lrm_tokens": s.lrm_tokens,
                   "discarded": s.discarded_tokens, "score": s.score, "reason": s.reason,
                   "lrm_error": s.lrm_error} for s in res.steps],
        "text": res.answer_text,
    }
    if p_used is not None:
        rec["random_p"] = round(float(p_used), 6)
        if match_rate and matched_to:
            rec["random_matched_to"] = matched_to
    if m.k is not None:
        rec["k"] = m.k
    if m.lrm_first:
        rec["lrm_first"] = m.lrm_first
    if m.route_steps:
        rec["route_steps"] = m.route_steps
    if m.steer:
        rec["steer"] = {"name": m.steer, "scale": m.steer_scale, **(getattr(solver, "steering", None) or {})}
    router = getattr(solver, "router", None)
    if router is not None:  # calibrating from this run must know which score its thresholds apply to
        rec["router"] = {"file": os.path.abspath(solver.config.router) if solver.config.router else "default",
                         "logistic": router.logistic is not None}
    rec["counts"] = counts_of(rec).to_dict()
    return rec


__all__ = ["Method", "RANDOM_FALLBACK_P", "SPECDEC", "expand_sweeps", "method_list", "parse_methods", "run_bench",
           "summarize", "summary_markdown", "write_pareto", "write_share_plot"]
