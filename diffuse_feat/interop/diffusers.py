"""diffusers, both ways: a saved ``UNet2DModel`` + scheduler as a sigma-space denoiser, and a trained run as one.

* :func:`from_diffusers` reads a folder written by ``save_pretrained`` (a pipeline's ``unet/`` + ``scheduler/``, or a
  ``UNet2DModel`` folder holding a ``scheduler_config.json`` beside its ``config.json``) from disk only
  (``local_files_only``: never the network) and wraps the U-Net by its scheduler's parametrization: a DDPM-family
  scheduler (its ``alphas_cumprod`` table; ``prediction_type`` epsilon, v_prediction or sample) or an EDM scheduler
  (``EDMEulerScheduler``: EDM's F with ``sigma_data``).
* :func:`export_diffusers` writes a run whose backbone is :class:`~diffuse_feat.backbones.DiffusersUNet` (EDM
  preconditioning) as ``unet/`` + ``scheduler/`` (an ``EDMEulerScheduler``), which diffusers loads with
  ``UNet2DModel.from_pretrained(folder, subfolder="unet")`` and ``EDMEulerScheduler.from_pretrained(folder,
  subfolder="scheduler")``, and :func:`from_diffusers` reads back.

Needs the optional extra: ``pip install -e ".[diffusers]"``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from ..backbones.diffusers_unet import DiffusersUNet, attention_for_jacobians, require_diffusers
from ..denoisers.adapters import (
    EDMDenoiser,
    EpsilonPredictionDenoiser,
    PredictionDenoiser,
    SamplePredictionDenoiser,
    VPredictionDenoiser,
)
from ..denoisers.preconditioned import CategoricalDenoiser
from ..errors import ConfigError, DataNotFoundError
from ..modules.checkpoint import read_checkpoint
from ..preconditioning import EDMPreconditioning
from ..process import DiscreteSchedule

__all__ = ["from_diffusers", "export_diffusers", "UNetPrediction", "find_diffusers_model"]

DISCRETE_PREDICTIONS = {"epsilon": EpsilonPredictionDenoiser, "v_prediction": VPredictionDenoiser,
                        "sample": SamplePredictionDenoiser}


class UNetPrediction(nn.Module):
    """A diffusers U-Net as a plain ``net(x_t, timestep) -> tensor`` (its output's ``.sample``), told a fixed class
    label (``class_labels``, one per batch) when it is class-conditional."""

    def __init__(self, unet: nn.Module, class_label: int | None = None):
        super().__init__()
        self.unet = unet
        self.class_label = class_label

    def forward(self, x_t: Tensor, timestep: Tensor) -> Tensor:
        extra = {}
        if self.class_label is not None:
            extra["class_labels"] = torch.full((x_t.shape[0],), self.class_label, device=x_t.device, dtype=torch.long)
        if torch.is_grad_enabled():  # without grad the context does nothing, and this runs on every forward pass
            with attention_for_jacobians(self):
                return self.unet(x_t, timestep, **extra).sample
        return self.unet(x_t, timestep, **extra).sample


def _read_json(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)


def find_diffusers_model(folder: str | os.PathLike) -> tuple[Path, Path]:
    """``(unet folder, scheduler folder)`` of a ``save_pretrained`` folder, or one sentence saying what is missing."""
    root = Path(folder)
    if not root.is_dir():
        raise DataNotFoundError(f"no folder '{root}'; give a folder written by save_pretrained")
    unet_dir = next((d for d in (root / "unet", root) if (d / "config.json").is_file()), None)
    if unet_dir is None:
        raise DataNotFoundError(f"'{root}' holds no diffusers model (neither unet/config.json nor config.json); "
                                "give a folder written by a pipeline's or a UNet2DModel's save_pretrained")
    scheduler_dir = next((d for d in (root / "scheduler", unet_dir, root) if (d / "scheduler_config.json").is_file()),
                         None)
    if scheduler_dir is None:
        raise DataNotFoundError(f"'{root}' has a U-Net but no scheduler_config.json (in scheduler/ or beside the "
                                "U-Net's config.json); save the scheduler the model was trained with there too")
    return unet_dir, scheduler_dir


def _load_scheduler(diffusers, scheduler_dir: Path):
    name = _read_json(scheduler_dir / "scheduler_config.json").get("_class_name", "")
    cls = getattr(diffusers, name, None)
    if cls is None:
        raise ConfigError(f"the scheduler class {name!r} in {scheduler_dir / 'scheduler_config.json'} is not in "
                          f"diffusers {diffusers.__version__}; upgrade diffusers or save a known scheduler")
    return cls.from_pretrained(scheduler_dir, local_files_only=True)


LEARNED_VARIANCE = ("learned", "learned_range")


def _checked_config(config: dict, unet_dir: Path, class_labels: int | None) -> None:
    """One sentence for a U-Net folder this cannot wrap: not a ``UNet2DModel`` (a text-conditional one included), a
    class-conditional one without ``class_labels`` (or the other way round)."""
    name = config.get("_class_name")
    if name == "UNet2DConditionModel":
        raise ConfigError(f"the {name} in {unet_dir} is text-conditional (it needs an encoded prompt on every call), "
                          "and only UNet2DModels can be read; give a UNet2DModel folder")
    if name != "UNet2DModel":
        raise ConfigError(f"{unet_dir / 'config.json'} describes a {name!r}, and only a UNet2DModel can be read; give "
                          "a UNet2DModel folder")
    num_classes = config.get("num_class_embeds")
    if config.get("class_embed_type") not in (None,) and not num_classes:
        raise ConfigError(f"the UNet2DModel in {unet_dir} is conditioned through class_embed_type "
                          f"{config.get('class_embed_type')!r} on a vector, and only class indices "
                          "(num_class_embeds) are supported; give an unconditional or class-index model")
    if num_classes and class_labels is None:
        raise ConfigError(f"the UNet2DModel in {unet_dir} is class-conditional ({num_classes} classes); pass "
                          f"class_labels=, the class in 0..{num_classes - 1} every call is told")
    if class_labels is not None and not num_classes:
        raise ConfigError(f"the UNet2DModel in {unet_dir} is unconditional; drop class_labels")
    if class_labels is not None and not 0 <= int(class_labels) < num_classes:
        raise ConfigError(f"class_labels={class_labels} is not a class of the UNet2DModel in {unet_dir}; give one in "
                          f"0..{num_classes - 1}")


def _check_output_channels(config: dict, scheduler, unet_dir: Path) -> None:
    """A U-Net predicts as many channels as it takes, or twice as many with a learned variance (which the scheduler
    must say): anything else is refused naming both numbers."""
    channels_in, channels_out = int(config.get("in_channels", 3)), int(config.get("out_channels", 3))
    variance = getattr(scheduler.config, "variance_type", None)
    if channels_out == 2 * channels_in and variance not in LEARNED_VARIANCE:
        raise ConfigError(f"the UNet2DModel in {unet_dir} predicts {channels_out} channels for {channels_in} input "
                          f"channels (a learned variance) but its scheduler's variance_type is {variance!r}; save "
                          f"the scheduler it was trained with (variance_type one of {', '.join(LEARNED_VARIANCE)})")
    if channels_out not in (channels_in, 2 * channels_in):
        raise ConfigError(f"the UNet2DModel in {unet_dir} predicts {channels_out} channels for {channels_in} input "
                          f"channels; a denoiser's U-Net predicts {channels_in} (or {2 * channels_in} with a learned "
                          "variance)")


def from_diffusers(folder: str | os.PathLike, *, timesteps: Literal["interpolate", "nearest"] = "interpolate",
                   class_labels: int | None = None, device=None) -> PredictionDenoiser:
    """The sigma-space denoiser ``D(x, sigma)`` of a saved diffusers U-Net and its scheduler (eval mode, fp32).

    On a discrete (DDPM-family) schedule a sigma becomes a timestep as ``timesteps`` says (see
    :class:`~diffuse_feat.process.DiscreteSchedule`), and sigma outside the table is refused; a zero-terminal-SNR
    schedule (``rescale_betas_zero_snr=True``: the last timestep is pure noise, sigma infinite) is usable up to its
    next-to-last timestep, which is ``sigma_max``. A learned-variance U-Net (``out_channels = 2 in_channels``,
    scheduler ``variance_type`` learned or learned_range) is read through its eps (or v) half, as its scheduler does.
    A class-conditional U-Net (``num_class_embeds``) is told ``class_labels`` (a class index) on every call;
    text-conditional ones (``UNet2DConditionModel``) are refused. ``data_shape`` is the U-Net's ``(in_channels, H,
    W)``.
    """
    diffusers = require_diffusers()
    unet_dir, scheduler_dir = find_diffusers_model(folder)
    config = _read_json(unet_dir / "config.json")
    _checked_config(config, unet_dir, class_labels)
    scheduler = _load_scheduler(diffusers, scheduler_dir)
    _check_output_channels(config, scheduler, unet_dir)
    unet = diffusers.UNet2DModel.from_pretrained(unet_dir, local_files_only=True, low_cpu_mem_usage=False)
    unet = unet.float().eval()
    if device is not None:
        unet.to(device)
    size = config.get("sample_size")
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    data_shape = (int(config.get("in_channels", 3)), int(height), int(width))
    prediction = getattr(scheduler.config, "prediction_type", "epsilon")
    net = UNetPrediction(unet, None if class_labels is None else int(class_labels))
    if hasattr(scheduler, "precondition_outputs"):  # the EDM schedulers
        if prediction != "epsilon":
            raise ConfigError(f"{type(scheduler).__name__} with prediction_type {prediction!r} is not supported; "
                              "only EDM's F (prediction_type 'epsilon') is")
        return EDMDenoiser(net, sigma_data=float(scheduler.config.sigma_data), data_shape=data_shape).eval()
    if getattr(scheduler, "alphas_cumprod", None) is None:
        raise ConfigError(f"{type(scheduler).__name__} has no alphas_cumprod table and is not an EDM scheduler; "
                          "wrap the U-Net with diffuse_feat.denoisers.wrap_prediction and the process it was "
                          "trained on")
    if prediction not in DISCRETE_PREDICTIONS:
        raise ConfigError(f"prediction_type {prediction!r} of {type(scheduler).__name__} is not one of "
                          f"{', '.join(DISCRETE_PREDICTIONS)}; save the scheduler the model was trained with")
    process = DiscreteSchedule(scheduler.alphas_cumprod, timesteps)
    return DISCRETE_PREDICTIONS[prediction](net, process, data_shape=data_shape).eval()


def export_diffusers(checkpoint: str | os.PathLike, folder: str | os.PathLike, *, ema: bool = True) -> Path:
    """Write a run trained with the :class:`~diffuse_feat.backbones.DiffusersUNet` backbone (EDM preconditioning) as a
    diffusers folder: ``unet/`` (its ``UNet2DModel``, EMA weights when the run has them) and ``scheduler/`` (an
    ``EDMEulerScheduler`` with the run's ``sigma_data``). Returns the folder."""
    diffusers = require_diffusers()
    loaded = read_checkpoint(checkpoint, ema=ema)
    denoiser, backbone = loaded.denoiser, loaded.denoiser.backbone
    if not isinstance(backbone, DiffusersUNet) or isinstance(denoiser, CategoricalDenoiser):
        raise ConfigError(f"export_diffusers writes runs whose backbone is DiffusersUNet, and {checkpoint} has a "
                          f"{type(backbone).__name__}; train with backbone class_path "
                          "diffuse_feat.backbones.DiffusersUNet")
    precond = denoiser.preconditioning
    if type(precond) is not EDMPreconditioning:
        raise ConfigError(f"export_diffusers writes EDM-preconditioned runs (an EDMEulerScheduler drives them), and "
                          f"{checkpoint} uses {type(precond).__name__}; train with EDMPreconditioning")
    out = Path(folder)
    backbone.unet.save_pretrained(out / "unet")
    diffusers.EDMEulerScheduler(sigma_data=float(precond.sigma_data), prediction_type="epsilon").save_pretrained(
        out / "scheduler")
    return out
