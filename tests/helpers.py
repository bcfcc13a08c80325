"""Small test-only classes, importable by ``class_path`` from YAML/CLI (``tests.helpers.X``)."""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback

from diffuse_feat.data import DigitsDataModule
from diffuse_feat.modules import DiffusionModule


class DigitsWithNaN(DigitsDataModule):
    """Digits whose first training image is NaN: the loss of any batch containing it is NaN."""

    def build(self):
        x, y = super().build()
        x = x.clone()
        x[:] = torch.nan
        return x, y


class LossTurnsNaN(DiffusionModule):
    """Its loss is NaN at step ``nan_step`` only, on every rank or on rank ``nan_rank`` (the weights then
    turn NaN too, as after a real divergence)."""

    nan_step: int = 2
    nan_rank: int | None = None

    def compute_loss(self, batch, batch_idx):
        loss = super().compute_loss(batch, batch_idx)
        hit = self.global_step == self.nan_step and self.nan_rank in (None, self.global_rank)
        return loss * torch.nan if hit else loss


class NaNAtStepFour(LossTurnsNaN):
    """Diverges at step 4: a run of one epoch of 4 steps is fine, its resume is not."""

    nan_step = 4


class NaNOnRankOne(LossTurnsNaN):
    """One rank's bad batch in a DDP run: NaN on rank 1 only, at step 2 only."""

    nan_rank = 1


class RanksAgree(Callback):
    """At the end of training, gathers every DiagnosticCallback's last measurement from all ranks and
    writes ``{callback name: max |rank value - rank 0 value|}`` to ``path`` (rank zero)."""

    def __init__(self, path: str = "ranks_agree.json"):
        self.path = path

    def on_train_end(self, trainer, pl_module):
        from callbacks import DiagnosticCallback

        spread = {}
        for cb in trainer.callbacks:
            if isinstance(cb, DiagnosticCallback) and cb.history:
                values = [v for k, v in sorted(cb.history[-1].items()) if isinstance(v, int | float)]
                mine = torch.tensor(values, dtype=torch.float64, device=pl_module.device)
                everyone = trainer.strategy.all_gather(mine)  # [world, n]
                both_nan = everyone.isnan() & everyone[0].isnan()  # "undefined" on every rank is agreement
                spread[cb.name] = (everyone - everyone[0]).abs().nan_to_num(nan=float("inf"))[~both_nan].max().item()
        if trainer.is_global_zero:
            import json

            with open(self.path, "w") as f:
                json.dump({"world_size": trainer.world_size, "spread": spread}, f)


class Interrupted(RuntimeError):
    """What :class:`InterruptAtStep` raises: the test's stand-in for a killed run."""


class InterruptAtStep(Callback):
    """Stops training with :class:`Interrupted` when ``global_step`` reaches ``step`` (in ``on_train_batch_end``,
    before any checkpoint of that step is written: Lightning runs checkpoint callbacks last)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            raise Interrupted(f"interrupted at step {trainer.global_step}")


class SignalAtStep(Callback):
    """Sends this process ``signal_name`` while step ``step`` trains (as a Ctrl-C or a cluster's SIGTERM would):
    from the start of that step, so the run under test stops after it. A resumed run starts past it."""

    def __init__(self, step: int, signal_name: str = "SIGINT"):
        self.step, self.signal_name = step, signal_name

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step - 1:
            import os
            import signal

            os.kill(os.getpid(), getattr(signal, self.signal_name))
