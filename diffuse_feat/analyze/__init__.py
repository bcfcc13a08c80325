"""``python -m diffuse_feat.analyze <diagnostic> --denoiser SPEC --data CONFIG --out DIR``: one diagnostic, once, on a
model you already have.

The model (``SPEC``: a run checkpoint, a diffusers folder, ``python:module.attr``, or an exact reference of the
data; :mod:`.denoiser_spec`) is measured over the data of a DataModule (``CONFIG``: a YAML of ``train.py``'s format,
whose ``data`` section is used) by the very measurement object the diagnostic's callback runs during training
(:mod:`.table`: a name, or the dotted path of a ``Measurement`` class of your own); ``DIR/<diagnostic>.json`` and
``DIR/<diagnostic>.png`` are written, and what the callback would log (TensorBoard events, a
``diagnostics.jsonl`` record) at step 0.

Settings are the measurement's constructor arguments: its defaults, then those of a callback measuring it in
``CONFIG``'s ``trainer.callbacks`` (so a run's own ``config.yaml`` reproduces what the run logged), then
``--set name=value``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import yaml

from ..diagnostic_callback import DiagnosticCallback
from ..diagnostics.measurement import Measured, Measurement
from ..errors import ConfigError, DataNotFoundError
from ..modules.checkpoint import import_object
from ..plotting import save_figure
from ..process import SigmaOutOfRangeError
from ..reporting import RunReporter, to_jsonable
from .denoiser_spec import SPEC_FORMS, DataShapedDenoiser, PythonModel, resolve_denoiser
from .table import DIAGNOSTICS, SigmaRange, build, diagnostic_named, narrow, settings_defaults, settings_names

__all__ = ["analyze", "load_config", "datamodule_from_config", "DIAGNOSTICS", "SPEC_FORMS", "PythonModel"]


def load_config(path: str | os.PathLike) -> dict:
    """A YAML file of ``train.py``'s format, as a dict."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"--data {path}: no such file; give a YAML of train.py's format, such as "
                                "configs/default.yaml or a run's config.yaml")
    with open(path) as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict) or not isinstance(config.get("data"), dict):
        raise ConfigError(f"--data {path} has no data section; give a YAML of train.py's format whose data: names a "
                          "DataModule, such as configs/default.yaml")
    return config


def datamodule_from_config(config: dict, path: str | os.PathLike = "CONFIG"):
    """The DataModule of ``config['data']`` (``class_path`` + ``init_args``), as LightningCLI would build it."""
    import lightning.pytorch as pl
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(pl.LightningDataModule, "data", required=True)
    try:
        datamodule = parser.instantiate(parser.parse_object({"data": config["data"]})).data
    except Exception as err:  # jsonargparse reports a bad section in several exception types
        detail = " ".join(str(err).split())
        raise ConfigError(f"--data {path}: its data section does not build a DataModule ({detail[:300]}); fix it "
                          "as for train.py") from None
    datamodule.setup("fit")
    return datamodule


def _settings_from_config(config: dict, measurement: type[Measurement], names: list[str]) -> dict[str, Any]:
    """The settings of the first callback in the config's trainer.callbacks that measures ``measurement`` (or a
    subclass): a named callback's own init_args (it builds its measurement from them), or a ``DiagnosticCallback``'s
    ``measurement.init_args``."""
    callbacks = (config.get("trainer") or {}).get("callbacks") or []
    for entry in callbacks if isinstance(callbacks, list) else [callbacks]:
        try:
            cls = import_object(entry["class_path"]) if isinstance(entry, dict) and "class_path" in entry else None
        except ConfigError:
            continue
        if not (isinstance(cls, type) and issubclass(cls, DiagnosticCallback)):
            continue
        init_args = entry.get("init_args") or {}
        spec = init_args.get("measurement")
        if isinstance(spec, dict) and "class_path" in spec:
            measured_class, init_args = import_object(spec["class_path"]), spec.get("init_args") or {}
        else:
            measured_class = type(cls(**init_args).measurement)  # a named callback builds its measurement
        if isinstance(measured_class, type) and issubclass(measured_class, measurement):
            return {k: v for k, v in init_args.items() if k in names}
    return {}


def _check_sigma_request(denoiser: DataShapedDenoiser, spec: str, sigma_min: float | None,
                         sigma_max: float | None) -> None:
    low, high = denoiser.sigma_min, denoiser.sigma_max
    if sigma_min is not None and not (sigma_min >= low * (1 - 1e-6) and sigma_min < high):
        raise SigmaOutOfRangeError(f"--sigma-min {sigma_min:g} lies outside the noise range of --denoiser {spec} "
                                   f"({low:.4g} to {high:.4g}); pass --sigma-min {low:.4g} or more", sigma_min, low,
                                   high)
    if sigma_max is not None and not (sigma_max <= high * (1 + 1e-6) and sigma_max > low):
        raise SigmaOutOfRangeError(f"--sigma-max {sigma_max:g} lies outside the noise range of --denoiser {spec} "
                                   f"({low:.4g} to {high:.4g}); pass --sigma-max {high:.4g} or less", sigma_max, low,
                                   high)
    if sigma_min is not None and sigma_max is not None and sigma_min >= sigma_max:
        raise ConfigError(f"--sigma-min {sigma_min:g} is not below --sigma-max {sigma_max:g}; swap them")


def analyze(diagnostic: str, denoiser: str, data: str | os.PathLike, out: str | os.PathLike, *,
            settings: dict[str, Any] | None = None, sigma_min: float | None = None, sigma_max: float | None = None,
            ema: bool = True, python: PythonModel | None = None, timesteps: str = "interpolate",
            device: str | torch.device | None = None, class_label: int | None = None) -> dict[str, Any]:
    """Run ``diagnostic`` once on the denoiser ``denoiser`` names over the data of the YAML ``data``; write
    ``out/<diagnostic>.json`` (what is returned) and ``out/<diagnostic>.png``. Arguments as the command line's."""
    chosen = diagnostic_named(diagnostic)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    config = load_config(data)
    names = settings_names(chosen.measurement)
    unknown = sorted(set(settings or {}) - set(names))
    if unknown:
        raise ConfigError(f"--set {unknown[0]}: {diagnostic} has no setting {unknown[0]!r}; its settings are "
                          f"{', '.join(names)}")
    resolved = {**_settings_from_config(config, chosen.measurement, names), **(settings or {})}
    datamodule = datamodule_from_config(config, data)
    model, description = resolve_denoiser(denoiser, datamodule, ema=ema, python=python, timesteps=timesteps,
                                          device=device, class_label=class_label)
    _check_sigma_request(model, denoiser, sigma_min, sigma_max)
    resolved = narrow(chosen, resolved, SigmaRange(model.sigma_min, model.sigma_max, sigma_min, sigma_max),
                      set(settings or {}))
    measurement = build(chosen, resolved)
    measurement.check(datamodule, needed_by=diagnostic)
    try:
        measured = measurement.measure(model, datamodule, device=device)
    except SigmaOutOfRangeError as err:
        raise SigmaOutOfRangeError(
            f"{diagnostic} asked --denoiser {denoiser} for sigma={err.sigma:.4g}, outside its noise range "
            f"{err.low:.4g} to {err.high:.4g}; keep --sigma-min/--sigma-max and the diagnostic's own noise levels "
            "(--set ...) inside it", err.sigma, err.low, err.high) from None
    used = measurement.noise_range()
    payload = {
        "diagnostic": diagnostic,
        "denoiser": {"spec": denoiser, **description},
        "data": {"config": str(data), "datamodule": type(datamodule).__name__,
                 "data_shape": list(datamodule.data_shape)},
        "settings": {**settings_defaults(chosen.measurement), **resolved},
        "sigma_range": {"model": [model.sigma_min, model.sigma_max], "used": list(used) if used else None},
        "values": measured.record(),
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = to_jsonable(payload)
    (out / f"{diagnostic}.json").write_text(json.dumps(payload, indent=1, allow_nan=False))
    figure = measurement.figure(measured, title=f"{diagnostic}: {denoiser}")
    write_as_callback(out, chosen.logged_as, measured, figure)
    if figure is not None:
        save_figure(figure, out / f"{diagnostic}.png")  # closes it
    return payload


def write_as_callback(out: Path, name: str, measured: Measured, figure) -> None:
    """What the diagnostic's callback writes at a step, here at step 0: the values as TensorBoard scalars and curves
    under ``diagnostics/<name>``, a ``diagnostics.jsonl`` record (``read_jsonl`` reads both alike) and the figure
    under ``figures/<name>`` (left open for the PNG)."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(out))
    try:
        reporter = RunReporter(out, writers=[writer])
        reporter.measured(f"diagnostics/{name}", measured, 0)
        reporter.record(name, 0, measured.record())
        if figure is not None:
            reporter.figure(f"figures/{name}", figure, 0, close=False)
    finally:
        writer.close()
