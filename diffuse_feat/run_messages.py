"""What ``train.py`` prints besides the progress bar: one line where a run starts (its folder, the TensorBoard
command) and one where it ends (the same and its checkpoint), and nothing a user need not act on.

:func:`quiet_lightning` turns off Lightning's informational lines ("Seed set to 0", "GPU available...", the
litlogger tip, "`Trainer.fit` stopped...") and two warnings that do not apply: the ``srun`` advice where SLURM is
installed but the run is not inside an allocation (inside one it stays), and "Checkpoint directory ... exists and
is not empty" (a resume continues in its own run folder on purpose), and torch's deprecation of the all-gather
Lightning calls under DDP. Warnings about the user's setup still show.
"""

from __future__ import annotations

import logging
import os
import warnings

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from .interrupt import checkpoint_path, shown_path

__all__ = ["RunAnnouncer", "quiet_lightning"]


def quiet_lightning() -> None:
    """Lightning's informational logs off (its model summary, when asked for, still prints); see the module doc."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch.callbacks.model_summary").setLevel(logging.INFO)
    if "SLURM_JOB_ID" not in os.environ:
        warnings.filterwarnings("ignore", message=r".*The `srun` command is available on your system but is not used")
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # Lightning 2.6's all_gather (DDP) calls a torch API torch deprecated: nothing a user can act on
    warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_gather is deprecated")


class RunAnnouncer(Callback):
    """Prints the start and end lines of a run (on global rank zero; every rank runs the hooks, because reading
    ``trainer.log_dir`` is a collective under DDP)."""

    def __init__(self, resume_step: int | None = None):
        super().__init__()
        self.resume_step = resume_step

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank asks, rank zero prints
        if not log_dir or not trainer.is_global_zero:
            return
        folder = shown_path(log_dir)
        what = "Resuming" if self.resume_step is not None else "Training"
        at = f" at step {self.resume_step}" if self.resume_step is not None else ""
        print(f"{what} {folder}{at}; watch it with: tensorboard --logdir {folder}", flush=True)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        log_dir, checkpoint = trainer.log_dir, checkpoint_path(trainer)  # collectives: on every rank
        if not log_dir or not trainer.is_global_zero:
            return
        folder = shown_path(log_dir)
        saved = f", checkpoint {shown_path(checkpoint)}" if checkpoint.is_file() else ""
        print(f"Done after step {trainer.global_step}: {folder}{saved}; see it with: tensorboard --logdir {folder}",
              flush=True)
