"""``label``: what routing one step would change, measured by intervening (the router's training data).

For each problem the regime the router serves in runs first, un-intervened: by default the shipped one, the
LRM writes the plan (``lrm_first`` steps) and the SRM everything after (policy ``srm``). Then, for every
SRM step ``t`` of that trace:

* **LRM disagreement** (every SRM step): one teacher-forced LRM prefill of the SRM's step after the same
  prefix gives the ``lrm.*`` features of :mod:`rankguide_edge.collab.disagreement`;
* **counterfactual gain** (the first ``max_cf_steps`` SRM steps of the selected problems): the LRM writes step
  ``t`` on the same prefix, the SRM continues greedily to the end from exactly the tokens the live loop would
  hold (its own tokens for its steps, the LRM's text re-tokenized), the answer is graded, and
  ``gain = correct(intervened) - correct(un-intervened)`` in {-1, 0, +1}, with the LRM tokens spent;
* the SRM-side evidence a router may read: every step signal, the step index, the answer position, the
  step's mean hidden row at the deepest tapped layer (``pooled``, base64 float16: :func:`decode_vector`) and
  its token ids (so a teacher-forced replay can tap every layer of exactly that step later);
* optionally (``control``) a control for the first SRM step of each counterfactual problem: the SRM re-drafts
  it *sampled* (seeded by id) and continues greedily, so "any change of the step helps" can be told apart
  from "the LRM's step helps".

Counterfactuals are the costly part (an LRM step and an SRM continuation each), so they run for every problem
the un-intervened trace gets wrong and for a seeded share of the ones it gets right (``cf_right_share``; the
rule is ``crc32(id)``, so a resumed or re-run file selects the same problems); the header says so.

The output is JSONL: a header line (``{"format": "rankguide-edge/labels", ...}``: settings, models, the
selection rule), then one line per problem, appended and flushed, so an interrupted run resumes (ids already
there are skipped; a header with other settings is refused). :func:`load_labels` reads a file back.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..bench.settings import model_identity
from ..collab.backends import StepRequest
from ..collab.reasoner import ReasonerConfig, StepRecord
from ..collab.solver import Solver
from ..config import RuntimeConfig, SamplingConfig, bounded, same_as, validate
from ..engine.model import Model
from ..engine.prompts import chat_tokens, prompt_for
from ..errors import ConfigError, RankGuideError
from ..jsonl import append_jsonl
from ..records import LABEL_FORMAT as FORMAT
from ..records import load_record_file
from ..signals.step import SignalConfig
from ..tasks.answers import grade
from ..tasks.datasets import Problem


@dataclass(frozen=True)
class LabelConfig:
    """What a label run does; every field is pinned in the file's header (a resume must match)."""

    lrm_first: int = same_as(ReasonerConfig, "lrm_first", default=1, help="the regime labelled: the LRM writes the "
                             "first N steps (the shipped router's plan), the SRM the rest")
    max_cf_steps: int = bounded(8, lo=0, hi=1000, help="counterfactuals for the first K SRM steps of a trace")
    cf_right_share: float = bounded(0.2, lo=0.0, hi=1.0, help="share of right-ending traces that get "
                                    "counterfactuals (every wrong-ending one does)")
    control: bool = bounded(False, help="a control for the first SRM step of every counterfactual problem: the "
                            "SRM re-drafts it sampled (seeded by id), then continues greedily")
    control_temperature: float = same_as(SamplingConfig, "temperature", default=1.0, help="sampling temperature of "
                                         "the control re-draft (0: greedy, which reproduces the un-intervened step)")
    control_top_p: float = same_as(SamplingConfig, "top_p", default=0.95, help="nucleus mass of the control re-draft")
    max_tokens: int = same_as(ReasonerConfig, "max_tokens", help="token budget of one answer")
    max_step_tokens: int = same_as(ReasonerConfig, "max_step_tokens")
    layers: str = same_as(ReasonerConfig, "layers")
    seed: int = same_as(RuntimeConfig, "seed")
    n_ctx: int = same_as(RuntimeConfig, "n_ctx", default=2048)
    n_threads: int = same_as(RuntimeConfig, "n_threads")

    def __post_init__(self) -> None:
        validate(self)

    def runtime(self) -> RuntimeConfig:
        return RuntimeConfig(n_ctx=self.n_ctx, n_threads=self.n_threads, seed=self.seed)

    def reasoner(self) -> ReasonerConfig:
        return ReasonerConfig(policy="srm", lrm_first=self.lrm_first, max_tokens=self.max_tokens,
                              max_step_tokens=self.max_step_tokens, layers=self.layers, seed=self.seed)


def selected_for_counterfactuals(problem_id: str, base_correct: bool, share: float) -> bool:
    """Every wrong-ending problem; a right-ending one when ``crc32(id)`` falls in the first ``share`` of 2**32."""
    return not base_correct or zlib.crc32(str(problem_id).encode("utf-8")) < share * 2**32


def selection_rule(cfg: LabelConfig) -> str:
    rule = (f"counterfactuals for the first {cfg.max_cf_steps} SRM steps of every problem whose un-intervened "
            f"answer is wrong, and of right-answered problems with crc32(id) < {cfg.cf_right_share} * 2**32 "
            f"(a seeded {cfg.cf_right_share:.0%} of them); LRM disagreement for every SRM step")
    if cfg.control:
        rule += (f"; on those problems a control for the first SRM step: the SRM re-drafts it sampled "
                 f"(temperature {cfg.control_temperature}, top-p {cfg.control_top_p}, seed crc32(id) ^ seed) "
                 "and continues greedily")
    return rule


def control_seed(problem_id: str, seed: int) -> int:
    """The sampler seed of a problem's control re-draft: the same for a resumed or re-run file."""
    return (zlib.crc32(str(problem_id).encode("utf-8")) ^ int(seed)) & 0x7FFFFFFF


def encode_vector(v: np.ndarray) -> str:
    """A float vector as base64 of little-endian float16 (a label file's pooled hidden state)."""
    return base64.b64encode(np.asarray(v, dtype="<f2").tobytes()).decode("ascii")


def decode_vector(text: str) -> np.ndarray:
    """The float32 vector :func:`encode_vector` wrote."""
    return np.frombuffer(base64.b64decode(text), dtype="<f2").astype(np.float32)


def _finite(x: float) -> float | None:
    return round(float(x), 6) if isinstance(x, (int, float)) and math.isfinite(float(x)) else None


class Labeller:
    """The SRM (a tapped :class:`Reasoner` in the served regime) and a local LRM backend, labelling problems.

    ``lrm`` must offer ``write_step`` and ``check_step`` (a :class:`LocalBackend`)."""

    def __init__(self, srm: Model, lrm: Any, cfg: LabelConfig, signals: SignalConfig | None = None) -> None:
        if not hasattr(lrm, "check_step"):
            raise ConfigError("labelling needs the LRM's token log-probabilities: use a local LRM (a model name "
                              "or GGUF path), not a server URL")
        self.srm, self.lrm, self.cfg = srm, lrm, cfg
        self.signal_cfg = signals or SignalConfig(max_step_tokens=cfg.max_step_tokens)
        self.solver = Solver(srm, lrm, config=cfg.reasoner(), signals=self.signal_cfg, runtime=cfg.runtime(),
                             details=True, progress=False)
        self.reasoner = self.solver.reasoner

    def close(self) -> None:
        self.solver.close()

    def __enter__(self) -> Labeller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def label(self, problem: Problem) -> dict[str, Any]:
        """The label record of one problem (see the module doc)."""
        t0 = time.perf_counter()
        cfg = self.cfg
        if hasattr(self.lrm, "clear_cache"):
            self.lrm.clear_cache()
        msgs = [("user", prompt_for(problem.question, problem.kind))]
        base = self.reasoner.solve(msgs)
        prediction, correct = grade(base.answer_text, problem)
        # the SRM's token sequence as the live loop built it, and where each step starts in it and in the answer
        seq = chat_tokens(self.srm, msgs)
        starts, used_before, used = [], [], 0
        for st in base.steps:
            starts.append(len(seq))
            used_before.append(used)
            if st.source == "lrm":
                seq += self.srm.tokenize(st.text)
                used += st.lrm_tokens
            else:
                seq += st.token_ids or []
                used += st.srm_tokens
        steps: list[dict[str, Any]] = []
        prefix = ""
        for i, st in enumerate(base.steps):
            steps.append(self._step_row(i, st, used_before[i], msgs, prefix))
            prefix += st.text
        srm_steps = [i for i, st in enumerate(base.steps) if st.source == "srm"][: cfg.max_cf_steps]
        with_cf = bool(srm_steps) and selected_for_counterfactuals(problem.id, correct, cfg.cf_right_share)
        if with_cf:
            for i in reversed(srm_steps):  # from the last: the SRM context keeps the base prefix of earlier steps
                steps[i]["cf"] = self._counterfactual(problem, msgs, base.steps, i, seq[: starts[i]],
                                                      used_before[i], correct)
            if cfg.control:
                i = srm_steps[0]
                steps[i]["control"] = self._control(problem, base.steps, i, seq[: starts[i]], used_before[i],
                                                    correct)
        return {
            "id": problem.id, "kind": problem.kind, "question": problem.question, "gold": problem.gold,
            "prediction": prediction, "correct": bool(correct), "finished": base.finished,
            "text": base.answer_text, "n_steps": len(base.steps), "lrm_first": base.lrm_first,
            "usage": base.usage, "counterfactuals": with_cf, "steps": steps,
            "seconds": round(time.perf_counter() - t0, 3),
        }

    def _step_row(self, i: int, st: StepRecord, token_start: int, msgs: list[tuple[str, str]],
                  prefix: str) -> dict[str, Any]:
        row: dict[str, Any] = {"index": i, "source": st.source, "text": st.text,
                               "n_tokens": st.lrm_tokens if st.source == "lrm" else st.srm_tokens,
                               "token_start": token_start}
        if st.source == "srm":
            row["signals"] = {k: _finite(v) for k, v in (st.signals or {}).items()}
            row["token_ids"] = [int(t) for t in (st.token_ids or [])]  # what a teacher-forced replay feeds
            row["pooled"] = encode_vector(st.pooled) if st.pooled is not None else None
            check = self.lrm.check_step(msgs, prefix, st.text)
            row["lrm"] = {k: _finite(v) for k, v in check.features.items()} if check is not None else None
            row["lrm_check_prefill_tokens"] = check.prefill_tokens if check is not None else 0
        return row

    def _counterfactual(self, problem: Problem, msgs: list[tuple[str, str]], steps: list[StepRecord], i: int,
                        head: list[int], used: int, base_correct: bool) -> dict[str, Any]:
        """The LRM writes step ``i`` after the same prefix; the SRM continues greedily from ``head`` + it."""
        cfg = self.cfg
        prefix = "".join(s.text for s in steps[:i])
        budget = cfg.max_tokens - used
        reply = self.lrm.write_step(StepRequest(
            messages=msgs, prefix=prefix, max_tokens=max(1, min(cfg.max_step_tokens, budget)),
            stop=(self.signal_cfg.delimiter,), temperature=0.0, seed=cfg.seed))
        ends = not reply.text and reply.finished  # the LRM says the answer is already complete
        if not (reply.ok and reply.text) and not ends:
            return {"error": reply.error or "empty reply", "gain": None}
        text, srm_tokens = prefix + reply.text, 0
        if not reply.finished and not ends:
            ctx = self.reasoner.ctx
            toks = head + self.srm.tokenize(reply.text)
            room = min(budget - reply.n_tokens, ctx.n_ctx - 1 - len(toks))
            if room > 0:
                ctx.sync(toks)
                for ev in ctx.generate(None, SamplingConfig(temperature=0.0, max_tokens=room)):
                    if ev.eog:
                        break
                    text += ev.text
                    srm_tokens += 1
        prediction, correct = grade(text, problem)
        return {"lrm_text": reply.text, "lrm_tokens": reply.n_tokens, "lrm_ends": ends,
                "continuation": text[len(prefix) + len(reply.text):], "srm_tokens": srm_tokens,
                "prediction": prediction, "correct": bool(correct), "gain": int(correct) - int(base_correct)}


    def _control(self, problem: Problem, steps: list[StepRecord], i: int, head: list[int], used: int,
                 base_correct: bool) -> dict[str, Any]:
        """The SRM re-drafts step ``i`` sampled (seeded by id) from ``head``, then continues greedily: a change
        of the step that is not the LRM's, to tell "any change helps" from "the LRM's step helps"."""
        cfg = self.cfg
        prefix = "".join(s.text for s in steps[:i])
        ctx = self.reasoner.ctx
        room = min(cfg.max_tokens - used, ctx.n_ctx - 1 - len(head))
        if room <= 0:
            return {"error": "no room left for a re-draft", "gain": None}
        ctx.sync(head)
        ctx.reseed(control_seed(problem.id, cfg.seed))
        delim = self.signal_cfg.delimiter
        drafted, n, eog = "", 0, False
        sampled = SamplingConfig(temperature=cfg.control_temperature, top_p=cfg.control_top_p,
                                 max_tokens=min(cfg.max_step_tokens, room))
        for ev in ctx.generate(None, sampled):
            if ev.eog:
                eog = True
                break
            drafted += ev.text
            n += 1
            if delim in drafted:
                break
        cut = drafted.find(delim)
        step_text = drafted if cut < 0 else drafted[: cut + len(delim)]
        text, greedy_tokens = prefix + drafted, 0
        if not eog and room - n > 0:
            for ev in ctx.generate(None, SamplingConfig(temperature=0.0, max_tokens=room - n)):
                if ev.eog:
                    break
                text += ev.text
                greedy_tokens += 1
        prediction, correct = grade(text, problem)
        return {"step_text": step_text, "same_as_base": step_text == steps[i].text, "step_tokens": n,
                "continuation": text[len(prefix) + len(step_text):], "srm_tokens": n + greedy_tokens,
                "prediction": prediction, "correct": bool(correct), "gain": int(correct) - int(base_correct)}


# ------------------------------------------------------------------------------------------------ the file


def header(cfg: LabelConfig, srm_path: str, lrm_path: str, signal_cfg: SignalConfig) -> dict[str, Any]:
    return {"format": FORMAT, "version": 1,
            "settings": {**dataclasses.asdict(cfg), "srm": model_identity(srm_path), "lrm": model_identity(lrm_path),
                         "signal_config": json.loads(json.dumps(dataclasses.asdict(signal_cfg)))},
            "selection": selection_rule(cfg)}


def load_labels(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(header, problem records)`` of a label file (:func:`rankguide_edge.records.load_record_file`: a torn
    last line is skipped, as a run may be writing it; any other malformed line is an error naming it)."""
    f = load_record_file(path, "label")
    assert f.header is not None  # the reader refuses a label file without one
    return f.header, f.records


@dataclass
class LabelSummary:
    out: str
    labelled: int
    skipped_existing: int
    errors: int
    correct: int
    with_counterfactuals: int
    positive_gains: int
    negative_gains: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_labels(labeller: Labeller, problems: Iterable[Problem], out: str | Path, *, head: dict[str, Any],
               progress: Callable[[dict[str, Any] | None], None] | None = None) -> LabelSummary:
    """Label every problem whose id is not yet in ``out`` (header first), appending one line each."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    if out.exists() and out.stat().st_size:
        old, recs = load_labels(out)
        if old.get("settings") != head["settings"]:
            diff = sorted(k for k in set(old.get("settings", {})) | set(head["settings"])
                          if old.get("settings", {}).get(k) != head["settings"].get(k))
            raise ConfigError(f"{out} was labelled with other settings ({', '.join(diff)}): rerun with the same "
                              "options to resume, or choose a new --out")
        seen = {str(r.get("id")) for r in recs}
    s = LabelSummary(str(out), 0, 0, 0, 0, 0, 0, 0, 0.0)
    t0 = time.perf_counter()
    with append_jsonl(out) as sink:
        if sink.empty:
            sink.write(head)
        for problem in problems:
            if problem.id in seen:
                s.skipped_existing += 1
                if progress:
                    progress(None)
                continue
            try:
                rec = labeller.label(problem)
            except RankGuideError as exc:  # one problem the models cannot do (too long a prompt) is no stop
                rec = {"id": problem.id, "kind": problem.kind, "question": problem.question, "gold": problem.gold,
                       "error": str(exc), "steps": []}
                s.errors += 1
            else:
                s.labelled += 1
                s.correct += int(rec["correct"])
                s.with_counterfactuals += int(rec["counterfactuals"])
                gains = [st["cf"].get("gain") for st in rec["steps"] if st.get("cf")]
                s.positive_gains += sum(g == 1 for g in gains)
                s.negative_gains += sum(g == -1 for g in gains)
            sink.write(rec)
            seen.add(problem.id)
            if progress:
                progress(rec)
    s.seconds = round(time.perf_counter() - t0, 2)
    return s
