"""The feature-learning figure: filter x direction heat map, signal and noise over training, increment ratio."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import plt, readable

__all__ = ["alignment_figure"]


@readable
def alignment_figure(last: dict[str, Tensor], history: list[dict[str, Any]], theory: float | None = None,
                     filter_classes: Tensor | None = None):
    """Heat map of ``<w_r, u>`` (filters x [signal vectors | noise patches]), signal and noise over training,
    and the increment ratio with its linear-phase prediction (dashed) when there is one."""
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1.6, 1, 1]}, layout="constrained")
    blocks = [last[k] for k in ("signal", "noise", "directions") if k in last]
    heat = torch.cat(blocks, dim=1).numpy()
    limit = float(np.abs(heat).max()) or 1.0
    image = axes[0].imshow(heat, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    fig.colorbar(image, ax=axes[0], fraction=0.04)
    if "signal" in last:
        k = last["signal"].shape[1]
        axes[0].axvline(k - 0.5, color="k", lw=1)
        axes[0].set_xlabel(f"mu_j (first {k}) | training noise xi_i")
    else:
        axes[0].set_xlabel("user-given direction")
    if filter_classes is not None:
        for boundary in torch.nonzero(filter_classes[1:] != filter_classes[:-1]).flatten().tolist():
            axes[0].axhline(boundary + 0.5, color="k", lw=1)
    axes[0].set_ylabel("filter r")
    axes[0].set_title("<w_r, direction>")
    steps = [h["step"] for h in history]
    if "signal" in last:
        curves = ("signal", "noise")
    else:
        curves = tuple(f"direction{k}_max_abs" for k in range(last["directions"].shape[1]))
    for key in curves:
        axes[1].plot(steps, [h[key] for h in history], label=key)
    axes[1].set_xlabel("step")
    axes[1].legend()
    axes[1].set_title("max over filters")
    if "signal" in last:
        axes[2].plot(steps, [h["increment_ratio"] for h in history], label="measured")
        if theory is not None:
            axes[2].axhline(theory, color="k", ls="--", label="linear-phase theory")
        axes[2].set_yscale("symlog", linthresh=0.1)
        axes[2].legend()
        axes[2].set_title("Delta signal / Delta noise")
        axes[2].set_xlabel("step")
    else:
        axes[2].axis("off")
    return fig
