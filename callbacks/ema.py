"""Lightning's ``EMAWeightAveraging`` without its warm-up trap.

Lightning's callback keeps the averaged copy from ``setup`` on, but updates it only from ``update_starting_at_step``;
until then the copy holds the *initial* network. Lightning nevertheless swaps that copy in for every validation
epoch and copies it over the model when training ends, so the first ``update_starting_at_step`` steps validate an
untrained network (flat ``val/*`` curves for the first epochs of every run) and a run shorter than that ends with
its initial weights. :class:`EMA` does neither until the average has been updated once: before that, the live
weights are the model, as :func:`~callbacks.base.model_for_diagnostics` and
:func:`~diffuse_feat.denoisers.load_denoiser` already assume. Checkpoints are written as Lightning writes them.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EMAWeightAveraging
from typing_extensions import override

from diffuse_feat.lightning_private import averaged_module

__all__ = ["EMA"]


class EMA(EMAWeightAveraging):
    """An exponential moving average of the weights (``decay``, from ``update_starting_at_step``), used for
    validation, diagnostics and the final model once it has been updated; the live weights before that.

    Args: as Lightning's ``EMAWeightAveraging`` (``decay``, ``update_every_n_steps``, ``update_starting_at_step``,
    ``update_starting_at_epoch``, ``device``, ``use_buffers``).
    """

    def _has_average(self) -> bool:
        return averaged_module(self) is not None

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._swapped = self._has_average()  # validation does not update the average: the end mirrors the start
        if self._swapped:
            super().on_validation_epoch_start(trainer, pl_module)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if getattr(self, "_swapped", False):
            self._swapped = False
            super().on_validation_epoch_end(trainer, pl_module)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._has_average():
            super().on_train_end(trainer, pl_module)
