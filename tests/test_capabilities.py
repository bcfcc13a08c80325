"""The typed ground-truth contract: declared capabilities are real, the README's table is the declarations',
and a callback whose data lacks a capability stops at setup, before the first training step."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

import callbacks
from diffuse_feat.backbones import MLP
from diffuse_feat.capabilities import (
    CAPABILITIES,
    GaussianReference,
    LatentTrees,
    MixtureTheory,
    OracleLabels,
    PlantedFeatures,
    PopulationScore,
    TrainingSet,
    capabilities_of,
    capability_tables,
    check_capabilities,
)
from diffuse_feat.data import (
    BUILTIN_DATAMODULES,
    DigitsDataModule,
    GaussianMixtureDataModule,
    LowRankGaussianDataModule,
    RHMDataModule,
    TwoPatchDataModule,
)
from diffuse_feat.data.base import tensor_loader
from diffuse_feat.errors import MissingGroundTruth
from diffuse_feat.modules import DiffusionModule
from diffuse_feat.reproduce.common import make_trainer

REPO = Path(__file__).resolve().parent.parent

# a small instance of each DataModule that declares more than the base capabilities
SMALL = {
    GaussianMixtureDataModule: dict(dim=4, mean_scale=3.0, pool_size=64, n_val=8),  # separated: oracle = label
    LowRankGaussianDataModule: dict(dim=6, rank=2, pool_size=64, n_val=8),
    RHMDataModule: dict(v=4, n_c=4, m=2, s=2, L=2, pool_size=64, n_val=8),
    TwoPatchDataModule: dict(n_train=8, n_val=4, d=10),
    DigitsDataModule: dict(n_train=64, n_val=8),
}


def exercise(dm, cap) -> None:
    """Call every member of ``cap`` on ``dm`` with typical arguments and check what comes back."""
    if cap is TrainingSet:
        x, y = dm.train_tensor(), dm.train_labels()
        assert x.shape[1:] == tuple(dm.data_shape) and y.shape == x.shape[:1] and y.dtype == torch.long
        assert dm.val_tensor().shape[1:] == x.shape[1:] and isinstance(dm.num_classes, int)
    elif cap is GaussianReference:
        d = dm.train_tensor()[0].numel()
        lam, u = dm.covariance_eigh()
        assert dm.mean().shape == (d,) and dm.covariance().shape == (d, d) and bool((lam[:-1] >= lam[1:]).all())
        x = dm.train_tensor()[:3]
        for denoiser in (dm.gaussian_denoiser(), dm.empirical_denoiser()):
            assert denoiser(x, 1.0).shape == x.shape
    elif cap is PopulationScore:
        x = dm.train_tensor()[:3]
        assert dm.population_denoiser()(x, 0.5).shape == x.shape
    elif cap is OracleLabels:
        x = dm.train_tensor()[:5]
        assert torch.equal(dm.oracle_labels(x), dm.train_labels()[:5])  # the labels are the oracle's, at sigma 0
    elif cap is MixtureTheory:
        assert dm.top_eigenvalue > 0 and dm.component_std > 0 and dm.collapse_time(100) > 0
        assert dm.cloning_theory(torch.tensor([0.5, 3.0])).shape == (2,)
    elif cap is LatentTrees:
        trees = dm.train_trees()
        assert torch.equal(dm.parse(dm.train_tensor())[0], trees[0]) and len(dm.val_trees()) == dm.L + 1
        assert 0 < dm.eps_star()["eps_star"] < 1 and callable(dm.bp_denoiser())
    elif cap is PlantedFeatures:
        assert dm.signal_vectors().shape[0] == 2 and dm.noise_patches().shape[0] == dm.train_tensor().shape[0]
        assert dm.n_snr2 == pytest.approx(dm.train_tensor().shape[0] * dm.snr**2)
        assert torch.equal(dm.train_tensor()[:, dm.noise_patch], dm.noise_patches())


@pytest.mark.parametrize("cls", list(SMALL), ids=lambda c: c.__name__)
def test_every_declared_capability_works(cls):
    dm = cls(**SMALL[cls])
    dm.setup()
    declared = capabilities_of(cls)
    assert declared == capabilities_of(dm)  # declared = implemented, no more and no less
    for cap in declared:
        exercise(dm, cap)


def test_readme_table_is_generated_from_the_declarations():
    readme = (REPO / "README.md").read_text()
    table = re.search(r"<!-- capability-table -->\n(.*?)\n<!-- /capability-table -->", readme, re.S).group(1)
    assert table == capability_tables(BUILTIN_DATAMODULES)


class OnlyTrainingSet(pl.LightningDataModule):
    """A user's DataModule that implements TrainingSet without declaring it (duck typing)."""

    data_shape, num_classes = (3,), 0

    def __init__(self):
        super().__init__()
        self.x = torch.randn(32, 3, generator=torch.Generator().manual_seed(0))

    def train_tensor(self):
        return self.x

    def train_labels(self):
        return torch.full((32,), -1)

    def val_tensor(self):
        return self.x[:0]

    def val_labels(self):
        return torch.full((0,), -1)

    def train_dataloader(self):
        return tensor_loader((self.x, self.train_labels()), 8)


def test_undeclared_implementations_count_and_missing_ones_are_named():
    dm = OnlyTrainingSet()
    assert capabilities_of(dm) == [TrainingSet] and capabilities_of(OnlyTrainingSet) == []
    with pytest.raises(MissingGroundTruth) as err:
        check_capabilities(dm, [TrainingSet, GaussianReference, LatentTrees], needed_by="MyCallback", hint="try X")
    message = str(err.value)
    assert message.startswith("MyCallback needs GaussianReference") and "LatentTrees" in message
    assert "OnlyTrainingSet does not provide it; try X" in message and "TrainingSet (" not in message
    assert set(CAPABILITIES) == {TrainingSet, GaussianReference, PopulationScore, OracleLabels, MixtureTheory,
                                 LatentTrees, PlantedFeatures}


def test_missing_ground_truth_is_not_swallowed_by_hasattr():
    class Broken(DigitsDataModule):
        @property
        def top_eigenvalue(self):
            raise MissingGroundTruth("no eigenvalue here")

    assert not issubclass(MissingGroundTruth, AttributeError)
    with pytest.raises(MissingGroundTruth, match="no eigenvalue"):
        hasattr(Broken(), "top_eigenvalue")


def fit_until_failure(callback, dm) -> pl.Trainer:
    model = DiffusionModule(functools.partial(MLP, width=8, depth=1), data_shape=dm.data_shape)
    trainer = make_trainer(max_steps=6, callbacks=[callback], limit_val_batches=0, check_val_every_n_epoch=None)
    with pytest.raises(MissingGroundTruth) as err:
        trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 0  # stopped at setup, not at the first measurement
    return str(err.value)


@pytest.mark.parametrize(("make_callback", "dm", "names"), [
    (lambda: callbacks.GaussianStructureCallback(every_n_steps=3), OnlyTrainingSet, ["GaussianReference"]),
    (lambda: callbacks.RegimesCallback(every_n_steps=3, labeler="oracle"), DigitsDataModule, ["OracleLabels",
                                                                                            "nearest_train"]),
    (lambda: callbacks.RegimesCallback(every_n_steps=3), DigitsDataModule, ["oracle_labels",
                                                                           "classifier_checkpoint"]),
    (lambda: callbacks.ForwardBackwardCallback(every_n_steps=3), DigitsDataModule, ["LatentTrees",
                                                                                   "mode='images'"]),
    (lambda: callbacks.FeatureLearningCallback(every_n_steps=3), DigitsDataModule, ["PlantedFeatures",
                                                                                   "directions="]),
], ids=["gaussian_structure", "regimes_oracle", "regimes_auto", "forward_backward", "feature_learning"])
def test_a_callback_whose_data_lacks_a_capability_stops_at_setup(make_callback, dm, names):
    callback = make_callback()
    message = fit_until_failure(callback, dm() if dm is OnlyTrainingSet else dm(n_train=64, batch_size=16))
    assert message.startswith(callback.name) and (dm.__name__ in message)
    for name in names:
        assert name in message
