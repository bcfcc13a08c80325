"""EDM's networks (Karras et al. 2022, NVlabs/edm; EDM2's alike) as framework denoisers.

An EDM network is called ``net(x, sigma, class_labels)`` and returns ``D(x, sigma)`` itself: the preconditioning
(``EDMPrecond``, ``VPPrecond``, ``VEPrecond``, ``iDDPMPrecond``) lives inside it, beside ``sigma_min``, ``sigma_max``,
``round_sigma``, ``label_dim``, ``img_channels`` and ``img_resolution``. :func:`from_edm` wraps such a module
(:class:`~diffuse_feat.denoisers.sigma_space.SigmaSpaceDenoiser`: checked inputs, its sigma range, a fixed class
label); :func:`load_edm` reads one of NVlabs' pickles (``network-snapshot-*.pkl``, a dict whose ``"ema"`` is the
network). Those pickles embed their classes' source through EDM's ``torch_utils.persistence``, so EDM's code
(``torch_utils``, ``dnnlib``) must be importable; a pickle runs code when loaded: load only files you trust.
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..denoisers.sigma_space import SigmaSpaceDenoiser
from ..errors import ConfigError, DataNotFoundError

__all__ = ["from_edm", "load_edm", "EDM_CODE"]

EDM_CODE = ("torch_utils", "dnnlib")  # the packages of NVlabs/edm (and edm2) its pickles import


def _class_label_arguments(net: nn.Module, class_labels: int | Sequence[float] | Tensor | None, kind: str):
    """``extra_arguments`` giving every call ``class_labels`` as EDM takes them (``[B, label_dim]``), or ``None``."""
    label_dim = int(getattr(net, "label_dim", 0) or 0)
    if label_dim == 0:
        if class_labels is not None:
            raise ConfigError(f"{kind} is unconditional (label_dim 0); drop class_labels")
        return None
    if class_labels is None:
        raise ConfigError(f"{kind} is class-conditional (label_dim {label_dim}); pass class_labels=, a class index "
                          f"in 0..{label_dim - 1} or a vector of {label_dim} weights")
    if isinstance(class_labels, int):
        if not 0 <= class_labels < label_dim:
            raise ConfigError(f"class_labels={class_labels} is not a class of {kind}; give one in 0..{label_dim - 1}")
        row = torch.nn.functional.one_hot(torch.tensor(class_labels), label_dim).float()
    else:
        row = torch.as_tensor(class_labels, dtype=torch.float32).reshape(-1)
        if row.numel() != label_dim:
            raise ConfigError(f"class_labels has {row.numel()} values and {kind} takes {label_dim}; give a class "
                              f"index or {label_dim} weights")

    def arguments(batch: int, device: torch.device) -> dict:
        return {"class_labels": row.to(device).expand(batch, label_dim)}

    return arguments


def from_edm(net: nn.Module, *, class_labels: int | Sequence[float] | Tensor | None = None) -> SigmaSpaceDenoiser:
    """An EDM-style network ``net(x, sigma, class_labels) -> D`` as ``D(x, sigma)`` (eval mode).

    Its ``sigma_min``/``sigma_max`` (when it has them; ``EDMPrecond``'s are 0 and infinity) bound the sigma it accepts
    and samplers' default grid, which they round with its ``round_sigma`` as EDM's sampler does; ``img_channels`` and
    ``img_resolution`` give ``data_shape``. A class-conditional network (``label_dim > 0``) needs ``class_labels``: a
    class index (one-hot) or ``label_dim`` weights, fixed for every call.
    """
    if not callable(net):
        raise ConfigError(f"from_edm takes an EDM network, a module net(x, sigma, class_labels); got a "
                          f"{type(net).__name__}")
    kind = f"the EDM network {type(net).__name__}"
    channels, resolution = getattr(net, "img_channels", None), getattr(net, "img_resolution", None)
    data_shape = (int(channels), int(resolution), int(resolution)) if channels and resolution else None
    sigma_min, sigma_max = float(getattr(net, "sigma_min", 0.0)), float(getattr(net, "sigma_max", math.inf))
    round_sigma = getattr(net, "round_sigma", None)
    if isinstance(net, nn.Module):
        net.eval()
    return SigmaSpaceDenoiser(net, kind=kind, sigma_min=sigma_min, sigma_max=sigma_max, data_shape=data_shape,
                              round_sigma=round_sigma if callable(round_sigma) else None,
                              extra_arguments=_class_label_arguments(net, class_labels, kind)).eval()


def load_edm(path: str | os.PathLike, *, key: str = "ema", class_labels: int | Sequence[float] | Tensor | None = None,
             device: torch.device | str = "cpu") -> SigmaSpaceDenoiser:
    """The network in an EDM pickle (``pickle.load(f)[key]``, or the pickled network itself) as ``D(x, sigma)``.

    Raises:
        DataNotFoundError: no such file.
        ConfigError: EDM's code is not importable (one sentence says what to put on ``PYTHONPATH``), or the file
            holds no network under ``key``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"no EDM pickle '{path}'; give the path of a network-snapshot-*.pkl")
    try:
        with open(path, "rb") as f:
            loaded = pickle.load(f)
    except ModuleNotFoundError as err:
        missing = (err.name or "").split(".")[0]
        what = ("EDM's code (its torch_utils and dnnlib)" if missing in EDM_CODE else f"the module {err.name!r}")
        raise ConfigError(f"{path} needs {what} to load: put a checkout of the code that wrote it "
                          "(github.com/NVlabs/edm or edm2) on PYTHONPATH") from None
    except (pickle.UnpicklingError, EOFError) as err:
        raise ConfigError(f"{path} is not a readable pickle ({err}); give an EDM network-snapshot-*.pkl") from None
    net = loaded.get(key) if isinstance(loaded, dict) else loaded
    if not callable(net):
        held = ", ".join(map(str, loaded)) if isinstance(loaded, dict) else type(loaded).__name__
        raise ConfigError(f"{path} holds no network under {key!r} (it holds {held}); give the key of the network")
    if isinstance(net, nn.Module):
        net = net.float().to(device)
    return from_edm(net, class_labels=class_labels)

