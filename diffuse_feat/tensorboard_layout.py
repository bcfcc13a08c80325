"""Curves over sigma (or level, or time) as one TensorBoard chart each, with a line per value.

A quantity measured at several noise levels is one value per level. Written as one scalar each, TensorBoard's Time
Series and Scalars tabs would show one card per level (54 cards in one RHM run). Instead, as
``SummaryWriter.add_scalars`` does, each point goes to a *sub-run*, a folder of the run named by its line
(``<run>/sigma=0.02``, ``level=2``, ``t=0.5``; one sub-run per line, shared by all charts), under the chart's tag
(``val/loss_by_sigma``, ``diagnostics/fb/p_class_by_sigma``): one card per quantity with one line per sub-run. The
run's custom-scalar layout ("Custom Scalars" tab) has the same charts, grouped by prefix.

A diagnostic hands its points over as ``(chart, line, value)`` (from a
:class:`~diffuse_feat.diagnostics.measurement.Curve`). Lightning's ``self.log`` can only name a metric, so the
modules name each point ``<chart>/sigma<...>`` (a bucket or level named by sigma) or ``<chart>/<number>`` (a sigma),
and :func:`line_of` reads that one convention back for :class:`~diffuse_feat.run_logger.RunLogger`.

:func:`sub_runs` gives the one :class:`SubRuns` of a writer, shared by every writer path (``RunLogger``,
``RunReporter``); its child writers are made on the first point of their line, so a run that logs no curve has no
sub-folder.
"""

from __future__ import annotations

import os
import re
import weakref
from collections.abc import Iterable

__all__ = ["line_of", "layout_of", "sub_runs", "SubRuns"]

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?"
_BY_NAME = re.compile(rf"^(?P<chart>.+)/(?P<line>sigma[^/]*|{_NUMBER})$")
# a bucket's comparison as a folder name: sigma<0.05 -> sigma_lt_0.05 (no shell quoting, valid on every system)
_COMPARISONS = (("<=", "_le_"), (">=", "_ge_"), ("<", "_lt_"), (">", "_gt_"))


def _folder_name(line: str) -> str:
    for sign, word in _COMPARISONS:
        line = line.replace(sign, word)
    return re.sub(r"[^\w.=+-]", "_", line)


def line_of(tag: str) -> tuple[str, str] | None:
    """``(chart tag, line name)`` when a metric logged through Lightning is one point of a curve over sigma
    (``val/loss_by_sigma/sigma=0.02``, ``val/acc/0.5``), else None. The line name is the sub-run's folder name
    (``sigma=0.02``, ``sigma_lt_0.05``)."""
    match = _BY_NAME.match(tag)
    if match is None:
        return None
    line = match["line"]
    return match["chart"], _folder_name(line if line.startswith("sigma") else f"sigma={line}")


def layout_of(charts: Iterable[str]) -> dict[str, dict[str, list]]:
    """``SummaryWriter.add_custom_scalars`` layout: one category per prefix (``train``, ``val``,
    ``diagnostics/<name>``), one multi-line chart per chart tag (a line per sub-run)."""
    layout: dict[str, dict[str, list]] = {}
    for chart in sorted(charts):
        parts = chart.split("/")
        category = "/".join(parts[:2]) if parts[0] == "diagnostics" and len(parts) > 2 else parts[0]
        layout.setdefault(category, {})[chart] = ["Multiline", [rf"^{re.escape(chart)}$"]]
    return layout


class SubRuns:
    """The sub-runs of one run's ``SummaryWriter`` and its custom-scalar layout."""

    def __init__(self, writer, purge_step: int | None = None):
        self.writer = writer
        self.purge_step = purge_step  # the writer forgets its own once its first event file is open
        self.children: dict[str, object] = {}
        self.charts: set[str] = set()

    def log(self, points: Iterable[tuple[str, str, float]], step: int) -> None:
        """Write each ``(chart tag, line, value)`` to the line's sub-run under the chart's tag, and add new charts to
        the layout."""
        written, new_charts = set(), set()
        for chart, line, value in points:
            name = _folder_name(line)
            self._child(name).add_scalar(chart, value, step)
            written.add(name)
            if chart not in self.charts:
                new_charts.add(chart)
        for name in written:  # on disk now: a plain TensorBoardLogger closes only its own writer, not these
            self.children[name].flush()
        if new_charts:  # TensorBoard reads the last layout a run wrote
            self.charts |= new_charts
            self.writer.add_custom_scalars(layout_of(self.charts))

    def _child(self, name: str):
        child = self.children.get(name)
        if child is None:
            from torch.utils.tensorboard import SummaryWriter

            w = self.writer
            child = SummaryWriter(os.path.join(w.get_logdir(), name), purge_step=self.purge_step,
                                  max_queue=w.max_queue, flush_secs=w.flush_secs, filename_suffix=w.filename_suffix)
            self.children[name] = child
        return child

    def flush(self) -> None:
        for child in self.children.values():
            child.flush()

    def close(self) -> None:
        """Close the child writers (a later point reopens one, as a closed ``SummaryWriter`` does)."""
        for child in self.children.values():
            child.close()


_SUB_RUNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # a run's sub-runs die with its writer


def sub_runs(writer, purge_step: int | None = None) -> SubRuns:
    """The one :class:`SubRuns` of ``writer``; ``purge_step`` (a resumed run's) counts where it is first made."""
    found = _SUB_RUNS.get(writer)
    if found is None:
        found = _SUB_RUNS[writer] = SubRuns(writer, purge_step)
    return found
