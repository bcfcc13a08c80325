"""One runner per diagnostic: the same pure functions, settings and figure as its callback, once, on any denoiser.

A runner's settings are its callback's constructor arguments (the callback is built from them, so its defaults and
its checks are the only ones), minus the scheduling ones; ``memorization``, which has no callback of its own, takes
those of :class:`MemorizationSettings`. Where a setting fixes noise levels that a model trained on a narrower range
cannot take (a DDPM table), the runner narrows them to :class:`SigmaRange`, unless the user set them.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from callbacks import ForwardBackwardCallback, GaussianStructureCallback, RegimesCallback, SampleGridCallback
from callbacks.base import diagnostic_mode

from ..capabilities import TrainingSet, check_capabilities
from ..diagnostics.cloning import choose_labeler, cloning_experiment
from ..diagnostics.gaussian_structure import (
    gaussian_structure_probe_pool,
    gaussian_structure_references,
    measure_gaussian_structure,
)
from ..diagnostics.hierarchy import (
    bp_reference_curves,
    classifier_read_out,
    forward_backward_probes,
    forward_backward_values,
    image_forward_backward,
    image_forward_backward_values,
    image_probes,
    learned_forward_backward,
)
from ..diagnostics.regimes_references import regimes_references_of_data, regimes_summary
from ..diagnostics.samples import sample_memorization, sample_statistics
from ..errors import ConfigError
from ..ou import ou_sigma
from ..plotting.forward_backward import forward_backward_figure, image_forward_backward_figure
from ..plotting.gaussian_structure import plot_gaussian_structure
from ..plotting.regimes import regimes_figure
from ..plotting.sample_grid import sample_rows_figure
from ..process import OrnsteinUhlenbeck
from ..samplers import SamplerName, generate

__all__ = ["DIAGNOSTICS", "Diagnostic", "Job", "Result", "SigmaRange", "MemorizationSettings", "settings_names",
           "settings_defaults", "build_settings"]

SCHEDULING = {"every_n_steps", "at_train_end", "use_ema", "name"}  # when to measure, not what


@dataclass(frozen=True)
class SigmaRange:
    """The noise levels a run may use: the model's range, narrowed by ``--sigma-min`` / ``--sigma-max``."""

    model_min: float = 0.0
    model_max: float = math.inf
    requested_min: float | None = None
    requested_max: float | None = None

    def clip(self, low: float, high: float) -> tuple[float, float]:
        """A diagnostic's own range ``[low, high]``, or the requested one, inside the model's."""
        low = self.requested_min if self.requested_min is not None else max(low, self.model_min)
        high = self.requested_max if self.requested_max is not None else min(high, self.model_max)
        return low, high


@dataclass(frozen=True)
class MemorizationSettings:
    """The ``memorization`` diagnostic: ``num_samples`` samples from seeds ``seed ..``, ``num_steps`` of ``sampler``."""

    num_samples: int = 64
    num_steps: int = 18
    sampler: SamplerName = "heun"
    seed: int = 0

    def __post_init__(self):
        if self.num_samples < 1 or self.num_steps < 1:
            raise ValueError(f"memorization needs num_samples >= 1 and num_steps >= 1, got {self.num_samples}, "
                             f"{self.num_steps}")


@dataclass
class Job:
    """What a runner gets: the model, the data, the settings object (a callback or MemorizationSettings), the keys
    the user set, the noise range and the device."""

    denoiser: Any
    datamodule: Any
    settings: Any
    explicit: set[str]
    sigma_range: SigmaRange
    device: torch.device
    title: str


class Result(NamedTuple):
    values: dict[str, Any]
    figure: Any  # a matplotlib Figure, or None
    sigma_used: tuple[float, float]


@dataclass(frozen=True)
class Diagnostic:
    name: str
    summary: str
    settings_class: type  # its constructor's arguments are the settings
    run: Callable[[Job], Result]
    narrow: Callable[[Job, dict], dict] | None = None  # the settings narrowed to the sigma range, before running


def settings_defaults(settings_class: type) -> dict[str, Any]:
    """The settings a diagnostic takes and their defaults: its settings class's constructor arguments, less the
    scheduling ones."""
    params = inspect.signature(settings_class).parameters
    return {name: p.default for name, p in params.items()
            if name not in SCHEDULING and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def settings_names(settings_class: type) -> list[str]:
    return list(settings_defaults(settings_class))


# ----- gaussian structure --------------------------------------------------------------------------------------------
def run_gaussian_structure(job: Job) -> Result:
    callback, dm, device, model = job.settings, job.datamodule, job.device, job.denoiser
    check_capabilities(dm, callback.required_capabilities(), needed_by="gaussian_structure")
    low, high = job.sigma_range.clip(callback.settings.sigma_min, callback.settings.sigma_max)
    settings = dataclasses.replace(callback.settings, sigma_min=low, sigma_max=high)
    pool, held_out = gaussian_structure_probe_pool(dm)
    refs = gaussian_structure_references(dm.train_tensor().to(device), dm.gaussian_denoiser().to(device),
                                         dm.empirical_denoiser().to(device), pool, held_out, settings, device)
    with diagnostic_mode(model, grad=callback.needs_grad):
        values, samples, nearest = measure_gaussian_structure(model, refs, settings, device)
    figure = plot_gaussian_structure(values, samples.cpu(), refs["gaussian_samples"].cpu(), nearest.cpu(),
                                     mid_band=settings.mid_band, title=job.title)
    return Result(values, figure, (low, high))


# ----- regimes -------------------------------------------------------------------------------------------------------
def narrow_regimes(job: Job, settings: dict) -> dict:
    """The OU time grid ends where the model's noise range does, unless ``t_min`` / ``t_max`` were set."""
    callback = job.settings
    low, high = job.sigma_range.clip(ou_sigma(float(callback.grid[-1])), ou_sigma(float(callback.grid[0])))
    ou = OrnsteinUhlenbeck()
    changed = dict(settings)
    if "t_max" not in job.explicit and high < ou_sigma(float(callback.grid[0])):
        changed["t_max"] = float(ou.t_of_sigma(high))
    if "t_min" not in job.explicit and low > ou_sigma(float(callback.grid[-1])):
        changed["t_min"] = float(ou.t_of_sigma(low))
    return changed


def _classifier_loader(path: str | None, device: torch.device):
    if not path:
        return None

    def load():
        from ..modules.classification import ClassificationModule

        return ClassificationModule.load_from_checkpoint(path, map_location=device, weights_only=False).eval()

    return load


def run_regimes(job: Job) -> Result:
    callback, dm, device, model = job.settings, job.datamodule, job.device, job.denoiser
    check_capabilities(dm, callback.required_capabilities(), needed_by="regimes",
                       hint=callback.missing_capability_hint())
    labeler = choose_labeler(dm, callback.labeler, _classifier_loader(callback.classifier_checkpoint, device),
                             callback.classifier_sigma, "regimes")
    refs = regimes_references_of_data(dm, callback.clone_times, reference_samples=callback.reference_samples,
                                      seed=callback.seed)
    with diagnostic_mode(model, grad=False):
        result = cloning_experiment(model, model.data_shape, callback.clone_times, labeler=labeler, train=refs["train"],
                                    num_pairs=callback.num_pairs, times=callback.grid, method=callback.method,
                                    seed=callback.seed, device=device, max_batch=callback.max_batch)
    values = regimes_summary(result, refs)
    figure = regimes_figure(values, result["t_hat_C"], refs["f_theory_over_alpha"], title=job.title)
    return Result(values, figure, (ou_sigma(float(callback.grid[-1])), ou_sigma(float(callback.grid[0]))))


# ----- forward-backward ----------------------------------------------------------------------------------------------
def run_forward_backward(job: Job) -> Result:
    callback, dm, device, model = job.settings, job.datamodule, job.device, job.denoiser
    check_capabilities(dm, callback.required_capabilities(), needed_by="forward_backward",
                       hint=callback.missing_capability_hint())
    low, _ = job.sigma_range.clip(0.002, math.inf)  # where each reverse run stops (samplers' default sigma_min)
    sigmas = callback.sigmas
    with diagnostic_mode(model, grad=False):
        if callback.mode == "images":
            x0 = image_probes(dm, callback.num_probes).to(device)
            load = _classifier_loader(callback.classifier_checkpoint, device)
            classifier = load().to(device) if load is not None else None
            result = image_forward_backward(model, x0, sigmas, classifier_read_out(classifier) if classifier else None,
                                            seeds=range(callback.seed, callback.seed + x0.shape[0]),
                                            sampler=callback.sampler, num_steps=callback.num_steps, sigma_min=low)
            values, figure = image_forward_backward_values(sigmas, result), image_forward_backward_figure(
                sigmas, result, title=job.title)
        else:
            x0, trees, seeds = forward_backward_probes(dm, callback.num_probes, callback.seed)
            exact = bp_reference_curves(dm.bp_denoiser(), x0, trees, sigmas, seeds, callback.seed)
            learned = learned_forward_backward(model, x0.to(device), trees, sigmas, dm.parse, seeds=seeds,
                                               sampler=callback.sampler, num_steps=callback.num_steps, sigma_min=low)
            values = forward_backward_values(sigmas, learned, exact)
            figure = forward_backward_figure(sigmas, learned, exact, title=job.title)
    return Result(values, figure, (low, max(sigmas)))


# ----- samples -------------------------------------------------------------------------------------------------------
def _generate(job: Job, num_samples: int, num_steps: int, sampler: str, seed: int) -> tuple[torch.Tensor, tuple]:
    low, high = job.sigma_range.clip(0.002, 80.0)  # generate()'s defaults
    with diagnostic_mode(job.denoiser, grad=False):
        samples = generate(job.denoiser, job.denoiser.data_shape, list(range(seed, seed + num_samples)),
                           num_steps=num_steps, sampler=sampler, device=job.device, sigma_min=low, sigma_max=high)
    return samples, (low, high)


def run_sample_grid(job: Job) -> Result:
    callback, dm = job.settings, job.datamodule
    samples, used = _generate(job, callback.num_samples, callback.num_steps, callback.sampler, callback.seed)
    real = dm.train_tensor() if isinstance(dm, TrainingSet) else None
    values = sample_statistics(samples, real)
    rows, labels = [samples.cpu()], ["generated"]
    if real is not None:
        rows, labels = [*rows, real[: callback.num_samples]], [*labels, "real"]
    return Result(values, sample_rows_figure(rows, labels, title=job.title), used)


def run_memorization(job: Job) -> Result:
    settings, dm = job.settings, job.datamodule
    check_capabilities(dm, (TrainingSet,), needed_by="memorization")
    samples, used = _generate(job, settings.num_samples, settings.num_steps, settings.sampler, settings.seed)
    values, nearest = sample_memorization(samples, dm.train_tensor().to(samples.device))
    figure = sample_rows_figure([samples.cpu(), nearest.cpu()], ["generated", "nearest training point"],
                                title=f"{job.title}: memorized fraction {values['memorized_fraction']:.2f}")
    return Result(values, figure, used)


DIAGNOSTICS: dict[str, Diagnostic] = {d.name: d for d in (
    Diagnostic("gaussian_structure", "linearity, distance to the Gaussian and empirical denoisers, Jacobian, linear "
               "distillation, samples (Li, Dai, Qu; GaussianStructureCallback)", GaussianStructureCallback,
               run_gaussian_structure),
    Diagnostic("regimes", "cloning (speciation) and collapse times against theory (Biroli et al.; RegimesCallback)",
               RegimesCallback, run_regimes, narrow_regimes),
    Diagnostic("forward_backward", "forward-backward reconstruction, against exact BP on the RHM or read by a "
               "classifier on images (Sclocchi et al.; ForwardBackwardCallback)", ForwardBackwardCallback,
               run_forward_backward),
    Diagnostic("memorization", "the fraction of generated samples that copy a training point, and the GL score",
               MemorizationSettings, run_memorization),
    Diagnostic("sample_grid", "generated samples next to real ones, with their mean and std (SampleGridCallback)",
               SampleGridCallback, run_sample_grid),
)}


def build_settings(diagnostic: Diagnostic, settings: dict[str, Any]) -> Any:
    """The settings object, or one sentence naming what is wrong with the values."""
    try:
        return diagnostic.settings_class(**settings)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{diagnostic.name} settings {settings}: {err}; fix them with --set name=value") from None
