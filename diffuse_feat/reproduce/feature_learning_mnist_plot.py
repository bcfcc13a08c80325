"""``feature_learning.png`` of the Noisy-MNIST grid (:mod:`diffuse_feat.reproduce.feature_learning_mnist`): the final
signal/noise of both objectives against ``n SNR^2``, and the signal and noise alignments over training at the
lowest, a middle and the highest ``n SNR^2``, the two objectives on one axis each (Han et al. 2025, §5.2)."""

from __future__ import annotations

import math
from pathlib import Path

from ..plotting import plt, save_figure

__all__ = ["plot"]

COLORS = {"diffusion": "C0", "classification": "C3"}


def _panels(values: list[float]) -> list[float]:
    """The lowest, the one nearest the geometric middle, and the highest (fewer when the grid is smaller)."""
    if len(values) <= 3:
        return values
    middle = math.sqrt(values[0] * values[-1])
    return [values[0], min(values[1:-1], key=lambda v: abs(math.log(v / middle))), values[-1]]


def plot(payload: dict, path: Path) -> None:
    runs = payload["runs"]
    values = sorted({r["n_snr2"] for r in runs})
    shown = _panels(values)
    fig, axes = plt.subplots(1, 1 + len(shown), figsize=(4.3 * (1 + len(shown)), 4))
    ax = axes[0]
    for objective, color in COLORS.items():
        pts = sorted((r["n_snr2"], r["ratio"], r.get("ratio_se") or 0.0) for r in runs if r["objective"] == objective)
        x, y, se = zip(*pts, strict=True)
        ax.errorbar(x, y, yerr=[2 * s for s in se], fmt="o-", color=color, capsize=3, label=f"{objective} (± 2 SE)")
    ax.axhline(1, color="gray", lw=0.5)
    ax.set(xscale="log", yscale="log", xlabel="n SNR²", ylabel="signal / noise",
           title=f"Noisy-MNIST 0 vs 1: final signal / noise ({len(payload['seeds'])} seeds)")
    ax.minorticks_off()  # a log axis over one or two decades labels its minor ticks on top of each other
    ax.set_xticks(values, labels=[f"{v:g}" for v in values])
    ax.legend(fontsize=7)
    for ax, value in zip(axes[1:], shown, strict=True):
        for r in runs:
            if r["n_snr2"] != value:
                continue
            c, color = r["curves"], COLORS[r["objective"]]
            t = [s / r["steps"] for s in c["step"]]  # fraction of training: both objectives on one axis
            ax.plot(t, c["signal"], "-", color=color, label=f"{r['objective']} signal")
            ax.plot(t, c["noise"], "--", color=color, label=f"{r['objective']} noise")
        ax.set(yscale="log", xlabel="fraction of training", ylabel="max_r <w_r, ·> (mean over seeds)",
               title=f"n SNR² = {value:g}: digit (signal) vs noise patch")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
