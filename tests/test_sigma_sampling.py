"""Training noise-level distributions: each sampler draws the law its docstring names, reproducibly."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from diffuse_feat.process import DDPM, VarianceExploding
from diffuse_feat.sigma_sampling import FixedSigma, LogNormalSigma, LogUniformSigma, MixtureSigma, UniformTimeSigma

N = 200_000


def draw(sampler, seed: int = 0) -> torch.Tensor:
    return sampler.sample(N, generator=torch.Generator().manual_seed(seed))


def test_log_normal_moments():
    log_sigma = draw(LogNormalSigma(p_mean=-1.2, p_std=1.2)).double().log()
    se = 1.2 / math.sqrt(N)
    assert abs(float(log_sigma.mean()) + 1.2) < 4 * se
    assert abs(float(log_sigma.std()) - 1.2) < 4 * 1.2 / math.sqrt(2 * N)


def test_log_uniform_has_uniform_log_quantiles_within_bounds():
    s = draw(LogUniformSigma(0.002, 80.0)).double()
    assert float(s.min()) >= 0.002 * (1 - 1e-6) and float(s.max()) <= 80.0 * (1 + 1e-6)
    u = (s.log() - math.log(0.002)) / (math.log(80.0) - math.log(0.002))  # should be U(0, 1)
    q = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64)
    assert torch.allclose(torch.quantile(u, q), q, atol=0.01)  # DKW: 0.01 at N = 2e5 fails w.p. < 1e-17


@pytest.mark.parametrize("process", [VarianceExploding(), DDPM(schedule="linear"), DDPM(schedule="cosine")],
                         ids=["ve", "ddpm-linear", "ddpm-cosine"])
def test_uniform_time_maps_uniform_t_through_the_process(process):
    sampler = UniformTimeSigma(process, t_min=1.0, t_max=1000.0)
    s = draw(sampler)
    assert s.dtype == torch.float32 and bool((s > 0).all())
    t = process.t_of_sigma(s.double())
    u = (t - 1.0) / 999.0
    q = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    assert torch.allclose(torch.quantile(u, q), q, atol=0.01)


def test_samplers_are_reproducible_from_the_generator():
    for sampler in [LogNormalSigma(), LogUniformSigma(), UniformTimeSigma(DDPM())]:
        assert torch.equal(draw(sampler, 3), draw(sampler, 3))
        assert not torch.equal(draw(sampler, 3), draw(sampler, 4))
    assert torch.equal(FixedSigma(0.7).sample(5), torch.full((5,), 0.7))


def test_ddpm_pickles_without_its_device_copies():
    process = DDPM()
    process.sigma(torch.tensor([10.0], dtype=torch.float64, device="meta"))  # caches a copy on another device
    restored = pickle.loads(pickle.dumps(process))
    assert "_tables" not in vars(restored)
    assert torch.equal(restored.sigma(torch.tensor([10.0])), process.sigma(torch.tensor([10.0])))


def test_mixture_draws_each_component_with_its_weight():
    """A 1:3 mixture of two fixed levels: the shares are 1/4 and 3/4 (within 4 binomial SE), nothing else appears."""
    s = draw(MixtureSigma([FixedSigma(1.0), FixedSigma(5.0)], weights=[1.0, 3.0]))
    share = float((s == 1.0).double().mean())
    assert abs(share - 0.25) < 4 * math.sqrt(0.25 * 0.75 / N)
    assert bool(((s == 1.0) | (s == 5.0)).all())
    assert torch.equal(s, draw(MixtureSigma([FixedSigma(1.0), FixedSigma(5.0)], weights=[1.0, 3.0])))


def test_mixture_of_log_normal_and_log_uniform_reaches_the_top_of_the_range():
    """Why the Gaussian-structure reproduction mixes them: EDM's log-normal alone almost never draws sigma >= 10."""
    top = float((draw(LogNormalSigma()) >= 10).double().mean())
    mixed = float((draw(MixtureSigma([LogNormalSigma(), LogUniformSigma(0.002, 80.0)])) >= 10).double().mean())
    assert top < 0.003 and mixed > 0.09


@pytest.mark.parametrize("weights", [[1.0], [-1.0, 2.0], [0.0, 0.0]])
def test_mixture_refuses_bad_weights(weights):
    with pytest.raises(ValueError, match="MixtureSigma"):
        MixtureSigma([FixedSigma(1.0), FixedSigma(2.0)], weights=weights)
