"""Speciation and collapse of one denoiser (Biroli et al. 2024) as one measurement, against theory and the memorizer.

:class:`Regimes` runs the cloning experiment (:mod:`.cloning`) in OU time (:mod:`diffuse_feat.ou`) with the same
starting noise and the same noise at every call:

* ``phi(t)``: both clones split at ``t`` end in the same class, and ``t_S_measured`` where it crosses 0.775,
  against ``t_S_theory = 1/2 log Lambda`` and, for the two-class Gaussian mixture, the exact theory curve;
* ``phi_C(t)``: both clones end on the same training point, and ``t_C_phi`` where it crosses 0.6;
* ``t_hat_C``: along each trunk trajectory, the last time the nearest ``e^{-t}``-scaled training point changed;
  ``t_C_measured`` is its mean;

beside the references of the data (:mod:`.regimes_references`, computed once per DataModule): ``phi`` and ``phi_C``
of the exact empirical score (what a model that memorized its training set does), the entropy proxy ``f^e/alpha``
with its theory, and ``t_C_theory``.

Classes are read by the data's ``oracle_labels`` when it has one (Gaussian mixture), else by a trained classifier
(``classifier_checkpoint``), or, with ``labeler="nearest_train"``, by the label of the
nearest training point (exact for a memorizer's samples, a 1-nearest-neighbour classifier otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

import torch

from ..capabilities import GaussianReference, OracleLabels, TrainingSet
from ..ou import Method, ou_sigma, ou_time_grid
from ..plotting.regimes import regimes_figure
from .cloning import Labeler, choose_labeler, cloning_experiment
from .measurement import Measured, Measurement, device_of, plain
from .regimes_references import regimes_references_of_data, regimes_summary

__all__ = ["Regimes", "LabelerName"]

LabelerName = Literal["auto", "oracle", "classifier", "nearest_train"]
LABELERS = get_args(LabelerName)


class Regimes(Measurement):
    """Cloning (``phi``, ``phi_C``) and collapse times of a denoiser, against theory.

    Args:
        num_pairs: clone pairs per clone time (the binomial standard error is at most ``0.5 / sqrt(num_pairs)``).
        clone_times: OU clone times; default ``num_clone_times`` evenly spaced in ``[0.1, 0.8 t_max]``.
        t_max, t_min, step, num_geometric: the OU grid (:func:`diffuse_feat.ou.ou_time_grid`): start time,
            end time, step above ``t = 1``, geometric steps below it.
        method: ``"sde"`` (the paper's) or ``"ode"`` (probability flow; clones then never separate).
        labeler: how classes are read: ``"auto"`` (the data's ``oracle_labels``, else the classifier), ``"oracle"``,
            ``"classifier"`` or ``"nearest_train"`` (label of the nearest training point).
        classifier_checkpoint: a ``ClassificationModule`` checkpoint that labels samples when the data has no
            ``oracle_labels``; ``classifier_sigma`` is the noise level it is told.
        compare_labelers: other labelers that read the very same clone pairs (``phi_<name>``), e.g.
            ``("nearest_train",)``: their raw results are in the measurement's ``artifacts["cloning"]``.
        reference_samples: forward Monte-Carlo samples of the references (exact-score ``phi``, ``phi_C``, ``f^e``).
        max_batch: evaluate the model on at most this many states at once (memory).
        seed: the starting noise, the clones' noise and the references' samples.

    Subclass and override :meth:`make_labeler` to read classes another way.
    """

    name = "regimes"

    def __init__(
        self,
        num_pairs: int = 64,
        clone_times: Sequence[float] | None = None,
        num_clone_times: int = 6,
        t_max: float = 6.0,
        t_min: float = 1e-3,
        step: float = 0.2,
        num_geometric: int = 20,
        method: Method = "sde",
        labeler: LabelerName = "auto",
        classifier_checkpoint: str | None = None,
        classifier_sigma: float = 0.0,
        compare_labelers: Sequence[LabelerName] = (),
        reference_samples: int = 1000,
        max_batch: int | None = None,
        seed: int = 0,
    ):
        if num_pairs < 1 or num_clone_times < 2:
            raise ValueError("Regimes needs num_pairs >= 1 and num_clone_times >= 2")
        self.grid = ou_time_grid(t_max, t_min, step, 1.0, num_geometric)
        if clone_times is None:
            clone_times = torch.linspace(0.1, 0.8 * t_max, num_clone_times).tolist()
        self.clone_times = torch.tensor(sorted(float(t) for t in clone_times), dtype=torch.float64)
        if float(self.clone_times[0]) <= t_min or float(self.clone_times[-1]) > t_max:
            raise ValueError(f"Regimes.clone_times must lie in (t_min, t_max] = ({t_min}, {t_max}]")
        for choice in (labeler, *compare_labelers):
            if choice not in LABELERS:
                raise ValueError(f"Regimes labelers are auto, oracle, classifier or nearest_train, got {choice!r}")
        self.num_pairs, self.method, self.max_batch, self.seed = num_pairs, method, max_batch, seed
        self.labeler, self.compare_labelers = labeler, tuple(compare_labelers)
        self.classifier_checkpoint, self.classifier_sigma = classifier_checkpoint, classifier_sigma
        self.reference_samples = reference_samples

    def noise_range(self) -> tuple[float, float]:
        return ou_sigma(float(self.grid[-1])), ou_sigma(float(self.grid[0]))

    def required_capabilities(self) -> tuple[type, ...]:
        needed = (TrainingSet, GaussianReference)  # the empirical score and the covariance give the references
        return (*needed, OracleLabels) if "oracle" in (self.labeler, *self.compare_labelers) else needed

    def missing_capability_hint(self) -> str:
        return "use labeler='classifier' with classifier_checkpoint, or labeler='nearest_train'"

    def check(self, data, *, model=None, needed_by: str | None = None) -> None:
        """As :meth:`Measurement.check`, and the labeler must exist (a classifier checkpoint is loaded now)."""
        super().check(data, model=model, needed_by=needed_by)
        self.labelers(data, device_of(model), needed_by)

    def make_labeler(self, data, choice: str, device: torch.device, needed_by: str) -> Labeler:
        """``x -> class`` as ``choice`` says (``"auto"``: the data's oracle, else the classifier), or one sentence
        naming what is missing."""
        def load():
            from ..modules.classification import load_classifier  # here: the rest needs no Lightning

            return load_classifier(self.classifier_checkpoint, device)

        return choose_labeler(data, choice, load if self.classifier_checkpoint else None, self.classifier_sigma,
                              needed_by)

    def labelers(self, data, device: torch.device, needed_by: str | None = None) -> tuple[Labeler, dict]:
        """The labeler and the compared ones (``{name: labeler}``), made once per DataModule and device."""
        def make(choice: str) -> Labeler:
            return self.make_labeler(data, choice, device, needed_by or self.name)

        return self.cached(data, f"labelers:{device}", lambda: (
            make(self.labeler), {choice: make(choice) for choice in self.compare_labelers}))

    def references(self, data) -> dict[str, Any]:
        """What every model is compared with on ``data`` (computed at the first measurement, then reused)."""
        return self.cached(data, "references", lambda: regimes_references_of_data(
            data, self.clone_times, reference_samples=self.reference_samples, seed=self.seed))

    def compute(self, denoiser, data, device: torch.device) -> Measured:
        refs = self.references(data)
        labeler, compared = self.labelers(data, device)
        cloning = cloning_experiment(
            denoiser, denoiser.data_shape, self.clone_times, labeler=labeler, train=refs["train"],
            num_pairs=self.num_pairs, times=self.grid, method=self.method, seed=self.seed, device=device,
            max_batch=self.max_batch, extra_labelers=compared or None)
        return Measured(plain(regimes_summary(cloning, refs)), artifacts={"cloning": cloning, "references": refs})

    def figure(self, measured: Measured, *, title: str | None = None, history=None):
        refs = measured.artifacts["references"]
        return regimes_figure(measured.values, measured.artifacts["cloning"]["t_hat_C"], refs["f_theory_over_alpha"],
                              title=title or "")
