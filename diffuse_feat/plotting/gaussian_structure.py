"""The Gaussian-structure figure: linearity, distances, distillation and Jacobian spectra against sigma, with
the Gaussian (``D_G``) and empirical (``D_M``) denoisers drawn in, and the model's samples."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import plt, readable

__all__ = ["plot_gaussian_structure"]


def _to_list(v) -> list:
    return v.tolist() if isinstance(v, Tensor) else list(v)


@readable
def plot_gaussian_structure(values: dict[str, Any], samples: Tensor | None, gaussian_samples: Tensor | None,
                            nearest: Tensor | None, *, mid_band: tuple[float, float] = (0.1, 10.0), title: str = ""):
    """One figure: linearity, distances, distillation and Jacobian spectra vs sigma (``D_G`` dashed, ``D_M``
    dotted), and the model's samples above the Gaussian model's (same noise) and the nearest training points."""
    # fixed margins instead of tight_layout: the figure is drawn at every run and must stay cheap
    fig, axes = plt.subplots(2, 3, figsize=(11, 7.2))
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.08, top=0.9, wspace=0.28, hspace=0.42)
    sig = _to_list(values["sigmas"])

    def shade(ax):
        ax.axvspan(*mid_band, color="0.92", zorder=0)
        ax.set_xscale("log")
        ax.set_xlabel("sigma (grey: mid band)")
        ax.minorticks_off()  # minor log ticks are most of the drawing time

    ax = axes[0, 0]
    ax.plot(sig, _to_list(values["linearity_cosine"]), "o-", ms=3, label="model")
    ax.plot(sig, _to_list(values["gaussian_linearity_cosine"]), "k--", label="Gaussian D_G")
    ax.plot(sig, _to_list(values["empirical_linearity_cosine"]), "r:", label="empirical D_M")
    ax.set_title("linearity score (|cos|)")
    shade(ax)
    ax.legend()

    ax = axes[0, 1]
    ax.plot(sig, _to_list(values["rmse_to_gaussian"]), "o-", ms=3, label="model vs D_G")
    ax.plot(sig, _to_list(values["rmse_to_empirical"]), "s-", ms=3, label="model vs D_M")
    ax.plot(sig, _to_list(values["empirical_rmse_to_gaussian"]), "r:", label="D_M vs D_G")
    ax.axhline(0.0, color="k", ls="--", lw=1, label="D_G vs D_G")
    ax.set_title("RMSE between denoisers")
    shade(ax)
    ax.legend()

    ax = axes[0, 2]
    if "distill_error" in values:
        dsig = _to_list(values["distill_sigmas"])
        ax.plot(dsig, _to_list(values["distill_error"]), "o-", ms=3, label="model's best affine map")
        ax.plot(dsig, _to_list(values["empirical_distill_error"]), "r:", label="D_M's best affine map")
        ax.axhline(0.0, color="k", ls="--", lw=1, label="D_G (exact)")
        ax.set_yscale("symlog", linthresh=0.1)
        ax.legend()
    ax.set_title("distillation: |W_L - W_G| / |W_G|")
    shade(ax)
    ax.minorticks_off()

    ax = axes[1, 0]
    if "jacobian_top_singular" in values:
        tops, ref = _to_list(values["jacobian_top_singular"]), _to_list(values["gaussian_jacobian_top"])
        for j, sigma in enumerate(_to_list(values["jacobian_sigmas"])):
            line = ax.plot(range(1, len(tops[j]) + 1), tops[j], "o-", ms=3, label=f"model, sigma={sigma:g}")[0]
            ax.plot(range(1, len(ref[j]) + 1), ref[j], "--", color=line.get_color())
        ax.set_xlabel("index k")
        ax.plot([], [], "k--", label="Gaussian J_G")
        ax.legend(fontsize=8)
    ax.set_title("Jacobian's top singular values")

    ax = axes[1, 1]
    ax.plot(sig, _to_list(values["linearity_norm_ratio"]), "o-", ms=3, label="model")
    ax.set_title("linearity, norm-ratio form\n(uninformative at high sigma if mu != 0)", fontsize=10)
    shade(ax)

    _sample_panel(axes[1, 2], samples, gaussian_samples, nearest)
    fig.suptitle(title)
    return fig


def _sample_panel(ax, samples: Tensor | None, gaussian_samples: Tensor | None, nearest: Tensor | None) -> None:
    if samples is None or gaussian_samples is None:
        ax.axis("off")
        return
    if samples.ndim == 4:  # images: rows = model, Gaussian model (same noise), nearest training point
        from torchvision.utils import make_grid

        num = min(samples.shape[0], 8)  # a panel is ~300 px wide: 8 images a row keep each ~35 px
        rows = [samples[:num], gaussian_samples[:num]] + ([nearest[:num]] if nearest is not None else [])
        grid = make_grid(((torch.cat(rows).float() + 1) / 2).clamp(0, 1), nrow=num, pad_value=1)
        ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title("rows: model / Gaussian model\n/ nearest training point", fontsize=10)
        ax.axis("off")
        return
    flat_s, flat_g = samples.reshape(samples.shape[0], -1), gaussian_samples.reshape(gaussian_samples.shape[0], -1)
    ax.scatter(flat_g[:, 0], flat_g[:, -1], s=8, label="Gaussian model")
    ax.scatter(flat_s[:, 0], flat_s[:, -1], s=8, label="model")
    ax.set_title("samples (first vs last coordinate)", fontsize=10)
    ax.legend()
