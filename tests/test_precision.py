"""Mixed precision, checked on the CPU: its bf16 autocast exercises the same code paths as the GPU's.

The issue's contract: ``bf16-mixed`` by default on a GPU and fp32 on CPU, overridable; preconditioning,
loss and sigma in fp32 while the backbone runs in bf16; diagnostics in fp32 outside autocast; no NaN
on the image configs (both trained a few steps in bf16-mixed here). The GPU throughput itself is
``benchmarks/precision.py``.
"""

from __future__ import annotations

import functools

import pytest
import torch

from callbacks import diagnostic_mode
from diffuse_feat.backbones.unet import UNet
from diffuse_feat.cli import DiffuseFeatCLI, auto_precision
from diffuse_feat.diagnostics.jacobian import denoiser_jacobian
from diffuse_feat.modules import DiffusionModule

from .fake_images import write_fake_cifar10, write_fake_mnist
from .test_training import REPO


@pytest.mark.parametrize(
    ("cuda", "bf16", "accelerator", "expected"),
    [
        (True, True, None, "bf16-mixed"),
        (True, True, "auto", "bf16-mixed"),
        (True, True, "gpu", "bf16-mixed"),
        (True, True, "cpu", "32-true"),  # asked for the CPU on a GPU machine
        (True, False, "auto", "32-true"),  # a GPU without bf16 (pre-Ampere): fp32, not fp16 without a scaler
        (False, False, "auto", "32-true"),
    ],
)
def test_auto_precision(monkeypatch, cuda, bf16, accelerator, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert auto_precision(accelerator) == expected


def small_unet_module(base_channels: int = 8) -> DiffusionModule:
    torch.manual_seed(0)
    factory = functools.partial(UNet, base_channels=base_channels, channel_mult=(1, 2), attention=True)
    return DiffusionModule(factory, data_shape=(1, 28, 28))


def fit_image_config(tmp_path, monkeypatch, config: str, *overrides: str) -> DiffuseFeatCLI:
    """``python train.py fit`` on an image config, shrunk (8 channels, batch 8, 6 steps), on fake files in
    ``tmp_path/data``; ``overrides`` (later CLI flags win) change any of it."""
    monkeypatch.chdir(tmp_path)
    write_fake_mnist(tmp_path / "data")
    write_fake_cifar10(tmp_path / "data")
    return DiffuseFeatCLI(args=[
        "fit", "--config", str(REPO / f"configs/images/{config}.yaml"),
        "--trainer.max_steps=6", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--trainer.log_every_n_steps=1",
        "--data.init_args.batch_size=8", "--model.init_args.backbone.init_args.base_channels=8",
        "--trainer.callbacks.init_args.num_samples=4", "--trainer.callbacks.init_args.num_steps=4", *overrides,
    ])


def test_under_bf16_autocast_the_backbone_is_bf16_and_preconditioning_loss_and_sigma_are_fp32():
    model = small_unet_module()
    seen = {}
    model.backbone.register_forward_hook(lambda mod, args, out: seen.update(backbone=out.dtype))
    x0 = torch.randn(4, 1, 28, 28)
    sigma = torch.tensor([0.01, 0.5, 5.0, 80.0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        c_skip, c_out, c_in = model.denoiser.preconditioning.coefficients(sigma)
        denoised = model(x0 + sigma.reshape(-1, 1, 1, 1) * torch.randn_like(x0), sigma)
        losses = model.loss.per_sample_loss(model.denoiser, x0, sigma, torch.randn_like(x0))
    assert seen["backbone"] == torch.bfloat16  # the autocast really reached the convolutions
    assert {c_skip.dtype, c_out.dtype, c_in.dtype, denoised.dtype, losses.dtype} == {torch.float32}
    assert bool(torch.isfinite(losses).all())
    # bf16 keeps ~3 significant digits: the mixed loss is the fp32 loss to within a few percent
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    fp32 = model.loss.per_sample_loss(model.denoiser, x0, sigma, noise)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model.loss.per_sample_loss(model.denoiser, x0, sigma, noise)
    assert torch.allclose(mixed, fp32, rtol=0.05)
    assert not torch.equal(mixed, fp32)


def test_diagnostics_inside_an_autocast_region_compute_in_fp32():
    model = small_unet_module()
    x, sigma = torch.randn(4, 1, 28, 28), torch.full((4,), 1.0)
    with diagnostic_mode(model):
        reference = model(x, sigma)
    with torch.autocast("cpu", dtype=torch.bfloat16), diagnostic_mode(model):
        assert torch.equal(model(x, sigma), reference)
    exact = denoiser_jacobian(model, x[0], 1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(denoiser_jacobian(model, x[0], 1.0), exact)


@pytest.mark.parametrize("config", ["mnist_unet", "cifar10_unet"])
def test_image_config_trains_in_bf16_mixed_without_nan(tmp_path, monkeypatch, config):
    cli = fit_image_config(tmp_path, monkeypatch, config, "--trainer.precision=bf16-mixed")
    trainer, model = cli.trainer, cli.model
    assert trainer.precision == "bf16-mixed" and trainer.global_step == 6
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    logged = trainer.logged_metrics
    assert bool(torch.isfinite(logged["train/loss"])) and bool(torch.isfinite(logged["val/loss"]))
    samples = model.generate(range(4), num_steps=4)
    assert samples.dtype == torch.float32 and bool(torch.isfinite(samples).all())
