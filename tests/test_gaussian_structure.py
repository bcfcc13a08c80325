"""Hidden Gaussian structure diagnostics (Li, Dai, Qu 2024) against closed forms and brute force."""

from __future__ import annotations

import math

import pytest
import torch

from diffuse_feat.denoisers import EmpiricalDenoiser, GaussianDenoiser
from diffuse_feat.diagnostics.gaussian_distance import (
    denoiser_distance,
    gaussian_weights,
    generation_similarity,
    linear_distillation,
    probe_noise,
    relative_weight_error,
)
from diffuse_feat.diagnostics.jacobian import (
    denoiser_jacobian,
    gaussian_jacobian_distance,
    gaussian_jacobian_spectrum,
    jacobian_top_singular,
    principal_alignment,
    subspace_overlap,
)
from diffuse_feat.diagnostics.linearity import affine_offset_norm_ratio_limit, linearity_score, linearity_sigma_grid
from diffuse_feat.diagnostics.memorization import memorization_scores
from diffuse_feat.samplers import generate
from tests.conftest import random_covariance

SIGMAS = linearity_sigma_grid(40)


def decaying_gaussian(d: int = 24, mean_scale: float = 0.0, dtype=torch.float32, seed: int = 0) -> GaussianDenoiser:
    """N(mu, U diag(lambda) U^T) with lambda_i = 4 * 0.7^i and random orthogonal U."""
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64)).Q
    lam = 4.0 * 0.7 ** torch.arange(d, dtype=torch.float64)
    mean = mean_scale * torch.randn(d, generator=g, dtype=torch.float64)
    return GaussianDenoiser(mean, lam, u, (d,), dtype=dtype)


def _sample(den: GaussianDenoiser, n: int, seed: int) -> torch.Tensor:
    return den.sample(n, generator=torch.Generator().manual_seed(seed)).float()


# ----- linearity ------------------------------------------------------------------------------------


def test_edm_grid_of_ten_steps_is_the_papers_distillation_grid():
    paper = [80, 42.415, 21.109, 9.723, 4.066, 1.502, 0.470, 0.117, 0.0204, 0.002]
    assert torch.allclose(linearity_sigma_grid(10), torch.tensor(paper, dtype=torch.float64), rtol=5e-3)  # 3 digits
    assert SIGMAS.numel() == 40 and SIGMAS[0] == 80 and math.isclose(float(SIGMAS[-1]), 0.002)


def test_gaussian_denoiser_on_zero_mean_data_is_exactly_linear():
    den = decaying_gaussian(mean_scale=0.0, dtype=torch.float64)
    x = _sample(den, 40, seed=1).double()
    out = linearity_score(den, x[:20], x[20:], SIGMAS, alpha_sq=[0.99, 0.75, 0.5])
    assert out["cosine"].shape == (3, 40)
    assert torch.allclose(out["cosine"], torch.ones_like(out["cosine"]), atol=1e-12)
    assert float(out["norm_ratio"].max()) < 1e-12


def test_norm_ratio_of_an_affine_denoiser_is_the_closed_form_offset():
    """D_G(a x1 + b x2) - a D_G(x1) - b D_G(x2) = (1 - a - b)(I - W) mu: the norm-ratio form tends to
    |1 - a - b| at high sigma (not informative there), while the cosine form stays near 1."""
    den = decaying_gaussian(mean_scale=1.0, dtype=torch.float64)
    x = _sample(den, 60, seed=2).double()
    x1, x2 = x[:30], x[30:]
    sigmas = torch.tensor([1e4, 3.0, 0.3])
    for a_sq in (0.5, 0.8):
        out = linearity_score(den, x1, x2, sigmas, alpha_sq=a_sq, seed=5)
        n1, n2 = probe_noise((2, *x1.shape), 5, dtype=x1.dtype)
        a, b = math.sqrt(a_sq), math.sqrt(1 - a_sq)
        for j, s in enumerate(sigmas.tolist()):
            w, bias = den.affine(s)
            mix = den(a * (x1 + s * n1) + b * (x2 + s * n2), s)
            offset = (1 - a - b) * (torch.eye(w.shape[0], dtype=w.dtype) - w) @ den.mean
            expected = (offset.norm() / mix.norm(dim=1)).mean()
            assert math.isclose(float(out["norm_ratio"][j]), float(expected), rel_tol=1e-9)
        assert math.isclose(float(out["norm_ratio"][0]), affine_offset_norm_ratio_limit(a_sq), rel_tol=1e-3)
        assert float(out["cosine"].min()) > 0.98


def test_memorizing_denoiser_is_less_linear_at_intermediate_sigma():
    gauss = decaying_gaussian(mean_scale=0.0)
    train, held = _sample(gauss, 20, seed=3), _sample(gauss, 40, seed=4)
    empirical = EmpiricalDenoiser(train)
    sig = torch.tensor([0.5, 1.0, 2.0])
    assert float(linearity_score(empirical, held[:20], held[20:], sig)["cosine"].max()) < 0.97
    assert float(linearity_score(gauss, held[:20], held[20:], sig)["cosine"].min()) > 0.9999


def test_precomputed_outputs_give_the_same_linearity_score():
    den = EmpiricalDenoiser(_sample(decaying_gaussian(), 30, seed=6))
    x = _sample(decaying_gaussian(), 20, seed=7)
    n1, n2 = torch.randn(2, 10, 24, generator=torch.Generator().manual_seed(0))
    sig = torch.tensor([2.0, 0.5])
    direct = linearity_score(den, x[:10], x[10:], sig, noise=(n1, n2))
    outs = [torch.stack([den(xi + s * ni, s) for s in sig.tolist()]) for xi, ni in ((x[:10], n1), (x[10:], n2))]
    reused = linearity_score(den, x[:10], x[10:], sig, noise=(n1, n2), outputs=(outs[0], outs[1]))
    assert torch.allclose(direct["cosine"], reused["cosine"]) and torch.allclose(direct["norm_ratio"],
                                                                                 reused["norm_ratio"])


# ----- distances ------------------------------------------------------------------------------------


def test_distance_of_the_gaussian_denoiser_to_itself_is_zero():
    den = decaying_gaussian(mean_scale=0.5)
    out = denoiser_distance(den, den, _sample(den, 16, seed=8), SIGMAS)
    assert float(out["rmse"].abs().max()) == 0.0 and float(out["nmse"].abs().max()) == 0.0


def test_distance_between_gaussians_with_different_means_is_the_closed_form():
    """Same covariance, means mu1, mu2: D1 - D2 = (I - W)(mu1 - mu2) at every x."""
    cov = random_covariance(6, seed=2)
    mu1, mu2 = torch.zeros(6, dtype=torch.float64), torch.linspace(-1, 1, 6, dtype=torch.float64)
    d1 = GaussianDenoiser.from_covariance(mu1, cov, dtype=torch.float64)
    d2 = GaussianDenoiser.from_covariance(mu2, cov, dtype=torch.float64)
    clean = torch.randn(9, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sig = [0.05, 0.7, 5.0]
    out = denoiser_distance(d1, d2, clean, sig, seed=3)
    noise = probe_noise(clean.shape, 3, dtype=clean.dtype)
    weights, _ = gaussian_weights(d1, sig)
    for j, s in enumerate(sig):
        gap = (torch.eye(6, dtype=torch.float64) - weights[j]) @ (mu1 - mu2)
        assert math.isclose(float(out["rmse"][j]), float(gap.norm() / math.sqrt(6)), rel_tol=1e-9)
        ref = d2(clean + s * noise, s)
        assert math.isclose(float(out["nmse"][j]), float((gap.norm() / ref.norm(dim=1)).mean()), rel_tol=1e-9)


# ----- linear distillation ----------------------------------------------------------------------------


def test_linear_distillation_of_the_gaussian_denoiser_returns_its_own_weights():
    den = decaying_gaussian(mean_scale=0.7, dtype=torch.float64)
    clean = _sample(den, 50, seed=9).double()
    sig = linearity_sigma_grid(10)
    fit = linear_distillation(den, clean, sig)
    w_g, b_g = gaussian_weights(den, sig)
    assert float(relative_weight_error(fit["weight"], w_g).max()) < 1e-8
    assert float((fit["bias"] - b_g).abs().max()) < 1e-8
    assert float(fit["residual_rmse"].max()) < 1e-6
    # the same in float32 (the dtype of a learned model) to float32 accuracy
    den32 = decaying_gaussian(mean_scale=0.7)
    fit32 = linear_distillation(den32, clean.float(), sig)
    assert float(relative_weight_error(fit32["weight"], gaussian_weights(den32, sig)[0]).max()) < 1e-3


def test_linear_distillation_is_the_least_squares_solution():
    """Brute force: lstsq of [x, 1] -> D(x) on the very samples the distillation draws."""
    train = _sample(decaying_gaussian(d=5), 7, seed=10)
    den = EmpiricalDenoiser(train)
    clean = _sample(decaying_gaussian(d=5), 6, seed=11)
    fit = linear_distillation(den, clean, [0.8], draws=5, seed=4)
    x = clean.repeat(5, 1) + 0.8 * probe_noise((30, 5), 4)
    design = torch.cat([x, torch.ones(30, 1)], 1).double()
    target = den(x, 0.8).double()
    sol = torch.linalg.lstsq(design, target).solution  # [6, 5]
    assert torch.allclose(fit["weight"][0], sol[:5].T, atol=1e-6)
    assert torch.allclose(fit["bias"][0], sol[5], atol=1e-6)
    resid = (design @ sol - target).square().sum(1).mean() / 5
    assert math.isclose(float(fit["residual_rmse"][0]), float(resid.sqrt()), rel_tol=1e-4)


# ----- Jacobian -----------------------------------------------------------------------------------------


def test_full_jacobian_of_the_gaussian_denoiser_is_its_wiener_matrix():
    den = decaying_gaussian(d=16, mean_scale=0.5)
    x = _sample(den, 3, seed=12)
    for s in (0.05, 1.0, 20.0):
        u, lam = den.eigenvectors, den.eigenvalues
        expected = (u * (lam / (lam + s**2))) @ u.T  # U diag(lambda / (lambda + sigma^2)) U^T
        for point in x:
            assert torch.allclose(denoiser_jacobian(den, point, s), expected, atol=1e-6)


def test_full_jacobian_matches_finite_differences_on_a_nonlinear_denoiser():
    den = EmpiricalDenoiser(_sample(decaying_gaussian(d=6), 5, seed=13).double())
    x, s, eps = torch.tensor([0.3, -0.2, 0.1, 0.5, 0.0, -0.4]), 0.8, 1e-3
    jac = denoiser_jacobian(den, x, s)
    columns = [(den((x + eps * e)[None], s) - den((x - eps * e)[None], s))[0] / (2 * eps) for e in torch.eye(6)]
    assert torch.allclose(jac, torch.stack(columns, 1), atol=1e-3)


@pytest.mark.parametrize("sigma", [0.3, 1.0, 3.0])
def test_randomized_top_k_recovers_the_gaussian_spectrum(sigma):
    den = decaying_gaussian(d=64, mean_scale=0.5)
    x = _sample(den, 1, seed=14)[0]
    u, s, v = jacobian_top_singular(den, x, sigma, k=5, method="randomized")
    exact = gaussian_jacobian_spectrum(den, sigma)[:5].float()
    assert torch.allclose(s, exact, rtol=1e-3)
    # the singular vectors are the principal components (J_G is symmetric)
    assert float(principal_alignment(u, den.eigenvectors[:, :5]).diagonal().min()) > 0.999
    assert float(principal_alignment(v, den.eigenvectors[:, :5]).diagonal().min()) > 0.999
    full_u, full_s, _ = jacobian_top_singular(den, x, sigma, k=5, method="full")
    assert torch.allclose(full_s, exact, rtol=1e-5)


def test_randomized_top_k_on_a_nonsymmetric_nonlinear_jacobian():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(40, 64), torch.nn.Tanh(), torch.nn.Linear(64, 40))

    def den(x, sigma):
        return net(x) * 2.0

    x = torch.randn(40)
    exact = torch.linalg.svdvals(denoiser_jacobian(den, x, 1.0))
    _, s, _ = jacobian_top_singular(den, x, 1.0, k=4, oversample=10, num_iters=6, method="randomized")
    assert torch.allclose(s, exact[:4], rtol=1e-3)


def _linear_denoiser(singular_values: torch.Tensor, seed: int = 0):
    """``D(x) = A x`` with ``A = U diag(s) V^T`` for random orthogonal ``U, V``: its Jacobian is ``A`` everywhere."""
    d = singular_values.numel()
    g = torch.Generator().manual_seed(seed)
    u, v = (torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64)).Q for _ in range(2))
    a = ((u * singular_values) @ v.T).float()
    return lambda x, sigma: x @ a.T


@pytest.mark.parametrize("tol", [1e-2, None])
def test_block_krylov_defaults_resolve_a_flat_top_spectrum(tol):
    # s_i = 0.98^i: neighbouring values 2% apart, the flat top of a learned denoiser's Jacobian at d = 784
    # (benchmarks/jacobian_topk.py); subspace iteration with as many products (~100) is off by 2-5%
    s = 0.98 ** torch.arange(784, dtype=torch.float64)
    den = _linear_denoiser(s)
    _, top, _ = jacobian_top_singular(den, torch.randn(784), 1.0, k=5, tol=tol, method="randomized")
    rel = ((top.double() - s[:5]) / s[:5]).abs().max()
    assert float(rel) < (1e-2 if tol else 2e-3)


def test_randomized_top_k_of_a_low_rank_jacobian_is_exact_and_orthonormal():
    # rank 3 < k = 5: the Krylov space runs out of directions and is extended by random ones
    s = torch.cat([torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64), torch.zeros(97, dtype=torch.float64)])
    u, top, v = jacobian_top_singular(_linear_denoiser(s), torch.randn(100), 1.0, k=5, method="randomized")
    assert torch.allclose(top, torch.tensor([3.0, 2.0, 1.0, 0.0, 0.0]), atol=1e-5)
    assert torch.allclose(u.T @ u, torch.eye(5), atol=1e-5)
    assert torch.allclose(v[:, :3].T @ v[:, :3], torch.eye(3), atol=1e-5)


class _DropoutDenoiser(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.Dropout(0.5), torch.nn.Linear(16, 12))

    def forward(self, x, sigma):
        return self.net(x)


def test_jacobians_leave_the_module_as_they_found_it():
    torch.manual_seed(0)
    den = _DropoutDenoiser().train()
    den.net[0].bias.requires_grad_(False)  # frozen by the user: must stay frozen
    full = denoiser_jacobian(den, torch.randn(12), 1.0)
    _, s, _ = jacobian_top_singular(den, torch.randn(12), 1.0, k=3, method="randomized")
    # computed in eval mode (dropout off): the linear map's J is the same at both points
    assert torch.allclose(s, torch.linalg.svdvals(full)[:3], rtol=1e-4)
    assert den.training
    assert [p.requires_grad for p in den.parameters()] == [True, False, True, True]


def test_jacobian_distance_to_gaussian_is_zero_for_itself_and_the_frobenius_ratio_otherwise():
    den = decaying_gaussian(d=20, mean_scale=0.3)
    x = _sample(den, 1, seed=15)[0]
    assert float(gaussian_jacobian_distance(den, x, 1.0, den)) < 1e-6
    other = decaying_gaussian(d=20, seed=3)  # another covariance: J is constant, the ratio is exact
    j_g, j_o = den.jacobian(1.0).double(), other.jacobian(1.0).double()
    exact = float((j_o - j_g).norm() / j_g.norm())
    estimate = float(gaussian_jacobian_distance(other, x, 1.0, den, num_probes=4000))
    assert math.isclose(estimate, exact, rel_tol=0.03)


def test_alignment_and_subspace_overlap():
    u = torch.linalg.qr(torch.randn(30, 30, generator=torch.Generator().manual_seed(0))).Q
    assert torch.allclose(principal_alignment(u[:, :3], u[:, :3]), torch.eye(3, dtype=torch.float64), atol=1e-6)
    assert math.isclose(float(subspace_overlap(u[:, :4], u[:, :4])), 1.0, rel_tol=1e-9)
    mixed = u[:, :4] @ torch.linalg.qr(torch.randn(4, 4)).Q  # same span, other basis
    assert math.isclose(float(subspace_overlap(mixed, u[:, :4])), 1.0, rel_tol=1e-6)
    assert float(subspace_overlap(u[:, :4], u[:, 4:8])) < 1e-10


# ----- memorization and generation -----------------------------------------------------------------


def test_memorization_scores_match_brute_force():
    train = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))
    samples = torch.cat([train[:3] + 0.01, torch.randn(5, 5, generator=torch.Generator().manual_seed(1))])
    out = memorization_scores(samples, train)
    d = torch.cdist(samples.double(), train.double())
    top2 = d.topk(2, largest=False).values
    ratio = top2[:, 0] / top2[:, 1]
    assert torch.allclose(out["distance_ratio"], ratio)
    assert math.isclose(float(out["memorized_fraction"]), float((ratio < 1 / 3).double().mean()))
    assert math.isclose(float(out["relative_nn_distance"]), float((top2[:, 0] / samples.double().norm(dim=1)).mean()))
    assert float(out["memorized_fraction"]) >= 3 / 8


def test_empirical_denoiser_samples_are_memorized_and_gaussian_samples_are_not():
    gauss_data = decaying_gaussian(d=32, mean_scale=0.3)
    train = _sample(gauss_data, 40, seed=16)
    empirical, gaussian = EmpiricalDenoiser(train), GaussianDenoiser.from_data(train)
    seeds = range(100, 164)
    memorized = memorization_scores(generate(empirical, (32,), seeds), train)
    assert float(memorized["memorized_fraction"]) == 1.0
    assert float(memorized["relative_nn_distance"]) < 1e-2
    novel = memorization_scores(generate(gaussian, (32,), seeds), train)
    assert float(novel["memorized_fraction"]) == 0.0
    assert float(novel["relative_nn_distance"]) > 0.3


def test_generation_similarity_uses_the_same_noise_and_sampler():
    den = decaying_gaussian(d=8, mean_scale=0.2)
    same = generation_similarity(den, den, (8,), range(6), num_steps=6)
    assert float(same["nmse"]) == 0.0
    other = EmpiricalDenoiser(_sample(den, 10, seed=17))
    diff = generation_similarity(other, den, (8,), range(6), num_steps=6, reference_samples=same["samples"])
    expected = ((diff["samples"] - same["samples"]).norm(dim=1) / same["samples"].norm(dim=1)).mean()
    assert math.isclose(float(diff["nmse"]), float(expected), rel_tol=1e-6) and float(diff["nmse"]) > 0.1
