"""A short Lightning fit of an RHM diffusion model with ``ForwardBackwardCallback`` writing jsonl records."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from callbacks.forward_backward import ForwardBackwardCallback
from diffuse_feat.backbones.mlp import MLP
from diffuse_feat.data.digits import DigitsDataModule
from diffuse_feat.data.rhm import RHMDataModule
from diffuse_feat.diagnostics.forward_backward import image_probes
from diffuse_feat.errors import MissingGroundTruth
from diffuse_feat.modules.classification import ClassificationModule
from diffuse_feat.modules.diffusion import DiffusionModule
from diffuse_feat.preconditioning import EDMPreconditioning
from diffuse_feat.reporting import read_jsonl
from diffuse_feat.reproduce.common import make_trainer


def test_fit_writes_forward_backward_records_with_the_exact_curve(tmp_path):
    dm = RHMDataModule(v=8, n_c=4, m=2, s=2, L=3, pool_size=400, n_val=50, batch_size=64)
    model = DiffusionModule(functools.partial(MLP, width=32, depth=1), data_shape=dm.data_shape,
                            num_classes=dm.num_classes, preconditioning=EDMPreconditioning(dm.data_std))
    sigmas = [1e-3, 0.3, 30.0]
    callback = ForwardBackwardCallback(every_n_steps=2, sigmas=sigmas, num_probes=16, num_steps=4)
    trainer = make_trainer(max_steps=4, callbacks=[callback], log_dir=tmp_path, name="rhm",
                           check_val_every_n_epoch=None, limit_val_batches=0, log_every_n_steps=1)
    trainer.fit(model, datamodule=dm)
    records = [r for r in read_jsonl(tmp_path / "rhm" / "version_0" / "diagnostics.jsonl")
               if r["name"] == "ForwardBackwardCallback"]
    assert [r["step"] for r in records] == [2, 4]
    values = records[-1]["values"]
    assert values["sigma"] == sigmas and len(values["p_unchanged"][0]) == dm.L + 1
    # the exact curve: a tiny sigma reconstructs every level, a huge one keeps the class only by chance
    assert values["bp_p_unchanged"][0] == [1.0] * (dm.L + 1)
    assert values["bp_p_class"][0] == pytest.approx(1.0, abs=1e-9) and values["bp_p_class"][-1] < 0.6
    assert all(0.0 <= p <= 1.0 for p in values["p_class"] + values["p_valid"])
    assert values["p_class_s0.3"] == values["p_class"][1]
    # the same probes and noise every time: the exact reference does not move between runs
    assert records[0]["values"]["bp_p_class"] == values["bp_p_class"]


def test_rhm_mode_on_data_without_trees_stops_at_setup_and_says_how_to_switch():
    """Never a silent switch to image mode: the mode is an argument."""
    class Trainer:
        datamodule = DigitsDataModule(n_train=16)

    with pytest.raises(MissingGroundTruth, match="LatentTrees.*DigitsDataModule.*mode='images'"):
        ForwardBackwardCallback().setup(Trainer(), None, "fit")
    ForwardBackwardCallback(mode="images").setup(Trainer(), None, "fit")
    with pytest.raises(ValueError, match="mode"):
        ForwardBackwardCallback(mode="image")


def test_images_variant_reads_x_hat_with_a_classifier_checkpoint(tmp_path):
    dm = DigitsDataModule(n_val=16, batch_size=64)
    classifier = ClassificationModule(functools.partial(MLP, width=32, depth=2), data_shape=(1, 8, 8), num_classes=10)
    trainer = make_trainer(max_steps=2, limit_val_batches=0, check_val_every_n_epoch=None, log_every_n_steps=1)
    trainer.fit(classifier, datamodule=dm)
    checkpoint = tmp_path / "classifier.ckpt"
    trainer.save_checkpoint(checkpoint)

    model = DiffusionModule(functools.partial(MLP, width=32, depth=1), data_shape=(1, 8, 8))
    sigmas = [1e-4, 20.0]
    callback = ForwardBackwardCallback(every_n_steps=0, mode="images", sigmas=sigmas, num_probes=16, num_steps=3,
                                       classifier_checkpoint=str(checkpoint))
    trainer = make_trainer(max_steps=2, callbacks=[callback], log_dir=tmp_path, name="digits",
                           check_val_every_n_epoch=None, limit_val_batches=0, log_every_n_steps=1)
    trainer.fit(model, datamodule=dm)
    values = read_jsonl(tmp_path / "digits" / "version_0" / "diagnostics.jsonl")[-1]["values"]
    assert values["depths"] == ["pixels", "depth1", "depth2", "logits"]
    assert values["p_class"][0] == 1.0  # x_hat_0 ~ x_0 at a negligible sigma: same prediction
    for depth in values["depths"]:
        assert values["change"][depth][0] < 1e-3 < values["change"][depth][1], depth


def test_images_variant_probes_training_images_when_none_are_held_out():
    """The image configs hold nothing out (n_val = 0): the probes are then the first training images."""
    dm = DigitsDataModule(n_val=0, batch_size=64)
    dm.setup()
    measurement = ForwardBackwardCallback(mode="images", num_probes=5).measurement
    assert torch.equal(image_probes(dm, measurement.num_probes), dm.train_tensor()[:5])
    model = DiffusionModule(functools.partial(MLP, width=16, depth=1), data_shape=(1, 8, 8)).eval()
    values = measurement.measure(model, dm, device=torch.device("cpu")).values
    assert len(values["change"]["pixels"]) == len(measurement.sigmas)
    assert all(math.isfinite(c) for c in values["change"]["pixels"])
