"""What every report figure shares: a matplotlib figure on its own Agg canvas (no pyplot, no global backend
switched, nothing imported before the first figure), and drawing a PNG so that a plot that cannot be drawn
never fails the report around it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import DependencyError
from .files import atomic_path


def agg_figure(width: float, height: float, dpi: int = 110) -> Any:
    """A matplotlib ``Figure`` of ``width`` x ``height`` inches attached to an Agg canvas."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise DependencyError("matplotlib, a dependency of rankguide-edge, is missing or broken: "
                              "pip install 'matplotlib>=3.7' (or pass --no-plot)") from None
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def draw_png(draw: Callable[[Path], object], path: str | os.PathLike[str]) -> str | None:
    """Call ``draw(tmp)`` to write a PNG under a temporary name next to ``path``, then rename it to ``path``.

    Returns None when the figure was written, else one line saying why it was not (the temporary file is
    removed and ``path`` left as it was): a report writes its text and JSON whatever happens to a figure.
    """
    out = Path(path)
    try:
        with atomic_path(out) as tmp:
            draw(tmp)
        return None
    except Exception as exc:  # a figure is an extra: whatever matplotlib raises must not fail the report
        return f"{out.name} not drawn: {exc}"
