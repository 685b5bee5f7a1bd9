"""rankguide-edge: small and large GGUF reasoning models solving together, routed by tensor-rank signals.

Importing the package does no work: no model loads, no native library opens, llama_cpp is not imported.
Public entry points live in the sub-packages (``rankguide_edge.engine``, ``rankguide_edge.signals``, ...).
"""

__version__ = "0.1.0"

#: the exact llama-cpp-python version the native tap and the ctypes declarations are written against
LLAMA_CPP_PYTHON_VERSION = "0.3.36"

__all__ = ["__version__", "LLAMA_CPP_PYTHON_VERSION"]
