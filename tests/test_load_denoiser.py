"""``load_denoiser``: a run's denoiser from its checkpoint alone, EMA weights included."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback, EMAWeightAveraging, ModelCheckpoint

from diffuse_feat.backbones import MLP
from diffuse_feat.cli import DiffuseFeatCLI
from diffuse_feat.data import DigitsDataModule
from diffuse_feat.data.rhm import RHMDataModule
from diffuse_feat.denoisers import CategoricalDenoiser, PreconditionedDenoiser
from diffuse_feat.errors import ConfigError, DataNotFoundError, UserError
from diffuse_feat.lightning_private import averaged_module
from diffuse_feat.modules import ClassificationModule, DiffusionModule, load_denoiser
from diffuse_feat.modules.categorical import CategoricalDiffusionModule
from diffuse_feat.modules.checkpoint import read_checkpoint
from diffuse_feat.preconditioning import EpsilonPreconditioning
from diffuse_feat.reproduce.common import quiet

from .test_training import REPO

SIGMAS = torch.tensor([0.01, 0.3, 1.0, 5.0, 60.0])


class KeepLastStep(Callback):
    """Copies, after the last optimizer step, the live module and the EMA copy (what the checkpoint then holds)."""

    def __init__(self, ema: EMAWeightAveraging | None):
        self.ema, self.live, self.average = ema, None, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == trainer.max_steps:
            self.live = copy.deepcopy(pl_module).eval()
            averaged = averaged_module(self.ema) if self.ema is not None else None
            self.average = copy.deepcopy(averaged).eval() if averaged is not None else None


def fit(module, dm, tmp_path, steps=4, ema_start: int | None = 0) -> tuple[Path, KeepLastStep]:
    ema = EMAWeightAveraging(decay=0.5, update_starting_at_step=ema_start) if ema_start is not None else None
    keep = KeepLastStep(ema)
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="last", every_n_train_steps=steps, save_top_k=-1)
    callbacks = [c for c in (ema, keep, ckpt) if c is not None]
    with quiet():
        trainer = pl.Trainer(max_steps=steps, callbacks=callbacks, limit_val_batches=0, logger=False,
                             enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
        trainer.fit(module, datamodule=dm)
    return tmp_path / "last.ckpt", keep


def outputs(denoiser, data_shape, seed=0) -> torch.Tensor:
    x = torch.randn(len(SIGMAS), *data_shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return denoiser(x, SIGMAS)


def digits_module(**kwargs) -> DiffusionModule:
    torch.manual_seed(0)
    return DiffusionModule(functools.partial(MLP, width=16, depth=1), data_shape=(1, 8, 8), lr=0.05, **kwargs)


def test_ema_checkpoint_gives_the_ema_copy_and_ema_false_the_live_weights(tmp_path):
    path, keep = fit(digits_module(), DigitsDataModule(n_train=64, batch_size=16), tmp_path)
    loaded = read_checkpoint(path)
    assert loaded.weights == "ema" and loaded.step == 4 and loaded.module_class is DiffusionModule
    assert isinstance(loaded.denoiser, PreconditionedDenoiser) and not loaded.denoiser.training
    assert loaded.denoiser.data_shape == (1, 8, 8)
    ema_out, live_out = outputs(keep.average, (1, 8, 8)), outputs(keep.live, (1, 8, 8))
    assert not torch.allclose(ema_out, live_out)  # decay 0.5 after 4 steps: the two really differ
    torch.testing.assert_close(outputs(loaded.denoiser, (1, 8, 8)), ema_out, rtol=0, atol=0)
    torch.testing.assert_close(outputs(load_denoiser(path, ema=False), (1, 8, 8)), live_out, rtol=0, atol=0)


def test_before_the_first_ema_update_the_trained_weights_are_loaded_not_the_initial_copy(tmp_path):
    module = digits_module()
    initial = copy.deepcopy(module).eval()
    path, keep = fit(module, DigitsDataModule(n_train=64, batch_size=16), tmp_path, ema_start=100)
    assert keep.average is None  # never updated
    raw = torch.load(path, weights_only=False)
    assert int(raw["averaging_state"]["n_averaged"]) == 0
    # the trap: Lightning's state_dict is the averaged copy, i.e. the initial network, here
    assert all(torch.equal(v, initial.state_dict()[k]) for k, v in raw["state_dict"].items())
    loaded = read_checkpoint(path)
    assert loaded.weights == "live"
    torch.testing.assert_close(outputs(loaded.denoiser, (1, 8, 8)), outputs(keep.live, (1, 8, 8)), rtol=0, atol=0)


def test_a_run_without_ema_and_another_preconditioning(tmp_path):
    module = digits_module(preconditioning=EpsilonPreconditioning())
    path, keep = fit(module, DigitsDataModule(n_train=64, batch_size=16), tmp_path, ema_start=None)
    loaded = read_checkpoint(path)
    assert loaded.weights == "trained" and isinstance(loaded.denoiser.preconditioning, EpsilonPreconditioning)
    torch.testing.assert_close(outputs(loaded.denoiser, (1, 8, 8)), outputs(keep.live, (1, 8, 8)), rtol=0, atol=0)


def test_a_categorical_run_gives_its_categorical_denoiser(tmp_path):
    dm = RHMDataModule(v=4, n_c=2, m=2, s=2, L=2, scale=2.0, pool_size=64, n_val=8, batch_size=16)
    torch.manual_seed(0)
    module = CategoricalDiffusionModule(functools.partial(MLP, width=16, depth=1), data_shape=dm.data_shape,
                                        encoding_scale=2.0, lr=0.05)
    path, keep = fit(module, dm, tmp_path)
    denoiser = load_denoiser(path)
    assert isinstance(denoiser, CategoricalDenoiser) and denoiser.encoding_scale == 2.0
    torch.testing.assert_close(outputs(denoiser, dm.data_shape), outputs(keep.average, dm.data_shape), rtol=0, atol=0)


def test_a_train_py_checkpoint_loads_without_its_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ema.yaml").write_text(
        "trainer:\n  callbacks:\n    - class_path: lightning.pytorch.callbacks.EMAWeightAveraging\n"
        "      init_args: {decay: 0.9, update_starting_at_step: 0}\n")
    cli = DiffuseFeatCLI(args=["fit", "--config", str(REPO / "configs/default.yaml"), "--config", "ema.yaml",
                               "--trainer.max_steps=3", "--data.init_args.n_train=64",
                               "--model.init_args.backbone.init_args.width=16", "--trainer.enable_progress_bar=false",
                               "--trainer.enable_model_summary=false"])
    path = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    assert isinstance(torch.load(path, weights_only=False)["hyper_parameters"]["backbone"], dict)  # class_path form
    loaded = read_checkpoint(path)
    assert loaded.weights == "ema" and loaded.module_class is DiffusionModule
    # Lightning's own loader (through the run's jsonargparse instantiator) reads the same state_dict: the EMA
    lightning = DiffusionModule.load_from_checkpoint(path, weights_only=False).eval()
    torch.testing.assert_close(outputs(loaded.denoiser, (1, 8, 8)), outputs(lightning, (1, 8, 8)), rtol=0, atol=0)


def test_bad_checkpoints_are_refused_in_one_sentence(tmp_path):
    with pytest.raises(DataNotFoundError, match="no checkpoint file"):
        load_denoiser(tmp_path / "missing.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ConfigError, match="not a diffuse_feat run checkpoint"):
        load_denoiser(tmp_path / "other.ckpt")
    torch.manual_seed(0)
    classifier = ClassificationModule(functools.partial(MLP, width=8, depth=1), data_shape=(1, 8, 8), num_classes=10)
    path, _ = fit(classifier, DigitsDataModule(n_train=32, batch_size=16), tmp_path, steps=1, ema_start=None)
    with pytest.raises(UserError, match="not a DiffusionModule"):
        load_denoiser(path)
