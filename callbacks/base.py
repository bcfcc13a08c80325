"""``DiagnosticCallback``: the scheduling, precision and bookkeeping every diagnostic callback shares.

A subclass implements :meth:`measure` (call pure functions from ``diffuse_feat.diagnostics`` on the
model and return a dict of numbers and lists) and optionally :meth:`report` (figures, images).
This base class decides *when* (every ``every_n_steps`` optimizer steps and at the end of training),
*on what* (the EMA weights when an ``EMAWeightAveraging`` callback is present, else the raw ones),
and *how*: eval mode, fp32, autocast off, no gradients unless the subclass asks. It keeps every
measurement in ``history`` (saved in checkpoints, so a resumed run keeps its curves) and writes
scalars to TensorBoard and a record to ``diagnostics.jsonl``. Every rank measures the same fixed
probe set; only rank zero writes.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, WeightAveraging
from typing_extensions import override

from diffuse_feat.capabilities import check_capabilities
from diffuse_feat.lightning_private import averaged_module
from diffuse_feat.reporting import RunReporter

__all__ = ["DiagnosticCallback", "model_for_diagnostics", "diagnostic_mode"]


def model_for_diagnostics(
    trainer: pl.Trainer, pl_module: pl.LightningModule, use_ema: bool = True
) -> pl.LightningModule:
    """The averaged (EMA) copy of ``pl_module`` if a ``WeightAveraging`` callback has updated one (and ``use_ema``),
    else ``pl_module`` itself: before the average's first update (``update_starting_at_step``) the live weights
    are the trained ones."""
    if use_ema:
        for cb in trainer.callbacks:
            averaged = averaged_module(cb) if isinstance(cb, WeightAveraging) else None
            if averaged is not None:
                return averaged
    return pl_module


@contextlib.contextmanager
def diagnostic_mode(model: torch.nn.Module, *, grad: bool = False):
    """Eval mode, autocast off, (no) grad; restores the previous training flag afterwards."""
    was_training = model.training
    model.eval()
    device_type = next(model.parameters()).device.type if any(True for _ in model.parameters()) else "cpu"
    try:
        with torch.autocast(device_type=device_type, enabled=False), torch.set_grad_enabled(grad):
            yield model
    finally:
        model.train(was_training)


def _finish_queued_gpu_work(module: torch.nn.Module) -> None:
    """Wait for the GPU (a measurement is rare: this costs nothing per training step)."""
    if module.device.type == "cuda":
        torch.cuda.synchronize(module.device)


class DiagnosticCallback(Callback):
    """Base class. ``every_n_steps=0`` disables the periodic runs (only the end-of-training one).

    A subclass lists the data capabilities it reads in :attr:`requires` (or overrides
    :meth:`required_capabilities` when they depend on its arguments); :meth:`setup` checks them before the
    first training step.

    Args:
        every_n_steps: cadence in optimizer steps.
        at_train_end: also measure once when training ends.
        use_ema: measure the EMA weights once an ``EMAWeightAveraging`` callback has updated them.
        seed: seed of the probe set, noise and samples (the same at every measurement).
        name: TensorBoard / jsonl name (default: the class name).

    Raises:
        MissingGroundTruth: in ``setup``, if the DataModule lacks a capability the callback needs.
    """

    #: whether :meth:`measure` needs autograd (Jacobians)
    needs_grad: bool = False
    #: the capabilities (:mod:`diffuse_feat.capabilities`) :meth:`measure` reads from the DataModule
    requires: tuple[type, ...] = ()

    def __init__(self, every_n_steps: int = 500, at_train_end: bool = True, use_ema: bool = True, seed: int = 0,
                 name: str | None = None):
        super().__init__()
        if every_n_steps < 0:
            raise ValueError(f"every_n_steps must be >= 0, got {every_n_steps}")
        self.every_n_steps, self.at_train_end, self.use_ema, self.seed = every_n_steps, at_train_end, use_ema, seed
        self.name = name or type(self).__name__
        self.history: list[dict[str, Any]] = []
        self.seconds_spent = 0.0
        self._last_step = -1

    @property
    def state_key(self) -> str:
        return f"{type(self).__name__}[{self.name}]"

    def required_capabilities(self) -> tuple[type, ...]:
        """What :meth:`measure` will read from the DataModule (default: :attr:`requires`)."""
        return self.requires

    def missing_capability_hint(self) -> str:
        """What else the user can do when a capability is missing (e.g. a callback argument)."""
        return ""

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Fail now, with one sentence, if the data cannot give what the measurements need."""
        check_capabilities(trainer.datamodule, self.required_capabilities(), needed_by=self.name,
                           hint=self.missing_capability_hint())

    # ----- to implement ---------------------------------------------------------------------------
    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule, model: pl.LightningModule) -> dict[str, Any]:
        raise NotImplementedError

    def report(self, reporter: RunReporter, values: dict[str, Any], step: int, trainer: pl.Trainer,
               model: pl.LightningModule) -> None:
        """Extra outputs (figures, images), drawn with :mod:`diffuse_feat.plotting`. Runs on rank zero only, so it
        must not take part in collectives."""

    # ----- scheduling -----------------------------------------------------------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps and step % self.every_n_steps == 0 and step != self._last_step:
            self.run(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.at_train_end and trainer.global_step != self._last_step:
            self.run(trainer, pl_module)

    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """Measure now, log, and append to ``history``."""
        _finish_queued_gpu_work(pl_module)  # so training steps still in flight are not counted as ours
        start = time.perf_counter()
        check = getattr(pl_module, "raise_if_nonfinite", None)
        if check is not None:  # a NaN loss stops the run here rather than producing NaN diagnostics
            check()
        model = model_for_diagnostics(trainer, pl_module, self.use_ema)
        with diagnostic_mode(model, grad=self.needs_grad):
            values = self.measure(trainer, pl_module, model)
        step = trainer.global_step
        reporter = RunReporter.for_trainer(trainer)
        reporter.scalars(f"diagnostics/{self.name}", values, step)
        reporter.record(self.name, step, values)
        if trainer.is_global_zero:  # figures are only written there: no rank draws one in vain
            with diagnostic_mode(model, grad=False):
                self.report(reporter, values, step, trainer, model)
        self.history.append({"step": step, **values})
        self._last_step = step
        _finish_queued_gpu_work(pl_module)
        self.seconds_spent += time.perf_counter() - start
        return values

    # ----- checkpointing --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "last_step": self._last_step, "seconds_spent": self.seconds_spent}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self._last_step = state_dict.get("last_step", -1)
        self.seconds_spent = state_dict.get("seconds_spent", 0.0)
