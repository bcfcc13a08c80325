"""One writer for every measurement: TensorBoard (scalars, figures, images, histograms) and a
machine-readable ``diagnostics.jsonl`` in the run folder, one JSON object per measurement.

Only global rank zero writes; every other rank's calls are no-ops, so callers can run the same code
(and the same collectives) on every rank.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from .diagnostics.measurement import Measured, plain
from .tensorboard_layout import curve_charts

__all__ = ["RunReporter", "to_jsonable", "read_jsonl"]

JSONL_NAME = "diagnostics.jsonl"


def to_jsonable(value: Any) -> Any:
    """:func:`~diffuse_feat.diagnostics.measurement.plain` values with non-finite floats as ``None`` (strict JSON)."""
    value = plain(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_jsonable(v) for v in value]
    return value


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All records of a ``diagnostics.jsonl`` file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class RunReporter:
    """Writes measurements of one run. Build it from a trainer (:meth:`for_trainer`) or a folder."""

    def __init__(self, run_dir: str | os.PathLike | None, writers: list | None = None, loggers: list | None = None,
                 is_writer: bool = True):
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.writers = writers or []  # TensorBoard SummaryWriters
        self.loggers = loggers or []  # other Lightning loggers (scalars only)
        self.is_writer = is_writer

    @classmethod
    def for_trainer(cls, trainer) -> RunReporter:
        from lightning.pytorch.loggers import TensorBoardLogger

        writers, others = [], []
        for logger in trainer.loggers:
            (writers if isinstance(logger, TensorBoardLogger) else others).append(
                logger.experiment if isinstance(logger, TensorBoardLogger) else logger
            )
        # without a logger nothing is written to disk (it was diagnostics.jsonl in the working directory);
        # the callbacks' `history` still holds every measurement
        run_dir = trainer.log_dir if trainer.loggers else None
        return cls(run_dir, writers, others, is_writer=trainer.is_global_zero)

    @property
    def jsonl_path(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / JSONL_NAME

    def record(self, name: str, step: int, values: Mapping[str, Any]) -> None:
        """Append ``{"name", "step", "values"}`` to ``diagnostics.jsonl``."""
        if not self.is_writer or self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"name": name, "step": int(step), "values": to_jsonable(dict(values))}, allow_nan=False)
        with open(self.jsonl_path, "a") as f:
            f.write(line + "\n")

    def measured(self, prefix: str, measured: Measured, step: int) -> None:
        """A measurement in TensorBoard: each finite number of its values as a scalar ``<prefix>/<key>``, each curve
        as one chart ``<prefix>/<name>_by_<axis>`` with a line per grid point (:mod:`.tensorboard_layout`).
        Other loggers get the numbers of its ``diagnostics.jsonl`` record."""
        if not self.is_writer:
            return
        scalars = {f"{prefix}/{key}": value for key, value in measured.scalars().items()}
        points = [(f"{prefix}/{curve.chart(name)}", curve.line(point), value)
                  for name, curve in measured.curves.items() for point, value in curve.points() if math.isfinite(value)]
        for w in self.writers:
            curve_charts(w).log(points, step)
            for tag, value in scalars.items():
                w.add_scalar(tag, value, step)
        if self.loggers:
            record = Measured(measured.record()).scalars()
            for logger in self.loggers:
                logger.log_metrics({f"{prefix}/{key}": value for key, value in record.items()}, step=step)

    def figure(self, tag: str, fig, step: int, close: bool = True) -> None:
        """``fig`` as one image per panel, ``<tag>/<index>_<panel title>`` (one image ``<tag>`` for a figure of
        one panel): TensorBoard shrinks an image to its card, and a panel is about a card wide."""
        if self.is_writer and self.writers:
            from .plotting.panels import figure_panels

            for name, pixels in figure_panels(fig):
                for w in self.writers:
                    w.add_image(f"{tag}/{name}" if name else tag, pixels, step, dataformats="HWC")
        if close:
            import matplotlib.pyplot as plt

            plt.close(fig)

    def images(self, tag: str, grid: Tensor, step: int) -> None:
        """``grid``: ``[C, H, W]`` with values in ``[0, 1]``."""
        if self.is_writer:
            for w in self.writers:
                w.add_image(tag, grid.detach().float().cpu().clamp(0, 1), step)

    def histogram(self, tag: str, values: Tensor, step: int) -> None:
        if self.is_writer:
            for w in self.writers:
                w.add_histogram(tag, values.detach().float().cpu(), step)

    def flush(self) -> None:
        if not self.is_writer:
            return
        for w in self.writers:
            w.flush()
