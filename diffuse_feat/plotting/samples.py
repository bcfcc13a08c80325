"""Generated points next to real ones, for 2-D data (image data gets an image grid instead)."""

from __future__ import annotations

from torch import Tensor

from . import plt, readable

__all__ = ["samples_scatter"]


@readable
def samples_scatter(samples: Tensor, real: Tensor | None = None, title: str = ""):
    """Scatter of ``[n, 2]`` generated points over the real ones."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5), layout="constrained")
    if real is not None:
        ax.scatter(*real.T, s=4, alpha=0.4, label="real")
    ax.scatter(*samples.T, s=4, alpha=0.7, label="generated")
    ax.legend(loc="upper right")
    ax.set_title(title)
    return fig
