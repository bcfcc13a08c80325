"""diffusers' own samplers and ours agree on the same model and the same sigma grid: DDIM (eta = 0) is the Euler
step of the probability-flow ODE in sigma-space, and diffusers' Euler and Heun discrete schedulers are EDM's Euler and
Heun. Measured here: DDIM 2.2e-7, Euler 1.2e-7, Heun 0.9e-7 relative (float32 on both sides); asserted at 1e-5."""

from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from diffuse_feat.interop.diffusers import from_diffusers  # noqa: E402
from diffuse_feat.samplers import sample_euler, sample_heun  # noqa: E402

from .test_diffusers import save_tiny_ddpm  # noqa: E402
from .test_diffusers_kinds import relative  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddpm")
    unet, scheduler = save_tiny_ddpm(folder)
    return unet, from_diffusers(folder), scheduler


def same_betas(scheduler) -> dict:
    """The model's beta schedule, spelled out: ``from_config`` would let each scheduler class fill in its own default
    for every value the training scheduler left at its default (Heun's are Stable Diffusion's betas)."""
    return {key: scheduler.config[key] for key in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule")}


def sigmas_at(alphas_cumprod, timesteps) -> torch.Tensor:
    a = alphas_cumprod[torch.as_tensor(timesteps).long()]
    return torch.cat([torch.sqrt((1 - a) / a), torch.zeros(1, dtype=torch.float64)])


@torch.no_grad()
def test_ddim_with_eta_zero_is_our_euler_on_its_timesteps(model):
    unet, D, trained_with = model
    alphas_cumprod = trained_with.alphas_cumprod.double()
    scheduler = diffusers.DDIMScheduler(**same_betas(trained_with), clip_sample=False, set_alpha_to_one=True)
    scheduler.set_timesteps(10)
    grid = sigmas_at(alphas_cumprod, scheduler.timesteps)
    x_t = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    theirs = x_t
    for t in scheduler.timesteps:
        theirs = scheduler.step(unet(theirs, t).sample, t, theirs, eta=0.0).prev_sample
    ours = sample_euler(D, x_t / alphas_cumprod[scheduler.timesteps[0]].sqrt().float(), grid)
    assert relative(ours, theirs) < 1e-5


@pytest.mark.parametrize(("scheduler_class", "ours"), [("EulerDiscreteScheduler", sample_euler),
                                                       ("HeunDiscreteScheduler", sample_heun)])
@torch.no_grad()
def test_diffusers_euler_and_heun_schedulers_are_our_samplers(model, scheduler_class, ours):
    unet, D, trained_with = model
    # the model's own betas; integer timesteps, where the scheduler's sigma is the table's
    scheduler = getattr(diffusers, scheduler_class)(**same_betas(trained_with), timestep_spacing="leading",
                                                    steps_offset=1)
    scheduler.set_timesteps(10)
    x = scheduler.init_noise_sigma * torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    theirs = x
    for t in scheduler.timesteps:
        eps = unet(scheduler.scale_model_input(theirs, t), t).sample
        theirs = scheduler.step(eps, t, theirs).prev_sample
    grid = torch.unique_consecutive(scheduler.sigmas.double())  # Heun's table lists each level twice
    assert relative(ours(D, x, grid), theirs) < 1e-5
