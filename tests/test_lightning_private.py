"""The one module that touches private Lightning attributes, and the EMA-before-its-first-update bug.

If a Lightning upgrade moves ``WeightAveraging._average_model`` or LightningCLI's ``_get``, ``_parser``,
``_instantiate_trainer``, these tests fail here, naming the attribute, instead of the library failing elsewhere.
"""

from __future__ import annotations

import functools

import pytest
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint, WeightAveraging
from lightning.pytorch.cli import LightningCLI

from callbacks import DiagnosticCallback
from diffuse_feat.backbones import MLP
from diffuse_feat.cli import DiffuseFeatCLI
from diffuse_feat.data import DigitsDataModule
from diffuse_feat.lightning_private import averaged_module
from diffuse_feat.modules import DiffusionModule
from diffuse_feat.reproduce.common import make_trainer

from .test_training import REPO


@pytest.mark.parametrize(("owner", "name"), [(LightningCLI, "_get"), (LightningCLI, "_parser"),
                                             (LightningCLI, "_instantiate_trainer")])
def test_the_private_cli_methods_we_use_exist(owner, name):
    assert callable(getattr(owner, name, None)), f"Lightning moved {owner.__name__}.{name}: update lightning_private"


class FirstWeight(DiagnosticCallback):
    """Records the first weight of the model it is given to measure, and the live module's."""

    def measure(self, trainer, pl_module, model):
        return {"measured": float(model.backbone.inp.weight[0, 0]), "live": float(pl_module.backbone.inp.weight[0, 0])}


def fit_with_ema(steps: int, update_starting_at_step: int) -> tuple[FirstWeight, EMAWeightAveraging, float]:
    torch.manual_seed(0)
    model = DiffusionModule(functools.partial(MLP, width=8, depth=1), data_shape=(1, 8, 8), lr=0.05)
    initial = float(model.backbone.inp.weight[0, 0])
    probe = FirstWeight(every_n_steps=2, at_train_end=False)
    ema = EMAWeightAveraging(decay=0.5, update_starting_at_step=update_starting_at_step)
    trainer = make_trainer(max_steps=steps, callbacks=[ema, probe], limit_val_batches=0, check_val_every_n_epoch=None)
    trainer.fit(model, datamodule=DigitsDataModule(n_train=64, batch_size=16))
    return probe, ema, initial


def test_diagnostics_before_the_first_ema_update_measure_the_live_weights():
    probe, ema, initial = fit_with_ema(steps=4, update_starting_at_step=100)
    assert isinstance(ema, WeightAveraging) and averaged_module(ema) is None  # built at setup, never updated
    assert [h["step"] for h in probe.history] == [2, 4]
    for record in probe.history:
        assert record["measured"] == record["live"] != initial  # the trained weights, not the initial copy


def test_after_its_first_update_the_ema_copy_is_measured():
    probe, ema, _ = fit_with_ema(steps=4, update_starting_at_step=0)
    averaged = averaged_module(ema)
    assert averaged is not None and int(ema._average_model.n_averaged) == 4
    assert probe.history[0]["measured"] != probe.history[0]["live"]  # decay 0.5: the average lags the live weights


def test_the_checkpoint_group_is_dropped_when_checkpointing_is_off(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", str(REPO / "configs/default.yaml"), "--trainer.max_steps=1",
            "--data.init_args.n_train=32", "--trainer.enable_progress_bar=false", "--trainer.callbacks=[]"]
    on = DiffuseFeatCLI(args=args).trainer
    off = DiffuseFeatCLI(args=[*args, "--trainer.enable_checkpointing=false"]).trainer
    assert any(isinstance(cb, ModelCheckpoint) for cb in on.callbacks)
    assert not any(isinstance(cb, ModelCheckpoint) for cb in off.callbacks)


def test_a_run_without_a_logger_writes_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where diagnostics.jsonl used to land
    fit_with_ema(steps=2, update_starting_at_step=0)
    assert list(tmp_path.iterdir()) == []
