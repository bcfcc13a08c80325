"""Rows of samples as one figure: generated images above real (or nearest training) ones, or a scatter for other
data (the ``sample_grid`` and ``memorization`` diagnostics of ``python -m diffuse_feat.analyze``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import plt, readable
from .samples import samples_scatter

__all__ = ["sample_rows_figure", "image_grid", "MIN_IMAGE_PIXELS"]

#: smallest side of one image in a grid logged to TensorBoard: an 8x8 digit at its own size is a smudge there
MIN_IMAGE_PIXELS = 48


def image_grid(images: Tensor, nrow: int, min_pixels: int = MIN_IMAGE_PIXELS) -> Tensor:
    """``[C, H', W']`` grid in ``[0, 1]`` of images ``[n, C, H, W]`` in ``[-1, 1]``, each enlarged by a whole factor
    (nearest neighbour: pixels stay sharp squares) until its smaller side is at least ``min_pixels``."""
    from torchvision.utils import make_grid

    factor = max(1, -(-min_pixels // min(images.shape[-2:])))
    unit = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)
    if factor > 1:
        unit = torch.nn.functional.interpolate(unit, scale_factor=factor, mode="nearest")
    return make_grid(unit, nrow=nrow, padding=max(2, factor), pad_value=1)


@readable
def sample_rows_figure(rows: Sequence[Tensor], labels: Sequence[str], title: str = "", max_per_row: int = 16):
    """Image batches ``[n, C, H, W]`` in ``[-1, 1]``, one row each (at most ``max_per_row`` images), labelled; 2-D
    points as a scatter of the first row over the second; anything else as first-vs-last-coordinate scatter."""
    first = rows[0]
    if first.ndim == 4 and first.shape[1] in (1, 3):
        from torchvision.utils import make_grid

        num = min(first.shape[0], max_per_row)
        images = torch.cat([r[:num].float().cpu() for r in rows])
        grid = make_grid(((images + 1) / 2).clamp(0, 1), nrow=num, pad_value=1)
        fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * num), 0.8 * len(rows) + 0.6))
        ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(f"{title}\nrows: {' / '.join(labels)}" if title else f"rows: {' / '.join(labels)}")
        ax.axis("off")
        return fig
    flat = [r.reshape(r.shape[0], -1).float().cpu() for r in rows]
    if flat[0].shape[1] == 2:
        return samples_scatter(flat[0], flat[1] if len(flat) > 1 else None, title=title)
    fig, ax = plt.subplots(figsize=(4, 4))
    for points, label in zip(flat, labels, strict=True):
        ax.scatter(points[:, 0], points[:, -1], s=6, label=label)
    ax.set_xlabel("first coordinate")
    ax.set_ylabel("last coordinate")
    ax.legend(fontsize=8)
    ax.set_title(title)
    return fig
