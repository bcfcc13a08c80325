"""``PatchDiffusionModule``: Han et al.'s diffusion objective, the DDPM noise-prediction loss at one fixed
noise level, optionally averaged *exactly* over the diffusion noise (closed form, quadratic activation).

In sigma-space the paper's corruption ``x_t = alpha x_0 + beta eps`` (``alpha^2 + beta^2 = 1``) is
``x = x_0 + sigma eps`` seen through ``EpsilonPreconditioning``: the backbone receives
``c_in x = x / sqrt(1 + sigma^2) = alpha x_0 + beta eps`` with ``alpha = 1 / sqrt(1 + sigma^2)`` and
``beta = sigma / sqrt(1 + sigma^2)``, and is trained to output ``eps``. So ``sigma = beta / alpha``; the
paper's reconstruction ``(alpha, beta) = (0.6, 0.8)`` is ``sigma = 4/3`` (OU time ``t = 0.51``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..backbones.base import BackboneFactory
from ..errors import ConfigError
from ..preconditioning import EpsilonPreconditioning
from ..sigma_sampling import FixedSigma
from .base import OptimizerFactory
from .diffusion import DiffusionModule

__all__ = ["PatchDiffusionModule", "expected_tied_quadratic_loss"]


def expected_tied_quadratic_loss(filters: Tensor, x0: Tensor, alpha: float, beta: float, scale: float) -> Tensor:
    """``sum_p E_eps 1/2 ||f(alpha x0^(p) + beta eps^(p)) - eps^(p)||^2`` per sample, ``eps ~ N(0, I)``, exactly,
    for the tied quadratic network ``f(x) = c sum_r <w_r, x>^2 w_r`` (note §7.1).

    With ``G = W W^T``, ``N_r = G_rr``, ``a_r = alpha <w_r, x0>`` and ``q_r = a_r^2 + beta^2 N_r``, the
    noisy pre-activations are ``u ~ N(a, beta^2 G)`` and Isserlis' theorem gives, per patch,

        d/2 + c^2/2 q^T G q + c^2 beta^4 sum_rs G_rs^3 + 2 c^2 beta^2 sum_rs a_r a_s G_rs^2 - 2 c beta sum_r a_r N_r.

    Args:
        filters: ``W`` as ``[m, d]``; x0: clean inputs ``[B, P, d]``; scale: ``c``. Returns ``[B]``.
    """
    gram = filters @ filters.T
    sq_norms = gram.diagonal()
    a = alpha * x0 @ filters.T  # [B, P, m]
    q = a.square() + beta**2 * sq_norms
    c2 = scale**2
    per_patch = (
        x0.shape[-1] / 2
        + 0.5 * c2 * ((q @ gram) * q).sum(-1)
        + c2 * beta**4 * gram.pow(3).sum()
        + 2 * c2 * beta**2 * ((a @ gram.square()) * a).sum(-1)
        - 2 * scale * beta * (a * sq_norms).sum(-1)
    )
    return per_patch.sum(-1)


class PatchDiffusionModule(DiffusionModule):
    """A ``DiffusionModule`` fixed to the paper's setting: epsilon prediction at one noise level ``sigma``,
    full-batch gradient descent (``torch.optim.SGD``) and the paper's loss normalisation
    ``1/2 ||F(alpha x_0 + beta eps) - eps||^2`` summed over coordinates (so ``lr`` is the paper's ``eta``).

    With ``expected_loss=True`` (default) each step uses the exact expectation over ``eps``
    (:func:`expected_tied_quadratic_loss`): gradient descent is deterministic, as in the theory. This needs
    a :class:`~diffuse_feat.backbones.patch_net.PatchNet` denoiser with the square activation; any other
    backbone trains on sampled noise (``expected_loss=False``), one draw per sample and step.

    Hooks: :meth:`expected_per_sample_loss` (override for another closed form), plus ``DiffusionModule``'s.
    """

    def __init__(
        self,
        backbone: BackboneFactory,
        data_shape: Sequence[int] = (),
        num_classes: int = 0,
        sigma: float = 4.0 / 3.0,
        expected_loss: bool = True,
        lr: float = 1e-3,
        optimizer: OptimizerFactory = torch.optim.SGD,
        seed: int = 0,
        compile_backbone: bool | str = False,
    ):
        if sigma <= 0:
            raise ConfigError(f"model.sigma must be > 0 (the fixed noise level, beta / alpha), got {sigma}")
        super().__init__(backbone, data_shape, num_classes, preconditioning=EpsilonPreconditioning(),
                         sigma_sampler=FixedSigma(sigma), lr=lr, optimizer=optimizer, loss_sigma_edges=(),
                         val_sigmas=(sigma,), seed=seed, compile_backbone=compile_backbone)
        self.sigma, self.expected_loss = float(sigma), expected_loss
        if expected_loss:
            net = self.backbone
            if not (getattr(net, "is_denoiser", False) and getattr(net, "activation", None) == "square"):
                raise ConfigError(
                    "model.expected_loss=true needs a PatchNet backbone with activation 'square' (the closed form "
                    "is for the tied quadratic network); set model.init_args.expected_loss=false to sample the noise"
                )

    @property
    def alpha(self) -> float:
        return 1.0 / math.sqrt(1.0 + self.sigma**2)

    @property
    def beta(self) -> float:
        return self.sigma / math.sqrt(1.0 + self.sigma**2)

    def loss_weight(self, sigma: Tensor) -> Tensor:
        # the parent averages over coordinates; the paper sums 1/2 (.)^2, i.e. numel / 2 times more
        return super().loss_weight(sigma) * (math.prod(self.data_shape) / 2)

    def expected_per_sample_loss(self, x0: Tensor) -> Tensor:
        """``E_z per_sample_loss(x0, sigma, z)`` in closed form, ``[B]``."""
        net = self.backbone
        filters = net.first_layer_filters()
        return expected_tied_quadratic_loss(filters, x0.to(filters.dtype), self.alpha, self.beta,
                                            net.output_scale)

    def compute_loss(self, batch: Any, batch_idx: int) -> Tensor:
        if not self.expected_loss:
            return super().compute_loss(batch, batch_idx)
        x0 = batch[0]
        self.check_input(x0)
        losses = self.expected_per_sample_loss(x0)
        self.loss_buckets.update(losses, torch.full_like(losses, self.sigma))
        loss = losses.mean()
        if self.log_this_step():
            self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=x0.shape[0])
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if not self.expected_loss:
            return super().validation_step(batch, batch_idx)
        loss = self.expected_per_sample_loss(batch[0]).mean()
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=batch[0].shape[0], sync_dist=True)
