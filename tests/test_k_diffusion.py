"""k-diffusion, both ways: its denoisers (``DiscreteEpsDDPMDenoiser``, ``OpenAIDenoiser``) as framework denoisers, and
its samplers (Euler, Heun, DPM++(2M)) on framework denoisers, against the project's samplers and, for the Gaussian
denoiser, the closed-form probability-flow ODE solution. CI installs the extra (``.[kdiffusion]``)."""

from __future__ import annotations

import types

import pytest
import torch

k_diffusion = pytest.importorskip("k_diffusion", reason="k-diffusion is not installed: pip install -e '.[kdiffusion]'")
diffusers = pytest.importorskip("diffusers")

from k_diffusion import sampling as k_sampling  # noqa: E402
from k_diffusion.external import DiscreteEpsDDPMDenoiser, OpenAIDenoiser  # noqa: E402

from diffuse_feat.analyze.denoiser_spec import resolve_denoiser  # noqa: E402
from diffuse_feat.data import DigitsDataModule  # noqa: E402
from diffuse_feat.denoisers import GaussianDenoiser, wrap_prediction  # noqa: E402
from diffuse_feat.denoisers.adapters import make_process  # noqa: E402
from diffuse_feat.errors import SigmaError  # noqa: E402
from diffuse_feat.interop.diffusers import from_diffusers  # noqa: E402
from diffuse_feat.interop.k_diffusion import from_k_diffusion  # noqa: E402
from diffuse_feat.process import SigmaOutOfRangeError, edm_sigma_grid  # noqa: E402
from diffuse_feat.samplers import generate, sample_euler, sample_heun  # noqa: E402

from .test_diffusers import save_tiny_ddpm  # noqa: E402
from .test_diffusers_kinds import GuidedDiffusionLike, relative  # noqa: E402


@pytest.fixture(scope="module")
def tiny_ddpm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddpm")
    unet, scheduler = save_tiny_ddpm(folder)
    return folder, unet, scheduler


def k_model(unet, scheduler, quantize=False):
    return DiscreteEpsDDPMDenoiser(lambda x, t: unet(x, t).sample, scheduler.alphas_cumprod, quantize=quantize)


def test_from_diffusers_equals_k_diffusions_eps_wrapper_on_the_table(tiny_ddpm):
    folder, unet, scheduler = tiny_ddpm
    ours, theirs = from_diffusers(folder), k_model(unet, scheduler)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for k in (0, 10, 500, 999):
        sigma = theirs.sigmas[k].expand(2)
        with torch.no_grad():
            assert relative(ours(x, sigma), theirs(x, sigma)) < 3e-7  # float32 on both sides


def test_a_k_diffusion_denoiser_wrapped_is_its_own_output_with_its_table_as_range(tiny_ddpm):
    _, unet, scheduler = tiny_ddpm
    model = k_model(unet, scheduler)
    D = from_k_diffusion(model, data_shape=(1, 8, 8))
    assert (D.sigma_min, D.sigma_max) == (float(model.sigmas[0]), float(model.sigmas[-1]))
    x, sigma = torch.randn(3, 1, 8, 8), torch.tensor([0.05, 1.0, 30.0])
    with torch.no_grad():
        torch.testing.assert_close(D(x, sigma), model(x, sigma), rtol=0, atol=0)
    with pytest.raises(SigmaOutOfRangeError, match="outside the range 0.01 to 157.4 that the k-diffusion "
                                                  "denoiser DiscreteEpsDDPMDenoiser was trained on"):
        D(x, 0.001)
    with pytest.raises(SigmaError, match="finite and >= 0"):
        D(x, torch.tensor([1.0, float("nan"), 1.0]))


def test_a_quantized_model_is_sampled_on_its_own_table(tiny_ddpm):
    _, unet, scheduler = tiny_ddpm
    model = k_model(unet, scheduler, quantize=True)
    D = from_k_diffusion(model)
    seen = []
    generate(D, (1, 8, 8), [0], num_steps=6, hook=lambda step: seen.append(step["sigma"]))
    table = model.sigmas.double()
    assert len(seen) == 6 and all(torch.isclose(table, torch.tensor(s).double(), rtol=1e-6).any() for s in seen)


def test_openai_learned_variance_through_k_diffusion_equals_our_eps_adapter():
    torch.manual_seed(0)
    net = GuidedDiffusionLike(3)
    process = make_process("ddpm")
    alphas_cumprod = process.log_alpha_bar.exp()
    theirs = from_k_diffusion(OpenAIDenoiser(net, types.SimpleNamespace(alphas_cumprod=alphas_cumprod.numpy()),
                                             has_learned_sigmas=True))
    ours = wrap_prediction(net, "eps", process)
    x = torch.randn(2, 3, 8, 8)
    for k in (3, 400, 990):
        sigma = float(torch.sqrt(1 / alphas_cumprod[k] - 1))
        with torch.no_grad():
            assert relative(ours(x, sigma), theirs(x, sigma)) < 1e-5


def test_the_python_spec_recognises_a_k_diffusion_denoiser(tiny_ddpm, tmp_path, monkeypatch):
    folder, _, _ = tiny_ddpm
    (tmp_path / "my_kd.py").write_text(
        "from diffusers import DDPMScheduler, UNet2DModel\n"
        "from k_diffusion.external import DiscreteEpsDDPMDenoiser\n"
        f"unet = UNet2DModel.from_pretrained({str(folder / 'unet')!r})\n"
        f"scheduler = DDPMScheduler.from_pretrained({str(folder / 'scheduler')!r})\n"
        "model = DiscreteEpsDDPMDenoiser(lambda x, t: unet(x, t).sample, scheduler.alphas_cumprod, quantize=False)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    D, info = resolve_denoiser("python:my_kd.model", DigitsDataModule())
    assert info["kind"] == "k-diffusion" and info["model"] == "DiscreteEpsDDPMDenoiser"
    assert D.sigma_min == pytest.approx(0.0100013, rel=1e-5)  # sqrt(beta_1 / (1 - beta_1)), beta_1 = 1e-4


@pytest.fixture(scope="module")
def gaussian():
    g = torch.Generator().manual_seed(4)
    basis, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))
    eigenvalues = torch.logspace(-2, 0.6, 16, dtype=torch.float64)
    mean = torch.randn(16, generator=g, dtype=torch.float64) * 0.3
    return GaussianDenoiser(mean, eigenvalues, basis, data_shape=(1, 4, 4), dtype=torch.float64)


@pytest.mark.parametrize(("theirs", "ours"), [(k_sampling.sample_euler, sample_euler),
                                              (k_sampling.sample_heun, sample_heun)])
def test_k_diffusion_samplers_on_our_denoisers_equal_ours(tiny_ddpm, gaussian, theirs, ours):
    folder = tiny_ddpm[0]
    for D, dtype in [(from_diffusers(folder), torch.float32), (gaussian, torch.float64)]:
        grid = edm_sigma_grid(12, max(0.002, getattr(D, "sigma_min", 0.0)), 80.0, append_zero=True)
        x = 80.0 * torch.randn(3, 1, 4 if D is gaussian else 8, 4 if D is gaussian else 8, dtype=dtype,
                               generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            assert relative(theirs(D, x, grid.to(dtype), disable=True), ours(D, x, grid)) < 1e-5


def pf_ode_solution(gaussian, x, sigma_from: float, sigma_to: float):
    """The probability-flow ODE for Gaussian data, solved: along each eigenvector of the covariance the distance to
    the mean scales by ``sqrt((lambda + sigma_to^2) / (lambda + sigma_from^2))``."""
    u, lam, mean = gaussian.eigenvectors, gaussian.eigenvalues, gaussian.mean
    coefficients = (x.reshape(x.shape[0], -1) - mean) @ u
    scaled = coefficients * torch.sqrt((lam + sigma_to**2) / (lam + sigma_from**2))
    return (mean + scaled @ u.T).reshape(x.shape)


def test_dpmpp_2m_on_the_gaussian_denoiser_converges_to_the_closed_form_flow_at_second_order(gaussian):
    x = 80.0 * torch.randn(4, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    exact = pf_ode_solution(gaussian, x, 80.0, 0.002)
    errors = {}
    for steps in (64, 256):
        grid = edm_sigma_grid(steps, 0.002, 80.0).to(torch.float64)  # ends on sigma_min (no zero appended)
        with torch.no_grad():
            errors["dpmpp_2m", steps] = relative(k_sampling.sample_dpmpp_2m(gaussian, x, grid, disable=True), exact)
            errors["heun", steps] = relative(sample_heun(gaussian, x, grid), exact)
    # measured: 2.7e-3 at 64 steps, 1.5e-4 at 256 for both: 4x the steps, 16x smaller (second order)
    for method in ("dpmpp_2m", "heun"):
        assert errors[method, 256] < 3e-4 and errors[method, 64] / errors[method, 256] > 12
