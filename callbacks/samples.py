"""``SampleGridCallback``: generated samples next to real ones, from fixed seeds, in TensorBoard."""

from __future__ import annotations

from diffuse_feat.diagnostic_callback import DiagnosticCallback
from diffuse_feat.diagnostics.samples import SampleGrid
from diffuse_feat.plotting.sample_grid import image_grid

__all__ = ["SampleGridCallback"]


class SampleGridCallback(DiagnosticCallback):
    """Every ``every_n_steps``: ``num_samples`` samples (seeds ``seed .. seed+num_samples-1``, so the same noise every
    time and the grids form a movie of training), the real training images beside them, and their mean/std against
    the data's (:class:`~diffuse_feat.diagnostics.samples.SampleGrid`). Image data gives an image grid; 2-D data a
    scatter plot.
    """

    def __init__(self, every_n_steps: int = 500, num_samples: int = 64, num_steps: int = 18, sampler: str = "heun",
                 use_ema: bool = True, seed: int = 0, at_train_end: bool = True, name: str | None = None):
        super().__init__(SampleGrid(num_samples=num_samples, num_steps=num_steps, sampler=sampler, seed=seed),
                         every_n_steps=every_n_steps, at_train_end=at_train_end, use_ema=use_ema, name=name)
        self._real_shown = False

    def report(self, reporter, measured, step, trainer, model) -> None:
        samples, real = measured.artifacts["samples"], measured.artifacts["real"]
        if samples.ndim == 4:
            nrow = max(1, int(samples.shape[0] ** 0.5))
            reporter.images(f"samples/{self.name}/generated", image_grid(samples, nrow), step)
            if real is not None and not self._real_shown:  # the same training images every time: once a run
                reporter.images(f"samples/{self.name}/real", image_grid(real, nrow), step)
                self._real_shown = True
        elif samples.ndim == 2 and samples.shape[1] == 2:
            super().report(reporter, measured, step, trainer, model)
