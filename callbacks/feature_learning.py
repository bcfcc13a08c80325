"""``FeatureLearningCallback``: signal learning vs noise memorization of the first-layer filters during training.

Every ``every_n_steps`` (and once before the first step, so the curves start at initialisation) it reads
the filters ``w_r`` of any backbone whose first layer is linear (``backbone.first_layer_filters()``:
``PatchNet``, ``MLP``) and measures, with :mod:`diffuse_feat.diagnostics.feature_alignment`,

* ``signal``, ``noise``, ``ratio`` (and ``*_abs``): ``mean_j max_r <w_r, mu_j>`` and
  ``mean_i max_r <w_r, xi_i>``, per class for a classifier whose filters feed one logit each
  (``backbone.filter_classes()``), the quantities of Han et al.'s Figure 2;
* ``signal_increment``, ``noise_increment``, ``increment_ratio``: mean changes since initialisation, and
  ``increment_ratio_theory``, the denoiser's linear-phase prediction (``≈ n SNR^2 / 2`` on two-patch data);
* ``signal_per_class``, ``noise_per_sample`` (lists, in ``diagnostics.jsonl``).

The directions come from the data (``signal_vectors()``, ``noise_patches()``: ``TwoPatchDataModule``,
``NoisyImagePatchDataModule``). For data without known directions the callback stops with a sentence
saying so, unless ``directions`` are given: then it reports the projections of the filters onto those
(``direction<k>_max``, ``_max_abs``, ``_mean_abs``). TensorBoard also gets histograms of the alignments and
a figure: the filter x direction heat map, the curves so far, and the increment ratio against its theory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor

from diffuse_feat.capabilities import PlantedFeatures, TrainingSet
from diffuse_feat.diagnostics.feature_alignment import (
    alignment_increments,
    alignments,
    direction_summary,
    feature_learning_summary,
    linear_phase_increment_ratio,
    patch_view,
)
from diffuse_feat.errors import ConfigError, ShapeError
from diffuse_feat.plotting.feature_learning import alignment_figure
from diffuse_feat.reporting import RunReporter

from .base import DiagnosticCallback, model_for_diagnostics

__all__ = ["FeatureLearningCallback"]

NO_DIRECTIONS_HINT = (
    "pass FeatureLearningCallback(directions=...) (a [k, filter_width] tensor, nested list, or a .pt/.npy file) "
    "to project the filters onto directions of your choice"
)


def _load_directions(directions: Tensor | Sequence[Sequence[float]] | str) -> Tensor:
    if isinstance(directions, str | Path):
        path = Path(directions)
        if not path.is_file():
            raise ConfigError(f"FeatureLearningCallback.directions: no file '{path}'; give a .pt or .npy file")
        data = np.load(path) if path.suffix == ".npy" else torch.load(path, map_location="cpu", weights_only=True)
        directions = torch.as_tensor(data)
    out = torch.as_tensor(directions, dtype=torch.float64)
    return out.reshape(1, -1) if out.ndim == 1 else out


class FeatureLearningCallback(DiagnosticCallback):
    """Alignment of first-layer filters with the signal vectors and the training noise patches.

    Args:
        every_n_steps: cadence in optimizer steps (0: only before the first and after the last step).
        directions: user-given directions ``[k, filter_width]`` for data without known features (tensor,
            nested list or a ``.pt``/``.npy`` path); when set, only their projections are reported.
        figure_every_n_steps: cadence of the heat-map figure (default: every fifth measurement, as a figure costs
            more than the measurement; 0: only at the end).
        histograms: log histograms of the alignments to TensorBoard.
        use_ema, seed, at_train_end, name: as in :class:`DiagnosticCallback` (the probes are the full training
            set's noise patches, so no random choice is made).
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        directions: Tensor | Sequence[Sequence[float]] | str | None = None,
        figure_every_n_steps: int | None = None,
        histograms: bool = True,
        use_ema: bool = True,
        seed: int = 0,
        at_train_end: bool = True,
        name: str | None = None,
    ):
        super().__init__(every_n_steps=every_n_steps, at_train_end=at_train_end, use_ema=use_ema, seed=seed, name=name)
        self.directions = _load_directions(directions) if directions is not None else None
        self.figure_every_n_steps = 5 * every_n_steps if figure_every_n_steps is None else figure_every_n_steps
        self.histograms = histograms
        self.initial: dict[str, Tensor] | None = None  # alignments at the first measurement (for increments)
        self.last: dict[str, Tensor] = {}  # alignments of the latest measurement (for figures and reproductions)
        self._refs: dict[str, Any] | None = None
        self._ending, self._figure_step = False, -1

    # ----- references (computed once) -----------------------------------------------------------
    def required_capabilities(self) -> tuple[type, ...]:
        return () if self.directions is not None else (TrainingSet, PlantedFeatures)

    def missing_capability_hint(self) -> str:
        return NO_DIRECTIONS_HINT

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        backbone = getattr(pl_module, "backbone", pl_module)
        if not callable(getattr(backbone, "first_layer_filters", None)):
            raise ConfigError(
                f"{self.name} needs a backbone with a linear first layer exposing first_layer_filters() "
                f"(e.g. PatchNet, MLP); {type(backbone).__name__} has none"
            )

    def _references(self, trainer: pl.Trainer, model: pl.LightningModule) -> dict[str, Any]:
        if self._refs is not None:
            return self._refs
        refs: dict[str, Any] = {"data_shape": tuple(model.data_shape)}
        if self.directions is None:
            dm = trainer.datamodule
            refs["signal"], refs["noise"] = dm.signal_vectors().double(), dm.noise_patches().double()
            refs["labels"] = dm.train_labels()
            refs["patches"] = (dm.signal_patch, dm.noise_patch)
            refs["theory"] = linear_phase_increment_ratio(dm.train_tensor(), refs["signal"], refs["noise"])
        self._refs = refs
        return refs

    # ----- measuring ----------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.global_step == 0 and not self.history:
            self.run(trainer, pl_module)  # step 0: the curves start at initialisation

    def measure(self, trainer, pl_module, model) -> dict[str, Any]:
        refs = self._references(trainer, model)
        backbone = getattr(model, "backbone", model)  # the EMA copy's when there is one
        filters = backbone.first_layer_filters()
        filter_classes = backbone.filter_classes() if callable(getattr(backbone, "filter_classes", None)) else None
        if self.directions is not None:
            if self.directions.shape[1] != filters.shape[1]:
                raise ShapeError(f"{self.name}: directions have {self.directions.shape[1]} features but the "
                                 f"first-layer filters have {filters.shape[1]}; give directions of that width")
            projection = alignments(filters, self.directions)
            self.last = {"directions": projection.cpu()}
            return direction_summary(projection)
        signal_patch, noise_patch = refs["patches"]
        signal = alignments(patch_view(filters, refs["data_shape"], signal_patch), refs["signal"])
        noise = alignments(patch_view(filters, refs["data_shape"], noise_patch), refs["noise"])
        labels = refs["labels"].to(signal.device)
        if self.initial is None:
            self.initial = {"signal": signal.cpu(), "noise": noise.cpu()}
        self.last = {"signal": signal.cpu(), "noise": noise.cpu()}
        values = feature_learning_summary(signal, noise, labels, filter_classes)
        values.update(alignment_increments(signal, noise, self.initial["signal"].to(signal.device),
                                           self.initial["noise"].to(signal.device), labels, filter_classes))
        values["increment_ratio_theory"] = refs["theory"]
        return values

    def on_train_end(self, trainer, pl_module) -> None:
        self._ending = True
        super().on_train_end(trainer, pl_module)
        reporter = RunReporter.for_trainer(trainer)  # on every rank: finding the run folder is a collective
        # figures are drawn on rank zero only (report), so only there does _figure_step say what was drawn
        if trainer.is_global_zero and self.last and self._figure_step != trainer.global_step:
            model = model_for_diagnostics(trainer, pl_module, self.use_ema)
            self._draw(reporter, trainer.global_step, model, self.history)
        self._ending = False

    def report(self, reporter: RunReporter, values, step, trainer, model) -> None:
        if self.histograms:
            for key, alignment in self.last.items():
                reporter.histogram(f"diagnostics/{self.name}/{key}_alignment", alignment, step)
        every = self.figure_every_n_steps
        if self._ending or (every and step % every == 0):
            self._draw(reporter, step, model, [*self.history, {"step": step, **values}])

    def _draw(self, reporter: RunReporter, step: int, model, history: list[dict[str, Any]]) -> None:
        backbone = getattr(model, "backbone", model)
        classes = backbone.filter_classes() if callable(getattr(backbone, "filter_classes", None)) else None
        theory = self._refs.get("theory") if self._refs else None
        fig = alignment_figure(self.last, history, theory, classes)
        reporter.figure(f"figures/{self.name}", fig, step)
        self._figure_step = step

    # ----- checkpointing ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "initial": self.initial}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.initial = state_dict.get("initial")
