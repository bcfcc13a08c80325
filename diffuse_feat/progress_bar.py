"""``train.py``'s progress bar: Lightning's, with the run's position (``step=120/132``) and a proper epoch bar after a
mid-epoch resume (Lightning skips ``on_train_epoch_start`` there and shows ``Training: 3/?`` until the epoch ends)."""

from __future__ import annotations

import math

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar

__all__ = ["RunProgressBar"]


class RunProgressBar(TQDMProgressBar):
    """A ``TQDMProgressBar`` that shows ``step=done/total`` (``trainer.estimated_stepping_batches``: from
    ``max_steps`` or ``max_epochs``) and starts a resumed epoch where the checkpoint left it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._total_steps: float = math.inf

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._total_steps = float(trainer.estimated_stepping_batches)
        done = trainer.fit_loop.epoch_loop.batch_progress.current.ready  # of this epoch, restored from the checkpoint
        if done:  # resumed mid-epoch: the epoch's bar, already `done` batches along
            self.on_train_epoch_start(trainer, pl_module)
            self.train_progress_bar.n = done
            self.train_progress_bar.refresh()

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        items = super().get_metrics(trainer, pl_module)
        total = f"/{int(self._total_steps)}" if math.isfinite(self._total_steps) else ""
        return {"step": f"{trainer.global_step}{total}", **items}
