import pytest
import torch

from diffuse_feat.denoisers import EmpiricalDenoiser, GaussianDenoiser
from diffuse_feat.diagnostics.gaussian_distance import normalized_error
from diffuse_feat.process import edm_sigma_grid
from diffuse_feat.samplers import (
    SeededNoise,
    forward_backward,
    generate,
    sample_euler,
    sample_heun,
    sample_stochastic,
)


def _low_rank_gaussian(d=256, rank=16, offset=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    lam = torch.zeros(d, dtype=torch.float64)
    lam[:rank] = torch.linspace(4.0, 0.2, rank, dtype=torch.float64)
    return GaussianDenoiser(torch.full((d,), offset, dtype=torch.float64), lam, basis, dtype=torch.float64)


def _nmse(a, b):
    """The project's one NMSE (Li et al. eq. 53, a ratio of norms): mean ``||a - b|| / ||b||``."""
    return normalized_error(a, b).mean().item()


def test_heun_40_steps_matches_closed_form_probability_flow():
    den = _low_rank_gaussian()
    x_t = 80.0 * SeededNoise(range(64)).randn((256,), dtype=torch.float64)
    exact = den.pf_ode_solution(x_t, 80.0, 0.0)
    heun = sample_heun(den, x_t, edm_sigma_grid(40, append_zero=True))
    euler10 = sample_euler(den, x_t, edm_sigma_grid(10, append_zero=True))
    assert _nmse(heun, exact) < 0.01  # Li et al. (notes §8 A3): 0.005 on this toy
    assert _nmse(euler10, exact) > 0.01  # a coarse first-order solver is visibly off: the check can fail


def test_closed_form_is_consistent_at_intermediate_sigma():
    den = _low_rank_gaussian(d=32, rank=8)
    x_t = 10.0 * torch.randn(8, 32, dtype=torch.float64)
    mid = den.pf_ode_solution(x_t, 10.0, 1.0)
    assert torch.allclose(den.pf_ode_solution(mid, 1.0, 0.0), den.pf_ode_solution(x_t, 10.0, 0.0), atol=1e-10)
    fine = sample_heun(den, x_t, edm_sigma_grid(200, sigma_min=1.0, sigma_max=10.0))
    assert _nmse(fine, mid) < 1e-4  # 200 Heun steps over one decade: 1e-5


def test_stochastic_sampler_draws_from_the_gaussian():
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=torch.float64)
    den = GaussianDenoiser.from_covariance(torch.tensor([1.0, -2.0], dtype=torch.float64), cov)
    g = torch.Generator().manual_seed(0)
    x = 80.0 * torch.randn(3000, 2, generator=g)
    # ancestral sampling is first order: 500 steps leave ~2% under-dispersion (60 steps: ~15%)
    out = sample_stochastic(den, x, edm_sigma_grid(500, append_zero=True), noise=g)
    assert torch.allclose(out.mean(0).double(), den.mean.double(), atol=0.06)
    assert torch.allclose(torch.cov(out.T.double()), cov, atol=0.08)


@pytest.mark.parametrize("sampler", ["heun", "stochastic"])
def test_sample_i_is_the_same_whatever_the_batch(sampler):
    den = GaussianDenoiser.from_data(torch.randn(30, 1, 2, 2))
    big = generate(den, (1, 2, 2), list(range(10)), num_steps=8, sampler=sampler)
    small = generate(den, (1, 2, 2), [3, 4], num_steps=8, sampler=sampler)
    assert torch.allclose(big[3:5], small, atol=1e-6)


def test_forward_backward_limits_and_hook():
    pts = torch.randn(1, 5)
    den = EmpiricalDenoiser(pts)
    x0 = torch.randn(6, 5)
    assert torch.equal(forward_backward(den, x0, 0.0), x0)
    seen = []
    out = forward_backward(den, x0, 3.0, num_steps=10, noise=SeededNoise(range(6)),
                           hook=lambda step: seen.append((step["i"], step["sigma"], step["denoised"].shape)))
    assert torch.allclose(out, pts.expand(6, 5), atol=1e-5)  # one training point: every trajectory ends on it
    assert [i for i, _, _ in seen] == list(range(10))
    sigmas = [s for _, s, _ in seen]
    assert sigmas[0] == pytest.approx(3.0) and all(a > b for a, b in zip(sigmas, sigmas[1:], strict=False))


def test_sampler_rejects_bad_grid_and_negative_sigma():
    den = GaussianDenoiser.from_data(torch.randn(10, 2))
    with pytest.raises(ValueError, match="non-increasing"):
        sample_heun(den, torch.zeros(2, 2), torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        forward_backward(den, torch.zeros(2, 2), -1.0)


def test_every_sampler_has_one_signature_and_hands_its_hook_one_dict():
    """Euler, Heun, the ancestral sampler and the OU SDE/ODE: ``(denoiser, x, grid, *, noise=None, hook=None)``, each
    hook call a dict with ``i``, ``x``, ``denoised`` and the grid's time (``sigma``, or ``t`` for OU); Heun's also holds
    its corrector evaluation. The registries are lookups of exactly these."""
    import inspect

    from diffuse_feat.ou import OU_SAMPLERS, ou_time_grid
    from diffuse_feat.samplers import SAMPLERS

    assert set(SAMPLERS) == {"euler", "heun", "stochastic"} and set(OU_SAMPLERS) == {"sde", "ode"}
    den = GaussianDenoiser.from_data(torch.randn(20, 3))
    x = torch.randn(4, 3)
    for name, sampler in [*SAMPLERS.items(), *(("ou_" + k, v) for k, v in OU_SAMPLERS.items())]:
        params = inspect.signature(sampler).parameters
        assert [(p.name, p.kind, p.default) for p in params.values()] == [
            ("denoiser", inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.empty),
            ("x", inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.empty),
            ("grid", inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.empty),
            ("noise", inspect.Parameter.KEYWORD_ONLY, None),
            ("hook", inspect.Parameter.KEYWORD_ONLY, None)], name
        time = "t" if name.startswith("ou_") else "sigma"
        grid = ou_time_grid(2.0, 0.01, 0.5, 1.0, 3) if time == "t" else edm_sigma_grid(4, append_zero=True)
        steps = []
        sampler(den, x, grid, noise=torch.Generator().manual_seed(0), hook=steps.append)
        assert [s["i"] for s in steps] == list(range(len(steps))) and len(steps) >= len(grid) - 1, name
        for s in steps:
            assert {"i", "x", time, "denoised"} <= set(s) and s["denoised"].shape == x.shape, name
            if time == "sigma":  # the very evaluation the step used
                assert torch.allclose(s["denoised"], den(s["x"], torch.full((4,), s["sigma"])), atol=1e-6)
        corrected = [s for s in steps if "corrector" in s]
        if name == "heun":  # every step but the last (onto sigma = 0) has a second, corrector evaluation
            assert len(corrected) == len(steps) - 1
            for s in corrected:
                c = s["corrector"]
                assert torch.allclose(c["denoised"], den(c["x"], torch.full((4,), c["sigma"])), atol=1e-6)
        else:
            assert not corrected, name
