"""``DiagnosticCallback``: a :class:`~diffuse_feat.diagnostics.measurement.Measurement` during training.

The measurement says *what* to measure; this callback decides *when* (every ``every_n_steps`` optimizer steps, at
the end of training, and if asked before the first step), *on what* (the EMA weights once a ``WeightAveraging``
callback has updated them, else the raw ones) and *where it goes*: TensorBoard scalars and curves, a
``diagnostics.jsonl`` record, the measurement's figure on rank zero, and ``history`` (saved in checkpoints, so a
resumed run keeps its curves). Every rank measures the same fixed probe set; only rank zero writes. The named
callbacks of ``callbacks/`` are this class with a measurement built from their arguments; the reproductions use it
directly.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, WeightAveraging
from typing_extensions import override

from .capabilities import check_capabilities
from .diagnostics.measurement import Measured, Measurement, diagnostic_mode, plain
from .lightning_private import averaged_module
from .reporting import RunReporter

__all__ = ["DiagnosticCallback", "model_for_diagnostics"]


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


def _finish_queued_gpu_work(module: torch.nn.Module) -> None:
    """Wait for the GPU (a measurement is rare: this costs nothing per training step)."""
    if module.device.type == "cuda":
        torch.cuda.synchronize(module.device)


class DiagnosticCallback(Callback):
    """Runs ``measurement`` on the model being trained and logs what it measured. ``every_n_steps=0`` disables the
    periodic runs (only the end-of-training one).

    A measurement of your own is one :class:`~diffuse_feat.diagnostics.measurement.Measurement` subclass, scheduled
    by ``DiagnosticCallback(MyMeasurement(...))`` (in YAML: ``class_path: callbacks.DiagnosticCallback`` with
    ``init_args.measurement``) and run once by ``python -m diffuse_feat.analyze``. A subclass may instead override
    :meth:`measure` (returning a dict of numbers and lists) and :meth:`report`.

    Args:
        measurement: what to measure; its data capabilities are checked in ``setup``.
        every_n_steps: cadence in optimizer steps.
        at_train_end: also measure once when training ends.
        at_train_start: also measure once before the first step (curves that start at initialisation).
        use_ema: measure the EMA weights once an ``EMAWeightAveraging`` callback has updated them.
        figure_every_n_steps: draw the figure at every measurement (None), or only at steps that are multiples of
            this and for the last measurement of training (0: only for the last one), when figures cost more
            than measurements.
        seed: the seed of a subclass's own :meth:`measure` (a measurement carries its own).
        name: TensorBoard / jsonl name (default: the class name of a named callback, the measurement's ``name`` for
            ``DiagnosticCallback`` itself).

    Raises:
        MissingGroundTruth: in ``setup``, if the DataModule lacks a capability the measurement needs.
    """

    #: whether a subclass's own :meth:`measure` needs autograd (a measurement says so itself)
    needs_grad: bool = False
    #: the capabilities a subclass's own :meth:`measure` reads
    requires: tuple[type, ...] = ()

    def __init__(self, measurement: Measurement | None = None, every_n_steps: int = 500, at_train_end: bool = True,
                 at_train_start: bool = False, use_ema: bool = True, figure_every_n_steps: int | None = None,
                 seed: int = 0, name: str | None = None):
        super().__init__()
        if every_n_steps < 0:
            raise ValueError(f"every_n_steps must be >= 0, got {every_n_steps}")
        self.measurement = measurement
        self.every_n_steps, self.at_train_end, self.at_train_start = every_n_steps, at_train_end, at_train_start
        self.use_ema, self.figure_every_n_steps = use_ema, figure_every_n_steps
        self.seed = getattr(measurement, "seed", seed)
        generic = type(self) is DiagnosticCallback and measurement is not None
        self.name = name or (measurement.name if generic else type(self).__name__)
        self.history: list[dict[str, Any]] = []
        self.seconds_spent = 0.0
        self._last_step = -1
        self.last: Measured | None = None  # the latest measurement (this process's), for figures and reproductions
        self._figure_step, self._ending = -1, False

    @property
    def state_key(self) -> str:
        return f"{type(self).__name__}[{self.name}]"

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Fail now, with one sentence, if the data (or the model) cannot give what the measurement needs."""
        if self.measurement is not None:
            self.measurement.check(trainer.datamodule, model=pl_module, needed_by=self.name)
        else:
            check_capabilities(trainer.datamodule, self.requires, needed_by=self.name)

    # ----- what is measured and drawn --------------------------------------------------------------------------
    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule, model: pl.LightningModule
                ) -> Measured | Mapping[str, Any]:
        """The measurement of ``model`` (the EMA copy when there is one) over the trainer's data."""
        return self.measurement.measure(model, trainer.datamodule, device=pl_module.device)

    def figure_title(self, step: int) -> str:
        return f"step {step}"

    def report(self, reporter: RunReporter, measured: Measured, step: int, trainer: pl.Trainer,
               model: pl.LightningModule) -> None:
        """Extra outputs (figures, images), on rank zero only (so no collectives here): the measurement's figure
        when one is due (``figure_every_n_steps``)."""
        every = self.figure_every_n_steps
        if every is None or self._ending or (every and step % every == 0):
            self.draw(reporter, measured, step)

    def draw(self, reporter: RunReporter, measured: Measured, step: int) -> None:
        """The measurement's figure of ``measured`` (with the run's history so far) under ``figures/<name>``."""
        fig = self.measurement.figure(measured, title=self.figure_title(step), history=self.history) \
            if self.measurement is not None else None
        if fig is not None:
            reporter.figure(f"figures/{self.name}", fig, step)  # closes the figure
        self._figure_step = step

    # ----- scheduling -------------------------------------------------------------------------------------------
    @override
    def on_train_start(self, trainer, pl_module) -> None:
        if self.at_train_start and trainer.global_step == 0 and not self.history:
            self.run(trainer, pl_module)  # step 0: the curves start at initialisation

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps and step % self.every_n_steps == 0 and step != self._last_step:
            self.run(trainer, pl_module)

    @override
    def on_train_end(self, trainer, pl_module) -> None:
        self._ending = True
        try:
            if self.at_train_end and trainer.global_step != self._last_step:
                self.run(trainer, pl_module)
            if self.figure_every_n_steps is not None:  # figures were sparse: the last measurement gets one
                reporter = RunReporter.for_trainer(trainer)  # on every rank: finding the run folder is a collective
                if trainer.is_global_zero and self.last is not None and self._figure_step != trainer.global_step:
                    self.draw(reporter, self.last, trainer.global_step)
        finally:
            self._ending = False

    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """Measure now, log, and append to ``history``; returns the record (``diagnostics.jsonl``'s values); the
        measurement itself is :attr:`last`."""
        _finish_queued_gpu_work(pl_module)  # so training steps still in flight are not counted as ours
        start = time.perf_counter()
        check = getattr(pl_module, "raise_if_nonfinite", None)
        if check is not None:  # a NaN loss stops the run here rather than producing NaN diagnostics
            check()
        model = model_for_diagnostics(trainer, pl_module, self.use_ema)
        needs_grad = self.measurement.needs_grad if self.measurement is not None else self.needs_grad
        with diagnostic_mode(model, grad=needs_grad):
            measured = self.measure(trainer, pl_module, model)
        if not isinstance(measured, Measured):  # a subclass's own measure
            measured = Measured(plain(dict(measured)))
        step = trainer.global_step
        record = measured.record()
        reporter = RunReporter.for_trainer(trainer)
        reporter.measured(f"diagnostics/{self.name}", measured, step)
        reporter.record(self.name, step, record)
        self.history.append({"step": step, **record})
        self._last_step, self.last = step, measured
        if trainer.is_global_zero:  # figures are only written there: no rank draws one in vain
            with diagnostic_mode(model, grad=False):
                self.report(reporter, measured, step, trainer, model)
        _finish_queued_gpu_work(pl_module)
        self.seconds_spent += time.perf_counter() - start
        return record

    # ----- checkpointing ----------------------------------------------------------------------------------------
    @override
    def state_dict(self) -> dict[str, Any]:
        own = self.measurement.state_dict() if self.measurement is not None else {}
        return {**own, "history": self.history, "last_step": self._last_step, "seconds_spent": self.seconds_spent}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self._last_step = state_dict.get("last_step", -1)
        self.seconds_spent = state_dict.get("seconds_spent", 0.0)
        if self.measurement is not None:
            self.measurement.load_state_dict(state_dict)
