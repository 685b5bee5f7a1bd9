"""rankguide-edge: small and large GGUF reasoning models solving together, routed by signals of the small one.

Importing the package does no work: no model loads, no native library opens, llama_cpp is not imported; the
names below are imported on first use.

>>> from rankguide_edge import Solver, ReasonerConfig
>>> with Solver(config=ReasonerConfig(policy="verify", route_steps=1)) as s:  # doctest: +SKIP
...     print(s.solve("A baker makes 12 trays of 8 muffins and sells 75. How many are left?", kind="gsm8k").answer)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._exports import lazy_exports

__version__ = "0.1.0"

#: the exact llama-cpp-python version the native tap and the ctypes declarations are written against
LLAMA_CPP_PYTHON_VERSION = "0.3.36"

#: public name -> the module that defines it
_EXPORTS = {
    "Answer": ".collab.solver",
    "RankGuideError": ".errors",
    "ReasonerConfig": ".collab.reasoner",
    "RuntimeConfig": ".config",
    "SignalConfig": ".signals.step",
    "SolveResult": ".collab.reasoner",
    "Solver": ".collab.solver",
    "load_model": ".engine",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .collab.reasoner import ReasonerConfig, SolveResult
    from .collab.solver import Answer, Solver
    from .config import RuntimeConfig
    from .engine import load_model
    from .errors import RankGuideError
    from .signals.step import SignalConfig

__all__ = ["__version__", "LLAMA_CPP_PYTHON_VERSION", "Answer", "RankGuideError", "ReasonerConfig", "RuntimeConfig",
           "SignalConfig", "SolveResult", "Solver", "load_model"]
