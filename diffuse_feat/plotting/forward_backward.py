"""Figures of forward–backward reconstruction: RHM levels against exact BP, and classifier reads of images."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.lines import Line2D

from . import plt, readable

__all__ = ["plot_forward_backward", "forward_backward_figure", "image_forward_backward_figure"]


def plot_forward_backward(ax_class, ax_levels, sigma: Sequence[float], learned: dict | None, exact: dict | None,
                          title: str = "") -> None:
    """Class preservation (left axis) and per-level ``p_unchanged`` (right axis) against sigma: the exact BP
    curves solid, the learned ones dashed (levels coloured from root, dark, to leaves, light)."""
    for curves, style, label in ((exact, "-", "exact BP"), (learned, "--", "learned")):
        if curves is None:
            continue
        ax_class.plot(sigma, curves["p_class"], style, marker="o", ms=3, label=label)
        rows = list(zip(*curves["p_unchanged"], strict=True))  # [level][sigma]
        for level, row in enumerate(rows):
            colour = (0.1, 0.2 + 0.7 * level / max(1, len(rows) - 1), 0.5)
            ax_levels.plot(sigma, row, style, color=colour, label=f"l={level}" if style == "-" else None)
    for ax, what in ((ax_class, "P(class preserved)"), (ax_levels, "P(level-l symbol unchanged)")):
        ax.set_xscale("log")
        ax.set_xlabel("sigma")
        ax.set_ylabel(what)
        ax.set_ylim(-0.02, 1.02)
    ax_class.legend(loc="lower left")
    # the levels' legend: which style is which model, then the level colours; below, so it covers no curve
    handles, labels = ax_levels.get_legend_handles_labels()
    styles = [Line2D([], [], color="k", ls=ls) for ls, curves in (("-", exact), ("--", learned)) if curves]
    names = [name for name, curves in (("solid: exact BP", exact), ("dashed: learned", learned)) if curves]
    ax_levels.legend(styles + handles, names + labels, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3,
                     fontsize=8.5, handlelength=1.6, frameon=False)
    ax_class.set_title(title)


@readable
def forward_backward_figure(sigma: Sequence[float], learned: dict | None, exact: dict | None, title: str = ""):
    """One figure of :func:`plot_forward_backward`: class on the left, levels on the right."""
    fig, (ax_class, ax_levels) = plt.subplots(1, 2, figsize=(8, 4.6), layout="constrained")
    plot_forward_backward(ax_class, ax_levels, sigma, learned, exact, title=title)
    return fig


@readable
def image_forward_backward_figure(sigma: Sequence[float], result: dict, title: str = ""):
    """P(predicted class preserved) and half the normalised activation change at every depth, against sigma
    (``result`` as :func:`diffuse_feat.diagnostics.hierarchy.image_forward_backward` returns it)."""
    fig, ax = plt.subplots(figsize=(5, 4.6), layout="constrained")
    if "p_class" in result:
        ax.plot(sigma, result["p_class"], "ko-", ms=3, label="P(class preserved)")
    for depth in result["depths"]:
        ax.plot(sigma, [c / 2 for c in result["change"][depth]], label=f"change/2: {depth}")
    ax.set(xscale="log", xlabel="sigma", title=title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8.5, frameon=False)
    return fig
