"""Curves over sigma (or level, or time) as one TensorBoard chart each, with a line per value.

A quantity measured at several noise levels is logged as one scalar per level (``val/loss_by_sigma/sigma=0.02``,
``diagnostics/fb/p_class_s0.5``): TensorBoard's Scalars tab would show one card per level. Every writer here also
keeps a *custom-scalar layout* (TensorBoard's "Custom Scalars" tab) with one multi-line chart per quantity, grouped
by prefix; :func:`note_scalars` adds a chart the first time one of its tags is written.

Tag grammar: ``<chart>/sigma<...>`` (a bucket or level named by sigma), ``<chart>/<number>``, or
``<chart>_s<number>`` / ``<chart>_t<number>`` / ``<chart>_level<number>``.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable

__all__ = ["chart_of", "layout_of", "note_scalars"]

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?"
_BY_NAME = re.compile(rf"^(?P<chart>.+)/(?:sigma[^/]*|{_NUMBER})$")
_BY_SUFFIX = re.compile(rf"^(?P<chart>.+?)_(?P<kind>s|t|level)(?:{_NUMBER})$")

# the charts already in each writer's layout (a writer dies with its run)
_CHARTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def chart_of(tag: str) -> tuple[str, str] | None:
    """``(chart title, regex of its tags)`` when ``tag`` is one point of a curve over sigma/level/time, else None."""
    match = _BY_NAME.match(tag)
    if match:
        chart = match["chart"]
        return chart, rf"^{re.escape(chart)}/(sigma[^/]*|{_NUMBER})$"
    match = _BY_SUFFIX.match(tag)
    if match and "/" in tag:
        chart = match["chart"]
        by = {"s": "sigma", "t": "t", "level": "level"}[match["kind"]]
        return f"{chart} (by {by})", rf"^{re.escape(chart)}_{match['kind']}{_NUMBER}$"
    return None


def layout_of(charts: Iterable[tuple[str, str]]) -> dict[str, dict[str, list]]:
    """``SummaryWriter.add_custom_scalars`` layout: one category per prefix (``train``, ``val``,
    ``diagnostics/<name>``), one multi-line chart per quantity."""
    layout: dict[str, dict[str, list]] = {}
    for title, regex in sorted(charts):
        parts = title.split("/")
        category = "/".join(parts[:2]) if parts[0] == "diagnostics" and len(parts) > 2 else parts[0]
        layout.setdefault(category, {})[title] = ["Multiline", [regex]]
    return layout


def note_scalars(writer, tags: Iterable[str]) -> None:
    """Add the charts of ``tags`` that ``writer``'s layout lacks, and rewrite the layout if one was added
    (TensorBoard reads the last layout a run wrote)."""
    charts = _CHARTS.setdefault(writer, set())
    new = {chart for chart in map(chart_of, tags) if chart is not None} - charts
    if new:
        charts |= new
        writer.add_custom_scalars(layout_of(charts))
