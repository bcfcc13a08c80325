"""The Lightning plumbing: CLI, configs, checkpoints, resume, errors, logging."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from callbacks import DiagnosticCallback
from diffuse_feat.backbones import MLP
from diffuse_feat.cli import DiffuseFeatCLI, main
from diffuse_feat.data import DigitsDataModule
from diffuse_feat.errors import NonFiniteLossError
from diffuse_feat.modules import DiffusionModule
from diffuse_feat.reporting import read_jsonl

from .fake_images import write_fake_cifar10, write_fake_mnist
from .helpers import InterruptAtStep, Interrupted, LossTurnsNaN
from .test_tensorboard import _layout

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml"))
TINY = [
    "--data.init_args.n_train=256",
    "--data.init_args.batch_size=64",
    "--model.init_args.backbone.init_args.width=32",
    "--model.init_args.backbone.init_args.depth=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.log_every_n_steps=1",
]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def run_cli(*args: str) -> DiffuseFeatCLI:
    return DiffuseFeatCLI(args=list(args))


@pytest.mark.parametrize("config", CONFIGS, ids=[str(p.relative_to(REPO / "configs")) for p in CONFIGS])
def test_every_config_runs_a_fast_dev_run(config, tmp_path):
    extra = []
    if config.parent.name == "images":  # offline: tiny fake files in the real formats under ./data
        write_fake_mnist(tmp_path / "data")
        write_fake_cifar10(tmp_path / "data")
        # GPU-sized U-Nets shrunk, or the end-of-fit sample grid alone takes minutes on CPU
        extra = ["--data.init_args.batch_size=4", "--model.init_args.backbone.init_args.base_channels=8",
                 "--trainer.callbacks.init_args.num_samples=4", "--trainer.callbacks.init_args.num_steps=2"]
    if config.stem == "rhm_deep":  # GPU-sized: 500,000 trees in batches of 1,024 (tests/test_rhm_deep.py runs it too)
        extra = ["--data.init_args.pool_size=300", "--data.init_args.n_val=40", "--data.init_args.batch_size=16",
                 "--trainer.callbacks.init_args.num_probes=4", "--trainer.callbacks.init_args.num_steps=2"]
    cli = run_cli("fit", "--config", str(config), "--trainer.fast_dev_run=true", "--trainer.enable_progress_bar=false",
                  *extra)
    assert cli.trainer.state.finished


def test_default_run_writes_tensorboard_jsonl_and_last_checkpoint(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cli = run_cli("fit", "--config", str(REPO / "configs/default.yaml"), *TINY, "--trainer.max_epochs=3",
                  "--trainer.callbacks.num_samples=4", "--trainer.callbacks.num_steps=4")
    run_dir = Path(cli.trainer.log_dir).resolve()
    assert run_dir.is_relative_to(tmp_path / "runs")
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert (run_dir / "config.yaml").exists()
    records = read_jsonl(run_dir / "diagnostics.jsonl")
    assert {r["name"] for r in records} >= {"SampleGridCallback"}
    assert all(set(r) == {"name", "step", "values"} for r in records)
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0}).Reload()
    scalars, images = events.Tags()["scalars"], events.Tags()["images"]
    assert {"train/loss", "train/loss_epoch", "val/loss"} <= set(scalars)
    assert any(t.startswith("lr-") for t in scalars)
    assert any(t.endswith("/generated") for t in images) and any(t.endswith("/real") for t in images)
    # TensorBoard as the issue asked: buckets named alike, epoch once an epoch, one chart per curve over sigma in the
    # run itself (no sub-run: one entry a run in the run selector), a 2x2 grid of 8x8 digits enlarged to >= 48 px each
    assert [e.value for e in events.Scalars("epoch")] == [0, 1, 2]
    assert not [p.name for p in run_dir.iterdir() if p.is_dir() and p.name != "checkpoints"]
    buckets = [t for t in scalars if t.startswith("train/loss_by_sigma/")]
    assert {"train/loss_by_sigma/sigma<0.05", "train/loss_by_sigma/sigma>=5"} <= set(buckets)
    assert all(len(events.Scalars(t)) == 3 for t in buckets)  # once an epoch
    assert any(t.startswith("val/loss_by_sigma/sigma=") for t in scalars)
    layout = _layout(run_dir)
    charts = {chart.title for category in layout.category for chart in category.chart}
    assert {"train/loss_by_sigma", "val/loss_by_sigma"} <= charts
    lines = {c.title: c.multiline.tag[0] for category in layout.category for c in category.chart}
    assert {t for t in scalars if re.match(lines["train/loss_by_sigma"], t)} == set(buckets)
    grid = events.Images(next(t for t in images if t.endswith("/generated")))[-1]
    assert grid.width >= 2 * 48 and grid.height >= 2 * 48


def _all_weights(cli) -> dict[str, torch.Tensor]:
    """The run's live weights and Adam moments, from its last.ckpt. Not ``cli.model``: at the end of fit the EMA
    callback copies its average in, and before its first update that is the initial weights of every run."""
    path = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(path, weights_only=False)["global_step"] == cli.trainer.global_step
    return weights_in(path)


def weights_in(path: Path) -> dict[str, torch.Tensor]:
    """The live weights and Adam moments in the checkpoint ``path``."""
    ckpt = torch.load(path, weights_only=False)
    live = ckpt.get("current_model_state", ckpt["state_dict"])
    moments = {f"adam.{i}.{k}": v for i, state in ckpt["optimizer_states"][0]["state"].items()
               for k, v in state.items() if k != "step"}
    return {**live, **moments}


def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(tmp_path):
    common = ["fit", "--config", str(REPO / "configs/default.yaml"), *TINY,
              "--trainer.callbacks.every_n_steps=3", "--trainer.callbacks.num_samples=2",
              "--trainer.callbacks.num_steps=2",
              "--checkpoint.every_n_epochs=1"]
    full = run_cli(*common, "--trainer.max_epochs=4", "--trainer.logger.init_args.name=full")
    part = run_cli(*common, "--trainer.max_epochs=2", "--trainer.logger.init_args.name=part")
    last = Path(part.trainer.log_dir) / "checkpoints" / "last.ckpt"
    resumed = run_cli(*common, "--trainer.max_epochs=4", "--trainer.logger.init_args.name=part",
                      "--ckpt_path", str(last))
    assert full.trainer.global_step == resumed.trainer.global_step == 16
    a, b = _all_weights(full), _all_weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # callback history survives the resume, and the run continues in its own folder
    hist_full = [h["step"] for h in full.trainer.callbacks[2].history]
    hist_res = [h["step"] for h in resumed.trainer.callbacks[2].history]
    assert set(hist_full) <= set(hist_res) and hist_res == sorted(set(hist_res))
    assert Path(resumed.trainer.log_dir).resolve() == Path(part.trainer.log_dir).resolve()
    steps = [r["step"] for r in read_jsonl(Path(part.trainer.log_dir) / "diagnostics.jsonl")]
    assert steps == sorted(set(steps)) and set(hist_res) <= set(steps)  # no record doubled by the resume
    # the curves over sigma continue in the run, a point an epoch, none doubled
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    epochs = [e.step for e in EventAccumulator(str(full.trainer.log_dir), size_guidance={"scalars": 0}).Reload()
              .Scalars("train/loss_epoch")]
    run = EventAccumulator(str(part.trainer.log_dir), size_guidance={"scalars": 0}).Reload()
    assert len(epochs) == 4 and [e.step for e in run.Scalars("train/loss_by_sigma/sigma>=5")] == epochs


def test_a_run_interrupted_mid_epoch_resumes_to_the_same_weights_bit_for_bit(tmp_path):
    common = ["fit", "--config", str(REPO / "configs/default.yaml"), *TINY, "--trainer.callbacks.every_n_steps=5",
              "--trainer.callbacks.num_samples=2", "--trainer.callbacks.num_steps=2", "--trainer.max_epochs=4"]
    full = run_cli(*common, "--trainer.logger.init_args.name=full")
    cut = DiffuseFeatCLI(args=[*common[1:], "--trainer.logger.init_args.name=cut",
                               "--checkpoint.every_n_train_steps=1"], run=False)
    # after the checkpoint callback (appended last), as a kill would be, and not in the run's config.yaml
    cut.trainer.callbacks.append(InterruptAtStep(6))
    with pytest.raises(Interrupted):  # 4 steps an epoch: killed after step 6, in the middle of the second epoch
        cut.trainer.fit(cut.model, datamodule=cut.datamodule)
    last = tmp_path / "runs" / "cut" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 6
    resumed = run_cli("fit", "--ckpt_path", str(last))  # no other argument: the run's own config.yaml
    assert resumed.trainer.global_step == full.trainer.global_step == 16
    a, b = _all_weights(full), _all_weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path, capsys):
    diverging = ["fit", "--config", str(REPO / "configs/default.yaml"), *TINY,
                 "--model.class_path=tests.helpers.NaNAtStepFour"]
    cli = run_cli(*diverging, "--trainer.max_epochs=1")
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        main([*diverging, "--trainer.max_epochs=3", "--ckpt_path", str(last)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: NaNAtStepFour: the training loss became nan at step 4")
    assert "model.init_args.lr" in err
    assert last.read_bytes() == before


class ParameterNorm(DiagnosticCallback):
    def measure(self, trainer, pl_module, model):
        return {"norm": float(torch.cat([p.flatten() for p in model.parameters()]).norm())}


@pytest.mark.parametrize("guard", ["logging step", "diagnostic", "checkpoint"])
def test_nan_loss_found_between_logging_steps_names_its_step_before_anything_stores_it(tmp_path, guard):
    # each step keeps the flag on the device (no sync); it is read on logging steps (every 5th here: steps
    # 4, 9, ...), and first by a diagnostic or a checkpoint that falls due earlier (step 3)
    dm = DigitsDataModule(n_train=256, batch_size=64, n_val=0)
    model = LossTurnsNaN(functools.partial(MLP, width=32, depth=1), data_shape=dm.data_shape)
    ckpt_dir = tmp_path / "ckpt"
    callbacks = {"logging step": [],
                 "diagnostic": [ParameterNorm(every_n_steps=3, at_train_end=False)],
                 "checkpoint": [ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=3, save_top_k=-1)]}[guard]
    trainer = pl.Trainer(max_steps=20, log_every_n_steps=5, logger=False, enable_checkpointing=guard == "checkpoint",
                         callbacks=callbacks, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    with pytest.raises(NonFiniteLossError, match="the training loss became nan at step 2;"):
        trainer.fit(model, dm)
    assert trainer.global_step == (4 if guard == "logging step" else 3)
    if guard == "diagnostic":
        assert callbacks[0].history == []  # it never measured the NaN weights
    if guard == "checkpoint":
        assert not (ckpt_dir.exists() and any(ckpt_dir.iterdir()))


def test_unknown_config_key_is_named(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(REPO / "configs/default.yaml"), "--model.init_args.no_such_key=1"])
    assert "no_such_key" in capsys.readouterr().err


def test_bad_value_is_one_sentence(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(REPO / "configs/default.yaml"), "--data.init_args.n_train=100000"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.startswith("error: data.n_train=100000 exceeds")


def test_missing_dataset_folder_is_one_sentence(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(REPO / "configs/default.yaml"), "--data=diffuse_feat.data.MNISTDataModule",
              f"--data.init_args.root={tmp_path / 'nowhere'}", "--trainer.max_epochs=1"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert err.startswith(f"error: MNIST files not found under '{tmp_path / 'nowhere' / 'MNIST' / 'raw'}'")
    assert "--data.init_args.download=true" in err and err.count("\n") == 1


def test_wrong_shape_and_negative_sigma_are_clear():
    from diffuse_feat.backbones import MLP

    model = DiffusionModule(MLP, data_shape=(1, 8, 8))
    with pytest.raises(ValueError, match=r"built for inputs of shape \[batch, 1, 8, 8\], got \[2, 64\]"):
        model(torch.zeros(2, 64), 1.0)
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        model(torch.zeros(2, 1, 8, 8), -0.5)


def test_train_py_help_and_print_config():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, str(REPO / "train.py"), "--help"], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "fit" in out.stdout
    out = subprocess.run([sys.executable, str(REPO / "train.py"), "fit", "--config", str(REPO / "configs/default.yaml"),
                          "--print_config"], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "DigitsDataModule" in out.stdout
    assert "data_shape" not in out.stdout.split("data:")[0].split("model:")[1]  # linked, never typed


def test_classifier_shares_the_backbone_class_and_learns_digits():
    cli = run_cli("fit", "--config", str(REPO / "configs/digits/classifier.yaml"), "--trainer.max_epochs=15",
                  "--trainer.enable_progress_bar=false", "--trainer.logger=false",
                  "--trainer.enable_checkpointing=false")
    acc = cli.trainer.callback_metrics["val/acc_by_sigma/sigma=0"]
    assert float(acc) > 0.9
    assert type(cli.model.backbone).__name__ == "MLP"
