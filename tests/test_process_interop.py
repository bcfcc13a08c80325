"""The processes of models trained elsewhere: continuous VP, rectified flow and a discrete alphas_cumprod table."""

from __future__ import annotations

import math

import pytest
import torch

from diffuse_feat.errors import UserError
from diffuse_feat.process import DiscreteSchedule, RectifiedFlow, SigmaOutOfRangeError, VariancePreserving


def test_continuous_vp_matches_song_et_al():
    vp = VariancePreserving(beta_min=0.1, beta_max=20.0)
    t = torch.linspace(1e-3, 1.0, 200, dtype=torch.float64)
    log_alpha_bar = -(0.1 * t + 0.5 * 19.9 * t**2)  # Song et al. 2021, eq. 33
    torch.testing.assert_close(vp.scale(t), torch.exp(0.5 * log_alpha_bar))
    torch.testing.assert_close(vp.sigma(t), torch.sqrt(1 / torch.exp(log_alpha_bar) - 1))
    torch.testing.assert_close(vp.t_of_sigma(vp.sigma(t)), t, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(vp.scale_of_sigma(vp.sigma(t)), vp.scale(t))
    assert vp.sigma_range() == (0.0, pytest.approx(float(vp.sigma(1.0))))
    with pytest.raises(SigmaOutOfRangeError):
        vp.t_of_sigma(torch.tensor([vp.sigma_range()[1] * 1.01]))


def test_rectified_flow_in_sigma_space():
    rf = RectifiedFlow()
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([0.1, 0.4, 0.7, 0.95], dtype=torch.float64)
    x_t = (1 - t[:, None]) * x0 + t[:, None] * eps
    x, sigma = rf.to_sigma_space(x_t, t)
    torch.testing.assert_close(sigma, t / (1 - t))
    torch.testing.assert_close(x, x0 + sigma[:, None] * eps)
    torch.testing.assert_close(rf.t_of_sigma(sigma), t)
    torch.testing.assert_close(rf.scale_of_sigma(sigma), 1 - t)


@pytest.fixture
def table() -> torch.Tensor:
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)  # diffusers' "linear" DDPMScheduler
    return torch.cumprod(1 - betas, 0)


def test_a_table_maps_its_integer_timesteps_to_its_sigmas(table):
    for mode in ("interpolate", "nearest"):
        process = DiscreteSchedule(table, timesteps=mode)
        k = torch.tensor([0, 1, 17, 500, 998, 999], dtype=torch.float64)
        sigma_k = torch.sqrt(1 / table[k.long()] - 1)
        torch.testing.assert_close(process.sigma(k), sigma_k, rtol=1e-12, atol=0)
        torch.testing.assert_close(process.scale(k), table[k.long()].sqrt(), rtol=1e-12, atol=0)
        torch.testing.assert_close(process.t_of_sigma(sigma_k), k, rtol=0, atol=1e-9)
        assert process.sigma_range() == pytest.approx((float(sigma_k[0]), float(sigma_k[-1])))


def test_interpolated_timesteps_are_linear_in_log_alpha_bar_and_invert_sigma(table):
    process = DiscreteSchedule(table)
    t = torch.tensor([0.25, 3.5, 499.9, 998.75], dtype=torch.float64)
    lo = t.floor().long()
    w = t - lo
    expected = torch.sqrt(torch.exp(-((1 - w) * table[lo].log() + w * table[lo + 1].log())) - 1)
    torch.testing.assert_close(process.sigma(t), expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(process.t_of_sigma(expected), t, rtol=0, atol=1e-9)
    # any VP state: the scale follows sigma exactly, even between table entries
    torch.testing.assert_close(process.scale_of_sigma(expected), (1 + expected**2).rsqrt())


def test_nearest_timesteps_are_nearest_in_log_sigma(table):
    process = DiscreteSchedule(table, timesteps="nearest")
    low, high = process.sigma_range()
    sigma = torch.logspace(math.log10(low), math.log10(high), 997, dtype=torch.float64)
    table_sigmas = torch.sqrt(1 / table - 1)
    brute = (sigma.log()[:, None] - table_sigmas.log()[None, :]).abs().argmin(1)
    assert torch.equal(process.t_of_sigma(sigma).long(), brute)


def test_sigma_outside_the_table_is_refused_in_one_sentence(table):
    process = DiscreteSchedule(table)
    low, high = process.sigma_range()
    for sigma in (low * 0.9, high * 1.1, 0.0):
        with pytest.raises(SigmaOutOfRangeError) as err:
            process.t_of_sigma(torch.tensor([1.0, sigma], dtype=torch.float64))
        assert isinstance(err.value, UserError) and "range" in str(err.value)
        assert str(err.value).count(". ") == 0
    both_ends = torch.tensor([low, high], dtype=torch.float64).float().double()  # float32 round trip
    torch.testing.assert_close(process.t_of_sigma(both_ends), torch.tensor([0.0, 999.0], dtype=torch.float64),
                               atol=1e-3, rtol=0)


def test_a_bad_table_is_refused():
    with pytest.raises(UserError, match="noisier than the one before"):
        DiscreteSchedule(torch.tensor([0.5, 0.9]))
    with pytest.raises(UserError, match="interpolate"):
        DiscreteSchedule(torch.tensor([0.9, 0.5]), timesteps="round")


def test_small_cpu_batches_are_looked_up_in_python_exactly_as_in_torch(table):
    """time_and_scale runs in plain Python for a small CPU batch (the adapters' hot path) and in torch otherwise: both
    give t_of_sigma and scale_of_sigma, on the table's own sigmas, between them and at both ends."""
    process = DiscreteSchedule(table)
    low, high = process.sigma_range()
    g = torch.Generator().manual_seed(0)
    between = torch.exp(torch.empty(40, dtype=torch.float64).uniform_(math.log(low), math.log(high), generator=g))
    on_table = torch.sqrt(1 / table[[0, 1, 2, 500, 998, 999]] - 1)
    ends = torch.tensor([low, high], dtype=torch.float64).float().double()  # float32 round trip, inside the slack
    sigma = torch.cat([between, on_table, ends])
    assert sigma.numel() <= DiscreteSchedule.PYTHON_LOOKUP_MAX < 2 * sigma.numel()
    t, scale = process.time_and_scale(sigma)
    assert t.dtype == scale.dtype == torch.float64 and t.shape == scale.shape == sigma.shape
    torch.testing.assert_close(t, process.t_of_sigma(sigma), rtol=0, atol=1e-10)
    torch.testing.assert_close(scale, process.scale_of_sigma(sigma), rtol=1e-14, atol=0)
    t_big, scale_big = process.time_and_scale(torch.cat([sigma, sigma]))  # over the limit: torch
    torch.testing.assert_close(t_big, torch.cat([t, t]), rtol=0, atol=1e-10)
    torch.testing.assert_close(scale_big, torch.cat([scale, scale]), rtol=1e-14, atol=0)
    for bad in (low * 0.9, high * 1.1):
        with pytest.raises(SigmaOutOfRangeError, match="outside the range"):
            process.time_and_scale(torch.tensor([1.0, bad], dtype=torch.float64))
