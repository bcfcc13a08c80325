"""A grid task's trainings checkpoint as they go, so that a task run again continues them instead of starting over.

A task runs again when its SLURM job was preempted or timed out and submitit requeued it, or when a grid is rerun
after a kill. :func:`~.grid.execute` runs every task inside :func:`checkpointed_trainings` with the task's own folder
(``<out>/tasks/<experiment>/<cell>/seed=<s>.training``). Meanwhile every Trainer that
:func:`~.common.make_trainer` builds gets a :class:`TaskCheckpoint` named by its order in the task (``fit-0``,
``fit-1``, ...: a task builds its trainings in the same order every time it runs), and :func:`~.common.fit` resumes
a training from its ``last.ckpt`` when there is one. Resuming is exact (weights, optimizer, EMA, the callbacks'
histories, the noise generator, the loader's place in its epoch), so the task ends with the very record an
uninterrupted run writes.

A checkpoint is written every ``every_s`` seconds of training, atomically (a checkpoint's name only ever holds a
whole file), and never at a training's last step: a finished training of a task that runs again redoes its last
interval, so what happens at a training's end (the callbacks' final measurements, the last logged loss) happens
again, as in a run that was never stopped. The folder is removed once the task's record is written. A preemption
costs at most one interval of training (submitit's signal handler requeues the job at once; it cannot wait for a
step to finish).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from ..checkpoint_io import LAST

__all__ = ["TaskTrainings", "TaskCheckpoint", "checkpointed_trainings", "discard", "task_checkpoint", "resume_path",
           "DEFAULT_EVERY_S"]

DEFAULT_EVERY_S = 300.0  # five minutes: a small share of a cluster job, and a few seconds of writing for large models

_ACTIVE: ContextVar[TaskTrainings | None] = ContextVar("task_trainings", default=None)


@dataclass
class TaskTrainings:
    """The trainings of the task running now: where they checkpoint, how often, and what was resumed."""

    folder: Path
    every_s: float
    built: int = 0
    resumed: list[dict[str, int]] = field(default_factory=list)

    def next_folder(self) -> tuple[int, Path]:
        index, self.built = self.built, self.built + 1
        return index, self.folder / f"fit-{index}"


@contextlib.contextmanager
def checkpointed_trainings(folder: Path, every_s: float = DEFAULT_EVERY_S) -> Iterator[TaskTrainings]:
    """Within this block, the trainings that :func:`~.common.make_trainer` builds checkpoint into ``folder`` every
    ``every_s`` seconds (none if ``every_s <= 0``) and resume from there. The caller removes the folder
    (:func:`discard`) once the task's record is written: until then a kill loses nothing."""
    trainings = TaskTrainings(Path(folder), float(every_s))
    token = _ACTIVE.set(trainings)
    try:
        yield trainings
    finally:
        _ACTIVE.reset(token)


def discard(folder: Path) -> None:
    """Remove a finished task's checkpoints (its record holds everything the task was for)."""
    shutil.rmtree(folder, ignore_errors=True)


def _last_step(trainer: pl.Trainer) -> bool:
    """Whether the step just trained is the training's last (then no checkpoint: see the module docstring)."""
    if trainer.max_steps is not None and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
        return True
    last_epoch = trainer.max_epochs is not None and 0 < trainer.max_epochs <= trainer.current_epoch + 1
    return last_epoch and trainer.is_last_batch


class TaskCheckpoint(Callback):
    """Writes the training's ``last.ckpt`` in ``folder`` every ``every_s`` seconds of training (never at its last
    step), and notes in ``trainings.resumed`` the step a resumed training started from.

    Args:
        trainings: the task's :class:`TaskTrainings`.
        index: this training's number in the task.
        folder: where its checkpoint goes.
    """

    def __init__(self, trainings: TaskTrainings, index: int, folder: Path):
        super().__init__()
        self.trainings, self.index, self.folder = trainings, index, Path(folder)
        self._since = time.monotonic()

    @property
    def path(self) -> Path:
        return self.folder / LAST

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._since = time.monotonic()
        if trainer.ckpt_path is not None and Path(trainer.ckpt_path) == self.path:
            self.trainings.resumed.append({"training": self.index, "step": trainer.global_step})

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if time.monotonic() - self._since < self.trainings.every_s or _last_step(trainer):
            return
        trainer.save_checkpoint(self.path)
        self._since = time.monotonic()


def task_checkpoint() -> TaskCheckpoint | None:
    """The checkpoint callback of the next training of the task running now; None outside a task or when its
    trainings do not checkpoint."""
    trainings = _ACTIVE.get()
    if trainings is None or trainings.every_s <= 0:
        return None
    return TaskCheckpoint(trainings, *trainings.next_folder())


def resume_path(trainer: pl.Trainer) -> str | None:
    """The checkpoint this training of a task resumes from: its ``last.ckpt`` if an earlier run of the task wrote
    one, else None (a fresh start)."""
    for callback in trainer.callbacks:
        if isinstance(callback, TaskCheckpoint) and callback.path.is_file():
            return str(callback.path)
    return None
