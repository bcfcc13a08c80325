"""``CategoricalDiffusionModule``: Gaussian diffusion on one-hot data with a softmax posterior-mean denoiser.

For data whose every position is one of ``v`` symbols encoded as ``scale (e_a - center / v)`` (the RHM,
``diffuse_feat.data.rhm``), ``E[x0 | x]`` is, position by position, the posterior-weighted mean of the ``v``
codes: the module holds a :class:`~diffuse_feat.denoisers.CategoricalDenoiser` and trains it by
:class:`~diffuse_feat.losses.CategoricalCrossEntropy` (see both for why). Sampling, forward-backward and every
diagnostic see an ordinary sigma-space denoiser.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..denoisers.preconditioned import CategoricalDenoiser
from ..errors import ConfigError
from ..losses import CategoricalCrossEntropy, Loss
from ..preconditioning import Preconditioning
from .diffusion import DiffusionModule

__all__ = ["CategoricalDiffusionModule"]


class CategoricalDiffusionModule(DiffusionModule):
    """A :class:`DiffusionModule` for one-hot data ``[B, v, N]`` (channels = symbols).

    Args:
        loss: default cross-entropy of the logits against the clean symbols.
        encoding_scale, encoding_center: the data's encoding ``scale (one_hot - center / v)``; the RHM
            DataModule's ``scale`` and ``center`` (checked against the training data when fitting starts).
        Everything else as :class:`DiffusionModule`; ``preconditioning`` only supplies ``c_in``.
    """

    def __init__(self, *args: Any, loss: Loss = CategoricalCrossEntropy(), encoding_scale: float = 1.0,
                 encoding_center: bool = True, **kwargs: Any):
        # set before the parent's __init__, which builds the denoiser from them
        self.encoding_scale, self.encoding_center = float(encoding_scale), bool(encoding_center)
        super().__init__(*args, loss=loss, **kwargs)
        if len(self.data_shape) < 2:
            raise ConfigError(f"CategoricalDiffusionModule needs one-hot data [symbols, positions...], got data_shape "
                              f"{list(self.data_shape)}")
        self.num_symbols = self.data_shape[0]

    def build_denoiser(self, backbone: nn.Module, preconditioning: Preconditioning,
                       compile_backbone: bool | str) -> CategoricalDenoiser:
        return CategoricalDenoiser(backbone, preconditioning, encoding_scale=self.encoding_scale,
                                   encoding_center=self.encoding_center, compile_backbone=compile_backbone)

    def encode(self, symbols: Tensor) -> Tensor:
        onehot = F.one_hot(symbols.long(), self.num_symbols).movedim(-1, 1).float()
        return self.encoding_scale * (onehot - (1.0 / self.num_symbols if self.encoding_center else 0.0))

    def on_fit_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        train = dm.train_tensor() if dm is not None and hasattr(dm, "train_tensor") else None
        if train is not None and train.shape[0] > 0:
            head = train[:64].float()
            if not torch.allclose(self.encode(head.argmax(1)).to(head.device), head, atol=1e-5):
                raise ConfigError(
                    f"{type(self).__name__}: the training data is not one-hot encoded as "
                    f"{self.encoding_scale} (one_hot - {'1/v' if self.encoding_center else '0'}); set "
                    "model.init_args.encoding_scale / encoding_center to the data's scale / center")
