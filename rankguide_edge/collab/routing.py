"""The router in force: one object that scores a step and decides whether the LRM writes it.

:class:`StepRouter` is built once per configuration from the routing fields of a
:class:`~.reasoner.ReasonerConfig` and a router file (:class:`~.router.Router`), and is the only owner of:

* **the threshold**: an explicit ``threshold`` wins; else, when the run's policy is the file's, the file's
  threshold for the decision point (a hand-set file without one falls back to its ``post`` threshold; a file
  with fitted weights refuses a point it has no threshold for, since its weights score finished steps); else
  :data:`DEFAULT_THRESHOLD`;
* **the plan**: an explicit ``lrm_first`` wins; else the file's ``lrm_first`` when the policy is the file's;
  else 0, so ``srm`` and ``lrm`` stay the pure baselines;
* **the decision point** as a small strategy (:class:`DecisionPoint`): ``pre`` scores the previous SRM step
  before any draft, ``early`` scores partial drafts while the SRM writes, ``post`` scores the finished draft;
* the rules beside the score: the LRM share cap (``max_lrm_share``), the window of steps a policy may route
  (``route_steps``: only the first N after the plan) and the revalidation streak (after ``revalidation_k``
  consecutive revalidation-heavy SRM steps the step is routed whatever the score).

The reasoner asks it and never compares a score with a number itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, InvalidInputError
from .policies import Policy, StepView, make_policy
from .router import Router, load_router

if TYPE_CHECKING:
    from .reasoner import ReasonerConfig

#: the threshold of a policy no router file was calibrated for (0.46: the 75th percentile of fail.route over
#: 200 GSM8K train traces of the default SRM, the project's first default)
DEFAULT_THRESHOLD = 0.46

ViewOf = Callable[[], StepView]


class DecisionPoint:
    """When a step is scored. Each hook returns the score it computed, or None when this point does not score
    there; ``early`` alone scores partial drafts (:meth:`during`)."""

    name = ""
    #: the score is known before the SRM drafts (so a draft it keeps can stream as final)
    decided_before = False

    def before(self, router: StepRouter, view_of: ViewOf) -> float | None:  # noqa: ARG002
        return None

    def during(self, router: StepRouter) -> EarlyCheck | None:  # noqa: ARG002
        return None

    def after(self, router: StepRouter, view_of: ViewOf) -> float | None:  # noqa: ARG002
        return None


class EarlyCheck:
    """The partial-draft check of ``early``: ``check(view)`` scores and says whether to stop the draft now;
    ``last`` is the latest score."""

    def __init__(self, router: StepRouter) -> None:
        self.router = router
        self.last: float | None = None

    def __call__(self, view: StepView) -> bool:
        self.last = self.router.score(view)
        return self.router.routes(self.last)


class _Post(DecisionPoint):
    name = "post"

    def after(self, router: StepRouter, view_of: ViewOf) -> float | None:
        return router.score(view_of())


class _Early(DecisionPoint):
    name = "early"

    def during(self, router: StepRouter) -> EarlyCheck | None:
        return EarlyCheck(router)


class _Pre(DecisionPoint):
    name = "pre"
    decided_before = True

    def before(self, router: StepRouter, view_of: ViewOf) -> float | None:
        return router.score(view_of())


POINTS: dict[str, DecisionPoint] = {p.name: p for p in (_Post(), _Early(), _Pre())}


def _policy_options(cfg: ReasonerConfig, router: Router) -> dict[str, Any]:
    if cfg.policy == "random":
        return {"p": cfg.random_p, "seed": cfg.seed}
    if cfg.policy == "rankguide" and router.policy == "rankguide" and router.logistic is not None:
        return {"logistic": router.logistic}
    return {}


class StepRouter:
    """Scores steps with the configured policy and decides; one per reasoner (not thread-safe: a solve's
    revalidation streak and the random policy's stream live here). ``decide_option`` is how an error names the
    decision point setting (``--decide`` in the CLI, ``decide`` for the server)."""

    def __init__(self, cfg: ReasonerConfig, router: Router | None = None, *,
                 decide_option: str = "--decide") -> None:
        self.file = router if router is not None else load_router(cfg.router)
        options = _policy_options(cfg, self.file)
        self.policy: Policy = make_policy(cfg.policy, **options)
        if cfg.decide not in self.policy.points:
            raise InvalidInputError(f"policy {cfg.policy!r} cannot decide at {cfg.decide!r}: use "
                                    f"{decide_option} {' or '.join(self.policy.points)}")
        own = cfg.policy == self.file.policy
        if "logistic" in options and cfg.threshold is None and cfg.decide not in self.file.thresholds:
            # fitted weights score what they were fitted on: a post-only router has no meaning before the step
            raise ConfigError(f"router file {self.file.source} was fitted to decide at "
                              f"{' and '.join(self.file.thresholds)} only: use {decide_option} "
                              f"{' or '.join(self.file.thresholds)}, or give a threshold for {cfg.decide!r}")
        if cfg.threshold is not None:
            self.threshold = float(cfg.threshold)
        elif own:
            th = self.file.thresholds
            self.threshold = float(th.get(cfg.decide, th.get("post", DEFAULT_THRESHOLD)))
        else:
            self.threshold = DEFAULT_THRESHOLD
        self.plan = cfg.lrm_first if cfg.lrm_first is not None else (self.file.lrm_first if own else 0)
        self.point = POINTS[cfg.decide]
        self.name = cfg.policy
        self.max_lrm_share = cfg.max_lrm_share
        self.route_steps = cfg.route_steps
        self.revalidation_k, self.revalidation_level = cfg.revalidation_k, cfg.revalidation_level
        self._streak = 0

    @property
    def uses_lrm_check(self) -> bool:
        """The policy reads the LRM's teacher-forced check of a draft (``verify``)."""
        return bool(getattr(self.policy, "uses_lrm_check", False))

    @property
    def needs_lrm(self) -> bool:
        """Whether this router ever calls an LRM: any policy but ``srm`` may route, and a plan is the LRM's."""
        return needs_lrm(self.name, self.plan)

    def check_backend(self, lrm: Any) -> None:
        """ConfigError when the policy reads the LRM's check and ``lrm`` cannot give it (a remote server)."""
        if self.uses_lrm_check and lrm is not None and not hasattr(lrm, "check_step"):
            raise ConfigError(f"policy {self.name!r} needs the LRM's token log-probabilities, which the "
                              f"{getattr(lrm, 'name', 'remote')} backend cannot give: use a local LRM (--lrm MODEL)")

    # -- per solve ------------------------------------------------------------------------------------------------

    def reset(self) -> None:
        """A new solve: the policy's per-solve state and the revalidation streak start over."""
        self.policy.reset()
        self._streak = 0

    def plans(self, steps_so_far: int) -> bool:
        """The LRM writes this step as part of the plan (no draft, no score)."""
        return steps_so_far < self.plan

    def may_route(self, sources: Sequence[str]) -> bool:
        """Routing one more step keeps the LRM's share of steps under ``max_lrm_share``."""
        return not sources or sum(s == "lrm" for s in sources) / (len(sources) + 1) < self.max_lrm_share

    def in_window(self, steps_so_far: int) -> bool:
        """The step after ``steps_so_far`` steps is one the policy may route (``route_steps``: only the first N
        steps after the plan; 0: any)."""
        return not self.route_steps or steps_so_far - self.plan < self.route_steps

    def score(self, view: StepView) -> float:
        return float(self.policy.score(view))

    def routes(self, score: float | None) -> bool:
        return score is not None and score >= self.threshold

    def streak_may_force(self) -> bool:
        """The next SRM step could complete a revalidation streak (so its draft is not yet final)."""
        return bool(self.revalidation_k) and self._streak + 1 >= self.revalidation_k

    def revalidation_forces(self, signals: dict[str, float]) -> bool:
        """Count a kept-so-far SRM step towards the streak; True (and the streak restarts) when it completes."""
        if not self.revalidation_k:
            return False
        heavy = signals.get("fail.revalidation", 0.0) >= self.revalidation_level
        self._streak = self._streak + 1 if heavy else 0
        if self._streak >= self.revalidation_k:
            self._streak = 0
            return True
        return False

    def note_lrm_step(self) -> None:
        """The LRM wrote a step: the streak of SRM steps is broken."""
        self._streak = 0


def needs_lrm(policy: str, plan: int) -> bool:
    """Whether a solver calls an LRM: any policy but ``srm`` may route a step to it, and a plan (the first
    ``plan`` steps, ``lrm_first``) is the LRM's whatever the policy."""
    return policy != "srm" or plan > 0


__all__ = ["DEFAULT_THRESHOLD", "POINTS", "DecisionPoint", "EarlyCheck", "StepRouter", "needs_lrm"]
