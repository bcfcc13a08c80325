"""Matplotlib without a display: every figure the library draws goes through here."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import matplotlib

if not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plt", "save_figure", "readable", "TENSORBOARD_DPI"]

#: Figures are sized for TensorBoard's Images cards (about 500 px wide; a wider image is shrunk to fit): at most
#: ~10 inches at this dpi, with the fonts of :data:`READABLE` they keep text ~8 px tall or more there.
TENSORBOARD_DPI = 80
READABLE = {"font.size": 11, "axes.titlesize": 11, "axes.labelsize": 10.5, "legend.fontsize": 9,
            "xtick.labelsize": 9.5, "ytick.labelsize": 9.5, "legend.framealpha": 0.85, "figure.dpi": TENSORBOARD_DPI}


def readable(draw):
    """Decorator for a function that builds a figure: it draws with :data:`READABLE` (matplotlib reads the sizes
    when each text is created), without changing the caller's own matplotlib settings."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with plt.rc_context(READABLE):
            return draw(*args, **kwargs)

    return wrapper


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save ``fig`` to ``path`` (folders created) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path
