"""Time-resolved forward–backward reconstruction of one denoiser (Sclocchi, Favero, Wyart 2024) as one measurement.

On a fixed probe set (the first ``num_probes`` held-out samples) with fixed noise (``SeededNoise(seed ..)``, the same
at every sigma and every call): for each sigma, noise the probes to ``x = x_0 + sigma z``, run the reverse sampler
back to sigma = 0, and read ``x_hat_0`` (:mod:`.hierarchy`):

* ``mode="rhm"`` (data with ``LatentTrees``): exact parsing with the grammar. ``p_class`` (the root of ``x_hat_0``
  is that of ``x_0``), ``p_unchanged[l]`` (the fraction of level-``l`` symbols unchanged, ``l = 0`` class ... ``L``
  leaves; a node whose subtree is not grammatical counts as changed), ``p_valid`` (grammatical strings), beside exact
  belief propagation on the very same noisy probes (``bp_p_class``, ``bp_p_unchanged``; computed once per
  DataModule), so a learned model can be watched approaching the Bayes-optimal one;
* ``mode="images"`` (any data): a trained ``ClassificationModule`` reads ``x_hat_0``: ``p_class`` (its predicted class
  of ``x_hat_0`` is that of ``x_0``) and ``change_<depth>``, the normalised change of its standardised hidden
  activations at every depth, pixels first and logits last. Without a classifier only ``pixels`` is measured.

Curves over sigma: ``p_class``, ``p_leaves``, ``p_valid``, ``bp_p_class`` (rhm) or ``p_class``, ``change_<depth>``
(images).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from ..capabilities import LatentTrees, TrainingSet
from ..plotting.forward_backward import forward_backward_figure, image_forward_backward_figure
from ..samplers import SamplerName, SeededNoise
from .hierarchy import (
    bp_gaussian_forward_backward,
    classifier_read_out,
    image_forward_backward,
    learned_forward_backward,
)
from .measurement import Curve, Measured, Measurement

__all__ = ["ForwardBackward", "image_probes", "rhm_probes"]


def rhm_probes(data, num_probes: int, seed: int) -> tuple[Tensor, list[Tensor], list[int]]:
    """RHM probes: the first ``num_probes`` validation strings, their trees, and one noise seed each."""
    x0 = data.val_tensor()[:num_probes]
    seeds = list(range(seed, seed + x0.shape[0]))
    return x0, [t[: x0.shape[0]] for t in data.val_trees()], seeds


def image_probes(data, num_probes: int) -> Tensor:
    """The first ``num_probes`` held-out images, or training images when the data holds none out (the image configs
    train on every image: ``n_val = 0``)."""
    held_out = data.val_tensor()
    pool = held_out if held_out.shape[0] > 0 else data.train_tensor()
    return pool[:num_probes]


class ForwardBackward(Measurement):
    """Forward–backward reconstruction of an RHM diffusion model against exact BP, or of images read by a
    classifier.

    Args:
        mode: ``"rhm"`` (the data's latent trees: exact parsing and exact BP; needs ``LatentTrees``) or ``"images"``
            (any data; a classifier reads ``x_hat_0``). Never switched silently.
        sigmas: noise levels of the forward step (sigma-space, in the DataModule's encoding).
        num_probes: held-out samples used as ``x_0`` (always the same ones).
        num_steps, sampler: the reverse run from each sigma (``stochastic`` = ancestral, a posterior sample like
            BP's; an ODE sampler maps each ``x`` to one point instead), down to ``sigma_min`` then one step to 0.
        classifier_checkpoint: images only: a ``ClassificationModule`` checkpoint that reads ``x_hat_0``;
            ``depth_names`` names its hidden depths (default ``depth1 ...``). Override :meth:`read_out` to read
            ``x_hat_0`` another way.
        seed: the probes' noise (probe ``i`` gets ``seed + i``).
    """

    name = "forward_backward"

    def __init__(self, mode: Literal["rhm", "images"] = "rhm",
                 sigmas: Sequence[float] = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0), num_probes: int = 128,
                 num_steps: int = 16, sampler: SamplerName = "stochastic", sigma_min: float = 0.002,
                 classifier_checkpoint: str | None = None, depth_names: Sequence[str] | None = None, seed: int = 0):
        if mode not in ("rhm", "images"):
            raise ValueError(f"ForwardBackward.mode must be 'rhm' or 'images', got {mode!r}")
        self.mode, self.sigmas = mode, [float(s) for s in sigmas]
        self.num_probes, self.num_steps, self.sampler, self.sigma_min = num_probes, num_steps, sampler, sigma_min
        self.classifier_checkpoint, self.seed = classifier_checkpoint, seed
        self.depth_names = list(depth_names) if depth_names is not None else None

    def noise_range(self) -> tuple[float, float]:
        return self.sigma_min, max(self.sigmas)

    def required_capabilities(self) -> tuple[type, ...]:
        return (TrainingSet, LatentTrees) if self.mode == "rhm" else (TrainingSet,)

    def missing_capability_hint(self) -> str:
        return "for other data pass mode='images' (and classifier_checkpoint= to read classes)"

    def read_out(self, data, device: torch.device):
        """``x -> (logits, activations)`` of the classifier on ``device`` (loaded once), or None without one."""
        def load():
            if not self.classifier_checkpoint:
                return None
            from ..modules.classification import load_classifier  # here: the rest needs no Lightning

            return classifier_read_out(load_classifier(self.classifier_checkpoint, device))

        return self.cached(data, f"classifier:{device}", load)

    def exact(self, data) -> dict[str, Any]:
        """Exact BP on the RHM probes with the very noise the model sees (computed once per DataModule, on CPU)."""
        def compute():
            x0, trees, seeds = rhm_probes(data, self.num_probes, self.seed)
            noise = SeededNoise(seeds).randn_like(x0)
            return bp_gaussian_forward_backward(data.bp_denoiser(), x0, trees, self.sigmas, noise, seed=self.seed)

        return self.cached(data, "exact", compute)

    def compute(self, denoiser, data, device: torch.device) -> Measured:
        if self.mode == "images":
            return self._images(denoiser, data, device)
        x0, trees, seeds = rhm_probes(data, self.num_probes, self.seed)
        exact = self.exact(data)
        learned = learned_forward_backward(denoiser, x0.to(device), trees, self.sigmas, data.parse, seeds=seeds,
                                           sampler=self.sampler, num_steps=self.num_steps, sigma_min=self.sigma_min)
        values = dict(sigma=list(self.sigmas), p_class=learned["p_class"], p_unchanged=learned["p_unchanged"],
                      p_valid=learned["p_valid"], bp_p_class=exact["p_class"], bp_p_unchanged=exact["p_unchanged"])
        curves = {key: Curve("sigma", self.sigmas, column) for key, column in (
            ("p_class", learned["p_class"]), ("p_leaves", [row[-1] for row in learned["p_unchanged"]]),
            ("p_valid", learned["p_valid"]), ("bp_p_class", exact["p_class"]))}
        return Measured(values, curves, artifacts={"learned": learned, "exact": exact})

    def _images(self, denoiser, data, device: torch.device) -> Measured:
        x0 = image_probes(data, self.num_probes).to(device)
        result = image_forward_backward(denoiser, x0, self.sigmas, self.read_out(data, device),
                                        seeds=range(self.seed, self.seed + x0.shape[0]), sampler=self.sampler,
                                        num_steps=self.num_steps, depth_names=self.depth_names,
                                        sigma_min=self.sigma_min)
        values: dict[str, Any] = dict(sigma=list(self.sigmas), depths=result["depths"], change=result["change"])
        curves = {}
        if "p_class" in result:
            values["p_class"] = result["p_class"]
            curves["p_class"] = Curve("sigma", self.sigmas, result["p_class"])
        curves.update({f"change_{depth}": Curve("sigma", self.sigmas, result["change"][depth])
                       for depth in result["depths"]})
        return Measured(values, curves, artifacts={"result": result})

    def figure(self, measured: Measured, *, title: str | None = None, history=None):
        art = measured.artifacts
        if self.mode == "images":
            return image_forward_backward_figure(self.sigmas, art["result"], title=title or "")
        return forward_backward_figure(self.sigmas, art["learned"], art["exact"], title=title or "")
