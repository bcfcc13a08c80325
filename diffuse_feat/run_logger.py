"""The logger every ``train.py`` run writes TensorBoard with (configs naming Lightning's ``TensorBoardLogger`` get it
too, see :mod:`diffuse_feat.cli`): Lightning's ``TensorBoardLogger`` plus

* curves over sigma as one chart each, a line per sigma (:mod:`diffuse_feat.tensorboard_layout`: the points go to
  sub-runs ``<run>/sigma=...``, the Time Series tab shows one card per curve, as does the Custom Scalars tab);
* ``epoch`` written once per epoch: Lightning adds it to every ``log_metrics`` call, which made one point per
  logged step (192 in a 60-epoch run);
* ``purge_step``: a resumed run has TensorBoard drop the points its interrupted predecessor logged after the
  checkpoint, so no curve doubles back (the sub-runs' too).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch import Tensor

from .tensorboard_layout import line_of, sub_runs

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

    @property
    def experiment(self):
        writer = super().experiment
        if self._experiment is not None:  # rank zero: the sub-runs start at the run's purge_step
            sub_runs(writer, self.purge_step)
        return writer

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        metrics = dict(metrics)
        epoch = metrics.pop("epoch", None)
        if epoch is not None and epoch != self._epoch_written:
            metrics["epoch"], self._epoch_written = epoch, epoch
        prefix = f"{self._prefix}{self.LOGGER_JOIN_CHAR}" if self._prefix else ""
        points = []  # the metrics that are points of a curve go to their sub-runs
        for key in list(metrics):
            line = line_of(prefix + key)
            if line is not None:
                value = metrics.pop(key)
                points.append((*line, float(value.item() if isinstance(value, Tensor) else value)))
        if points:
            sub_runs(self.experiment).log(points, step)
        if metrics:
            super().log_metrics(metrics, step)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._experiment is not None:
            sub_runs(self._experiment).close()
        super().finalize(status)
