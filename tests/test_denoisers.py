"""Exact references against closed forms and brute force."""

import math

import pytest
import torch

from diffuse_feat.denoisers import EmpiricalDenoiser, GaussianDenoiser, GaussianMixtureDenoiser, score_from_denoiser
from tests.conftest import random_covariance


def _self_normalised_posterior_mean(prior_samples, x, sigma):
    """Monte Carlo E[x0 | x] = E_prior[x0 N(x; x0, s^2)] / E_prior[N(x; x0, s^2)], independent of any formula."""
    logw = -((x[None, :] - prior_samples) ** 2).sum(1) / (2 * sigma**2)
    w = torch.softmax(logw, 0)
    mean = (w[:, None] * prior_samples).sum(0)
    ess = 1.0 / (w**2).sum()
    return mean, ess


def test_gaussian_denoiser_is_bayes_posterior_mean_monte_carlo():
    d, sigma = 3, 0.7
    cov = random_covariance(d, seed=1) + 0.1 * torch.eye(d, dtype=torch.float64)
    mean = torch.tensor([0.5, -1.0, 0.2], dtype=torch.float64)
    den = GaussianDenoiser.from_covariance(mean, cov, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    prior = mean + torch.randn(400_000, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    for x in [mean + 0.3, torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)]:
        mc, ess = _self_normalised_posterior_mean(prior, x, sigma)
        exact = den(x[None], sigma)[0]
        post_sd = torch.linalg.eigvalsh(cov - cov @ torch.linalg.solve(cov + sigma**2 * torch.eye(d), cov)).max().sqrt()
        assert ess > 1000
        assert torch.allclose(mc, exact, atol=float(5 * post_sd / ess.sqrt()) + 1e-3)


def test_gaussian_denoiser_from_data_uses_one_over_n_moments_and_is_affine():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(50, 2, 3, generator=g, dtype=torch.float64)
    den = GaussianDenoiser.from_data(data, dtype=torch.float64)
    flat = data.reshape(50, 6)
    cov = (flat - flat.mean(0)).T @ (flat - flat.mean(0)) / 50
    assert torch.allclose(den.covariance, cov, atol=1e-12)
    w, b = den.affine(0.8)
    x = torch.randn(4, 2, 3, generator=g, dtype=torch.float64)
    assert torch.allclose(den(x, 0.8).reshape(4, 6), x.reshape(4, 6) @ w.T + b, atol=1e-12)
    # Wiener filter in matrix form: W = Sigma (Sigma + s^2 I)^-1
    assert torch.allclose(w, cov @ torch.linalg.inv(cov + 0.64 * torch.eye(6, dtype=torch.float64)), atol=1e-10)


def test_gaussian_log_density_gradient_is_its_score():
    cov = random_covariance(4, seed=3) + 0.05 * torch.eye(4, dtype=torch.float64)
    den = GaussianDenoiser.from_covariance(torch.zeros(4, dtype=torch.float64), cov, dtype=torch.float64)
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(den.log_density(x, 0.3).sum(), x)
    assert torch.allclose(grad, score_from_denoiser(den, x.detach(), 0.3), atol=1e-9)


def test_empirical_denoiser_with_one_point_returns_it_at_every_sigma():
    y = torch.randn(1, 1, 8, 8)
    den = EmpiricalDenoiser(y)
    x = torch.randn(6, 1, 8, 8) * 5
    for sigma in [0.0, 0.002, 0.5, 80.0]:
        assert torch.allclose(den(x, sigma), y.expand(6, -1, -1, -1), atol=1e-6)


def test_empirical_denoiser_matches_brute_force_and_is_chunk_invariant():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(37, 5, generator=g)
    x = torch.randn(9, 5, generator=g)
    sigma = torch.linspace(0.1, 3.0, 9)
    t64, x64, s64 = train.double(), x.double(), sigma.double()
    logits = -torch.cdist(x64, t64).square() / (2 * s64[:, None] ** 2)
    brute = torch.softmax(logits, 1) @ t64
    for chunk in [1, 7, 37, 1000]:
        den = EmpiricalDenoiser(train, chunk_size=chunk)
        assert torch.allclose(den(x, sigma).double(), brute, atol=1e-6)
        assert torch.allclose(den.posterior_weights(x, sigma), torch.softmax(logits, 1), atol=1e-10)


def test_empirical_score_equals_autograd_of_mixture_log_density():
    g = torch.Generator().manual_seed(1)
    train = torch.randn(20, 6, generator=g)
    den = EmpiricalDenoiser(train, chunk_size=8)
    for sigma in [0.05, 0.4, 2.0]:
        x = (train[:5] + sigma * torch.randn(5, 6, generator=g)).double().requires_grad_(True)
        (grad,) = torch.autograd.grad(den.log_density(x, sigma).sum(), x)
        score = score_from_denoiser(den, x.detach().float(), sigma).double()
        assert torch.allclose(grad, score, rtol=1e-4, atol=1e-4 / sigma)
    # log density against a direct evaluation of (1/n) sum_i N(x; y_i, s^2 I)
    x = torch.randn(3, 6, generator=g)
    s = 0.7
    direct = torch.logsumexp(-torch.cdist(x.double(), train.double()).square() / (2 * s**2), 1) - math.log(20) \
        - 3 * math.log(2 * math.pi * s**2)
    assert torch.allclose(den.log_density(x, s), direct, atol=1e-9)


def test_empirical_denoiser_weights_exact_at_smallest_sigma_in_high_dimension():
    # Three training points within ~sigma of each other at |y|^2 ~ 260 (d = 784): the weights are
    # non-trivial and the expansion x.y - |y|^2/2 cancels to ~1e-5, which float32 cannot resolve
    # at sigma = 0.002 (weights off by ~1). float64 must match a direct difference-based evaluation.
    g = torch.Generator().manual_seed(2)
    d = 784
    base = torch.rand(d, generator=g) * 2 - 1
    u = torch.randn(d, generator=g)
    u /= u.norm()
    train = torch.stack([base, base + 0.004 * u, base - 0.003 * u, torch.rand(d, generator=g) * 2 - 1])
    x = train[0] + 0.001 * u + 0.002 * torch.randn(8, d, generator=g)
    diff = x.double()[:, None, :] - train.double()[None]
    weights = torch.softmax(-diff.square().sum(-1) / (2 * 0.002**2), 1)
    assert weights[:, :3].max(1).values.min() < 0.95  # the test case really mixes points
    den = EmpiricalDenoiser(train, chunk_size=2)
    assert torch.allclose(den.posterior_weights(x, 0.002), weights, atol=1e-6)
    assert torch.allclose(den(x, 0.002).double(), weights @ train.double(), atol=1e-6)
    assert torch.isfinite(den.log_density(x, 0.002)).all()


def test_mixture_denoiser_matches_autograd_score_and_limits():
    means = torch.tensor([[2.0, 0.0], [-1.0, 1.0], [0.0, -2.0]])
    den = GaussianMixtureDenoiser(means, torch.tensor([0.5, 0.3, 0.8]), torch.tensor([0.2, 0.5, 0.3]))
    x = torch.randn(7, 2, dtype=torch.float64, requires_grad=True)
    for sigma in [0.1, 1.0, 5.0]:
        (grad,) = torch.autograd.grad(den.log_density(x, sigma).sum(), x)
        assert torch.allclose(grad, score_from_denoiser(den, x.detach(), sigma), atol=1e-8)
    # one component of zero width: the denoiser returns its mean at any sigma
    single = GaussianMixtureDenoiser(means[:1], 0.0)
    assert torch.allclose(single(torch.randn(4, 2), 0.3), means[:1].expand(4, 2), atol=1e-6)


def test_wrong_shape_is_a_clear_error():
    den = GaussianDenoiser.from_data(torch.randn(10, 1, 4, 4))
    with pytest.raises(ValueError, match=r"expects inputs of shape \[batch, 1, 4, 4\]"):
        den(torch.randn(2, 3, 3), 1.0)
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        den(torch.randn(2, 1, 4, 4), -1.0)


def test_nearest_neighbors_match_brute_force_across_chunks():
    from diffuse_feat.diagnostics.neighbors import nearest_neighbors

    g = torch.Generator().manual_seed(5)
    train, queries = torch.randn(103, 2, 3, generator=g), torch.randn(11, 2, 3, generator=g)
    dist = torch.cdist(queries.reshape(11, -1).double(), train.reshape(103, -1).double())
    ref_d, ref_i = torch.topk(dist, 3, dim=1, largest=False)
    for chunk in [1, 10, 1000]:
        d, i = nearest_neighbors(queries, train, k=3, chunk_size=chunk)
        assert torch.equal(i, ref_i) and torch.allclose(d, ref_d, atol=1e-10)
