"""``GaussianStructureCallback``: is the denoiser becoming the Gaussian-optimal denoiser of its training set?

Li, Dai, Qu (2024) find that diffusion models which generalize are nearly linear and close to the Wiener filter
``D_G`` built from the training mean and covariance, while memorizing ones approach the empirical denoiser ``D_M``
and copy training points. Every ``every_n_steps`` this callback runs
:class:`~diffuse_feat.diagnostics.gaussian_structure.GaussianStructure` on one fixed held-out probe set with fixed
noise (so the curves of successive runs are comparable): the linearity score, RMSE / NMSE to ``D_G`` and ``D_M``,
linear distillation, the Jacobian, and samples next to ``D_G``'s from the same noise with their memorized fraction.
Scalars go to TensorBoard as ``diagnostics/<name>/<key>`` (the Jacobian's as one chart over sigma), the curves to
``diagnostics.jsonl``, and one figure per run shows them with ``D_G`` and ``D_M`` drawn in.
"""

from __future__ import annotations

from diffuse_feat.diagnostic_callback import DiagnosticCallback
from diffuse_feat.diagnostics.gaussian_structure import GaussianStructure

__all__ = ["GaussianStructureCallback"]


class GaussianStructureCallback(DiagnosticCallback):
    """Linearity, distance to the Gaussian and empirical denoisers, Jacobian, linear distillation, memorization.

    Args:
        every_n_steps: cadence in optimizer steps (0: only at the end of training).
        use_ema, seed, at_train_end, name: as in :class:`~diffuse_feat.diagnostic_callback.DiagnosticCallback`.
        **settings: the measurement's (:class:`~diffuse_feat.diagnostics.gaussian_structure.GaussianStructure`):
            num_pairs, num_sigmas, alpha_sq, mid_band, high_sigma, jacobian_sigmas, jacobian_points, jacobian_k,
            jacobian_probes, distill, num_distill_sigmas, num_samples, sample_steps, sampler, sigma_min, sigma_max.

    The defaults are sized for monitoring during training; the reproduction uses more pairs and a finer grid.
    """

    def __init__(self, every_n_steps: int = 500, use_ema: bool = True, seed: int = 0, at_train_end: bool = True,
                 name: str | None = None, **settings):
        super().__init__(GaussianStructure(seed=seed, **settings), every_n_steps=every_n_steps,
                         at_train_end=at_train_end, use_ema=use_ema, name=name)

    def figure_title(self, step: int) -> str:
        return f"{self.name}, step {step}"
