import math

import pytest
import torch

from diffuse_feat.per_sample import as_sigma
from diffuse_feat.process import DDPM, OrnsteinUhlenbeck, VarianceExploding, edm_sigma_grid


def test_edm_grid_matches_paper_ten_steps():
    # Li et al. list the 10-step EDM schedule (sigma_min 0.002, sigma_max 80, rho 7)
    expected = [80.0, 42.415, 21.109, 9.723, 4.066, 1.502, 0.470, 0.117, 0.0204, 0.002]
    grid = edm_sigma_grid(10)
    assert torch.allclose(grid, torch.tensor(expected, dtype=torch.float64), rtol=4e-3)  # paper: 3 digits
    assert edm_sigma_grid(5, append_zero=True)[-1] == 0


@pytest.mark.parametrize("process", [VarianceExploding(), OrnsteinUhlenbeck(), DDPM(), DDPM(schedule="cosine")])
def test_t_sigma_roundtrip(process):
    t_max = 900.0 if isinstance(process, DDPM) else 5.0
    t = torch.linspace(0.01 * t_max, t_max, 50, dtype=torch.float64)
    assert torch.allclose(process.t_of_sigma(process.sigma(t)), t, rtol=1e-6, atol=1e-6)
    sig = process.sigma(t)
    assert bool((sig[1:] > sig[:-1]).all()), "sigma(t) must increase"


def test_ou_convention_matches_biroli():
    # x(t) = a e^{-t} + sqrt(1 - e^{-2t}) z  <=>  x / s = a + sigma z with s = e^{-t}, sigma = sqrt(e^{2t} - 1)
    ou = OrnsteinUhlenbeck()
    t = torch.tensor(0.7, dtype=torch.float64)
    s, sig = ou.scale(t), ou.sigma(t)
    assert torch.isclose(s, torch.exp(-t))
    assert torch.isclose((s * sig) ** 2, 1 - torch.exp(-2 * t))
    assert torch.isclose(ou.delta(t), 1 - torch.exp(-2 * t))


def test_ddpm_alpha_bar_is_product_of_alphas():
    p = DDPM(num_steps=1000)
    alpha_bar = torch.cumprod(1 - p.betas, 0)
    assert torch.allclose(p.alpha_bar(torch.arange(1, 1001)), alpha_bar, rtol=1e-10)
    # horizon of Biroli et al.'s schedule: T = -1/2 log alpha_bar(1000) ~ 5.05
    assert abs(-0.5 * math.log(float(alpha_bar[-1])) - 5.06) < 0.02
    # sigma-space: x_t = sqrt(ab) x0 + sqrt(1-ab) z  => s = sqrt(ab), sigma = sqrt((1-ab)/ab)
    k = torch.tensor(300.0, dtype=torch.float64)
    ab = p.alpha_bar(k)
    assert torch.isclose(p.scale(k), ab.sqrt()) and torch.isclose(p.sigma(k), ((1 - ab) / ab).sqrt())


def test_sigma_space_roundtrip_and_add_noise_statistics():
    p = OrnsteinUhlenbeck()
    x0 = torch.full((20000, 3), 2.0)
    t = 0.5
    xt = p.add_noise(x0, t, generator=torch.Generator().manual_seed(0))
    # mean a e^{-t}, variance 1 - e^{-2t}
    assert abs(xt.mean().item() - 2 * math.exp(-t)) < 0.02
    assert abs(xt.var().item() - (1 - math.exp(-2 * t))) < 0.02
    x_sigma, sigma = p.to_sigma_space(xt, t)
    back, t_back = p.from_sigma_space(x_sigma, sigma)
    assert torch.allclose(back, xt, atol=1e-6) and abs(float(t_back) - t) < 1e-9


def test_as_sigma_rejects_negative_and_wrong_length():
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        as_sigma(-0.1, 3)
    with pytest.raises(ValueError, match="one per sample"):
        as_sigma(torch.ones(2), 3)
    assert as_sigma(0.5, 4).shape == (4,)
