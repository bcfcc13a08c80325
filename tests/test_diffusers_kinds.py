"""The diffusers models a new user tries first and that used to fail: learned-variance U-Nets, zero-terminal-SNR
schedules, class-conditional U-Nets, ``generate`` with its defaults; and learned variance through ``python:`` models
(guided-diffusion's layout). Tiny random models saved to a temporary folder; D is compared with the scheduler's own
``pred_original_sample``."""

from __future__ import annotations

import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from diffuse_feat.denoisers import wrap_prediction  # noqa: E402
from diffuse_feat.errors import ConfigError, ShapeError, SigmaError, UserError  # noqa: E402
from diffuse_feat.interop.diffusers import from_diffusers  # noqa: E402
from diffuse_feat.process import DiscreteSchedule, SigmaOutOfRangeError  # noqa: E402
from diffuse_feat.samplers import generate, sample_euler  # noqa: E402

from .test_diffusers import TINY_UNET  # noqa: E402


def save(folder, unet_kwargs: dict, scheduler):
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(**{**TINY_UNET, **unet_kwargs})
    unet.save_pretrained(folder / "unet")
    scheduler.save_pretrained(folder / "scheduler")
    return unet.eval()


def sigma_of(alpha_bar: float) -> float:
    return ((1 - alpha_bar) / alpha_bar) ** 0.5


def relative(a, b) -> float:
    """``|a - b| / |b|``: how far a result is from the one it should equal."""
    return float((a - b).norm() / b.norm())


def assert_relative(ours, expected, tol=1e-5):
    assert relative(ours, expected) < tol


@pytest.mark.parametrize("channels", [1, 3])
def test_a_learned_variance_unet_is_read_through_its_eps_half(tmp_path, channels):
    scheduler = diffusers.DDPMScheduler(variance_type="learned_range", clip_sample=False)
    unet = save(tmp_path, dict(in_channels=channels, out_channels=2 * channels), scheduler)
    D = from_diffusers(tmp_path)
    assert D.data_shape == (channels, 8, 8)
    alpha_bar = scheduler.alphas_cumprod.double()
    g = torch.Generator().manual_seed(1)
    for k in (0, 250, 999):
        x_t = torch.randn(2, channels, 8, 8, generator=g)
        with torch.no_grad():
            expected = scheduler.step(unet(x_t, k).sample, k, x_t).pred_original_sample
            ours = D(x_t / alpha_bar[k].sqrt().float(), sigma_of(float(alpha_bar[k])))
        assert ours.shape == x_t.shape
        assert_relative(ours, expected)


def test_output_channels_that_are_neither_one_nor_two_times_the_input_are_refused(tmp_path):
    save(tmp_path / "three", dict(in_channels=1, out_channels=3), diffusers.DDPMScheduler())
    with pytest.raises(ConfigError, match="predicts 3 channels for 1 input channels; a denoiser's U-Net predicts 1 "
                                          r"\(or 2 with a learned variance\)"):
        from_diffusers(tmp_path / "three")
    save(tmp_path / "fixed", dict(in_channels=1, out_channels=2), diffusers.DDPMScheduler(variance_type="fixed_small"))
    with pytest.raises(ConfigError, match="variance_type is 'fixed_small'"):
        from_diffusers(tmp_path / "fixed")


def test_a_zero_terminal_snr_schedule_loads_and_matches_up_to_its_last_finite_step(tmp_path):
    scheduler = diffusers.DDIMScheduler(rescale_betas_zero_snr=True, prediction_type="v_prediction",
                                        clip_sample=False, timestep_spacing="trailing")
    assert float(scheduler.alphas_cumprod[-1]) == 0.0  # pure noise at the last timestep
    unet = save(tmp_path, {}, scheduler)
    D = from_diffusers(tmp_path)
    alpha_bar = scheduler.alphas_cumprod.double()
    assert D.sigma_max == pytest.approx(sigma_of(float(alpha_bar[-2])), rel=1e-6)
    scheduler.set_timesteps(1000)
    g = torch.Generator().manual_seed(2)
    for k in (0, 500, 998):
        x_t = torch.randn(2, 1, 8, 8, generator=g)
        with torch.no_grad():
            expected = scheduler.step(unet(x_t, k).sample, k, x_t).pred_original_sample
            ours = D(x_t / alpha_bar[k].sqrt().float(), sigma_of(float(alpha_bar[k])))
        assert_relative(ours, expected)
    with pytest.raises(SigmaOutOfRangeError, match="outside the range"):
        D(torch.zeros(1, 1, 8, 8), 2 * D.sigma_max)


def test_tables_that_cannot_be_evaluated_say_why():
    with pytest.raises(ConfigError, match=r"alphas_cumprod\[2\] = 0.5 is not below alphas_cumprod\[1\] = 0.5"):
        DiscreteSchedule(torch.tensor([0.9, 0.5, 0.5, 0.1]))
    with pytest.raises(ConfigError, match=r"alphas_cumprod\[1\] = 0 is not in \(0, 1\].*only the last entry may be 0"):
        DiscreteSchedule(torch.tensor([0.9, 0.0, 0.0]))
    kept = DiscreteSchedule(torch.tensor([0.9, 0.5, 0.1, 0.0]))
    assert kept.num_steps == 3 and kept.sigma_range()[1] == pytest.approx(3.0)


def test_generate_with_its_defaults_stays_inside_the_models_range(tmp_path):
    scheduler = diffusers.DDPMScheduler(clip_sample=False)
    save(tmp_path, {}, scheduler)
    D = from_diffusers(tmp_path)
    seen = []
    samples = generate(D, (1, 8, 8), [0, 1, 2], num_steps=5, hook=lambda step: seen.append(step["sigma"]))
    assert samples.shape == (3, 1, 8, 8) and torch.isfinite(samples).all()
    assert seen[0] == pytest.approx(80.0) and min(seen) == pytest.approx(D.sigma_min, rel=1e-6)
    calls = []
    counted = lambda x, sigma: calls.append(1) or D(x, sigma)  # noqa: E731
    counted.sigma_min, counted.sigma_max = D.sigma_min, D.sigma_max
    with pytest.raises(SigmaOutOfRangeError, match=r"the sampler's grid reaches sigma=0.002, outside the range 0.01 "
                                                   "to 157.4 the model was trained on") as err:
        generate(counted, (1, 8, 8), [0], num_steps=5, sigma_min=0.002)
    assert calls == [] and "\n" not in str(err.value)  # refused before the first evaluation
    with pytest.raises(SigmaOutOfRangeError, match="sigma=200"):
        sample_euler(counted, torch.zeros(1, 1, 8, 8), torch.tensor([200.0, 1.0, 0.0]))


def test_a_class_conditional_unet_is_told_the_fixed_label(tmp_path):
    scheduler = diffusers.DDPMScheduler(clip_sample=False)
    unet = save(tmp_path, dict(num_class_embeds=4), scheduler)
    D = from_diffusers(tmp_path, class_labels=2)
    alpha_bar = scheduler.alphas_cumprod.double()
    x_t = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    k = 300
    with torch.no_grad():
        expected = scheduler.step(unet(x_t, k, class_labels=torch.full((3,), 2)).sample, k, x_t).pred_original_sample
        ours = D(x_t / alpha_bar[k].sqrt().float(), sigma_of(float(alpha_bar[k])))
        other = from_diffusers(tmp_path, class_labels=0)(x_t / alpha_bar[k].sqrt().float(),
                                                         sigma_of(float(alpha_bar[k])))
    assert_relative(ours, expected)
    assert not torch.allclose(ours, other)
    with pytest.raises(ConfigError, match=r"class-conditional \(4 classes\); pass class_labels="):
        from_diffusers(tmp_path)
    with pytest.raises(ConfigError, match="give one in 0..3"):
        from_diffusers(tmp_path, class_labels=4)


def test_a_text_conditional_unet_is_refused_saying_why(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    diffusers.DDPMScheduler().save_pretrained(tmp_path / "scheduler")
    with pytest.raises(ConfigError, match="is text-conditional"):
        from_diffusers(tmp_path)


class GuidedDiffusionLike(torch.nn.Module):
    """guided-diffusion's layout with ``learn_sigma``: ``[eps, variance range]`` along the channels."""

    def __init__(self, channels: int, variance_half: bool = True):
        super().__init__()
        self.eps = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.var = torch.nn.Conv2d(channels, channels, 1) if variance_half else None

    def forward(self, x, t):
        eps = torch.tanh(self.eps(x)) * (1 + t.reshape(-1, 1, 1, 1) / 1000)
        return torch.cat([eps, self.var(x)], dim=1) if self.var is not None else eps


def test_a_python_model_with_a_learned_variance_uses_its_eps_half():
    torch.manual_seed(0)
    net = GuidedDiffusionLike(3)
    eps_only = GuidedDiffusionLike(3, variance_half=False)
    eps_only.eps = net.eps
    with_variance = wrap_prediction(net, "eps", "ddpm")
    without = wrap_prediction(eps_only, "eps", "ddpm")
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(with_variance(x, 0.7), without(x, 0.7), rtol=0, atol=0)

    class FiveChannels(torch.nn.Module):
        def forward(self, x, t):
            return torch.zeros(x.shape[0], 5, *x.shape[2:])

    with pytest.raises(ShapeError, match=r"returned 5 channels for an input of 3 channels; a network predicts as many "
                                         r"channels as its input \(3\), or twice as many \(6\)"):
        wrap_prediction(FiveChannels(), "eps", "ddpm")(x, 0.7)


def test_bad_inputs_to_a_diffusers_model_are_one_sentence_each(tmp_path):
    save(tmp_path, {}, diffusers.DDPMScheduler())
    D = from_diffusers(tmp_path)
    x = torch.zeros(2, 1, 8, 8)
    cases = [(x, float("nan"), SigmaError, "finite and >= 0"), (x, -0.5, SigmaError, "finite and >= 0"),
             (x, torch.tensor([0.5, float("nan")]), SigmaError, "got nan"),
             (x, torch.tensor([0.5, 1.0, 2.0]), SigmaError, "3 values but the batch has 2"),
             (torch.zeros(2, 3, 8, 8), 0.5, ShapeError, "3 channels where it takes 1"),
             (torch.zeros(2, 1, 16, 16), 0.5, ShapeError, r"shape \[1, 16, 16\]")]
    for inputs, sigma, error, pattern in cases:
        with pytest.raises(error, match=pattern) as caught:
            D(inputs, sigma)
        assert isinstance(caught.value, UserError) and "\n" not in str(caught.value)
