"""How much the LRM disagrees with a step the SRM wrote, from one teacher-forced LRM prefill of that step.

The LRM reads the conversation, the answer so far and the SRM's step, and for every token of the step we keep
the log-probability the LRM gave it and the LRM's own greedy choice there (:meth:`Context.score_tokens`). No
token is generated, so the check costs one prefill of the step. From those two arrays
:func:`disagreement_features` derives the ``lrm.*`` features the ``verify`` policy scores and that label files
record for every SRM step:

* ``lrm.logprob_mean`` / ``lrm.logprob_min``: mean and lowest log-probability of the step's tokens;
* ``lrm.disagree``: the share of tokens where the LRM's greedy choice differs from the SRM's token;
* ``lrm.disagree_arith`` / ``lrm.logprob_min_arith``: the same restricted to *arithmetic* tokens (a digit or
  an operator, see :data:`ARITH_CHARS`), where small models most often go wrong (0 when the step has none);
* ``lrm.first_disagree``: where the first disagreement falls, as a fraction of the step (1.0: none);
* ``lrm.n_tokens``: the step's length in LRM tokens;
* ``lrm.risk``: ``1 - p``, ``p`` the LRM's probability of the least likely arithmetic token (of the least
  likely token when the step has no arithmetic): the ``verify`` policy's default score, in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: characters that make a token "arithmetic": digits and the operators a worked answer writes
ARITH_CHARS = frozenset("0123456789+-*/=×÷^%")

FEATURES = ("lrm.logprob_mean", "lrm.logprob_min", "lrm.disagree", "lrm.disagree_arith", "lrm.logprob_min_arith",
            "lrm.first_disagree", "lrm.n_tokens", "lrm.risk")


@dataclass
class StepCheck:
    """The LRM's teacher-forced view of one step: per-token ``logprob`` (float32 ``(T,)``), ``agree`` (bool
    ``(T,)``: the LRM's greedy choice is the token), ``arith`` (bool ``(T,)``), and what it cost:
    ``prefill_tokens`` fed (prompt catch-up included) and ``seconds``."""

    logprob: np.ndarray
    agree: np.ndarray
    arith: np.ndarray
    prefill_tokens: int
    seconds: float

    @property
    def features(self) -> dict[str, float]:
        return disagreement_features(self.logprob, self.agree, self.arith)


def is_arith(piece: str) -> bool:
    """Whether a token's text holds a digit or an arithmetic operator."""
    return any(c in ARITH_CHARS for c in piece)


def disagreement_features(logprob: np.ndarray, agree: np.ndarray, arith: np.ndarray) -> dict[str, float]:
    """The ``lrm.*`` features of a step (see the module doc). An empty step has no evidence: risk 0."""
    lp = np.asarray(logprob, dtype=np.float64)
    ok = np.asarray(agree, dtype=bool)
    ar = np.asarray(arith, dtype=bool)
    n = len(lp)
    if n == 0:
        return {"lrm.logprob_mean": 0.0, "lrm.logprob_min": 0.0, "lrm.disagree": 0.0, "lrm.disagree_arith": 0.0,
                "lrm.logprob_min_arith": 0.0, "lrm.first_disagree": 1.0, "lrm.n_tokens": 0.0, "lrm.risk": 0.0}
    wrong = np.flatnonzero(~ok)
    lp_min = float(lp.min())
    lp_min_arith = float(lp[ar].min()) if ar.any() else 0.0
    worst = lp_min_arith if ar.any() else lp_min
    return {
        "lrm.logprob_mean": float(lp.mean()),
        "lrm.logprob_min": lp_min,
        "lrm.disagree": float((~ok).mean()),
        "lrm.disagree_arith": float((~ok[ar]).mean()) if ar.any() else 0.0,
        "lrm.logprob_min_arith": lp_min_arith,
        "lrm.first_disagree": float(wrong[0] / n) if len(wrong) else 1.0,
        "lrm.n_tokens": float(n),
        "lrm.risk": min(1.0, max(0.0, 1.0 - math.exp(worst))),
    }


def check_from_scores(logprob: np.ndarray, best: np.ndarray, tokens: Sequence[int], pieces: Sequence[str],
                      prefill_tokens: int, seconds: float) -> StepCheck:
    """A :class:`StepCheck` from :meth:`Context.score_tokens` output over ``tokens`` with texts ``pieces``."""
    toks = np.asarray(tokens, dtype=np.int64)
    return StepCheck(logprob=np.asarray(logprob, np.float32), agree=np.asarray(best, np.int64) == toks,
                     arith=np.array([is_arith(p) for p in pieces], dtype=bool),
                     prefill_tokens=prefill_tokens, seconds=seconds)
