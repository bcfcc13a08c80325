"""``--denoiser SPEC``: a run checkpoint, a diffusers folder, ``python:module.attr``, or an exact reference of the data.

Whatever the form, the result is a :class:`DataShapedDenoiser`: ``D(x, sigma)`` with the ``data_shape`` diagnostics
read, the noise range the model was trained on (``sigma_min``, ``sigma_max``), and a check that it accepts the data.
"""

from __future__ import annotations

import importlib
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..capabilities import GaussianReference, LatentTrees, check_capabilities
from ..denoisers.adapters import PARAMETRIZATIONS, PROCESSES, wrap_prediction
from ..errors import ConfigError, ShapeError, UserError
from ..modules.checkpoint import read_checkpoint
from ..per_sample import as_sigma

__all__ = ["SPEC_FORMS", "REFERENCES", "PythonModel", "DataShapedDenoiser", "resolve_denoiser"]

SPEC_FORMS = {
    "PATH.ckpt": "a run's checkpoint (its EMA weights when the run kept them; --no-ema for the live ones)",
    "FOLDER": "a diffusers folder written by save_pretrained (a UNet2DModel and its scheduler; a class-conditional "
              "one with --class-label)",
    "edm:PATH.pkl": "an EDM network pickle (NVlabs/edm or edm2, its 'ema' network; EDM's code must be on "
                    "PYTHONPATH); a class-conditional one with --class-label",
    "python:MODULE.ATTR": "any callable or nn.Module net(x_t, time) importable from MODULE, with --parametrization "
                          "and --process saying what it predicts and how it was trained; a k-diffusion denoiser or "
                          "an EDM-style network (net(x, sigma, class_labels) with round_sigma) needs neither",
    "gaussian | empirical | bp": "an exact reference of the --data DataModule: the Gaussian (Wiener) denoiser, the "
                                 "empirical (memorizing) denoiser, the RHM's belief propagation",
}
REFERENCES = {"gaussian": ("gaussian_denoiser", GaussianReference),
              "empirical": ("empirical_denoiser", GaussianReference),
              "bp": ("bp_denoiser", LatentTrees)}


@dataclass
class PythonModel:
    """What a ``python:`` model is: its parametrization and noise process (see ``wrap_prediction``)."""

    parametrization: str | None = None
    process: str | None = None
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    beta_min: float = 0.1
    beta_max: float = 20.0
    sigma_data: float = 0.5
    time_scale: float = 1.0

    @property
    def given(self) -> bool:
        return self.parametrization is not None or self.process is not None


class DataShapedDenoiser(nn.Module):
    """A denoiser as diagnostics take it: ``data_shape``, the trained noise range, and sigma checked like
    ``DiffusionModule.forward`` does (finite, >= 0), kept in float64 for the time maps of the adapters."""

    def __init__(self, denoiser: Any, data_shape: tuple[int, ...]):
        super().__init__()
        self.denoiser = denoiser
        self.data_shape = tuple(int(d) for d in data_shape)
        self.sigma_min = float(getattr(denoiser, "sigma_min", 0.0))
        self.sigma_max = float(getattr(denoiser, "sigma_max", math.inf))
        if callable(getattr(denoiser, "round_sigma", None)):  # samplers round their grids with it
            self.round_sigma = denoiser.round_sigma

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        return self.denoiser(x, as_sigma(sigma, x.shape[0], device=x.device, dtype=torch.float64))


def _python_object(spec: str) -> Any:
    target = spec[len("python:"):]
    module_name, _, attr = target.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"--denoiser {spec} is not python:module.attr; name the module and the object in it, "
                          "such as python:my_models.net")
    if "" not in sys.path and "." not in sys.path:  # as `python -m` does: the current folder's modules are found
        sys.path.insert(0, "")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"--denoiser {spec}: cannot import it ({err}); put {module_name}.py in the current folder "
                          "or on PYTHONPATH") from None
    if isinstance(obj, type):
        raise ConfigError(f"--denoiser {spec} is a class; point at an instance or a function, such as "
                          f"net = {attr}() in {module_name}")
    if not callable(obj):
        raise ConfigError(f"--denoiser {spec} is a {type(obj).__name__}, not callable; point at a network or a "
                          "function net(x_t, time)")
    return obj


def _native_denoiser(net: Any, class_label: int | None) -> tuple[nn.Module, dict] | None:
    """A ``python:`` object that already is a sigma-space denoiser of a known library, wrapped, else ``None``."""
    from ..interop.edm import from_edm
    from ..interop.k_diffusion import from_k_diffusion, is_k_diffusion_denoiser

    if is_k_diffusion_denoiser(net):
        if class_label is not None:
            raise ConfigError("--class-label applies to EDM networks and diffusers folders; a k-diffusion denoiser's "
                              "extra arguments are set in Python (from_k_diffusion(model, **extra_args))")
        return from_k_diffusion(net), {"kind": "k-diffusion", "model": type(net).__name__}
    if callable(getattr(net, "round_sigma", None)) and hasattr(net, "sigma_min") and hasattr(net, "sigma_max"):
        return from_edm(net, class_labels=class_label), {"kind": "edm", "model": type(net).__name__}
    return None


def _wrap_python(spec: str, model: PythonModel, datamodule, class_label: int | None = None) -> tuple[nn.Module, dict]:
    net = _python_object(spec)
    if not model.given:
        native = _native_denoiser(net, class_label)
        if native is not None:
            return native
    if class_label is not None:
        raise ConfigError(f"--class-label applies to EDM networks and diffusers folders, and {spec} is a network "
                          "net(x_t, time); drop it")
    parametrization = model.parametrization
    if parametrization is None:
        raise ConfigError(f"--denoiser {spec} needs --parametrization, one of {', '.join(PARAMETRIZATIONS)}: what the "
                          "network predicts")
    if parametrization not in PARAMETRIZATIONS:
        raise ConfigError(f"--parametrization {parametrization!r} is not one of {', '.join(PARAMETRIZATIONS)}; give "
                          f"what {spec} predicts")
    process = model.process or {"edm": "edm", "flow": "rectified_flow"}.get(parametrization)
    if process is None:
        raise ConfigError(f"--denoiser {spec} needs --process, one of {', '.join(PROCESSES)}: the noise process it "
                          "was trained on")
    if process not in PROCESSES:
        raise ConfigError(f"--process {process!r} is not one of {', '.join(PROCESSES)}; give the process {spec} was "
                          "trained on")
    if isinstance(net, nn.Module):
        net.eval()
    try:
        wrapped = wrap_prediction(net, parametrization, process, time_scale=model.time_scale,
                                  data_shape=getattr(net, "data_shape", None) or datamodule.data_shape,
                                  sigma_data=model.sigma_data, num_train_timesteps=model.num_train_timesteps,
                                  beta_schedule=model.beta_schedule, beta_start=model.beta_start,
                                  beta_end=model.beta_end, beta_min=model.beta_min, beta_max=model.beta_max)
    except UserError as err:
        raise ConfigError(f"--parametrization {parametrization} --process {process}: {err}") from None
    return wrapped, {"kind": "python", "parametrization": parametrization, "process": process}


def _reference(spec: str, datamodule) -> tuple[nn.Module, dict]:
    method, capability = REFERENCES[spec]
    check_capabilities(datamodule, (capability,), needed_by=f"--denoiser {spec}",
                       hint="pick a reference the data has, or another --denoiser")
    return getattr(datamodule, method)(), {"kind": "exact reference", "reference": spec}


def resolve_denoiser(spec: str, datamodule, *, ema: bool = True, python: PythonModel | None = None,
                     timesteps: str = "interpolate", device: torch.device | str = "cpu",
                     class_label: int | None = None) -> tuple[DataShapedDenoiser, dict]:
    """The denoiser ``spec`` names (see :data:`SPEC_FORMS`), checked against ``datamodule``'s samples, and a
    description of it for the results file. ``class_label``: the class a class-conditional model is told."""
    python = python or PythonModel()
    path = Path(spec)
    if python.given and not spec.startswith("python:"):
        raise ConfigError("--parametrization and --process apply to python: models only (checkpoints and diffusers "
                          "folders say what they predict); drop them")
    if class_label is not None and (spec.endswith(".ckpt") or spec in REFERENCES):
        raise ConfigError(f"--class-label applies to class-conditional EDM networks and diffusers folders, not to "
                          f"--denoiser {spec}; drop it")
    if spec.startswith("edm:"):
        from ..interop.edm import load_edm

        try:
            denoiser = load_edm(spec[len("edm:"):], class_labels=class_label)
        except UserError as err:
            raise type(err)(f"--denoiser {spec}: {err}") from None
        info = {"kind": "edm", "model": type(denoiser.net).__name__}
    elif spec.endswith(".ckpt"):
        try:
            loaded = read_checkpoint(path, ema=ema, map_location="cpu")
        except UserError as err:
            raise type(err)(f"--denoiser {spec}: {err}") from None
        denoiser, info = loaded.denoiser, {"kind": "checkpoint", "weights": loaded.weights, "step": loaded.step,
                                           "module": loaded.module_class.__name__}
    elif path.is_dir():
        from ..interop.diffusers import from_diffusers

        try:
            denoiser = from_diffusers(path, timesteps=timesteps, class_labels=class_label)
        except UserError as err:
            raise type(err)(f"--denoiser {spec}: {err}") from None
        info = {"kind": "diffusers", "parametrization": denoiser.parametrization,
                "process": type(denoiser.process).__name__}
    elif spec.startswith("python:"):
        denoiser, info = _wrap_python(spec, python, datamodule, class_label)
    elif spec in REFERENCES:
        denoiser, info = _reference(spec, datamodule)
    else:
        raise ConfigError(f"--denoiser {spec!r} is neither a run checkpoint (.ckpt), a diffusers folder, edm:PATH.pkl, "
                          f"python:module.attr nor an exact reference ({', '.join(REFERENCES)}); give one of those "
                          "(see --help)")
    if isinstance(denoiser, nn.Module):
        denoiser = denoiser.to(device).eval()
    shaped = DataShapedDenoiser(denoiser, getattr(denoiser, "data_shape", None) or datamodule.data_shape)
    check_fits_data(shaped, spec, datamodule, device)
    info.update(data_shape=list(shaped.data_shape), sigma_min=shaped.sigma_min, sigma_max=shaped.sigma_max)
    return shaped, info


def check_fits_data(denoiser: DataShapedDenoiser, spec: str, datamodule, device) -> None:
    """One sentence if the model's declared input shape is not the data's, or if it fails on two of its samples."""
    data_shape = tuple(datamodule.data_shape)
    name = type(datamodule).__name__
    if denoiser.data_shape != data_shape:
        raise ShapeError(f"--denoiser {spec} takes samples of shape {list(denoiser.data_shape)} but --data gives "
                         f"{name} samples of shape {list(data_shape)}; give data of the model's shape or a model "
                         "trained on this data")
    x = datamodule.train_tensor()[:2].to(device).float()
    sigma = min(max(1.0, denoiser.sigma_min), denoiser.sigma_max)
    try:
        with torch.no_grad():
            out = denoiser(x, sigma)
    except UserError:
        raise
    except Exception as err:  # the user's network: any failure on the data's shape is the user's to fix
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ShapeError(f"--denoiser {spec} failed on {name} samples of shape {list(data_shape)} "
                         f"({type(err).__name__}: {first_line}); give a model for that shape") from None
    if not isinstance(out, Tensor) or tuple(out.shape) != tuple(x.shape):
        got = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ShapeError(f"--denoiser {spec} returned {got} for {name} samples of shape {list(x.shape)}; a denoiser "
                         "returns one output shaped like its input")
