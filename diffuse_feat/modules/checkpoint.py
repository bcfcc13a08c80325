"""``load_denoiser(path)``: the trained denoiser of a run's checkpoint, without Lightning or the run's config files.

What a :class:`~diffuse_feat.modules.DiffusionModule` checkpoint holds (Lightning 2.6):

* ``hyper_parameters``: the module's constructor arguments (``save_hyperparameters``). Written by ``train.py``
  (LightningCLI) they are ``{class_path, init_args}`` dicts and ``_class_path`` names the module class; written from
  Python they are the objects themselves (a ``functools.partial`` backbone factory, a ``Preconditioning``).
  ``module_class_path`` (written by ``DiffusionModule.on_save_checkpoint``) names the class in both cases.
* ``state_dict``: the ``backbone.*`` weights, the denoiser's own keys.
* With ``EMAWeightAveraging``, Lightning's ``WeightAveraging.on_save_checkpoint`` does not put the average in the
  callback's state (``callbacks["EMAWeightAveraging"]`` only holds ``latest_update_step``): it replaces
  ``state_dict`` by the *averaged* weights, moves the live ones to ``current_model_state`` and keeps the average's
  counter in ``averaging_state["n_averaged"]``. Until the average's first update (``update_starting_at_step``) that
  averaged copy is still the *initial* network, so then the live weights are the trained ones: the choice
  ``model_for_diagnostics`` makes during training, made here too.

The denoiser is rebuilt by the module class's own hooks (``backbone_output_shape``, ``build_denoiser``) called with
the saved hyperparameters as attributes, so a ``CategoricalDiffusionModule`` gives its ``CategoricalDenoiser`` and a
subclass overriding ``build_denoiser`` its own parametrization, without building the LightningModule (its loss and
optimizer classes need not be importable).
"""

from __future__ import annotations

import functools
import importlib
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal, NamedTuple

import torch
from torch import nn

from ..denoisers.preconditioned import PreconditionedDenoiser
from ..errors import ConfigError, DataNotFoundError
from ..preconditioning import EDMPreconditioning
from .categorical import CategoricalDiffusionModule
from .diffusion import DiffusionModule

__all__ = ["load_denoiser", "read_checkpoint", "CheckpointDenoiser", "checkpoint_weights", "import_object"]

WeightsName = Literal["ema", "live", "trained"]


class CheckpointDenoiser(NamedTuple):
    denoiser: PreconditionedDenoiser
    weights: WeightsName  # "ema": the EMA average; "live": the raw weights of an EMA run; "trained": no EMA in the run
    step: int  # the optimizer step the checkpoint was written at
    module_class: type


def import_object(path: str) -> Any:
    """``package.module.name`` -> the object (a class, a function, an instance)."""
    module, _, name = path.rpartition(".")
    if not module:
        raise ConfigError(f"'{path}' is not a dotted path package.module.name")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"cannot import '{path}' ({err}); put its module on PYTHONPATH") from None


def _is_class_spec(value: Any) -> bool:
    return isinstance(value, dict) and "class_path" in value


def _resolve(value: Any) -> Any:
    """A saved ``{class_path, init_args}`` dict as the instance it describes (recursively); anything else as is."""
    if _is_class_spec(value):
        return import_object(value["class_path"])(**_resolve_kwargs(value.get("init_args") or {}))
    return value


def _resolve_kwargs(kwargs: dict) -> dict:
    return {key: _resolve(value) for key, value in kwargs.items()}


def _backbone_factory(spec: Any):
    """The saved backbone argument as a factory ``(input_shape, output_shape) -> nn.Module``."""
    if _is_class_spec(spec):
        return functools.partial(import_object(spec["class_path"]), **_resolve_kwargs(spec.get("init_args") or {}))
    if callable(spec):
        return spec
    raise ConfigError(f"the checkpoint's backbone hyperparameter is neither a class_path nor a callable: {spec!r}")


def checkpoint_weights(checkpoint: dict, ema: bool = True) -> tuple[dict, WeightsName]:
    """The weights to use and which they are (see the module docstring for where Lightning puts the EMA)."""
    averaging, live = checkpoint.get("averaging_state"), checkpoint.get("current_model_state")
    if averaging is None or live is None:
        return checkpoint["state_dict"], "trained"
    if ema and int(averaging.get("n_averaged", 0)) > 0:
        return checkpoint["state_dict"], "ema"
    return live, "live"


def _module_class(checkpoint: dict, hparams: dict) -> type:
    path = checkpoint.get("module_class_path") or hparams.get("_class_path")
    if path:
        cls = import_object(path)
    elif "preconditioning" not in hparams or "loss" not in hparams:  # written from Python: the arguments tell
        cls = type(None)                                               # a diffusion module from a classifier
    else:
        cls = CategoricalDiffusionModule if "encoding_scale" in hparams else DiffusionModule
    if not (isinstance(cls, type) and issubclass(cls, DiffusionModule)):
        what = "a module without preconditioning or loss" if cls is type(None) else f"a {cls.__name__}"
        raise ConfigError(f"the checkpoint holds {what}, not a DiffusionModule; give the checkpoint of a diffusion run")
    return cls


def read_checkpoint(path: str | os.PathLike, *, ema: bool = True,
                    map_location: str | torch.device = "cpu") -> CheckpointDenoiser:
    """The denoiser of a ``DiffusionModule`` checkpoint, which weights it carries, and the step.

    The file is unpickled (``weights_only=False``: hyperparameters written from Python are objects), so load only
    checkpoints you trust, as with Lightning's own ``load_from_checkpoint``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"no checkpoint file '{path}'; give the path of a run's .ckpt, "
                                "such as runs/<name>/version_N/checkpoints/last.ckpt")
    checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not hparams or "backbone" not in hparams or "state_dict" not in checkpoint:
        raise ConfigError(f"'{path}' is not a diffuse_feat run checkpoint (no backbone hyperparameter or state_dict); "
                          "give a checkpoint written by train.py or a Trainer fitting a DiffusionModule")
    cls = _module_class(checkpoint, hparams)
    # what build_denoiser and backbone_output_shape read from `self`: the saved hyperparameters
    saved = SimpleNamespace(**{k: v for k, v in hparams.items() if not k.startswith("_")})
    saved.data_shape = tuple(int(d) for d in hparams.get("data_shape") or ())
    saved.preconditioning = _resolve(hparams.get("preconditioning")) or EDMPreconditioning()
    try:
        backbone = _backbone_factory(hparams["backbone"])(saved.data_shape, cls.backbone_output_shape(saved))
        denoiser = cls.build_denoiser(saved, backbone, saved.preconditioning, False)
    except AttributeError as err:
        raise ConfigError(f"{cls.__name__} builds its denoiser from something its checkpoint did not save ({err}); "
                          "load it with load_from_checkpoint instead") from None
    state, weights = checkpoint_weights(checkpoint, ema)
    denoiser.load_state_dict({k: v for k, v in state.items() if k.startswith("backbone.")})
    denoiser.to(map_location).eval()
    denoiser.data_shape = saved.data_shape  # what samplers and diagnostics ask a model for
    return CheckpointDenoiser(denoiser, weights, int(checkpoint.get("global_step", 0)), cls)


def load_denoiser(path: str | os.PathLike, *, ema: bool = True, map_location: str | torch.device = "cpu") -> nn.Module:
    """The denoiser ``D(x, sigma)`` of a run's checkpoint, in eval mode, with ``data_shape`` set: the EMA weights
    when the run averaged them (and the average was updated), else the trained ones (``ema=False``: always the live
    weights). A ``CategoricalDiffusionModule`` run gives its ``CategoricalDenoiser``."""
    return read_checkpoint(path, ema=ema, map_location=map_location).denoiser
