"""``ClassificationModule``: the same backbone class as the diffusion model, with a class head,
optionally trained on noised inputs so the class can be read at every noise level."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from ..backbones.base import BackboneFactory
from ..denoisers.preconditioned import CompileWhenTraining
from ..errors import ConfigError
from ..per_sample import append_dims, as_sigma
from ..sigma_sampling import SigmaSampler
from .base import BackboneModule, OptimizerFactory

__all__ = ["ClassificationModule", "load_classifier"]


class ClassificationModule(BackboneModule):
    """Logits ``F(c_in(sigma) x; sigma)`` with ``c_in = sigma_data / sqrt(sigma^2 + sigma_data^2)``,
    which is the identity on clean inputs and keeps noised inputs at unit-ish scale.

    ``sigma_sampler = None`` trains on clean data; otherwise each sample is noised at a drawn sigma.
    Validation reports accuracy at every ``eval_sigmas`` level (``val/acc_by_sigma/sigma=<sigma>``) with
    fixed noise. Override :meth:`loss` to change the objective (default: cross-entropy, which for two
    classes is the logistic loss on ``F_1 - F_0``).
    """

    def __init__(
        self,
        backbone: BackboneFactory,
        data_shape: Sequence[int] = (),
        num_classes: int = 0,
        sigma_sampler: SigmaSampler | None = None,
        sigma_data: float | None = 0.5,
        eval_sigmas: Sequence[float] = (0.0, 0.1, 0.3, 1.0, 3.0),
        lr: float = 1e-3,
        optimizer: OptimizerFactory = torch.optim.Adam,
        lr_warmup_steps: int = 0,
        seed: int = 0,
        compile_backbone: bool | str = False,
    ):
        if num_classes < 2:
            raise ConfigError(
                f"ClassificationModule needs labeled data with >= 2 classes, but num_classes={num_classes}; "
                "pick a data module with labels (e.g. DigitsDataModule)"
            )
        super().__init__(backbone, data_shape, num_classes, lr, optimizer, lr_warmup_steps, seed, compile_backbone)
        self.sigma_sampler = sigma_sampler
        self.sigma_data = sigma_data
        self.eval_sigmas = [float(s) for s in eval_sigmas]
        self.val_accuracy = torch.nn.ModuleList(
            MulticlassAccuracy(num_classes=num_classes, average="micro") for _ in self.eval_sigmas
        )
        self.train_accuracy = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.backbone_call = CompileWhenTraining(compile_backbone)

    def backbone_output_shape(self) -> tuple[int, ...]:
        return (self.num_classes,)

    def logits_unchecked(self, x: Tensor, sigma: Tensor) -> Tensor:
        x = x.float()
        if self.sigma_data is not None:
            scale = self.sigma_data / (sigma.float().square() + self.sigma_data**2).sqrt()
            x = x * append_dims(scale, x.ndim)
        return self.backbone_call(self.backbone, x, sigma).float()

    def forward(self, x: Tensor, sigma: Tensor | float = 0.0) -> Tensor:
        """Class logits for inputs ``x`` carrying Gaussian noise of level ``sigma``."""
        self.check_input(x)
        return self.logits_unchecked(x, as_sigma(sigma, x.shape[0], device=x.device))

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits, labels)

    def compute_loss(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1]
        self.check_input(x)
        if self.sigma_sampler is None:
            sigma = torch.zeros(x.shape[0], device=x.device)
        else:
            sigma = self.sigma_sampler.sample(x.shape[0], device=x.device, generator=self.noise_generator)
            noise = torch.randn(x.shape, device=x.device, dtype=torch.float32, generator=self.noise_generator)
            x = x + append_dims(sigma, x.ndim) * noise
        logits = self.logits_unchecked(x, sigma)
        loss = self.loss(logits, y)
        self.train_accuracy.update(logits.detach(), y)
        if self.log_this_step():
            self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=x.shape[0])
        return loss

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        # compute() is synchronised over DDP ranks already; sync_dist keeps Lightning from warning that it is not
        self.log("train/acc", self.train_accuracy.compute(), on_step=False, on_epoch=True, sync_dist=True)
        self.train_accuracy.reset()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        g = torch.Generator(device=x.device).manual_seed(self.seed * 7919 + batch_idx)
        for sigma_value, metric in zip(self.eval_sigmas, self.val_accuracy, strict=True):
            noise = torch.randn(x.shape, device=x.device, dtype=torch.float32, generator=g)
            sigma = torch.full((x.shape[0],), sigma_value, device=x.device)
            logits = self.logits_unchecked(x + sigma_value * noise, sigma)
            metric.update(logits, y)
            self.log(f"val/acc_by_sigma/sigma={sigma_value:g}", metric, on_epoch=True, batch_size=x.shape[0])
        clean = self.logits_unchecked(x, torch.zeros(x.shape[0], device=x.device))
        self.log("val/loss", self.loss(clean, y), on_epoch=True, prog_bar=True, batch_size=x.shape[0], sync_dist=True)


def load_classifier(checkpoint: str | os.PathLike, device: torch.device | str = "cpu") -> ClassificationModule:
    """The trained :class:`ClassificationModule` of a checkpoint, on ``device`` in eval mode: what a diagnostic reads
    classes (or hidden activations) with. The file is unpickled, as by Lightning's ``load_from_checkpoint``."""
    return ClassificationModule.load_from_checkpoint(checkpoint, map_location=device, weights_only=False).eval()
