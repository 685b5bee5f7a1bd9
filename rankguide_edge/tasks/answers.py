"""Final-answer extraction and checking. :func:`grade` (extract, then check against the gold) is the one
grading function: ``trace``, ``label`` and ``bench`` records all get their ``prediction`` and ``correct`` from it.

Two families of problems:

* numeric (``gsm8k``, ``svamp``, ``generic``): the answer is one number. :func:`extract_answer` looks for
  the last answer anchor in the text (``\\boxed{...}``, ``####``, "the (final) answer is", "answer:") and
  takes the first number after it; without an anchor it takes the last number in the text. Numbers are
  normalised: thousands commas (``1,000``), currency (``$5``), trailing zeros and periods (``5.00``, ``5.``),
  percent signs (``25%`` is 25), signs (``-3``, unicode minus) and simple fractions (``1/2``,
  ``\\frac{1}{2}``) are read exactly as rationals and printed canonically (``1000``, ``5``, ``0.5``,
  ``1/3`` when the decimal does not terminate). An integer gold matches only the same integer; any other
  gold matches a number within 1e-6 relative (or 1e-9 absolute) of it.
* ``math`` (MATH500): the answer is the LaTeX inside the last ``\\boxed{...}`` / ``\\fbox{...}`` (balanced
  braces). Answers are compared with the optional ``math-verify`` package; if it is missing or fails,
  a normalised string comparison is used instead. Checking never raises on odd model output.

Nothing is imported or computed at import time; ``math_verify`` is imported on first use.
"""

from __future__ import annotations

import logging
import re
import threading
from fractions import Fraction
from functools import lru_cache
from typing import TYPE_CHECKING, Any

# the kinds and the task prompt are the prompt pipeline's (engine/prompts.py), re-exported here
from ..engine.prompts import KINDS, instruction_for, normalize_kind, prompt_for

if TYPE_CHECKING:
    from .datasets import Problem

_log = logging.getLogger(__name__)

#: kinds whose answer is a single number
NUMERIC_KINDS: frozenset[str] = frozenset({"gsm8k", "svamp", "generic"})

#: relative and absolute tolerances of numeric comparison
REL_TOL = Fraction(1, 10**6)
ABS_TOL = Fraction(1, 10**9)

# A math answer longer than this is compared as a string only (keeps sympy away from pathological input).
_MAX_VERIFY_CHARS = 600


# --------------------------------------------------------------------------------------------- numbers

# A number token: comma-grouped integer part or plain digits, optional decimals, optional /denominator.
# The sign is only a sign when it does not follow a word character (``10-3`` is a subtraction).
_NUMBER_RE = re.compile(
    r"(?<![\w.])(?P<sign>-)?"
    r"(?P<int>\d{1,3}(?:,\d{3})+|\d+)?(?P<frac>\.\d+)?"
    r"(?:/(?P<den>\d+(?:\.\d+)?))?"
    r"(?![\d])"
)
_LATEX_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{\s*(-?\s*\d+(?:\.\d+)?)\s*\}\s*\{\s*(-?\s*\d+(?:\.\d+)?)\s*\}")
_LATEX_FRAC_SHORT_RE = re.compile(r"\\[dt]?frac\s*(\d)(\d)")
_TEXT_WRAP_RE = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_ANCHOR_RE = re.compile(
    r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|was|will\s+be|=|:)\s*:?"
    r"|####",
    re.IGNORECASE,
)
_ANCHOR_WINDOW = 80


def _clean_numeric_text(text: str) -> str:
    """Turn LaTeX and typography around numbers into plain text the number regex reads."""
    s = text.replace("\u2212", "-").replace("\u2013", "-").replace("\u00a0", " ")
    s = s.replace("{,}", ",").replace("\\!", "").replace("\\,", "").replace("\\$", "$").replace("\\%", "%")
    s = _LATEX_FRAC_RE.sub(lambda m: f"{m.group(1).replace(' ', '')}/{m.group(2).replace(' ', '')}", s)
    s = _LATEX_FRAC_SHORT_RE.sub(r"\1/\2", s)
    s = _TEXT_WRAP_RE.sub(r" \1 ", s)
    # "$-5" / "-$5" -> "-5"; a currency sign between sign and digits would hide the sign
    s = re.sub(r"-\s*\$\s*", "-", s)
    s = re.sub(r"\$\s*(?=[-\d.])", " ", s)
    return s


def _token_value(m: re.Match[str]) -> Fraction | None:
    """The exact value of one regex match, or None if it holds no digits (or too many to convert)."""
    int_part, frac_part, den = m.group("int"), m.group("frac"), m.group("den")
    if int_part is None and frac_part is None:
        return None
    try:
        value = Fraction((int_part or "0").replace(",", "") + (frac_part or ""))
        if den is not None:
            d = Fraction(den)
            if d == 0:
                return None
            value = value / d
    except (ValueError, ZeroDivisionError):  # e.g. int() digit limit on absurdly long tokens
        return None
    return -value if m.group("sign") else value


def _numbers(text: str) -> list[Fraction]:
    """All numbers in ``text`` in order of appearance (already cleaned by :func:`_clean_numeric_text`)."""
    out = []
    for m in _NUMBER_RE.finditer(text):
        v = _token_value(m)
        if v is not None:
            out.append(v)
    return out


def parse_number(text: str | int | float | None) -> Fraction | None:
    """Read ``text`` as exactly one number (``"1,000"``, ``"$5.00"``, ``"25%"``, ``"\\frac{1}{2}"``), else None."""
    if text is None or isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        try:
            return Fraction(str(text)) if isinstance(text, float) else Fraction(text)
        except (ValueError, OverflowError):
            return None
    s = _clean_numeric_text(_strip_boxed_wrapper(text.strip())).strip()
    s = s.strip("$ ").rstrip(".").removesuffix("%").strip()
    m = _NUMBER_RE.fullmatch(s)
    return _token_value(m) if m else None


def format_number(value: Fraction) -> str:
    """Canonical text of a rational: ``5``, ``-0.25``, ``1000``; ``p/q`` if the decimal does not terminate."""
    if value.denominator == 1:
        return str(value.numerator)
    den, twos, fives = value.denominator, 0, 0
    while den % 2 == 0:
        den //= 2
        twos += 1
    while den % 5 == 0:
        den //= 5
        fives += 1
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)
    scaled = abs(value.numerator) * 10**places // value.denominator
    digits = str(scaled).rjust(places + 1, "0")
    sign = "-" if value < 0 else ""
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


def numbers_match(prediction: Fraction, gold: Fraction) -> bool:
    """Whether ``prediction`` states ``gold``: exactly, when the gold is an integer (1,000,001 is not
    1,000,000, and 5.0000001 is not 5); otherwise within 1e-6 relative or 1e-9 absolute (a gold of 1/3
    accepts 0.333333), in exact arithmetic."""
    if gold.denominator == 1:
        return prediction == gold
    diff = abs(prediction - gold)
    return diff <= ABS_TOL or diff <= REL_TOL * max(abs(prediction), abs(gold))


# --------------------------------------------------------------------------------------------- boxes

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\b")


def _boxed_spans(text: str) -> list[tuple[int, str]]:
    """(position, content) of every ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces) and ``\\boxed x``."""
    spans: list[tuple[int, str]] = []
    for m in _BOX_RE.finditer(text):
        i = m.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == "{":
            depth, j = 0, i
            while j < len(text):
                c = text[j]
                if c == "\\" and j + 1 < len(text):
                    j += 2  # skip escaped characters such as \{ and \}
                    continue
                if c == "{":
                    depth += 1
                elif c == "}":
                    depth -= 1
                    if depth == 0:
                        spans.append((m.start(), text[i + 1 : j]))
                        break
                j += 1
        elif i > m.end():  # "\boxed 5": the argument is the next whitespace-free run
            tail = re.match(r"[^\s$]+", text[i:])
            if tail:
                spans.append((m.start(), tail.group(0)))
    return spans


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` or ``\\fbox{...}`` in ``text`` (nested braces kept), or None."""
    spans = _boxed_spans(text)
    return spans[-1][1].strip() if spans else None


def _strip_boxed_wrapper(s: str) -> str:
    """``\\boxed{x}`` (possibly in ``$...$``) -> ``x``; anything else unchanged."""
    t = s.strip().strip("$").strip()
    spans = _boxed_spans(t)
    if len(spans) == 1 and spans[0][0] == 0 and t.endswith("}"):
        return spans[0][1].strip()
    return s


# --------------------------------------------------------------------------------------------- extraction


def _extract_numeric(text: str) -> str | None:
    """Canonical number after the last usable answer anchor, else the last number; None if no number."""
    anchors: list[tuple[int, str]] = [(pos, body) for pos, body in _boxed_spans(text)]
    for m in _ANCHOR_RE.finditer(text):
        anchors.append((m.start(), text[m.end() : m.end() + _ANCHOR_WINDOW]))
    for _, segment in sorted(anchors, key=lambda a: a[0], reverse=True):
        inner = last_boxed(segment)
        nums = _numbers(_clean_numeric_text(inner if inner is not None else segment))
        if nums:
            return format_number(nums[0])
    nums = _numbers(_clean_numeric_text(text))
    return format_number(nums[-1]) if nums else None


_MATH_ANCHOR_RE = re.compile(r"(?:final\s+answer|the\s+answer)\s*(?:is|:)\s*:?", re.IGNORECASE)


def _extract_math(text: str) -> str | None:
    """LaTeX of the last box; else the rest of the line after "the (final) answer is"; else None."""
    boxed = last_boxed(text)
    if boxed:
        return boxed
    matches = list(_MATH_ANCHOR_RE.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :].strip().split("\n", 1)[0].strip()
    if rest.startswith("$") and rest.count("$") >= 2:
        rest = rest[1 : rest.index("$", 1)]
    rest = rest.strip().strip("$*").strip().rstrip(".").strip()
    return rest or None


def extract_answer(text: str | None, kind: str) -> str | None:
    """The final answer stated in a solver's output, or None if it states none.

    Numeric kinds return the canonical number text (``"1000"``, ``"0.5"``, ``"-3"``); ``math`` returns the
    LaTeX of the last ``\\boxed{}`` (or of the "the answer is ..." line).
    """
    k = normalize_kind(kind)
    if not text:
        return None
    return _extract_math(text) if k == "math" else _extract_numeric(text)


# --------------------------------------------------------------------------------------------- checking

_TEXT_ONLY_RE = re.compile(r"^[A-Za-z][A-Za-z \-']*$")


def normalize_math_string(s: str) -> str:
    """A normalised string form of a LaTeX answer used when math-verify is unavailable or undecided."""
    t = _strip_boxed_wrapper(s).strip().strip("$").strip()
    t = t.replace("\u2212", "-")
    t = re.sub(r"\\[dt]frac", r"\\frac", t)
    t = re.sub(r"\\left|\\right|\\!|\\,|\\;|\\:|\\ ", "", t)
    t = re.sub(r"\^\s*\{?\\circ\}?|\\%|%|\\\$", "", t)
    t = _TEXT_WRAP_RE.sub(r"\1", t)
    t = re.sub(r"\s+", " ", t).strip().rstrip(".").strip()
    if _TEXT_ONLY_RE.match(t):
        return t.casefold()
    return t.replace(" ", "")


@lru_cache(maxsize=1)
def _math_verify() -> tuple[Any, Any] | None:
    """``(parse, verify)`` from math-verify, or None (logged once) when it is not installed."""
    try:
        from math_verify import parse, verify
    except Exception as exc:  # ImportError, or a broken install of its sympy/antlr dependencies
        _log.warning("math-verify unavailable (%s); math answers are compared as normalised strings. "
                     "Fix: pip install 'math-verify>=0.7'", exc)
        return None
    # off the main thread we call it without its SIGALRM timeout (inputs are length-capped instead); drop
    # the one-time notice it logs about that
    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(_drop_timeout_notice)
    return parse, verify


def _drop_timeout_notice(record: logging.LogRecord) -> bool:
    return "Timeout is disabled" not in record.getMessage()


def _as_latex_math(s: str) -> str:
    t = _strip_boxed_wrapper(s).strip()
    if t.startswith("$") and t.endswith("$"):
        t = t.strip("$")
    return f"${t}$"


def _verify_math(prediction: str, gold: str) -> bool | None:
    """math-verify's verdict, or None when it is unavailable or failed (the caller falls back)."""
    mv = _math_verify()
    if mv is None or len(prediction) > _MAX_VERIFY_CHARS or len(gold) > _MAX_VERIFY_CHARS:
        return None
    parse, verify = mv
    # math-verify's timeouts use SIGALRM, which only works on the main thread
    on_main = threading.current_thread() is threading.main_thread()
    timeout = 5 if on_main else None
    try:
        g = parse(_as_latex_math(gold), parsing_timeout=timeout)
        p = parse(_as_latex_math(prediction), parsing_timeout=timeout)
        if not g or not p:
            return None
        return bool(verify(g, p, timeout_seconds=timeout))
    except Exception as exc:  # any sympy/antlr/timeout failure: fall back, never crash
        _log.debug("math-verify failed on %r vs %r: %s", prediction, gold, exc)
        return None


def _check_math(prediction: str, gold: str) -> bool:
    pred = last_boxed(prediction) or prediction
    pn, gn = normalize_math_string(pred), normalize_math_string(gold)
    if not pn:
        return False
    if pn == gn:
        return True
    # math-verify reads plain words as products of symbols (anagrams would match): compare text as text
    if _TEXT_ONLY_RE.match(gn) or _TEXT_ONLY_RE.match(pn):
        return False
    verdict = _verify_math(pred, gold)
    if verdict is not None:
        return verdict
    a, b = parse_number(pred), parse_number(gold)
    return a is not None and b is not None and numbers_match(a, b)


def check_answer(prediction: str | None, gold: str, kind: str) -> bool:
    """Whether ``prediction`` (an extracted answer, or a whole output) equals ``gold`` for ``kind``.

    Numeric kinds compare numbers (see :func:`numbers_match`); a ``generic`` gold that is not a number is
    compared as a normalised string. ``math`` uses math-verify with a string fallback. None or an answer
    without a number is never correct. Never raises on odd input.
    """
    k = normalize_kind(kind)
    if prediction is None or not str(prediction).strip():
        return False
    prediction, gold = str(prediction), str(gold)
    if k == "math":
        return _check_math(prediction, gold)
    g = parse_number(gold)
    if g is None:
        if k != "generic":
            return False
        pred = extract_answer_text(prediction)
        return normalize_math_string(pred) == normalize_math_string(gold)
    p = parse_number(prediction)
    if p is None:
        extracted = _extract_numeric(prediction)
        p = Fraction(extracted) if extracted is not None else None
    return p is not None and numbers_match(p, g)


def extract_answer_text(text: str) -> str:
    """The raw text of a non-numeric answer: last box, else the rest of the "answer is" line, else the text."""
    return _extract_math(text) or text.strip()


def gold_answer(problem: Problem) -> str:
    """The canonical gold answer of a problem: a canonical number for numeric kinds, LaTeX for math."""
    k = normalize_kind(problem.kind)
    if k == "math":
        return _strip_boxed_wrapper(problem.gold).strip()
    v = parse_number(problem.gold)
    return format_number(v) if v is not None else problem.gold.strip()


def grade(output: str | None, problem: Problem) -> tuple[str | None, bool]:
    """``(extracted answer, correct)`` of a solver's whole output for ``problem``."""
    extracted = extract_answer(output, problem.kind)
    return extracted, check_answer(extracted, problem.gold, problem.kind)


__all__ = [
    "KINDS",
    "NUMERIC_KINDS",
    "check_answer",
    "extract_answer",
    "extract_answer_text",
    "format_number",
    "gold_answer",
    "grade",
    "instruction_for",
    "last_boxed",
    "normalize_kind",
    "normalize_math_string",
    "numbers_match",
    "parse_number",
    "prompt_for",
]
