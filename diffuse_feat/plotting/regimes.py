"""The regimes figure of one measurement: speciation (phi), collapse (phi_C, entropy proxy) and the collapse
times of the trajectories, each with its theory and the exact empirical score's curve drawn in."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from ..regimes_theory import SPECIATION_LEVEL
from . import plt, readable

__all__ = ["regimes_figure"]


@readable
def regimes_figure(values: dict[str, Any], t_hat_c: Tensor, f_theory_over_alpha: Tensor, title: str = ""):
    """``values`` as :class:`callbacks.RegimesCallback` measures them (``clone_times``, ``phi``, ``phi_se``,
    ``phi_collapse``..., optional ``phi_theory`` / ``phi_memorizer``); ``t_hat_c``: every trajectory's collapse
    time; ``f_theory_over_alpha``: the excess-entropy theory at the clone times."""
    t = values["clone_times"].numpy() if isinstance(values["clone_times"], Tensor) else values["clone_times"]
    fig, (ax_s, ax_c, ax_h) = plt.subplots(1, 3, figsize=(10, 4.6), layout="constrained")
    ax_s.errorbar(t, values["phi"], yerr=values["phi_se"], fmt="o-", ms=3, label="model")
    if "phi_theory" in values:
        ax_s.plot(t, values["phi_theory"], "k-", lw=1, label="theory (population score)")
    if "phi_memorizer" in values:
        ax_s.plot(t, values["phi_memorizer"], "k:", lw=1, label="exact empirical score")
    ax_s.axhline(SPECIATION_LEVEL, color="grey", lw=0.5)
    ax_s.axvline(values["t_S_theory"], color="k", ls="--", lw=1, label="$t_S$ theory")
    if math.isfinite(values["t_S_measured"]):
        ax_s.axvline(values["t_S_measured"], color="C0", lw=1, label="$t_S$ measured")
    ax_s.set(xlabel="clone time t (OU)", ylabel=r"$\phi$ (same class)", title="speciation")
    ax_c.errorbar(t, values["phi_collapse"], yerr=values["phi_collapse_se"], fmt="o-", ms=3, label=r"model $\phi_C$")
    ax_c.plot(t, values["phi_collapse_memorizer"], "k:", lw=1, label=r"exact empirical $\phi_C$")
    ax_c.plot(t, values["f_e_over_alpha"], "C2--", lw=1, label=r"$f^e/\alpha$ (training set)")
    ax_c.plot(t, f_theory_over_alpha.numpy(), "C2-", lw=0.7, label=r"$\max(f,0)/\alpha$ theory")
    ax_c.axvline(values["t_C_theory"], color="k", ls="--", lw=1, label="$t_C$ theory")
    ax_c.axvline(values["t_C_measured"], color="C0", lw=1, label=r"mean $\hat t_C$")
    ax_c.set(xlabel="clone time t (OU)", ylabel="probability", title="collapse", ylim=(-0.05, 1.05))
    ax_h.hist(t_hat_c.numpy(), bins=30, color="C0", alpha=0.7)
    ax_h.axvline(values["t_C_theory"], color="k", ls="--", lw=1, label="$t_C$ theory")
    ax_h.axvline(values["t_C_measured"], color="C0", lw=1, label="mean")
    ax_h.set(xlabel=r"$\hat t_C$ (nearest point's last change)", ylabel="trajectories",
             title="collapse times")
    for ax in (ax_s, ax_c, ax_h):  # below each panel: inside, six entries covered the curves
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, ncol=1, frameon=False)
    if title:
        fig.suptitle(title)
    return fig
