"""What the diffusion and classification modules share: the backbone, the optimizer, the noise RNG.

Subclasses say what output the backbone must produce (:meth:`backbone_output_shape`) and how a
batch becomes a loss (:meth:`compute_loss`). This class builds the backbone from the data shape
that the CLI links in, stops on a non-finite loss with one clear sentence (before any checkpoint
could store it), and owns a seeded ``torch.Generator`` for the training noise whose state is saved
in checkpoints, so a resumed run draws exactly the noise an uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from ..backbones.base import BackboneFactory
from ..errors import ConfigError, NonFiniteLossError, ShapeError

__all__ = ["BackboneModule", "OptimizerFactory"]

OptimizerFactory = Callable[[Iterable], torch.optim.Optimizer]


class BackboneModule(pl.LightningModule):
    def __init__(
        self,
        backbone: BackboneFactory,
        data_shape: Sequence[int] = (),
        num_classes: int = 0,
        lr: float = 1e-3,
        optimizer: OptimizerFactory = torch.optim.Adam,
        lr_warmup_steps: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        if not data_shape:
            raise ConfigError(
                f"{type(self).__name__}: data_shape is empty; train.py links it from the data module, "
                "in Python pass data_shape=datamodule.data_shape"
            )
        if lr <= 0:
            raise ConfigError(f"model.lr must be > 0, got {lr}")
        self.data_shape = tuple(int(s) for s in data_shape)
        self.num_classes = int(num_classes)
        self.lr, self.optimizer_factory, self.lr_warmup_steps, self.seed = lr, optimizer, lr_warmup_steps, seed
        self.backbone = backbone(self.data_shape, self.backbone_output_shape())
        self._noise_generator: torch.Generator | None = None
        self._pending_generator_state: Tensor | None = None

    # ----- hooks for subclasses -----------------------------------------------------------------
    def backbone_output_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def compute_loss(self, batch: Any, batch_idx: int) -> Tensor:
        raise NotImplementedError

    # ----- shared machinery ---------------------------------------------------------------------
    def check_input(self, x: Tensor) -> None:
        if tuple(x.shape[1:]) != self.data_shape:
            raise ShapeError(
                f"{type(self).__name__} was built for inputs of shape [batch, {', '.join(map(str, self.data_shape))}], "
                f"got {list(x.shape)}"
            )

    @property
    def noise_generator(self) -> torch.Generator:
        """The generator for training noise, on the module's device, seeded by ``seed`` and the rank."""
        if self._noise_generator is None or self._noise_generator.device != self.device:
            g = torch.Generator(device=self.device)
            g.manual_seed(self.seed * 1_000_003 + self.global_rank)
            if self._pending_generator_state is not None:
                g.set_state(self._pending_generator_state)
                self._pending_generator_state = None
            self._noise_generator = g
        return self._noise_generator

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss = self.compute_loss(batch, batch_idx)
        if not bool(torch.isfinite(loss)):
            raise NonFiniteLossError(
                f"{type(self).__name__}: the training loss became {float(loss)} at step {self.global_step}; "
                f"no checkpoint was written from this state. Lower model.init_args.lr (now {self.lr}) "
                "or check the data for NaN/inf values."
            )
        return loss

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters(), lr=self.lr)
        if self.lr_warmup_steps <= 0:
            return optimizer
        warmup = self.lr_warmup_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["noise_generator_state"] = self.noise_generator.get_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("noise_generator_state")
        if state is not None:
            self._noise_generator = None
            self._pending_generator_state = state
