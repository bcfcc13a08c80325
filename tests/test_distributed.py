"""Two CPU processes (DDP over gloo): every diagnostic callback computes the same values on every rank,
and those values equal a single-process measurement on the same weights."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from callbacks import (
    FeatureLearningCallback,
    ForwardBackwardCallback,
    GaussianStructureCallback,
    RegimesCallback,
    SampleGridCallback,
)
from diffuse_feat.data import DigitsDataModule
from diffuse_feat.modules import DiffusionModule
from diffuse_feat.reporting import read_jsonl

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")


GAUSSIAN_STRUCTURE = {"every_n_steps": 3, "num_pairs": 8, "num_sigmas": 6, "jacobian_sigmas": [1.0],
                      "jacobian_points": 1, "num_samples": 4, "sample_steps": 4}
REGIMES = {"every_n_steps": 3, "num_pairs": 8, "clone_times": [0.2, 0.6, 1.2], "t_max": 2.0, "step": 0.25,
           "num_geometric": 6, "reference_samples": 100, "labeler": "nearest_train"}
FORWARD_BACKWARD = {"every_n_steps": 3, "mode": "images", "sigmas": [0.1, 1.0], "num_probes": 8, "num_steps": 4}
FEATURE_LEARNING = {"every_n_steps": 3, "histograms": False, "directions": torch.eye(2, 64).tolist()}


def _diagnostic_callbacks() -> list:
    """The diagnostic callbacks under test: (YAML class_path, init_args, factory for the single-process check)."""
    return [
        ("callbacks.SampleGridCallback", {"every_n_steps": 3, "num_samples": 8, "num_steps": 4},
         lambda: SampleGridCallback(every_n_steps=3, num_samples=8, num_steps=4)),
        ("callbacks.GaussianStructureCallback", GAUSSIAN_STRUCTURE,
         lambda: GaussianStructureCallback(**GAUSSIAN_STRUCTURE)),
        ("callbacks.RegimesCallback", REGIMES, lambda: RegimesCallback(**REGIMES)),
        ("callbacks.ForwardBackwardCallback", FORWARD_BACKWARD, lambda: ForwardBackwardCallback(**FORWARD_BACKWARD)),
        ("callbacks.FeatureLearningCallback", FEATURE_LEARNING, lambda: FeatureLearningCallback(**FEATURE_LEARNING)),
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
        args += [f"--trainer.callbacks.{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in init_args.items()]
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
               default_root_dir=tmp_path,
               enable_model_summary=False, limit_val_batches=1).validate(model, datamodule=dm)
    for name, values in probe.values.items():
        for key, value in values.items():
            if isinstance(value, float) and math.isnan(value):  # diagnostics.jsonl is strict JSON: NaN -> null
                assert ddp_values[name][key] is None, (name, key)
            elif isinstance(value, float):
                assert ddp_values[name][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (name, key)


def test_ddp_nan_on_one_rank_stops_every_rank_with_the_same_message(tmp_path):
    # step 2 is a logging step (every 3rd: 0, 2, 5, ...): rank 1 sees the NaN there, rank 0 does not. Before
    # the ranks compared notes, rank 1 left with the message and rank 0 died in the gradient all-reduce with
    # gloo's "connection closed by peer" traceback
    args = [sys.executable, str(REPO / "train.py"), "fit", "--config", str(REPO / "configs/default.yaml"),
            "--model.class_path=tests.helpers.NaNOnRankOne",
            "--data.init_args.n_train=256", "--data.init_args.batch_size=32",
            "--model.init_args.backbone.init_args.width=32", "--model.init_args.backbone.init_args.depth=1",
            "--trainer.max_epochs=2", "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp",
            "--trainer.log_every_n_steps=3", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", "--trainer.callbacks=[]"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr[-3000:]
    message = ("error: NaNOnRankOne: the training loss became nan at step 2; no checkpoint was written from this "
               "state. Lower model.init_args.lr (now 0.002) or check the data for NaN/inf values.")
    assert out.stderr.count(message) == 2, out.stderr[-3000:]  # one per rank (their lines may interleave)
    assert "Traceback" not in out.stderr
    assert not list((tmp_path / "runs").rglob("*.ckpt"))


def test_ddp_run_stopped_mid_epoch_resumes_to_the_same_weights_bit_for_bit(tmp_path):
    """Two ranks, 4 batches each an epoch: a SIGINT during step 6 (in epoch 1) stops both after it with one
    checkpoint; the printed resume command continues on two ranks, each skipping the 2 batches of its own shard it
    had served, and ends with the weights of a run never stopped."""
    from .test_training import weights_in

    base = [sys.executable, str(REPO / "train.py"), "fit", "--config", str(REPO / "configs/default.yaml"),
            "--data.init_args.n_train=256", "--data.init_args.batch_size=32",
            "--model.init_args.backbone.init_args.width=32", "--model.init_args.backbone.init_args.depth=1",
            "--trainer.max_epochs=3", "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp",
            "--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=1", "--trainer.callbacks=[]"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*base[:2], *args] if args[:1] == ("--ckpt_path",) else [*base, *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=600)

    full = run("--trainer.logger.init_args.name=full")
    assert full.returncode == 0, full.stderr[-3000:]
    assert "sync_dist" not in full.stderr and "deprecated" not in full.stderr  # nothing a DDP user need act on
    cut = run("--trainer.logger.init_args.name=cut", "--trainer.callbacks+=tests.helpers.SignalAtStep",
              "--trainer.callbacks.init_args.step=6")
    assert cut.returncode == 130, cut.stderr[-3000:]
    last = "runs/cut/version_0/checkpoints/last.ckpt"
    assert cut.stderr.strip().splitlines()[-2:] == [f"Stopped by SIGINT after step 6; the run is saved in {last}",
                                                    f"Resume it with: python train.py --ckpt_path {last}"]
    assert cut.stderr.count("Resume it with") == 1  # said by rank zero only
    resumed = run("--ckpt_path", last)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = weights_in(tmp_path / "runs/full/version_0/checkpoints/last.ckpt")
    b = weights_in(tmp_path / last)
    assert torch.load(tmp_path / last, weights_only=False)["global_step"] == 12
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
