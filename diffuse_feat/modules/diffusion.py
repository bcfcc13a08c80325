"""``DiffusionModule``: a :class:`~diffuse_feat.denoisers.PreconditionedDenoiser` trained by denoising score matching
in sigma-space."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jsonargparse import lazy_instance
from torch import Tensor, nn

from ..backbones.base import BackboneFactory
from ..denoisers.preconditioned import PreconditionedDenoiser
from ..preconditioning import EDMPreconditioning, Preconditioning
from ..process import as_sigma
from ..samplers import SamplerName, generate
from ..sigma_sampling import LogNormalSigma, SigmaSampler
from .base import BackboneModule, OptimizerFactory
from .metrics import BucketMean, bucket_labels

__all__ = ["DiffusionModule"]


class DiffusionModule(BackboneModule):
    """``D(x; sigma) = c_skip x + c_out F(c_in x; sigma)``,
    trained on ``lambda(sigma) ||D(x0 + sigma z; sigma) - x0||^2``.

    The module holds the denoiser (``self.denoiser``, around ``self.backbone``) and is one too: ``module(x, sigma)``
    checks its input and returns ``E[x0 | x]``, so samplers and diagnostics take it like any exact reference. Its
    ``state_dict`` is the denoiser's (``backbone.*``). Hooks to override in a subclass:

    * :meth:`build_denoiser` — the parametrization around the backbone;

    * :meth:`loss_weight` — ``lambda(sigma)`` (default: the preconditioning's, EDM ``(s^2+sd^2)/(s sd)^2``);
    * :meth:`sample_sigma` — training noise levels (default: ``sigma_sampler``);
    * :meth:`per_sample_loss` — the whole objective for a batch.

    Logged: ``train/loss``, ``train/loss_by_sigma/<bucket>`` (per epoch), ``val/loss`` and
    ``val/loss_by_sigma/<sigma>`` at fixed noise levels with fixed noise, comparable across epochs.
    """

    def __init__(
        self,
        backbone: BackboneFactory,
        data_shape: Sequence[int] = (),
        num_classes: int = 0,
        preconditioning: Preconditioning = lazy_instance(EDMPreconditioning),
        sigma_sampler: SigmaSampler = lazy_instance(LogNormalSigma),
        lr: float = 1e-3,
        optimizer: OptimizerFactory = torch.optim.Adam,
        lr_warmup_steps: int = 0,
        loss_sigma_edges: Sequence[float] = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0),
        val_sigmas: Sequence[float] = (0.02, 0.1, 0.3, 1.0, 3.0, 10.0),
        seed: int = 0,
        compile_backbone: bool | str = False,
    ):
        super().__init__(backbone, data_shape, num_classes, lr, optimizer, lr_warmup_steps, seed, compile_backbone)
        self.preconditioning = preconditioning
        # Not registered as a submodule: its only weights are self.backbone's, so the state_dict keys stay
        # `backbone.*` (older checkpoints load as they are) and the denoiser alone loads the same state_dict.
        object.__setattr__(self, "denoiser", self.build_denoiser(self.backbone, preconditioning, compile_backbone))
        self.sigma_sampler = sigma_sampler
        self.val_sigmas = [float(s) for s in val_sigmas]
        self.loss_buckets = BucketMean(loss_sigma_edges)
        self.loss_bucket_names = bucket_labels(loss_sigma_edges)

    def backbone_output_shape(self) -> tuple[int, ...]:
        return self.data_shape

    def build_denoiser(self, backbone: nn.Module, preconditioning: Preconditioning,
                       compile_backbone: bool | str) -> PreconditionedDenoiser:
        """The denoiser trained around ``backbone`` (override for another parametrization)."""
        return PreconditionedDenoiser(backbone, preconditioning, compile_backbone=compile_backbone)

    def train(self, mode: bool = True) -> DiffusionModule:
        super().train(mode)
        self.denoiser.training = mode  # not a registered child: keep its flag in step with the backbone's
        return self

    # ----- the denoiser ---------------------------------------------------------------------------
    def denoise_unchecked(self, x: Tensor, sigma: Tensor) -> Tensor:
        """``D(x; sigma)`` for ``sigma`` of shape ``[B]`` (no device sync)."""
        return self.denoiser(x, sigma)

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """Denoise ``x`` at noise level ``sigma`` (a number or one per sample)."""
        self.check_input(x)
        return self.denoiser(x, as_sigma(sigma, x.shape[0], device=x.device))

    # ----- training ---------------------------------------------------------------------------------
    def loss_weight(self, sigma: Tensor) -> Tensor:
        return self.preconditioning.loss_weight(sigma)

    def sample_sigma(self, batch_size: int) -> Tensor:
        return self.sigma_sampler.sample(batch_size, device=self.device, generator=self.noise_generator)

    def per_sample_loss(self, x0: Tensor, sigma: Tensor, noise: Tensor) -> Tensor:
        """``lambda(sigma) * mean_j (D(x0 + sigma z) - x0)_j^2`` for each sample."""
        x_noisy = x0 + sigma.reshape(-1, *([1] * (x0.ndim - 1))) * noise
        err = (self.denoise_unchecked(x_noisy, sigma) - x0.float()).square().flatten(1).mean(1)
        return self.loss_weight(sigma) * err

    def compute_loss(self, batch: Any, batch_idx: int) -> Tensor:
        x0 = batch[0]
        self.check_input(x0)
        sigma = self.sample_sigma(x0.shape[0])
        noise = torch.randn(x0.shape, device=x0.device, dtype=torch.float32, generator=self.noise_generator)
        losses = self.per_sample_loss(x0, sigma, noise)
        self.loss_buckets.update(losses, sigma)
        loss = losses.mean()
        if self.log_this_step():
            self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=x0.shape[0])
        return loss

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        sums, counts = self.loss_buckets.compute()
        for name, total, count in zip(self.loss_bucket_names, sums, counts, strict=True):
            if count > 0:
                self.log(f"train/loss_by_sigma/{name}", (total / count).float(), on_step=False, on_epoch=True)
        if counts.sum() > 0:
            self.log("train/loss_epoch", (sums.sum() / counts.sum()).float(), on_step=False, on_epoch=True)
        self.loss_buckets.reset()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x0 = batch[0]
        g = torch.Generator(device=x0.device).manual_seed(self.seed * 7919 + batch_idx)
        total = 0.0
        for sigma_value in self.val_sigmas:
            sigma = torch.full((x0.shape[0],), sigma_value, device=x0.device)
            noise = torch.randn(x0.shape, device=x0.device, dtype=torch.float32, generator=g)
            loss = self.per_sample_loss(x0, sigma, noise).mean()
            total = total + loss
            self.log(f"val/loss_by_sigma/{sigma_value:g}", loss, on_epoch=True, batch_size=x0.shape[0], sync_dist=True)
        self.log("val/loss", total / len(self.val_sigmas), on_epoch=True, prog_bar=True, batch_size=x0.shape[0],
                 sync_dist=True)

    # ----- convenience --------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self, seeds: Sequence[int], *, num_steps: int = 18, sampler: SamplerName = "heun", sigma_max: float = 80.0
    ) -> Tensor:
        """Samples from pure noise, one per seed (sample ``i`` depends only on ``seeds[i]``)."""
        return generate(self, self.data_shape, seeds, num_steps=num_steps, sampler=sampler, sigma_max=sigma_max,
                        device=self.device)
