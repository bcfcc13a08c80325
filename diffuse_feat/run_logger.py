"""The logger every ``train.py`` run writes TensorBoard with (configs naming Lightning's ``TensorBoardLogger`` get it
too, see :mod:`diffuse_feat.cli`): Lightning's ``TensorBoardLogger`` plus

* curves over sigma as one chart each, a line per sigma, in TensorBoard's Custom Scalars tab
  (:mod:`diffuse_feat.tensorboard_layout`; every point stays in the run, so the run selector has one entry a run);
* ``epoch`` written once per epoch: Lightning adds it to every ``log_metrics`` call, which made one point per
  logged step (192 in a 60-epoch run);
* ``purge_step``: a resumed run has TensorBoard drop the points its interrupted predecessor logged after the
  checkpoint, so no curve doubles back.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from .tensorboard_layout import chart_of, curve_charts

__all__ = ["RunLogger"]


class RunLogger(TensorBoardLogger):
    def __init__(self, save_dir: str | Path, name: str | None = "lightning_logs", version: int | str | None = None,
                 log_graph: bool = False, default_hp_metric: bool = True, prefix: str = "",
                 sub_dir: str | Path | None = None, purge_step: int | None = None, **kwargs: Any):
        if purge_step is not None:
            kwargs["purge_step"] = purge_step  # handed to the SummaryWriter
        super().__init__(save_dir, name=name, version=version, log_graph=log_graph,
                         default_hp_metric=default_hp_metric, prefix=prefix, sub_dir=sub_dir, **kwargs)
        self.purge_step = purge_step
        self._epoch_written: float | None = None

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        metrics = dict(metrics)
        epoch = metrics.pop("epoch", None)
        if epoch is not None and epoch != self._epoch_written:
            metrics["epoch"], self._epoch_written = epoch, epoch
        prefix = f"{self._prefix}{self.LOGGER_JOIN_CHAR}" if self._prefix else ""
        charts = {chart for key in metrics if (chart := chart_of(prefix + key)) is not None}
        if charts:  # the points of a curve: one chart of the layout
            curve_charts(self.experiment).add(charts)
        if metrics:
            super().log_metrics(metrics, step)
