"""A figure of several panels as one image per panel, for TensorBoard.

TensorBoard shows an image shrunk to its card (~320-380 px wide at its default card width): a figure of three
panels side by side becomes a thumbnail with 3-4 px text. Cut into its panels (each with its title, labels,
legend and colorbar), every panel is about a card wide and its text stays legible. The figure itself is what
PNG files get (``save_figure``).
"""

from __future__ import annotations

import re

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.transforms import Bbox

__all__ = ["figure_panels"]

_PAD = 4  # pixels kept around a panel's own extent


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:40]


def _shows_something(ax) -> bool:
    return ax.get_visible() and (ax.axison or bool(ax.images) or bool(ax.collections) or bool(ax.lines))


def figure_panels(fig) -> list[tuple[str, np.ndarray]]:
    """``(name, RGB uint8 [H, W, 3])`` per panel of ``fig`` (a colorbar stays with the panel beside it), in reading
    order, named ``<index>_<title>``. A figure of one panel gives one image of the whole figure (named ``""``)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3]
    height, width = pixels.shape[:2]
    renderer = canvas.get_renderer()
    colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and _shows_something(ax)]
    if len(panels) <= 1:
        return [("", pixels.copy())]
    boxes = {ax: ax.get_tightbbox(renderer) for ax in panels}
    for cbar in colorbars:  # joins the panel whose right edge is nearest its left edge
        box = cbar.get_tightbbox(renderer)
        owner = min(panels, key=lambda ax: abs(boxes[ax].x1 - box.x0) + abs(boxes[ax].y0 - box.y0))
        boxes[owner] = Bbox.union([boxes[owner], box])
    order = sorted(panels, key=lambda ax: (-round(boxes[ax].y1 / 20), boxes[ax].x0))  # rows top-down, then left
    out = []
    for index, ax in enumerate(order):
        box = boxes[ax]
        x0, x1 = max(0, int(box.x0) - _PAD), min(width, int(np.ceil(box.x1)) + _PAD)
        y0, y1 = max(0, height - int(np.ceil(box.y1)) - _PAD), min(height, height - int(box.y0) + _PAD)
        title = ax.get_title() or ax.get_ylabel() or f"panel {index}"
        out.append((f"{index}_{_slug(title)}", pixels[y0:y1, x0:x1].copy()))
    return out
