"""Two CPU processes (DDP over gloo): every diagnostic callback computes the same values on every rank,
and those values equal a single-process measurement on the same weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from callbacks import SampleGridCallback
from diffuse_feat.data import DigitsDataModule
from diffuse_feat.modules import DiffusionModule
from diffuse_feat.reporting import read_jsonl

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")


def _diagnostic_callbacks() -> list:
    """The diagnostic callbacks under test: (YAML class_path, init_args, factory for the single-process check)."""
    return [
        ("callbacks.SampleGridCallback", {"every_n_steps": 3, "num_samples": 8, "num_steps": 4},
         lambda: SampleGridCallback(every_n_steps=3, num_samples=8, num_steps=4)),
    ]


class _MeasureOnce(Callback):
    def __init__(self, cbs):
        self.cbs, self.values = cbs, {}

    def on_validation_end(self, trainer, pl_module):
        for cb in self.cbs:
            self.values[cb.name] = cb.run(trainer, pl_module)


def test_ddp_diagnostics_agree_across_ranks_and_with_single_process(tmp_path):
    cbs = _diagnostic_callbacks()
    args = [sys.executable, str(REPO / "train.py"), "fit", "--config", str(REPO / "configs/default.yaml"),
            "--data.init_args.n_train=256", "--data.init_args.batch_size=32",
            "--model.init_args.backbone.init_args.width=32", "--model.init_args.backbone.init_args.depth=1",
            "--trainer.max_epochs=2", "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            "--trainer.callbacks=lightning.pytorch.callbacks.EMAWeightAveraging",
            "--trainer.callbacks.decay=0.9"]
    for class_path, init_args, _ in cbs:
        args.append(f"--trainer.callbacks+={class_path}")
        args += [f"--trainer.callbacks.{k}={v}" for k, v in init_args.items()]
    args += ["--trainer.callbacks+=tests.helpers.RanksAgree", f"--trainer.callbacks.path={tmp_path / 'agree.json'}"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]

    agree = json.loads((tmp_path / "agree.json").read_text())
    assert agree["world_size"] == 2
    assert set(agree["spread"]) == {factory().name for _, _, factory in cbs}
    assert all(v == 0 for v in agree["spread"].values()), agree

    run_dir = tmp_path / "runs" / "default" / "version_0"
    records = read_jsonl(run_dir / "diagnostics.jsonl")
    final_step = max(r["step"] for r in records)
    ddp_values = {r["name"]: r["values"] for r in records if r["step"] == final_step}

    # the same measurement, single process, on the weights the DDP run ended with (last.ckpt holds the EMA)
    model = DiffusionModule.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    single = [factory() for _, _, factory in cbs]
    probe = _MeasureOnce(single)
    dm = DigitsDataModule(n_train=256, batch_size=32)
    pl.Trainer(accelerator="cpu", devices=1, logger=False, callbacks=[probe], enable_progress_bar=False,
               enable_model_summary=False, limit_val_batches=1).validate(model, datamodule=dm)
    for name, values in probe.values.items():
        for key, value in values.items():
            if isinstance(value, float):
                assert ddp_values[name][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (name, key)
