"""Curves over sigma (or level, or time) as one TensorBoard chart each, with a line per value, in one run.

A quantity measured at several noise levels is one value per level, written as one scalar each under the curve's
chart tag (``val/loss_by_sigma/sigma=0.02``, ``diagnostics/fb/p_class_by_sigma/sigma=0.5``: the name Lightning logs
it by). The run's custom-scalar layout (TensorBoard's "Custom Scalars" tab) draws each curve as one chart with a line
per level, grouped by prefix (``train``, ``val``, ``diagnostics/<name>``); Time Series and Scalars show the levels
as cards of their own. Every curve stays in the run itself: the run selector has one entry per run, however many
levels its curves have. (Earlier versions wrote each level to a sub-run, a folder ``<run>/sigma=0.02``, which drew
a curve as one Time Series card but put 14 entries per run in the run selector, 70 for five runs.)

A diagnostic hands its points over as ``(chart, line, value)`` (from a
:class:`~diffuse_feat.diagnostics.measurement.Curve`). Lightning's ``self.log`` can only name a metric, so the
modules name each point ``<chart>/sigma<...>`` (a bucket or level named by sigma) or ``<chart>/<number>`` (a sigma),
and :func:`chart_of` reads that one convention back, so :class:`~diffuse_feat.run_logger.RunLogger` can give the
chart its place in the layout. :func:`curve_charts` gives the one :class:`CurveCharts` of a writer, shared by every
writer path (``RunLogger``, ``RunReporter``).
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable

__all__ = ["chart_of", "layout_of", "curve_charts", "CurveCharts"]

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?"
_BY_NAME = re.compile(rf"^(?P<chart>.+)/(?:sigma[^/]*|{_NUMBER})$")


def chart_of(tag: str) -> str | None:
    """The chart tag when a metric logged through Lightning is one point of a curve over sigma
    (``val/loss_by_sigma/sigma=0.02``, ``train/loss_by_sigma/sigma<0.05``, ``val/acc/0.5``), else None."""
    match = _BY_NAME.match(tag)
    return None if match is None else match["chart"]


def layout_of(charts: Iterable[str]) -> dict[str, dict[str, list]]:
    """``SummaryWriter.add_custom_scalars`` layout: one category per prefix (``train``, ``val``,
    ``diagnostics/<name>``), one multi-line chart per chart tag, a line per point tag ``<chart>/<point>``."""
    layout: dict[str, dict[str, list]] = {}
    for chart in sorted(charts):
        parts = chart.split("/")
        category = "/".join(parts[:2]) if parts[0] == "diagnostics" and len(parts) > 2 else parts[0]
        layout.setdefault(category, {})[chart] = ["Multiline", [rf"^{re.escape(chart)}/[^/]+$"]]
    return layout


class CurveCharts:
    """The curves over sigma of one run's ``SummaryWriter``: their points as scalars of the run, and the
    custom-scalar layout that draws each curve as one chart."""

    def __init__(self, writer):
        self.writer = writer
        self.charts: set[str] = set()

    def add(self, charts: Iterable[str]) -> None:
        """Give these chart tags a chart in the layout (TensorBoard reads the last layout a run wrote)."""
        new = set(charts) - self.charts
        if new:
            self.charts |= new
            self.writer.add_custom_scalars(layout_of(self.charts))

    def log(self, points: Iterable[tuple[str, str, float]], step: int) -> None:
        """Write each ``(chart tag, line, value)`` as the scalar ``<chart>/<line>`` of the run."""
        charts = set()
        for chart, line, value in points:
            self.writer.add_scalar(f"{chart}/{line}", value, step)
            charts.add(chart)
        self.add(charts)


_CHARTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # a run's charts die with its writer


def curve_charts(writer) -> CurveCharts:
    """The one :class:`CurveCharts` of ``writer``, shared by every path that writes to it (``RunLogger``,
    ``RunReporter``), so the layout holds the charts of both."""
    found = _CHARTS.get(writer)
    if found is None:
        found = _CHARTS[writer] = CurveCharts(writer)
    return found
