"""What generated samples say by themselves: their first two moments against the data's (:class:`SampleGrid`), and
how many copy a training point (:class:`Memorization`). The samples come from :func:`diffuse_feat.samplers.generate`
with fixed seeds, so successive measurements of a training run show the same noise becoming samples."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..capabilities import TrainingSet
from ..plotting.sample_grid import sample_rows_figure
from ..samplers import SamplerName, generate
from .measurement import Measured, Measurement
from .memorization import memorization_scores

__all__ = ["SampleGrid", "Memorization", "sample_statistics", "sample_memorization"]


def sample_statistics(samples: Tensor, real: Tensor | None = None) -> dict[str, float]:
    """``sample_mean``, ``sample_std`` of the samples and, with ``real`` data, ``data_mean``, ``data_std``."""
    values = {"sample_mean": samples.mean().item(), "sample_std": samples.std().item()}
    if real is not None:
        values.update(data_mean=real.mean().item(), data_std=real.std().item())
    return values


def sample_memorization(samples: Tensor, train: Tensor) -> tuple[dict[str, Any], Tensor]:
    """:func:`~diffuse_feat.diagnostics.memorization.memorization_scores` of the samples as numbers and per-sample
    lists (``memorized_fraction``, ``relative_nn_distance``, ``distance_ratio``, ``nearest_distance``,
    ``nearest_index``), and the nearest training point of each sample."""
    scores = memorization_scores(samples, train)
    values = {key: value.item() if value.ndim == 0 else value.tolist() for key, value in scores.items()}
    return values, train[scores["nearest_index"].to(train.device)]


class _Samples(Measurement):
    """``num_samples`` samples from seeds ``seed .. seed + num_samples - 1``, ``num_steps`` of ``sampler`` on the EDM
    grid from ``sigma_max`` to ``sigma_min``."""

    def __init__(self, num_samples: int = 64, num_steps: int = 18, sampler: SamplerName = "heun",
                 sigma_min: float = 0.002, sigma_max: float = 80.0, seed: int = 0):
        if num_samples < 1 or num_steps < 1:
            raise ValueError(f"{self.name} needs num_samples >= 1 and num_steps >= 1, got {num_samples}, {num_steps}")
        self.num_samples, self.num_steps, self.sampler = num_samples, num_steps, sampler
        self.sigma_min, self.sigma_max, self.seed = sigma_min, sigma_max, seed

    def noise_range(self) -> tuple[float, float]:
        return self.sigma_min, self.sigma_max

    def generate(self, denoiser, device: torch.device) -> Tensor:
        return generate(denoiser, denoiser.data_shape, list(range(self.seed, self.seed + self.num_samples)),
                        num_steps=self.num_steps, sampler=self.sampler, device=device, sigma_min=self.sigma_min,
                        sigma_max=self.sigma_max)


class SampleGrid(_Samples):
    """Generated samples next to real ones, with their mean and std against the data's (when it has a training
    set): ``sample_mean``, ``sample_std``, ``data_mean``, ``data_std``."""

    name = "sample_grid"

    def compute(self, denoiser, data, device: torch.device) -> Measured:
        samples = self.generate(denoiser, device)
        train = data.train_tensor() if isinstance(data, TrainingSet) else None
        real = None if train is None else train[: self.num_samples]
        return Measured(sample_statistics(samples, train), artifacts={"samples": samples.cpu(), "real": real})

    def figure(self, measured: Measured, *, title: str | None = None, history=None):
        rows, labels = [measured.artifacts["samples"]], ["generated"]
        if measured.artifacts["real"] is not None:
            rows, labels = [*rows, measured.artifacts["real"]], [*labels, "real"]
        return sample_rows_figure(rows, labels, title=title or "")


class Memorization(_Samples):
    """The fraction of generated samples that copy a training point (nearest / second-nearest distance < 1/3) and
    the GL score, with per-sample lists (:func:`sample_memorization`)."""

    name = "memorization"
    requires = (TrainingSet,)

    def compute(self, denoiser, data, device: torch.device) -> Measured:
        samples = self.generate(denoiser, device)
        values, nearest = sample_memorization(samples, data.train_tensor().to(samples.device))
        return Measured(values, artifacts={"samples": samples.cpu(), "nearest": nearest.cpu()})

    def figure(self, measured: Measured, *, title: str | None = None, history=None):
        label = f"memorized fraction {measured.values['memorized_fraction']:.2f}"
        return sample_rows_figure([measured.artifacts["samples"], measured.artifacts["nearest"]],
                                  ["generated", "nearest training point"],
                                  title=f"{title}: {label}" if title else label)
