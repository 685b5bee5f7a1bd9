"""Limit numpy's BLAS threads around small linear algebra (Gram products and eigen-solves of 16-128 rows).

For such sizes a multi-threaded BLAS is slower than one thread, and much slower on a machine whose cores
are busy with llama.cpp. threadpoolctl finds the BLAS numpy loaded; the controller is built on first use
(nothing happens at import time) and, where no BLAS is found, the limit does nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_controller: Any = None


def _get_controller() -> Any:
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller


def blas_available() -> bool:
    """True when a BLAS thread pool of numpy's was found."""
    return bool(_get_controller().select(user_api="blas").lib_controllers)


def get_blas_threads() -> int:
    """Current BLAS thread count (the largest over the BLAS libraries found), or 0 when none was found."""
    libs = _get_controller().select(user_api="blas").lib_controllers
    return max((lc.num_threads for lc in libs), default=0)


@contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """Run the block with numpy's BLAS limited to ``n`` threads (``n <= 0``: leave it alone)."""
    if n <= 0:
        yield
        return
    ctl = _get_controller()
    if get_blas_threads() == n:
        yield
        return
    with ctl.limit(limits=n, user_api="blas"):
        yield
