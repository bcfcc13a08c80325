"""Tiny networks with EDM's interface (NVlabs/edm ``training/networks.py``), built by the tests instead of downloaded:
``net(x, sigma, class_labels)`` returns ``D(x, sigma)`` with the preconditioning inside, beside ``sigma_min``,
``sigma_max``, ``round_sigma``, ``label_dim``, ``img_channels`` and ``img_resolution``.

* :class:`TinyEDMPrecond`: ``EDMPrecond``'s coefficients (continuous sigma, range 0 to infinity);
* :class:`TinyDiscretePrecond`: like ``iDDPMPrecond``, evaluated on a table of noise levels ``u`` (``round_sigma``
  snaps to it; the range is the table's).
"""

from __future__ import annotations

import torch
from torch import nn


class TinyF(nn.Module):
    """``F(c_in x; c_noise, class_labels)``: a convolution whose output depends on the noise level and the label."""

    def __init__(self, channels: int, label_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.noise = nn.Linear(1, channels)
        self.label = nn.Linear(label_dim, channels, bias=False) if label_dim else None

    def forward(self, x, c_noise, class_labels=None):
        shift = self.noise(c_noise.reshape(-1, 1))
        if self.label is not None:
            shift = shift + self.label(class_labels)
        return torch.tanh(self.conv(x)) * (1 + shift[:, :, None, None]) + 0.1 * x


class TinyEDMPrecond(nn.Module):
    def __init__(self, img_resolution: int = 8, img_channels: int = 1, label_dim: int = 0, sigma_data: float = 0.5):
        super().__init__()
        self.img_resolution, self.img_channels, self.label_dim = img_resolution, img_channels, label_dim
        self.sigma_min, self.sigma_max, self.sigma_data = 0.0, float("inf"), sigma_data
        self.model = TinyF(img_channels, label_dim)

    def forward(self, x, sigma, class_labels=None, force_fp32=False, **model_kwargs):
        x = x.to(torch.float32)
        sigma = sigma.to(torch.float32).reshape(-1, 1, 1, 1)
        class_labels = (None if self.label_dim == 0 else torch.zeros([1, self.label_dim], device=x.device)
                        if class_labels is None else class_labels.to(torch.float32).reshape(-1, self.label_dim))
        c_skip = self.sigma_data ** 2 / (sigma ** 2 + self.sigma_data ** 2)
        c_out = sigma * self.sigma_data / (sigma ** 2 + self.sigma_data ** 2).sqrt()
        c_in = 1 / (self.sigma_data ** 2 + sigma ** 2).sqrt()
        c_noise = sigma.log() / 4
        F_x = self.model(c_in * x, c_noise.flatten(), class_labels)
        return c_skip * x + c_out * F_x

    def round_sigma(self, sigma):
        return torch.as_tensor(sigma)


class TinyDiscretePrecond(TinyEDMPrecond):
    """Evaluated on ``u``, 40 noise levels from 0.02 to 50 (as iDDPMPrecond is on its ``u``)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.register_buffer("u", torch.logspace(torch.log10(torch.tensor(0.02)), torch.log10(torch.tensor(50.0)), 40))
        self.sigma_min, self.sigma_max = float(self.u[0]), float(self.u[-1])

    def round_sigma(self, sigma, return_index=False):
        sigma = torch.as_tensor(sigma)
        index = (sigma.to(torch.float32).reshape(-1, 1).log() - self.u.log().reshape(1, -1)).abs().argmin(1)
        return (index if return_index else self.u[index].to(sigma.dtype)).reshape(sigma.shape)
