"""``SampleGridCallback``: generated samples next to real ones, from fixed seeds, in TensorBoard."""

from __future__ import annotations

import torch

from diffuse_feat.capabilities import TrainingSet
from diffuse_feat.diagnostics.samples import sample_statistics
from diffuse_feat.plotting.sample_grid import image_grid
from diffuse_feat.plotting.samples import samples_scatter
from diffuse_feat.reporting import RunReporter
from diffuse_feat.samplers import generate

from .base import DiagnosticCallback

__all__ = ["SampleGridCallback"]


class SampleGridCallback(DiagnosticCallback):
    """Every ``every_n_steps``: ``num_samples`` samples (seeds ``seed .. seed+num_samples-1``, so the
    same noise every time and the grids form a movie of training), the real training images beside
    them, and their mean/std against the data's. Image data gives an image grid; 2-D data a scatter plot.
    """

    def __init__(self, every_n_steps: int = 500, num_samples: int = 64, num_steps: int = 18, sampler: str = "heun",
                 use_ema: bool = True, seed: int = 0, at_train_end: bool = True, name: str | None = None):
        super().__init__(every_n_steps=every_n_steps, at_train_end=at_train_end, use_ema=use_ema, seed=seed, name=name)
        self.num_samples, self.num_steps, self.sampler = num_samples, num_steps, sampler
        self._samples: torch.Tensor | None = None

    def measure(self, trainer, pl_module, model):
        seeds = list(range(self.seed, self.seed + self.num_samples))
        samples = generate(model, model.data_shape, seeds, num_steps=self.num_steps, sampler=self.sampler,
                           device=pl_module.device)
        self._samples = samples.cpu()
        real = trainer.datamodule.train_tensor() if isinstance(trainer.datamodule, TrainingSet) else None
        return sample_statistics(samples, real)

    def report(self, reporter: RunReporter, values, step, trainer, model):
        samples = self._samples
        real = trainer.datamodule.train_tensor()[: self.num_samples] if isinstance(trainer.datamodule, TrainingSet) \
            else None
        if samples.ndim == 4:
            nrow = max(1, int(self.num_samples**0.5))
            reporter.images(f"samples/{self.name}/generated", image_grid(samples, nrow), step)
            if real is not None:
                reporter.images(f"samples/{self.name}/real", image_grid(real, nrow), step)
        elif samples.ndim == 2 and samples.shape[1] == 2:
            reporter.figure(f"figures/{self.name}", samples_scatter(samples, real, title=f"step {step}"), step)
