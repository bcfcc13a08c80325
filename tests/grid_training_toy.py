"""A tiny experiment whose task trains a network, for the tests of a task that is stopped mid-training (a SLURM
preemption, a kill) and continues from its checkpoint: each cell trains an MLP denoiser on 64 digits for
``steps`` steps of 16, sleeping ``sleep`` seconds a step (time for a test to stop it), and records the exact
bytes of the weights it ends with (hex), so two runs can be compared bit for bit."""

from __future__ import annotations

import functools
import hashlib
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from diffuse_feat.backbones import MLP
from diffuse_feat.data.digits import DigitsDataModule
from diffuse_feat.modules import DiffusionModule
from diffuse_feat.reproduce.common import fit_quietly
from diffuse_feat.reproduce.grid import Task


def cells(steps: int = 40, sleep: float = 0.0, seeds=(0,)) -> list[Task]:
    return [Task("tests.grid_training_toy", (("steps", steps),), s, {"sleep": sleep}) for s in seeds]


class _Slow(Callback):
    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_batch_end(self, *args) -> None:
        time.sleep(self.seconds)


def run_task(task: Task, out: Path) -> dict:
    data = DigitsDataModule(n_train=64, n_val=0, batch_size=16, seed=task.seed)
    torch.manual_seed(task.seed)
    model = DiffusionModule(functools.partial(MLP, width=32, depth=1), data_shape=data.data_shape, lr=1e-2,
                            seed=task.seed)
    model = fit_quietly(model, data, task["steps"], torch.device("cpu"), callbacks=[_Slow(task["sleep"])])
    weights = b"".join(p.detach().numpy().tobytes() for p in model.parameters())
    return {"weights_sha256": hashlib.sha256(weights).hexdigest()}
