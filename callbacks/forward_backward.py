"""``ForwardBackwardCallback``: time-resolved forward–backward reconstruction of the model being trained
(Sclocchi, Favero, Wyart 2024), next to the exact belief-propagation (BP) curve of the same data.

Every ``every_n_steps``, on a fixed probe set (the first ``num_probes`` validation samples) with fixed noise
(``SeededNoise(seed .. seed + num_probes - 1)``, the same at every sigma and every run): for each sigma of the
grid, noise the probes to ``x = x_0 + sigma z``, run the reverse sampler back to sigma = 0, parse ``x_hat_0``
exactly with the RHM grammar and measure

* ``p_class``: the class (root) of ``x_hat_0`` equals that of ``x_0``;
* ``p_unchanged[l]``: the fraction of level-``l`` symbols unchanged (``l = 0`` class ... ``L`` leaves); a node
  whose subtree is not grammatical counts as changed;
* ``p_valid``: the fraction of ``x_hat_0`` that are grammatical strings.

The exact reference (BP posterior samples of the same noisy probes; ``p_class`` Rao–Blackwellised) is computed
once and drawn beside the learned curves, so the learned model can be watched approaching the Bayes-optimal one.
RHM mode needs a DataModule with ``parse``, ``val_trees`` and ``bp_denoiser`` (``diffuse_feat.data.rhm``).

On any other data (images: digits, torchvision sets) ``x_hat_0`` is read by a trained ``ClassificationModule``
loaded from ``classifier_checkpoint``: ``p_class`` (its predicted class of ``x_hat_0`` equals that of ``x_0``)
and ``change_<depth>``, the normalised change of its standardised hidden activations at every depth (the
backbone's ``hidden_features``, or the residual blocks of ``MLP``), pixels first and logits last. Without a
checkpoint only the pixel-level change is measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from diffuse_feat.capabilities import LatentTrees, TrainingSet
from diffuse_feat.diagnostics.hierarchy import (
    bp_reference_curves,
    classifier_read_out,
    forward_backward_probes,
    forward_backward_values,
    image_forward_backward,
    image_forward_backward_values,
    image_probes,
    learned_forward_backward,
)
from diffuse_feat.plotting.forward_backward import forward_backward_figure, image_forward_backward_figure
from diffuse_feat.reporting import RunReporter
from diffuse_feat.samplers import SamplerName

from .base import DiagnosticCallback

__all__ = ["ForwardBackwardCallback"]


class ForwardBackwardCallback(DiagnosticCallback):
    """Forward–backward reconstruction of an RHM diffusion model against exact BP, or of images read by a
    classifier.

    Args:
        mode: ``"rhm"`` (the data's latent trees: exact parsing and exact BP; needs ``LatentTrees``) or ``"images"``
            (any data; a classifier reads ``x_hat_0``). Never switched silently: RHM mode on data without trees
            stops at setup.
        sigmas: noise levels of the forward step (sigma-space, data encoding of the DataModule).
        num_probes: validation samples used as ``x_0`` (always the same ones).
        num_steps, sampler: the reverse run from each sigma (``stochastic`` = ancestral, a posterior sample
            like BP's; an ODE sampler maps each ``x`` to one point instead).
        classifier_checkpoint: images only: a ``ClassificationModule`` checkpoint that reads ``x_hat_0``.
    Scalars (RHM): ``p_class_s<sigma>``, ``p_leaves_s<sigma>``, ``p_valid_s<sigma>`` and ``bp_p_class_s<sigma>``;
    (images): ``p_class_s<sigma>`` and ``change_<depth>_s<sigma>``.
    """

    def __init__(self, every_n_steps: int = 500, mode: Literal["rhm", "images"] = "rhm",
                 sigmas: Sequence[float] = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0),
                 num_probes: int = 128, num_steps: int = 16, sampler: SamplerName = "stochastic",
                 classifier_checkpoint: str | None = None, use_ema: bool = True, seed: int = 0,
                 at_train_end: bool = True, name: str | None = None):
        super().__init__(every_n_steps=every_n_steps, at_train_end=at_train_end, use_ema=use_ema, seed=seed, name=name)
        if mode not in ("rhm", "images"):
            raise ValueError(f"ForwardBackwardCallback.mode must be 'rhm' or 'images', got {mode!r}")
        self.mode = mode
        self.sigmas = [float(s) for s in sigmas]
        self.num_probes, self.num_steps, self.sampler = num_probes, num_steps, sampler
        self.classifier_checkpoint = classifier_checkpoint
        self._classifier = None
        self._exact: dict | None = None
        self._learned: dict | None = None
        self._images: dict | None = None

    def classifier(self, device: torch.device):
        """The trained ``ClassificationModule`` of ``classifier_checkpoint`` (loaded once, eval mode), or None."""
        if self.classifier_checkpoint and self._classifier is None:
            from diffuse_feat.modules.classification import ClassificationModule

            self._classifier = ClassificationModule.load_from_checkpoint(
                self.classifier_checkpoint, map_location="cpu", weights_only=False).eval()
        return None if self._classifier is None else self._classifier.to(device)

    def image_probes(self, dm) -> torch.Tensor:
        """The first ``num_probes`` held-out images, or training images when the data holds none out (the image
        configs train on every image: ``n_val = 0``)."""
        return image_probes(dm, self.num_probes)

    def measure_images(self, dm, model, device: torch.device) -> dict[str, Any]:
        x0 = self.image_probes(dm).to(device)
        classifier = self.classifier(device)
        res = image_forward_backward(model, x0, self.sigmas, classifier_read_out(classifier) if classifier else None,
                                     seeds=range(self.seed, self.seed + x0.shape[0]), sampler=self.sampler,
                                     num_steps=self.num_steps)
        self._images = res
        return image_forward_backward_values(self.sigmas, res)

    def required_capabilities(self) -> tuple[type, ...]:
        return (TrainingSet, LatentTrees) if self.mode == "rhm" else (TrainingSet,)

    def missing_capability_hint(self) -> str:
        return "for other data pass mode='images' (and classifier_checkpoint= to read classes)"

    def _probes(self, dm) -> tuple[torch.Tensor, list[torch.Tensor], list[int]]:
        return forward_backward_probes(dm, self.num_probes, self.seed)

    def exact_curves(self, dm) -> dict:
        """The BP reference on the probes with the very noise the model sees (computed once, on CPU)."""
        if self._exact is None:
            x0, trees, seeds = self._probes(dm)
            self._exact = bp_reference_curves(dm.bp_denoiser(), x0, trees, self.sigmas, seeds, self.seed)
        return self._exact

    def measure(self, trainer, pl_module, model) -> dict[str, Any]:
        dm = trainer.datamodule
        if self.mode == "images":
            return self.measure_images(dm, model, pl_module.device)
        x0, trees, seeds = self._probes(dm)
        exact = self.exact_curves(dm)
        learned = learned_forward_backward(model, x0.to(pl_module.device), trees, self.sigmas, dm.parse,
                                           seeds=seeds, sampler=self.sampler, num_steps=self.num_steps)
        self._learned = learned
        return forward_backward_values(self.sigmas, learned, exact)

    def report(self, reporter: RunReporter, values, step, trainer, model) -> None:
        if self.mode == "images":
            fig = image_forward_backward_figure(self.sigmas, self._images, title=f"step {step}")
        else:
            fig = forward_backward_figure(self.sigmas, self._learned, self._exact, title=f"step {step}")
        reporter.figure(f"figures/{self.name}", fig, step)
