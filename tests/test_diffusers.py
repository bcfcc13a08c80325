"""diffusers, both ways, on tiny random models saved to a temporary folder (no weights are ever downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from diffuse_feat.backbones import DiffusersUNet  # noqa: E402
from diffuse_feat.cli import DiffuseFeatCLI  # noqa: E402
from diffuse_feat.data import DigitsDataModule  # noqa: E402
from diffuse_feat.denoisers import (  # noqa: E402
    EDMDenoiser,
    EpsilonPredictionDenoiser,
    SamplePredictionDenoiser,
    VPredictionDenoiser,
)
from diffuse_feat.errors import ConfigError, DataNotFoundError, UserError  # noqa: E402
from diffuse_feat.interop.diffusers import export_diffusers, from_diffusers  # noqa: E402
from diffuse_feat.modules import load_denoiser  # noqa: E402
from diffuse_feat.process import SigmaOutOfRangeError  # noqa: E402

from .test_load_denoiser import digits_module, fit  # noqa: E402
from .test_training import REPO  # noqa: E402

TINY_UNET = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                 down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                 norm_num_groups=4)


def save_tiny_ddpm(folder: Path, prediction_type: str = "epsilon", layout: str = "pipeline", **scheduler_kwargs):
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(**TINY_UNET)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type, clip_sample=False,
                                        **scheduler_kwargs)
    if layout == "pipeline":
        unet.save_pretrained(folder / "unet")
        scheduler.save_pretrained(folder / "scheduler")
    else:  # a UNet2DModel folder with its scheduler's config beside its own
        unet.save_pretrained(folder)
        scheduler.save_pretrained(folder)
    return unet.eval(), scheduler


@pytest.mark.parametrize(("prediction_type", "cls"), [("epsilon", EpsilonPredictionDenoiser),
                                                      ("v_prediction", VPredictionDenoiser),
                                                      ("sample", SamplePredictionDenoiser)])
@pytest.mark.parametrize(("layout", "timesteps"), [("pipeline", "interpolate"), ("flat", "nearest")])
def test_our_denoiser_is_the_schedulers_pred_original_sample(tmp_path, prediction_type, cls, layout, timesteps):
    unet, scheduler = save_tiny_ddpm(tmp_path, prediction_type, layout)
    denoiser = from_diffusers(tmp_path, timesteps=timesteps)
    assert type(denoiser) is cls and denoiser.data_shape == (1, 8, 8) and not denoiser.training
    alphas_cumprod = scheduler.alphas_cumprod.double()
    g = torch.Generator().manual_seed(1)
    for k in (0, 1, 37, 500, 998, 999):
        x_t = torch.randn(3, 1, 8, 8, generator=g)
        with torch.no_grad():
            expected = scheduler.step(unet(x_t, k).sample, k, x_t).pred_original_sample
            sigma = float((1 / alphas_cumprod[k] - 1).sqrt())  # the scheduler's grid, in sigma-space
            ours = denoiser(x_t / alphas_cumprod[k].sqrt().float(), sigma)
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_sigma_outside_the_schedulers_table_is_refused(tmp_path):
    save_tiny_ddpm(tmp_path)
    denoiser = from_diffusers(tmp_path)
    with pytest.raises(SigmaOutOfRangeError, match="outside the range 0.01 to 157.4"):
        denoiser(torch.zeros(1, 1, 8, 8), 200.0)


def test_folders_without_a_model_or_scheduler_say_so(tmp_path):
    with pytest.raises(DataNotFoundError, match="no folder"):
        from_diffusers(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="holds no diffusers model"):
        from_diffusers(tmp_path / "empty")
    diffusers.UNet2DModel(**TINY_UNET).save_pretrained(tmp_path / "unet_only")
    with pytest.raises(DataNotFoundError, match="no scheduler_config.json"):
        from_diffusers(tmp_path / "unet_only")
    save_tiny_ddpm(tmp_path / "flow")
    config = tmp_path / "flow" / "scheduler" / "scheduler_config.json"
    json.dump({**json.loads(config.read_text()), "prediction_type": "flow"}, config.open("w"))
    with pytest.raises(UserError, match="prediction_type 'flow'"):
        from_diffusers(tmp_path / "flow")


def train_diffusers_unet(tmp_path, monkeypatch) -> Path:
    """A few steps of diffusers' own U-Net in our DiffusionModule, chosen by class_path as any backbone is."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "unet.yaml").write_text("""\
model:
  init_args:
    backbone:
      class_path: diffuse_feat.backbones.DiffusersUNet
      init_args: {block_out_channels: [8, 16], norm_num_groups: 4}
trainer:
  callbacks:
    - class_path: lightning.pytorch.callbacks.EMAWeightAveraging
      init_args: {decay: 0.9, update_starting_at_step: 0}
""")
    cli = DiffuseFeatCLI(args=["fit", "--config", str(REPO / "configs/default.yaml"), "--config", "unet.yaml",
                               "--trainer.max_steps=3", "--data.init_args.n_train=64", "--data.init_args.batch_size=32",
                               "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0",
                               "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
    assert isinstance(cli.model.backbone, DiffusersUNet)
    return Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"


def test_export_then_diffusers_load_then_our_load_give_the_same_outputs(tmp_path, monkeypatch):
    checkpoint = train_diffusers_unet(tmp_path, monkeypatch)
    folder = export_diffusers(checkpoint, tmp_path / "exported")
    ours = load_denoiser(checkpoint)
    # diffusers' own reading of the folder: the U-Net driven by the EDM scheduler's preconditioning
    unet = diffusers.UNet2DModel.from_pretrained(folder, subfolder="unet").eval()
    scheduler = diffusers.EDMEulerScheduler.from_pretrained(folder, subfolder="scheduler")
    back = from_diffusers(folder)
    assert isinstance(back, EDMDenoiser) and back.data_shape == (1, 8, 8)
    g = torch.Generator().manual_seed(0)
    for sigma in (0.002, 0.05, 0.5, 2.0, 80.0):
        x = torch.randn(4, 1, 8, 8, generator=g) * (1 + sigma)
        s = torch.tensor(sigma)
        with torch.no_grad():
            model_input = scheduler.precondition_inputs(x, s)
            theirs = scheduler.precondition_outputs(x, unet(model_input, scheduler.precondition_noise(s)).sample, s)
            torch.testing.assert_close(ours(x, sigma), theirs, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(back(x, sigma), theirs, rtol=1e-5, atol=1e-6)


def test_export_refuses_a_run_diffusers_cannot_drive(tmp_path):
    path, _ = fit(digits_module(), DigitsDataModule(n_train=32, batch_size=16), tmp_path, steps=1, ema_start=None)
    with pytest.raises(ConfigError, match="DiffusersUNet"):
        export_diffusers(path, tmp_path / "out")


def test_diffusers_unet_refuses_non_image_data():
    with pytest.raises(ConfigError, match=r"images \[C, H, W\]"):
        DiffusersUNet((64,), (64,))
    with pytest.raises(ConfigError, match="divisible by 4"):
        DiffusersUNet((1, 6, 6), (1, 6, 6), block_out_channels=(8, 8, 8), norm_num_groups=4)
