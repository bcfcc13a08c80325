"""Ctrl-C (SIGINT) and a cluster's SIGTERM stop a ``train.py`` run at the end of the current step with a resumable
checkpoint, and say where it is and how to resume.

:class:`SaveOnInterrupt` only records the signal; at the end of the step being trained (the state every other
callback has finished updating: EMA, diagnostics) it writes ``last.ckpt`` in the run's checkpoint folder and raises
:class:`RunInterrupted`, which ``train.py`` prints as two lines and exit status 130. Resuming from that checkpoint
continues bit for bit (mid-epoch resume is exact). A second Ctrl-C stops at once, as without it. Under DDP the ranks
agree on stopping at the same step (one boolean reduction per step, only when there are several processes).
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

__all__ = ["SaveOnInterrupt", "RunInterrupted", "shown_path"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def shown_path(path: str | os.PathLike) -> str:
    """``path`` as a user would type it: relative to the current folder when inside it."""
    absolute = os.path.abspath(path)  # not resolve(): last.ckpt is a link, and the user resumes from the link
    relative = os.path.relpath(absolute)
    return absolute if relative.startswith("..") else relative


class RunInterrupted(Exception):
    """A run stopped by a signal after saving ``checkpoint`` at ``step``; ``lines()`` are what the user reads."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path):
        super().__init__(f"{signal_name} at step {step}: saved {checkpoint}")
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint

    def lines(self) -> list[str]:
        where = shown_path(self.checkpoint)
        return [f"Stopped by {self.signal_name} after step {self.step}; the run is saved in {where}",
                f"Resume it with: python train.py --ckpt_path {where}"]


def checkpoint_path(trainer: pl.Trainer) -> Path:
    """Where a run's resumable checkpoint goes: its checkpoint callback's ``last.ckpt`` (what a resume reads)."""
    callback = trainer.checkpoint_callback
    folder = getattr(callback, "dirpath", None)
    if folder is None:
        folder = Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"
    return Path(folder) / "last.ckpt"


class SaveOnInterrupt(Callback):
    """Turn SIGINT and SIGTERM into a checkpoint at the end of the current step and :class:`RunInterrupted`."""

    def __init__(self):
        super().__init__()
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.requested is not None and signum == signal.SIGINT:  # pressed twice: do not wait for the step
            self._restore()
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            return
        for sig in SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        stop = self.requested is not None
        if trainer.world_size > 1:  # every rank stops at the same step, whichever received the signal
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop:
            return
        path = checkpoint_path(trainer)
        trainer.save_checkpoint(path)
        raise RunInterrupted(self.requested or "a signal on another process", trainer.global_step, path)

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()
