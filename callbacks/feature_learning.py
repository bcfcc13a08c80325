"""``FeatureLearningCallback``: signal learning vs noise memorization of the first-layer filters during training.

Every ``every_n_steps`` (and once before the first step, so the curves start at initialisation) it runs
:class:`~diffuse_feat.diagnostics.feature_alignment.FeatureAlignment` on the filters of any backbone whose first
layer is linear (``backbone.first_layer_filters()``: ``PatchNet``, ``MLP``): ``signal``, ``noise``, ``ratio`` (and
``*_abs``), per class for a classifier whose filters feed one logit each, the quantities of Han et al.'s Figure 2;
their increments since initialisation against the denoiser's linear-phase theory; ``signal_per_class``,
``noise_per_sample`` (lists, in ``diagnostics.jsonl``). For data without known directions, ``directions`` given by
the user are measured instead. TensorBoard also gets histograms of the alignments and a figure: the filter x
direction heat map, the curves so far, and the increment ratio against its theory.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from diffuse_feat.diagnostic_callback import DiagnosticCallback
from diffuse_feat.diagnostics.feature_alignment import FeatureAlignment

__all__ = ["FeatureLearningCallback"]


class FeatureLearningCallback(DiagnosticCallback):
    """Alignment of first-layer filters with the signal vectors and the training noise patches.

    Args:
        every_n_steps: cadence in optimizer steps (0: only before the first and after the last step).
        directions: user-given directions ``[k, filter_width]`` for data without known features (tensor, nested
            list or a ``.pt``/``.npy`` path); when set, only their projections are reported.
        figure_every_n_steps: cadence of the heat-map figure (default: every fifth measurement, as a figure costs
            more than the measurement; 0: only at the end).
        histograms: log histograms of the alignments to TensorBoard.
        use_ema, seed, at_train_end, name: as in :class:`~diffuse_feat.diagnostic_callback.DiagnosticCallback`
            (the probes are the full training set's noise patches, so no random choice is made).
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
        figure_every = 5 * every_n_steps if figure_every_n_steps is None else figure_every_n_steps
        super().__init__(FeatureAlignment(directions, seed=seed), every_n_steps=every_n_steps,
                         at_train_end=at_train_end, at_train_start=True, use_ema=use_ema,
                         figure_every_n_steps=figure_every, name=name)
        self.histograms = histograms

    @property
    def initial(self) -> dict[str, Tensor] | None:
        """The alignments at the first measurement: the increments' reference (kept in checkpoints)."""
        return self.measurement.initial

    def report(self, reporter, measured, step, trainer, model) -> None:
        if self.histograms:
            for key, alignment in measured.artifacts["last"].items():
                reporter.histogram(f"diagnostics/{self.name}/{key}_alignment", alignment, step)
        super().report(reporter, measured, step, trainer, model)
