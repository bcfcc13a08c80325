"""The measurement object every diagnostic is: plain values and curves, derived names, per-data references, seeds,
diagnostic mode, and one object behind the callback, analyze and a plain call."""

from __future__ import annotations

import pytest
import torch

from diffuse_feat.capabilities import TrainingSet
from diffuse_feat.data import DigitsDataModule
from diffuse_feat.diagnostics.measurement import Curve, Measured, Measurement, diagnostic_mode, plain
from diffuse_feat.diagnostics.samples import Memorization
from diffuse_feat.errors import MissingGroundTruth


class CountingMean(Measurement):
    """The data's mean through the denoiser at two noise levels; counts how often its reference is computed."""

    name = "counting_mean"
    requires = (TrainingSet,)

    def __init__(self, seed: int = 0):
        self.seed, self.references_computed = seed, 0

    def compute(self, denoiser, data, device):
        def reference():
            self.references_computed += 1
            return data.train_tensor().mean()

        mean = self.cached(data, "mean", reference)
        noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(self.seed))
        outs = [float(denoiser(noise * s, torch.full((4,), s)).mean()) for s in (0.5, 2.0)]
        return Measured({"mean": float(mean), "training": denoiser.training, "grad": torch.is_grad_enabled()},
                        {"out": Curve("sigma", (0.5, 2.0), outs)})


class Shrink(torch.nn.Module):
    def forward(self, x, sigma):
        return x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)


def test_a_curve_is_recorded_point_by_point_and_values_stay_plain():
    measured = Measured({"a": 1.0, "flag": True, "nan": float("nan"), "grid": [0.5, 2.0]},
                        {"p": Curve("sigma", (0.5, 2), (0.25, 0.75)), "q": Curve("t", (1,), (0.1,))})
    assert measured.record() == {**measured.values, "p_s0.5": 0.25, "p_s2": 0.75, "q_t1": 0.1}
    assert measured.scalars() == {"a": 1.0}  # no booleans, no NaN, no lists
    assert plain({"x": torch.tensor([1.0, 2.0]), "y": (torch.tensor(3.0), 4)}) == {"x": [1.0, 2.0], "y": [3.0, 4]}
    with pytest.raises(ValueError, match="one value per grid point"):
        Curve("sigma", (0.5, 1.0), (0.1,))
    with pytest.raises(ValueError, match="axis"):
        Curve("time", (0.5,), (0.1,))


def test_references_are_computed_once_per_datamodule_and_the_mode_is_restored():
    measurement, denoiser = CountingMean(), Shrink().train()
    digits, other = DigitsDataModule(n_train=32, n_val=0), DigitsDataModule(n_train=16, n_val=0)
    first = measurement.measure(denoiser, digits)
    assert measurement.measure(denoiser, digits).record() == first.record()
    assert measurement.references_computed == 1
    assert measurement.measure(denoiser, other).values["mean"] != first.values["mean"]
    assert measurement.references_computed == 2
    assert first.values["training"] is False and first.values["grad"] is False  # eval mode, no grad, inside only
    assert denoiser.training
    with diagnostic_mode(denoiser, grad=True):
        assert not denoiser.training and torch.is_grad_enabled()
    assert denoiser.training


def test_a_generator_draws_a_fresh_seed_and_the_setting_gives_the_same_every_time():
    measurement, denoiser, digits = CountingMean(seed=3), Shrink(), DigitsDataModule(n_train=32, n_val=0)
    same = measurement.measure(denoiser, digits).record()
    assert measurement.measure(denoiser, digits).record() == same
    fresh = [measurement.measure(denoiser, digits, generator=torch.Generator().manual_seed(g)).record()
             for g in (1, 1, 2)]
    assert fresh[0] == fresh[1] and fresh[0] != fresh[2] and fresh[0] != same
    assert measurement.seed == 3  # the object itself is unchanged


def test_data_without_a_capability_stops_with_one_sentence_naming_it():
    class NoTrainingSet:
        pass

    with pytest.raises(MissingGroundTruth, match="counting_mean needs TrainingSet"):
        CountingMean().measure(Shrink(), NoTrainingSet())
    with pytest.raises(MissingGroundTruth, match="my_callback needs TrainingSet"):
        Memorization().check(NoTrainingSet(), needed_by="my_callback")
