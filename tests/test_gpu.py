"""The CUDA paths: automatic bf16-mixed, fp32 islands under CUDA autocast, diagnostics equal to the CPU's.

Skipped without a CUDA GPU (CI has none); `bash benchmarks/gpu_checks.sh` runs these with the GPU
benchmarks on a machine that has one.
"""

from __future__ import annotations

import pytest
import torch

from diffuse_feat.cli import auto_precision
from diffuse_feat.diagnostics.jacobian import jacobian_top_singular

from .test_precision import fit_image_config, small_unet_module

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_bf16_mixed_is_chosen_automatically_and_trains_the_mnist_config(tmp_path, monkeypatch):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    assert auto_precision(None) == "bf16-mixed"
    cli = fit_image_config(tmp_path, monkeypatch, "mnist_unet", "--trainer.max_steps=20",
                           "--trainer.log_every_n_steps=5", "--data.init_args.batch_size=16",
                           "--model.init_args.backbone.init_args.base_channels=16")
    # (after fit, Lightning's teardown has moved the model back to the CPU; the strategy says where it trained)
    assert cli.trainer.precision == "bf16-mixed" and cli.trainer.strategy.root_device.type == "cuda"
    assert all(bool(torch.isfinite(p).all()) for p in cli.model.parameters())
    assert bool(torch.isfinite(cli.trainer.logged_metrics["train/loss"]))


def test_cuda_autocast_keeps_preconditioning_and_loss_in_fp32():
    model = small_unet_module(16).cuda()
    x0 = torch.randn(8, 1, 28, 28, device="cuda")
    sigma = torch.logspace(-2, 1.9, 8, device="cuda")
    noise = torch.randn_like(x0)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        losses = model.loss.per_sample_loss(model.denoiser, x0, sigma, noise)
    assert losses.dtype == torch.float32 and bool(torch.isfinite(losses).all())
    assert torch.allclose(losses, model.loss.per_sample_loss(model.denoiser, x0, sigma, noise), rtol=0.05)


def test_jacobian_top_singular_on_the_gpu_matches_the_cpu():
    model = small_unet_module(16)
    x = torch.randn(1, 28, 28)
    _, cpu, _ = jacobian_top_singular(model, x, 1.0, k=5, method="randomized")
    _, gpu, _ = jacobian_top_singular(model.cuda(), x.cuda(), 1.0, k=5, method="randomized")
    # cuDNN's fp32 convolutions default to TF32 (10-bit mantissa) on Ampere and newer: agreement to ~1e-3
    assert torch.allclose(gpu.cpu(), cpu, rtol=1e-2)
