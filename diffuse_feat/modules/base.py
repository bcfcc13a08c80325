"""What the diffusion and classification modules share: the backbone, the optimizer, the noise RNG.

Subclasses say what output the backbone must produce (:meth:`backbone_output_shape`) and how a
batch becomes a loss (:meth:`compute_loss`). This class builds the backbone from the data shape
that the CLI links in, stops on a non-finite loss with one clear sentence (before any checkpoint
could store it or any diagnostic measure it), and owns a seeded ``torch.Generator`` for the training
noise whose state is saved in checkpoints, so a resumed run draws exactly the noise an uninterrupted
run would.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from ..backbones.base import BackboneFactory
from ..errors import ConfigError, NonFiniteLossError, ShapeError

__all__ = ["BackboneModule", "OptimizerFactory", "detach_from_cli"]

OptimizerFactory = Callable[[Iterable, float], torch.optim.Optimizer]


def detach_from_cli(factory: Callable) -> Callable:
    """``functools.partial(cls, **kwargs)`` for a factory built by jsonargparse.

    jsonargparse wraps ``class_path`` callables as ``partial(call_without_instantiate_context, instantiator,
    cls, **kwargs)`` and the instantiator references the whole LightningCLI and its Trainer. A module
    holding it would drag them into every deep copy (the EMA callback copies the module), which is slow
    and fails under DDP (the process group holds locks). Anything else is returned unchanged.
    """
    if isinstance(factory, functools.partial) and len(factory.args) == 2 and isinstance(factory.args[1], type):
        return functools.partial(factory.args[1], **factory.keywords)
    return factory


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
        compile_backbone: bool | str = False,
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
        self.lr, self.lr_warmup_steps, self.seed = lr, lr_warmup_steps, seed
        self.optimizer_factory = detach_from_cli(optimizer)
        self.backbone = backbone(self.data_shape, self.backbone_output_shape())
        self.compile_backbone = compile_backbone
        self._noise_generator: torch.Generator | None = None
        self._pending_generator_state: Tensor | None = None
        self._first_nonfinite: tuple[Tensor, Tensor] | None = None  # (step, loss) on the device; step -1: none

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
                try:
                    g.set_state(self._pending_generator_state)
                except RuntimeError:  # checkpoint written on another device type (CPU <-> CUDA states differ)
                    rank_zero_warn("the checkpoint's training-noise RNG state is for another device; reseeding it")
                self._pending_generator_state = None
            self._noise_generator = g
        return self._noise_generator

    def log_this_step(self) -> bool:
        """Whether this training step is one the loggers record (every ``trainer.log_every_n_steps``).

        ``self.log`` costs ~1 ms per call on CPU (Lightning moves its result store each time), so per-step
        values are logged only on these steps; epoch means are accumulated in metrics and logged once.
        """
        trainer = self._trainer
        every = trainer.log_every_n_steps if trainer is not None else 1
        return (self.global_step + 1) % max(every, 1) == 0 or self.global_step == 0

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss = self.compute_loss(batch, batch_idx)
        self._note_nonfinite(loss)
        if self.log_this_step():
            self.raise_if_nonfinite()
        return loss

    def _note_nonfinite(self, loss: Tensor) -> None:
        """Remember the first step whose loss is NaN/inf, on the loss's device.

        No host-device sync: a ``bool(...)`` every step would stall a GPU's launch queue every step. The
        check itself (:meth:`raise_if_nonfinite`) runs on logging steps, at epoch end, before a checkpoint
        is written and before a diagnostic callback measures.
        """
        loss = loss.detach().float()
        step, value = self._nonfinite_record(loss.device)
        first = ~torch.isfinite(loss) & (step < 0)
        self._first_nonfinite = (torch.where(first, torch.full_like(step, self.global_step), step),
                                 torch.where(first, loss, value))

    def _nonfinite_record(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """``(step, loss)`` of the first non-finite loss so far, as 0-d tensors on ``device``; step -1: none."""
        if self._first_nonfinite is None or self._first_nonfinite[0].device != device:
            self._first_nonfinite = (torch.full((), -1, device=device), torch.zeros((), device=device))
        return self._first_nonfinite

    def raise_if_nonfinite(self) -> None:
        """Raise :class:`NonFiniteLossError` if a training loss of this run was NaN/inf (one host-device sync).

        Under DDP the ranks compare notes first (an all-gather, so call it on every rank, as the hooks
        here do): all of them raise together, naming the earliest step on any rank, instead of one rank
        leaving while the others wait for it in the next gradient all-reduce.
        """
        step, value = self._first_nonfinite or self._nonfinite_record(self.device)  # every rank has a record
        if self._trainer is not None and self._trainer.world_size > 1:
            step, value = self.all_gather(step), self.all_gather(value)
        steps, values = step.reshape(-1).tolist(), value.reshape(-1).tolist()
        bad = [(s, v) for s, v in zip(steps, values, strict=True) if s >= 0]
        if bad:
            step, value = min(bad)
            raise NonFiniteLossError(
                f"{type(self).__name__}: the training loss became {value} at step {step}; no checkpoint was "
                f"written from this state. Lower model.init_args.lr (now {self.lr}) or check the data for "
                "NaN/inf values."
            )

    def on_train_start(self) -> None:
        self._first_nonfinite = None

    def on_train_epoch_end(self) -> None:
        self.raise_if_nonfinite()

    def on_train_end(self) -> None:
        self.raise_if_nonfinite()

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters(), lr=self.lr)
        if self.lr_warmup_steps <= 0:
            return optimizer
        warmup = self.lr_warmup_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self.raise_if_nonfinite()  # Lightning writes the file after this hook: a NaN state is never saved
        state = self.noise_generator.get_state()
        checkpoint["noise_generator_state"] = state
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:  # every rank draws its own noise: keep every rank's
            # (this hook runs on every rank; rank zero writes the file)
            gathered = self.all_gather(state.to(self.device))
            # clone(): each state its own storage (a row of the gathered tensor is a view at an offset, which
            # Generator.set_state does not honour after a round trip through torch.save: it segfaulted)
            checkpoint["noise_generator_states"] = [row.to("cpu", torch.uint8).clone() for row in gathered]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("noise_generator_state")
        states = checkpoint.get("noise_generator_states")
        if states is not None and self.global_rank < len(states):  # saved by as many ranks: this one's own
            state = states[self.global_rank]
        if state is not None:
            self._noise_generator = None
            self._pending_generator_state = state
