"""``regimes.png`` of the MNIST grid: phi against the DDPM step (the paper's, the exact empirical score's and the
trained U-Net's), and against t'/t'_S as the paper's Fig. 4 draws it; from the JSON payload of
:mod:`diffuse_feat.reproduce.regimes_mnist`."""

from __future__ import annotations

import math
from pathlib import Path

from ..plotting import plt, save_figure
from ..regimes_theory import SPECIATION_LEVEL

__all__ = ["plot"]


def _known(xs, ys, errs=None):
    keep = [i for i, y in enumerate(ys) if y is not None]
    pick = lambda values: [values[i] for i in keep]  # noqa: E731
    return pick(xs), pick(ys), (pick(errs) if errs is not None else None)


def plot(payload: dict, path: Path) -> None:
    ref, exact, trained = payload["reference"], payload["exact"], payload["trained"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    curves = ((ref, "k", "o", f"paper (n={ref['n']}, trained U-Net)", ref["ddpm_step_S"]),
              (exact, "C0", "s", f"exact empirical score (n={exact['n_train']})", exact["ddpm_step_S"]),
              (trained, "C1", "^", f"trained U-Net here (n={trained['n_train']})", trained["ddpm_step_S"]))
    for block, color, marker, label, step_s in curves:
        steps, phi, se = _known(block["ddpm_steps"], block["phi"], block.get("phi_se"))
        for ax, x in ((axes[0], steps), (axes[1], [s / step_s for s in steps])):
            ax.errorbar(x, phi, yerr=se, fmt=f"{marker}-", color=color, ms=3, lw=1, label=label)
    for ax in axes:
        ax.axhline(SPECIATION_LEVEL, color="grey", lw=0.5)
        ax.set(ylabel=r"$\phi$", ylim=(0.45, 1.03))
    axes[0].set(xlabel="DDPM step t'", title="MNIST 1 vs 8 (32x32): cloning probability")
    axes[0].invert_xaxis()
    axes[1].axvline(1.0, color="k", ls="--", lw=1)
    for block, color in ((exact, "C0"), (trained, "C1")):
        ratio = block.get("crossing_ratio_ddpm_steps")
        if ratio is not None and math.isfinite(ratio):
            axes[1].axvline(ratio, color=color, lw=1)
    axes[1].axvline(ref["crossing_ratio_ddpm_steps"], color="k", lw=1, ls=":")
    axes[1].set(xlabel=r"$t'/t'_S$ (DDPM steps, each curve's own $\Lambda$)", title="as the paper's Fig. 4")
    axes[1].invert_xaxis()
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
