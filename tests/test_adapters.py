"""Adapters from other parametrizations and processes to sigma-space, checked on exact models.

Each test builds the *exact* eps-, x0-, v-, flow-velocity or EDM-F predictor of Gaussian data from
``GaussianDenoiser`` (in float64, from the time it is told), wraps it, and checks that the wrapped ``D(x, sigma)``
is ``GaussianDenoiser`` again. A wrong time map, scale or conversion formula would show at once.
"""

from __future__ import annotations

import math

import pytest
import torch

from diffuse_feat.denoisers import GaussianDenoiser
from diffuse_feat.denoisers.adapters import (
    EDMDenoiser,
    EpsilonPredictionDenoiser,
    FlowVelocityDenoiser,
    SamplePredictionDenoiser,
    VPredictionDenoiser,
    edm_noise_conditioning,
    make_process,
    wrap_prediction,
)
from diffuse_feat.errors import ConfigError, UserError
from diffuse_feat.preconditioning import EDMPreconditioning
from diffuse_feat.process import DiscreteSchedule, RectifiedFlow, SigmaOutOfRangeError

from .conftest import random_covariance

DATA_SHAPE = (2, 3)


@pytest.fixture(scope="module")
def gaussian() -> GaussianDenoiser:
    g = torch.Generator().manual_seed(0)
    mean = 2.0 * torch.randn(6, generator=g, dtype=torch.float64)
    return GaussianDenoiser.from_covariance(mean, random_covariance(6, seed=3), DATA_SHAPE, dtype=torch.float64)


def exact_prediction(gaussian: GaussianDenoiser, parametrization: str, process, time_scale: float = 1.0):
    """The exact ``net(x_t, time)`` of Gaussian data for one parametrization (float64 throughout)."""

    def net(x_t, time):
        t = time.double() / time_scale
        sigma, s = process.sigma(t), process.scale(t)
        shape = (-1,) + (1,) * (x_t.ndim - 1)
        sigma, s = sigma.reshape(shape), s.reshape(shape)
        x = x_t.double() / s  # sigma-space: x = x0 + sigma eps
        x0 = gaussian(x, sigma.reshape(-1))
        eps = (x - x0) / sigma
        if parametrization == "eps":
            return eps
        if parametrization == "x0":
            return x0
        if parametrization == "v":
            return s * eps - s * sigma * x0  # alpha eps - sig x0
        if parametrization == "flow":
            return eps - x0  # d/dt of (1 - t) x0 + t eps
        raise AssertionError(parametrization)

    return net


def exact_edm_f(gaussian: GaussianDenoiser, sigma_data: float = 0.5):
    """EDM's F_theta of Gaussian data, told ``c_noise = ln(sigma) / 4`` and fed ``c_in x``."""
    precond = EDMPreconditioning(sigma_data)

    def net(x_in, c_noise):
        sigma = torch.exp(4 * c_noise.double())
        c_skip, c_out, c_in = (c.double().reshape(-1, 1, 1) for c in precond.coefficients(sigma))
        c_skip, c_out, c_in = (torch.as_tensor(c, dtype=torch.float64) for c in (c_skip, c_out, c_in))
        x = x_in.double() / c_in
        return (gaussian(x, sigma) - c_skip * x) / c_out

    return net


def sigma_grid(process) -> torch.Tensor:
    low, high = process.sigma_range()
    low, high = max(low, 0.002), min(high, 80.0)  # unbounded processes: EDM's range
    return torch.logspace(math.log10(low), math.log10(high), 13, dtype=torch.float64)


def assert_matches_gaussian(wrapped, gaussian, sigmas, rtol=1e-5):
    g = torch.Generator().manual_seed(1)
    x0 = gaussian.sample(len(sigmas), generator=g).float()
    x = x0 + sigmas.reshape(-1, 1, 1).float() * torch.randn(x0.shape, generator=g)
    got = wrapped(x, sigmas)
    want = gaussian(x.double(), sigmas).float()
    assert got.dtype == torch.float32
    err = (got - want).flatten(1).norm(dim=1) / want.flatten(1).norm(dim=1)
    assert float(err.max()) < rtol, f"max relative error {float(err.max()):.2e} at sigma {float(sigmas[err.argmax()])}"


CASES = [  # (parametrization, process, time_scale): every process, and each parametrization on the ones it is used on
    ("eps", "ddpm", 1.0), ("eps", "vp", 999.0), ("eps", "ve", 1.0), ("eps", "edm", 1.0), ("eps", "rectified_flow", 1.0),
    ("x0", "ddpm", 1.0), ("x0", "vp", 1.0), ("x0", "edm", 1.0), ("x0", "rectified_flow", 1000.0),
    ("v", "ddpm", 1.0), ("v", "vp", 1.0), ("v", "ve", 1.0),
    ("flow", "rectified_flow", 1000.0), ("flow", "rectified_flow", 1.0),
]


@pytest.mark.parametrize(("parametrization", "process_name", "time_scale"), CASES,
                         ids=[f"{p}-{q}-x{s:g}" for p, q, s in CASES])
def test_wrapped_exact_predictor_is_the_gaussian_denoiser(gaussian, parametrization, process_name, time_scale):
    process = make_process(process_name)
    net = exact_prediction(gaussian, parametrization, process, time_scale)
    wrapped = wrap_prediction(net, parametrization, process, time_scale=time_scale, time_dtype=torch.float64)
    assert wrapped.parametrization == parametrization
    assert_matches_gaussian(wrapped, gaussian, sigma_grid(process))


def test_wrapped_edm_f_is_the_gaussian_denoiser(gaussian):
    wrapped = EDMDenoiser(exact_edm_f(gaussian, 0.7), sigma_data=0.7, time_dtype=torch.float64)
    assert_matches_gaussian(wrapped, gaussian, sigma_grid(make_process("edm")))
    torch.testing.assert_close(edm_noise_conditioning(torch.tensor([math.e ** 4])), torch.tensor([1.0]))


def test_the_classes_and_the_factory_agree(gaussian):
    process = make_process("ddpm")
    for cls, name in [(EpsilonPredictionDenoiser, "eps"), (SamplePredictionDenoiser, "x0"),
                      (VPredictionDenoiser, "v")]:
        assert type(wrap_prediction(exact_prediction(gaussian, name, process), name, process)) is cls
    assert type(wrap_prediction(lambda x, t: x, "flow", "rectified_flow")) is FlowVelocityDenoiser
    assert type(wrap_prediction(lambda x, t: x, "edm", "edm")) is EDMDenoiser


def test_ddpm_nearest_timesteps_are_exact_on_the_table_and_integers_between(gaussian):
    table = make_process("ddpm", num_train_timesteps=200)
    nearest = make_process("ddpm", num_train_timesteps=200, timesteps="nearest")
    told = []

    def net(x_t, time):
        told.append(time.clone())
        return exact_prediction(gaussian, "eps", table)(x_t, time)

    wrapped = EpsilonPredictionDenoiser(net, nearest, time_dtype=torch.float64)
    on_grid = table.sigma(torch.tensor([0.0, 7.0, 50.0, 199.0], dtype=torch.float64))
    assert_matches_gaussian(wrapped, gaussian, on_grid)
    assert told[-1].tolist() == [0.0, 7.0, 50.0, 199.0]
    between = table.sigma(torch.tensor([7.3, 7.7], dtype=torch.float64))
    wrapped(torch.zeros(2, *DATA_SHAPE), between)
    assert told[-1].tolist() == [7.0, 8.0]


def test_sigma_outside_a_discrete_table_is_refused_in_one_sentence():
    wrapped = wrap_prediction(lambda x, t: x, "eps", "ddpm", num_train_timesteps=100)
    low, high = wrapped.sigma_min, wrapped.sigma_max
    assert 0 < low < high < math.inf
    for sigma in (low / 2, high * 1.01):
        with pytest.raises(SigmaOutOfRangeError) as err:
            wrapped(torch.zeros(1, *DATA_SHAPE), sigma)
        assert isinstance(err.value, UserError)
        message = str(err.value)
        assert message.count(". ") == 0 and f"{low:.4g}" in message and f"{high:.4g}" in message
    wrapped(torch.zeros(2, *DATA_SHAPE), torch.tensor([low, high]).float())  # the ends after a float32 round trip


def test_continuous_vp_refuses_sigma_past_t_equal_one():
    wrapped = wrap_prediction(lambda x, t: x, "eps", "vp")
    with pytest.raises(SigmaOutOfRangeError):
        wrapped(torch.zeros(1, *DATA_SHAPE), wrapped.sigma_max * 1.01)


def test_mismatched_parametrization_and_process_or_unknown_names_are_refused():
    with pytest.raises(ConfigError, match="rectified"):
        wrap_prediction(lambda x, t: x, "flow", "ddpm")
    with pytest.raises(ConfigError, match="VE/EDM"):
        wrap_prediction(lambda x, t: x, "edm", "vp")
    with pytest.raises(ConfigError, match="not one of eps, v, x0, edm, flow"):
        wrap_prediction(lambda x, t: x, "score", "ve")
    with pytest.raises(ConfigError, match="not one of ddpm"):
        wrap_prediction(lambda x, t: x, "eps", "subvp")


def test_fp32_boundary_holds_under_a_bf16_network(gaussian):
    process = RectifiedFlow()
    exact = exact_prediction(gaussian, "flow", process)
    wrapped = FlowVelocityDenoiser(lambda x_t, t: exact(x_t, t).bfloat16(), time_dtype=torch.float64)
    sigmas = sigma_grid(process)
    x = gaussian.sample(len(sigmas), generator=torch.Generator().manual_seed(2)).float()
    out = wrapped(x, sigmas)
    assert out.dtype == torch.float32  # the conversion ran in fp32 on the bf16 output
    want = gaussian(x.double(), sigmas).float()
    assert float(((out - want).flatten(1).norm(dim=1) / want.flatten(1).norm(dim=1)).max()) < 2e-2  # bf16's 3 digits


def test_discrete_table_from_ddpm_is_the_ddpm_schedule_shifted_by_one():
    from diffuse_feat.process import DDPM

    ddpm = DDPM(num_steps=50, schedule="cosine")
    table = DiscreteSchedule.from_ddpm(ddpm)
    k = torch.arange(50, dtype=torch.float64)
    torch.testing.assert_close(table.sigma(k), ddpm.sigma(k + 1), rtol=1e-12, atol=0)
