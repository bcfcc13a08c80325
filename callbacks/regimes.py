"""``RegimesCallback``: speciation and collapse of the model being trained (Biroli et al. 2024).

Every ``every_n_steps`` it runs the cloning experiment on the diffusion model (the model is the denoiser; OU
time, :mod:`diffuse_feat.ou`) with the same starting noise and the same noise every time:

* ``phi(t)``: both clones split at ``t`` end in the same class, and ``t_S_measured`` where it crosses 0.775,
  against ``t_S_theory = 1/2 log Lambda`` and, for the two-class Gaussian mixture, the exact theory curve;
* ``phi_C(t)``: both clones end on the same training point, and ``t_C_phi`` where it crosses 0.6;
* ``t_hat_C``: along each trunk trajectory, the last time the nearest ``e^{-t}``-scaled training point
  changed; ``t_C_measured`` is its mean;

and draws in the references, computed once: ``phi`` and ``phi_C`` of the exact empirical score (what a model that
memorized its training set does), the entropy proxy ``f^e/alpha`` of the training set with its theory, and
``t_C_theory``. As a small training set is memorized, the model's ``phi_C`` climbs onto the memorizer's curve.

Classes are read by the DataModule's ``oracle_labels`` when it has one (Gaussian mixture), else by a trained
``ClassificationModule`` checkpoint (``classifier_checkpoint``), or, with ``labeler="nearest_train"``, by the label
of the nearest training point (exact for a memorizer's samples, a 1-nearest-neighbour classifier otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch

from diffuse_feat.capabilities import GaussianReference, OracleLabels, TrainingSet
from diffuse_feat.diagnostics.cloning import choose_labeler, cloning_experiment
from diffuse_feat.diagnostics.regimes_references import regimes_references_of_data, regimes_summary
from diffuse_feat.ou import Method, ou_time_grid
from diffuse_feat.plotting.regimes import regimes_figure
from diffuse_feat.reporting import RunReporter

from .base import DiagnosticCallback

__all__ = ["RegimesCallback"]


class RegimesCallback(DiagnosticCallback):
    """Cloning (``phi``, ``phi_C``) and collapse times of the model being trained, against theory.

    Args:
        every_n_steps: cadence in optimizer steps (0: only at the end of training).
        num_pairs: clone pairs per clone time (the binomial standard error is at most ``0.5 / sqrt(num_pairs)``).
        clone_times: OU clone times; default ``num_clone_times`` evenly spaced in ``[0.1, 0.8 t_max]``.
        t_max, t_min, step, num_geometric: the OU grid (:func:`diffuse_feat.ou.ou_time_grid`): start time,
            end time, step above ``t = 1``, geometric steps below it.
        method: ``"sde"`` (the paper's) or ``"ode"`` (probability flow; clones then never separate).
        labeler: how classes are read: ``"auto"`` (the data's ``oracle_labels``, else ``classifier_checkpoint``),
            ``"oracle"``, ``"classifier"`` or ``"nearest_train"`` (label of the nearest training point).
        classifier_checkpoint: a ``ClassificationModule`` checkpoint that labels samples when the data has no
            ``oracle_labels``; ``classifier_sigma`` is the noise level it is told.
        reference_samples: forward Monte-Carlo samples of the references (exact-score ``phi``, ``phi_C``, ``f^e``).
        max_batch: evaluate the model on at most this many states at once (memory).
        use_ema, seed, at_train_end, name: as in :class:`DiagnosticCallback`.

    The defaults are sized for monitoring during training (under 10% of the default experiment's training
    time, ``benchmarks/callback_cost.py``); the reproduction uses more pairs and a finer grid.

    Subclass and override :meth:`make_labeler` to read classes another way.
    """

    def __init__(
        self,
        every_n_steps: int = 500,
        num_pairs: int = 64,
        clone_times: Sequence[float] | None = None,
        num_clone_times: int = 6,
        t_max: float = 6.0,
        t_min: float = 1e-3,
        step: float = 0.2,
        num_geometric: int = 20,
        method: Method = "sde",
        labeler: Literal["auto", "oracle", "classifier", "nearest_train"] = "auto",
        classifier_checkpoint: str | None = None,
        classifier_sigma: float = 0.0,
        reference_samples: int = 1000,
        max_batch: int | None = None,
        use_ema: bool = True,
        seed: int = 0,
        at_train_end: bool = True,
        name: str | None = None,
    ):
        super().__init__(every_n_steps=every_n_steps, at_train_end=at_train_end, use_ema=use_ema, seed=seed, name=name)
        if num_pairs < 1 or num_clone_times < 2:
            raise ValueError("RegimesCallback needs num_pairs >= 1 and num_clone_times >= 2")
        self.num_pairs, self.method, self.max_batch = num_pairs, method, max_batch
        self.grid = ou_time_grid(t_max, t_min, step, 1.0, num_geometric)
        if clone_times is None:
            clone_times = torch.linspace(0.1, 0.8 * t_max, num_clone_times).tolist()
        self.clone_times = torch.tensor(sorted(float(t) for t in clone_times), dtype=torch.float64)
        if float(self.clone_times[0]) <= t_min or float(self.clone_times[-1]) > t_max:
            raise ValueError(f"RegimesCallback.clone_times must lie in (t_min, t_max] = ({t_min}, {t_max}]")
        if labeler not in ("auto", "oracle", "classifier", "nearest_train"):
            raise ValueError(f"RegimesCallback.labeler must be auto, oracle, classifier or nearest_train, "
                             f"got {labeler!r}")
        self.labeler = labeler
        self.classifier_checkpoint, self.classifier_sigma = classifier_checkpoint, classifier_sigma
        self.reference_samples = reference_samples
        self._labeler = None
        self._refs: dict[str, Any] | None = None
        self._last: dict[str, Any] | None = None

    # ----- labeler and references (once) -----------------------------------------------------------
    def required_capabilities(self) -> tuple[type, ...]:
        needed = (TrainingSet, GaussianReference)  # the empirical score and the covariance give the references
        return (*needed, OracleLabels) if self.labeler == "oracle" else needed

    def missing_capability_hint(self) -> str:
        return "use labeler='classifier' with classifier_checkpoint, or labeler='nearest_train'"

    def make_labeler(self, trainer: pl.Trainer, device: torch.device):
        """``x -> class`` as ``labeler`` says (``"auto"``: the data's oracle, else the classifier checkpoint),
        or a clear error naming what is missing."""
        def load_classifier():
            from diffuse_feat.modules.classification import ClassificationModule

            return ClassificationModule.load_from_checkpoint(
                self.classifier_checkpoint, map_location=device, weights_only=False).eval()

        return choose_labeler(trainer.datamodule, self.labeler, load_classifier if self.classifier_checkpoint else None,
                              self.classifier_sigma, self.name)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self._labeler is None:  # fail before training, not at the first measurement
            self._labeler = self.make_labeler(trainer, pl_module.device)

    def _references(self, trainer: pl.Trainer) -> dict[str, Any]:
        if self._refs is None:
            self._refs = regimes_references_of_data(trainer.datamodule, self.clone_times,
                                                    reference_samples=self.reference_samples, seed=self.seed)
        return self._refs

    # ----- measurement ------------------------------------------------------------------------------
    def measure(self, trainer, pl_module, model) -> dict[str, Any]:
        refs = self._references(trainer)
        if self._labeler is None:
            self._labeler = self.make_labeler(trainer, pl_module.device)
        res = cloning_experiment(
            model, model.data_shape, self.clone_times, labeler=self._labeler, train=refs["train"],
            num_pairs=self.num_pairs, times=self.grid, method=self.method, seed=self.seed, device=pl_module.device,
            max_batch=self.max_batch,
        )
        self._last = {"t_hat_C": res["t_hat_C"]}
        return regimes_summary(res, refs)

    # ----- figure -------------------------------------------------------------------------------------
    def report(self, reporter: RunReporter, values, step, trainer, model) -> None:
        fig = regimes_figure(values, self._last["t_hat_C"], self._refs["f_theory_over_alpha"], title=f"step {step}")
        reporter.figure(f"figures/{self.name}", fig, step)
