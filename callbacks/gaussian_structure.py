"""``GaussianStructureCallback``: is the denoiser becoming the Gaussian-optimal denoiser of its training set?

Li, Dai, Qu (2024) find that diffusion models which generalize are nearly linear and close to the
Wiener filter ``D_G`` built from the training mean and covariance, while memorizing ones approach the
empirical denoiser ``D_M`` and copy training points. Every ``every_n_steps`` this callback measures,
on one fixed held-out probe set with fixed noise (so the curves of successive runs are comparable):

* the linearity score (cosine and norm-ratio forms) over an EDM sigma grid;
* RMSE / NMSE of the model's outputs to ``D_G`` and to ``D_M`` on the noisy probes;
* the best affine map of the model (linear distillation) and its distance to the Gaussian weights;
* the Jacobian at a few noisy probes: top singular values, overlap of the top singular vectors with
  the top principal components, and the relative Frobenius distance to ``J_G``;
* samples from fixed seeds next to ``D_G``'s samples from the same noise with the same sampler: their
  NMSE, and the memorized fraction and GL score of the model's samples against the training set.

Scalars go to TensorBoard as ``diagnostics/<name>/<key>``; the curves go to ``diagnostics.jsonl``; one
figure per run shows the curves with ``D_G`` (the theory) and ``D_M`` (the memorizer) drawn in, and the
samples with the Gaussian model's and the nearest training points. The references are computed once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from diffuse_feat.capabilities import GaussianReference, TrainingSet
from diffuse_feat.diagnostics.gaussian_structure import (
    GaussianStructureSettings,
    gaussian_structure_probe_pool,
    gaussian_structure_references,
    measure_gaussian_structure,
    sigma_key,
)
from diffuse_feat.plotting.gaussian_structure import plot_gaussian_structure
from diffuse_feat.reporting import RunReporter
from diffuse_feat.samplers import SamplerName

from .base import DiagnosticCallback

__all__ = ["GaussianStructureCallback", "sigma_key"]


class GaussianStructureCallback(DiagnosticCallback):
    """Linearity, distance to the Gaussian and empirical denoisers, Jacobian, linear distillation, memorization.

    Args:
        every_n_steps: cadence in optimizer steps (0: only at the end of training).
        num_pairs: linearity pairs; the distance probes are the ``2 num_pairs`` points of the pairs.
        num_sigmas: levels of the EDM rho=7 grid from 80 to 0.002 (the paper uses 40).
        alpha_sq: ``alpha^2`` of the linearity score (``beta^2 = 1 - alpha^2``).
        mid_band: sigma range of the ``*_mid`` summaries (where sigma^2 is comparable to the data variances).
        high_sigma: ``rmse_to_gaussian_high`` averages the RMSE to ``D_G`` over the grid's sigma >= this.
        jacobian_sigmas: noise levels of the Jacobian analysis (empty: skip it).
        jacobian_points: noisy probes per Jacobian sigma; jacobian_k: singular triplets and principal
            components compared; jacobian_probes: random probes of the Frobenius-distance estimate.
        distill: run the linear distillation (``4 d`` denoiser calls per sigma) on an EDM grid of
            ``num_distill_sigmas`` levels (the paper's 10 sampling steps by default).
        num_samples, sample_steps, sampler: the generated samples (seeds ``seed .. seed + num_samples - 1``).
        use_ema, seed, at_train_end, name: as in :class:`DiagnosticCallback`.

    Probes are the DataModule's held-out points (``val_tensor``) when it has at least two, else training
    points; ``probes_held_out`` in every record says which. Subclass and override :meth:`select_probes`
    to choose other probes.
    """


    requires = (TrainingSet, GaussianReference)

    def __init__(
        self,
        every_n_steps: int = 500,
        num_pairs: int = 100,
        num_sigmas: int = 20,
        alpha_sq: float = 0.5,
        mid_band: tuple[float, float] = (0.1, 10.0),
        high_sigma: float = 10.0,
        jacobian_sigmas: Sequence[float] = (10.0, 1.0, 0.1),
        jacobian_points: int = 2,
        jacobian_k: int = 8,
        jacobian_probes: int = 16,
        distill: bool = True,
        num_distill_sigmas: int = 10,
        num_samples: int = 32,
        sample_steps: int = 18,
        sampler: SamplerName = "heun",
        use_ema: bool = True,
        seed: int = 0,
        at_train_end: bool = True,
        name: str | None = None,
    ):
        super().__init__(every_n_steps=every_n_steps, at_train_end=at_train_end, use_ema=use_ema, seed=seed, name=name)
        self.settings = GaussianStructureSettings(
            num_pairs=num_pairs, num_sigmas=num_sigmas, alpha_sq=alpha_sq, mid_band=mid_band, high_sigma=high_sigma,
            jacobian_sigmas=jacobian_sigmas, jacobian_points=jacobian_points, jacobian_k=jacobian_k,
            jacobian_probes=jacobian_probes, distill=distill, num_distill_sigmas=num_distill_sigmas,
            num_samples=num_samples, sample_steps=sample_steps, sampler=sampler, seed=seed, name=self.name)
        self.mid_band = self.settings.mid_band
        self._refs: dict[str, Any] | None = None
        self.last_samples: Tensor | None = None  # the latest run's samples, for figures and reproductions
        self.last_nearest: Tensor | None = None  # the training point nearest to each of those samples

    # ----- probes and references (computed once) --------------------------------------------------
    def select_probes(self, trainer: pl.Trainer) -> tuple[Tensor, bool]:
        """Clean probe points ``[m, *data_shape]`` and whether they are held out from training."""
        pool, held_out = gaussian_structure_probe_pool(trainer.datamodule)
        if not held_out:
            rank_zero_warn(f"{self.name}: the data has no held-out points (n_val = 0); probing with training points")
        return pool, held_out

    def _references(self, trainer: pl.Trainer, device: torch.device) -> dict[str, Any]:
        if self._refs is None:
            dm = trainer.datamodule
            pool, held_out = self.select_probes(trainer)
            self._refs = gaussian_structure_references(
                dm.train_tensor().to(device), dm.gaussian_denoiser().to(device), dm.empirical_denoiser().to(device),
                pool, held_out, self.settings, device)
        return self._refs

    @property
    def reference_samples(self) -> Tensor | None:
        """The Gaussian model's samples from the same seeds and sampler as :attr:`last_samples`."""
        return None if self._refs is None else self._refs["gaussian_samples"].cpu()

    # ----- the measurement and the figure ----------------------------------------------------------
    def measure(self, trainer, pl_module, model) -> dict[str, Any]:
        refs = self._references(trainer, pl_module.device)
        values, samples, nearest = measure_gaussian_structure(model, refs, self.settings, pl_module.device)
        self.last_samples, self.last_nearest = samples.cpu(), nearest.cpu()
        return values

    def report(self, reporter: RunReporter, values: dict[str, Any], step: int, trainer, model) -> None:
        fig = plot_gaussian_structure(values, self.last_samples, self.reference_samples, self.last_nearest,
                                      mid_band=self.mid_band, title=f"{self.name}, step {step}")
        reporter.figure(f"figures/{self.name}", fig, step)  # closes the figure
