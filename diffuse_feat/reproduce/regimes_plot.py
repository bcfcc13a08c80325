"""``regimes.png``: the exact references (top row), the trained digits model (middle) and the networks trained on the
Gaussian mixture (bottom), drawn from the JSON payload of :mod:`diffuse_feat.reproduce.regimes`."""

from __future__ import annotations

import math
from pathlib import Path

from ..plotting import plt, save_figure
from ..regimes_theory import SPECIATION_LEVEL

__all__ = ["plot"]


def _vline(ax, t, **kwargs) -> None:
    if t is not None and math.isfinite(t):  # a crossing that was not found is null in the JSON
        ax.axvline(t, **kwargs)


def plot(payload: dict, path: Path) -> None:
    """The nine panels of ``regimes.png`` from the JSON payload (means over seeds; ``None`` for missing crossings)."""
    spec, coll, dig = payload["speciation"], payload["collapse"], payload["digits"]
    fig, axes = plt.subplots(3, 3, figsize=(15, 12.5))
    ax = axes[0, 0]
    ax.errorbar(spec["times"], spec["phi"], yerr=[3 * s for s in spec["phi_se"]], fmt="o", ms=3,
                label="measured (3 SE)")
    ax.plot(spec["times"], spec["phi_theory"], "k-", lw=1, label="theory")
    ax.axhline(SPECIATION_LEVEL, color="grey", lw=0.5)
    _vline(ax, spec["t_S_theory"], color="k", ls="--", lw=1, label=r"$t_S=\frac{1}{2}\log\Lambda$")
    _vline(ax, spec["t_S_measured"], color="C0", lw=1, label=r"$\phi=0.775$ crossing")
    ax.set(xlabel="clone time t (OU)", ylabel=r"$\phi(t)$", title=f"speciation, GM d={spec['dim']}, population score")
    for r in coll["per_dim"]:
        x = [t / r["t_C_theory"] for t in r["clone_times"]]
        (line,) = axes[0, 1].plot(x, r["phi_C_exact"], "-", lw=1)
        axes[0, 1].errorbar(x, r["phi_C"], yerr=r["phi_C_se"], fmt="o", ms=3, color=line.get_color(),
                            label=f"d={r['dim']}")
        xe = [t / r["t_C_theory"] for t in r["entropy_times"]]
        axes[0, 2].plot(xe, r["f_theory_over_alpha"], "-", lw=1, color=line.get_color())
        axes[0, 2].errorbar(xe, r["f_e_over_alpha"], yerr=r["f_e_over_alpha_se"], fmt="o", ms=3,
                            color=line.get_color(), label=f"d={r['dim']}")
    axes[0, 1].set(xlabel=r"$t/t_C$", ylabel=r"$\phi_C$", xscale="log",
                   title=f"collapse, n={coll['n']}: cloning (dots) vs exact MC (lines)")
    axes[0, 2].set(xlabel=r"$t/t_C$", ylabel=r"$f^e/\alpha$", xscale="log",
                   title=r"entropy proxy vs $\max(f,0)/\alpha$")
    ax = axes[1, 0]
    dims = coll["dims"]
    ax.plot(dims, coll["t_C_theory"], "k-", lw=1, label="theory")
    ax.plot(dims, coll["t_C_measured"], "o", label=r"mean $\hat t_C$")
    ax.plot(dims, [r["t_C_entropy"] for r in coll["per_dim"]], "s", ms=4, label=r"$f^e/\alpha=0.1$")
    ax.plot(dims, [r["t_C_phi"] for r in coll["per_dim"]], "^", ms=4, label=r"$\phi_C=0.6$")
    ax.set(xlabel="d", ylabel="$t_C$ (OU)", xscale="log", title=f"collapse time, n={coll['n']}")
    ax = axes[1, 1]
    ax.errorbar(dig["times"], dig["phi"], yerr=dig["phi_se"], fmt="o-", ms=3, label="trained model")
    ax.plot(dig["times"], dig["phi_memorizer"], "k:", lw=1, label="exact empirical score")
    ax.axhline(SPECIATION_LEVEL, color="grey", lw=0.5)
    _vline(ax, dig["t_S_theory"], color="k", ls="--", lw=1, label=r"$t_S=\frac{1}{2}\log\Lambda$")
    _vline(ax, dig["t_S_measured"], color="C0", lw=1, label="measured")
    ax.errorbar(dig["times"], dig["phi_nearest_train"], yerr=dig["phi_nearest_train_se"], fmt="s--", ms=3,
                label="trained model, nearest-training-digit labels")
    ax.set(xlabel="clone time t (OU)", ylabel=r"$\phi(t)$", title=f"digits 1 vs 8 (n={dig['n_train']}): speciation")
    ax = axes[1, 2]
    ax.errorbar(dig["times"], dig["phi_C"], yerr=dig["phi_C_se"], fmt="o-", ms=3, label=r"model $\phi_C$")
    ax.plot(dig["times"], dig["phi_C_memorizer"], "k:", lw=1, label=r"exact empirical $\phi_C$")
    ax.plot(dig["times"], dig["f_e_over_alpha"], "C2--", lw=1, label=r"$f^e/\alpha$ (training set)")
    _vline(ax, dig["t_C_theory"], color="k", ls="--", lw=1, label=r"$t_C$ ($f^e/\alpha=0.1$)")
    _vline(ax, dig["t_C_measured"], color="C0", lw=1, label=r"mean $\hat t_C$ (model)")
    ax.set(xlabel="clone time t (OU)", ylabel="probability", title="digits: collapse", ylim=(-0.05, 1.05))
    _learned_panels(axes[2], payload["speciation_learned"], payload["collapse_learned"])
    for ax in axes.flat:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def _learned_panels(axes, spec: dict, coll: dict) -> None:
    ax = axes[0]
    ax.errorbar(spec["times"], spec["phi"], yerr=spec["phi_se"], fmt="o", ms=3, label="trained MLP (SE over seeds)")
    ax.plot(spec["times"], spec["phi_theory"], "k-", lw=1, label="theory")
    ax.axhline(SPECIATION_LEVEL, color="grey", lw=0.5)
    _vline(ax, spec["t_S_theory"], color="k", ls="--", lw=1, label="$t_S$ theory")
    _vline(ax, spec["t_S_measured"], color="C0", lw=1, label="measured")
    ax.set(xlabel="clone time t (OU)", ylabel=r"$\phi(t)$", title=f"trained on fresh mixture samples, d={spec['dim']}")
    ax = axes[1]
    for key, style, name in (("exact_small", "k-", "exact empirical score"), ("small", "o-", "trained, small n"),
                             ("large", "s--", "trained, large n")):
        block = coll[key]
        ax.errorbar(coll["clone_times"], block["phi_C"], yerr=block.get("phi_C_se"), fmt=style, ms=3,
                    label=f"{name} (n={block['n']})")
    _vline(ax, coll["exact_small"]["t_C_measured"], color="k", ls=":", lw=1, label=r"mean $\hat t_C$, exact")
    _vline(ax, coll["small"]["t_C_measured"], color="C0", ls=":", lw=1, label=r"mean $\hat t_C$, trained")
    ax.set(xlabel="clone time t (OU)", ylabel=r"$\phi_C$", ylim=(-0.05, 1.05),
           title=f"collapse of trained networks, d={coll['dim']}")
    ax = axes[2]
    names = ["exact_small", "small", "large"]
    ax.bar(range(3), [coll[k]["memorized_fraction"] for k in names], color=["k", "C0", "C1"])
    ax.set_xticks(range(3), ["exact, small n", "trained, small n", "trained, large n"], fontsize=7)
    ax.set(ylabel="memorized fraction (d1/d2 < 1/3)", ylim=(0, 1.05), title="do samples sit on training points?")
