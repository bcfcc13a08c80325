"""``DiffusionModule``: trains a :class:`~diffuse_feat.denoisers.PreconditionedDenoiser` with a loss chosen by
``class_path`` (denoising score matching by default)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jsonargparse import lazy_instance
from torch import Tensor, nn

from ..backbones.base import BackboneFactory
from ..denoisers.preconditioned import PreconditionedDenoiser
from ..losses import DenoisingScoreMatching, Loss
from ..per_sample import as_sigma
from ..preconditioning import EDMPreconditioning, Preconditioning
from ..samplers import SamplerName, generate
from .base import BackboneModule, OptimizerFactory
from .metrics import BucketMean, bucket_labels

__all__ = ["DiffusionModule"]

DEFAULT_LOSS_SIGMA_EDGES = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)
DEFAULT_VAL_SIGMAS = (0.02, 0.1, 0.3, 1.0, 3.0, 10.0)


class DiffusionModule(BackboneModule):
    """Holds ``self.denoiser``, ``D(x; sigma) = c_skip x + c_out F(c_in x; sigma)`` around ``self.backbone``, and
    trains it on ``loss(denoiser, x0, generator)`` (default :class:`~diffuse_feat.losses.DenoisingScoreMatching`:
    ``lambda(sigma) ||D(x0 + sigma z; sigma) - x0||^2``, ``ln sigma ~ N(-1.2, 1.2^2)``).

    The module is a denoiser too: ``module(x, sigma)`` checks its input and returns ``D(x, sigma) = E[x0 | x]``, so
    samplers and diagnostics take it like any exact reference. Its ``state_dict`` is the denoiser's (``backbone.*``).

    Extend by choosing another ``loss`` (a :class:`~diffuse_feat.losses.Loss` subclass owns its sigma density and
    weighting) or by overriding :meth:`build_denoiser`.

    Logged: ``train/loss``, ``train/loss_by_sigma/<bucket>`` per epoch (``sigma<0.05``, ``sigma=0.05-0.2``, ...,
    ``sigma>=5``), ``val/loss`` and ``val/loss_by_sigma/sigma=<sigma>`` at fixed noise levels with fixed noise,
    comparable across epochs.

    Args:
        loss_sigma_edges: edges of the ``train/loss_by_sigma`` buckets; ``None``: 0.05, 0.2, 0.5, 1, 2, 5, or one
            bucket (``all``) when the loss trains at one fixed sigma.
        val_sigmas: noise levels of ``val/loss``; ``None``: 0.02, 0.1, 0.3, 1, 3, 10, or the loss's fixed sigma.
            With a single level only ``val/loss`` is logged (its bucket would repeat it).
    """

    def __init__(
        self,
        backbone: BackboneFactory,
        data_shape: Sequence[int] = (),
        num_classes: int = 0,
        preconditioning: Preconditioning = lazy_instance(EDMPreconditioning),
        loss: Loss = DenoisingScoreMatching(),  # not lazy_instance: it cannot deep-copy a callable class
        lr: float = 1e-3,
        optimizer: OptimizerFactory = torch.optim.Adam,
        lr_warmup_steps: int = 0,
        loss_sigma_edges: Sequence[float] | None = None,
        val_sigmas: Sequence[float] | None = None,
        seed: int = 0,
        compile_backbone: bool | str = False,
    ):
        super().__init__(backbone, data_shape, num_classes, lr, optimizer, lr_warmup_steps, seed, compile_backbone)
        # Not registered as a submodule: its only weights are self.backbone's, so the state_dict keys stay
        # `backbone.*` (older checkpoints load as they are) and the denoiser alone loads the same state_dict.
        object.__setattr__(self, "denoiser", self.build_denoiser(self.backbone, preconditioning, compile_backbone))
        self.loss = loss
        loss.check_denoiser(self.denoiser)
        fixed = loss.fixed_sigma
        if loss_sigma_edges is None:
            loss_sigma_edges = () if fixed is not None else DEFAULT_LOSS_SIGMA_EDGES
        if val_sigmas is None:
            val_sigmas = (fixed,) if fixed is not None else DEFAULT_VAL_SIGMAS
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
    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """Denoise ``x`` at noise level ``sigma`` (a number or one per sample)."""
        self.check_input(x)
        return self.denoiser(x, as_sigma(sigma, x.shape[0], device=x.device))

    # ----- training ---------------------------------------------------------------------------------
    def compute_loss(self, batch: Any, batch_idx: int) -> Tensor:
        x0 = batch[0]
        self.check_input(x0)
        losses, sigma = self.loss(self.denoiser, x0, self.noise_generator)
        self.loss_buckets.update(losses, sigma)
        loss = losses.mean()
        if self.log_this_step():
            self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=x0.shape[0])
        return loss

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        sums, counts = self.loss_buckets.compute()  # already summed over DDP ranks: every rank has the same values
        # The buckets go straight to the loggers, in one call, at the step Lightning gives the epoch's own metrics:
        # a self.log call costs ~1 ms on CPU (Lightning moves its result store each time), so seven of them an epoch
        # were half of what the framework added to a small model's step (benchmarks/training_step.py). They are
        # epoch means already, so nothing is lost but their place in callback_metrics.
        buckets = {f"train/loss_by_sigma/{name}": float(total / count)
                   for name, total, count in zip(self.loss_bucket_names, sums.tolist(), counts.tolist(), strict=True)
                   if count > 0}
        if buckets and self._trainer is not None:
            for logger in self.loggers:
                logger.log_metrics(buckets, step=max(self.global_step - 1, 0))
        # sync_dist only keeps Lightning from warning that it is not synchronised (the mean of equal values)
        if counts.sum() > 0:
            self.log("train/loss_epoch", (sums.sum() / counts.sum()).float(), on_step=False, on_epoch=True,
                     sync_dist=True)
        self.loss_buckets.reset()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x0 = batch[0]
        g = torch.Generator(device=x0.device).manual_seed(self.seed * 7919 + batch_idx)
        total = 0.0
        for sigma_value in self.val_sigmas:
            sigma = torch.full((x0.shape[0],), sigma_value, device=x0.device)
            noise = torch.randn(x0.shape, device=x0.device, dtype=torch.float32, generator=g)
            loss = self.loss.per_sample_loss(self.denoiser, x0, sigma, noise).mean()
            total = total + loss
            if len(self.val_sigmas) > 1:
                self.log(f"val/loss_by_sigma/sigma={sigma_value:g}", loss, on_epoch=True, batch_size=x0.shape[0],
                         sync_dist=True)
        self.log("val/loss", total / len(self.val_sigmas), on_epoch=True, prog_bar=True, batch_size=x0.shape[0],
                 sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        # names the class for load_denoiser, which rebuilds the denoiser without Lightning (a run started from Python
        # saves no class path in its hyperparameters)
        checkpoint["module_class_path"] = f"{type(self).__module__}.{type(self).__qualname__}"

    # ----- convenience --------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self, seeds: Sequence[int], *, num_steps: int = 18, sampler: SamplerName = "heun", sigma_max: float = 80.0
    ) -> Tensor:
        """Samples from pure noise, one per seed (sample ``i`` depends only on ``seeds[i]``)."""
        return generate(self, self.data_shape, seeds, num_steps=num_steps, sampler=sampler, sigma_max=sigma_max,
                        device=self.device)
