"""``python -m diffuse_feat.analyze <diagnostic> --denoiser SPEC --data CONFIG --out DIR``: see the package docstring.

Bad input (an unknown SPEC form, a folder without a model, a model whose input shape is not the data's, an unknown
parametrization, sigma outside a discrete schedule) stops with one sentence naming the argument and the fix, without
a traceback (``DIFFUSE_FEAT_TRACEBACK=1`` shows it), as ``train.py`` does.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from pathlib import Path

import yaml

from ..errors import ConfigError, one_sentence_errors
from . import DIAGNOSTICS, SPEC_FORMS, PythonModel, analyze
from .table import settings_names


def _item(name: str, text: str, width: int) -> list[str]:
    pad = " " * (width + 3)
    return textwrap.wrap(text, 110, initial_indent=f"  {name:<{width}} ", subsequent_indent=pad)


def _epilog() -> str:
    lines = ["diagnostics (settings: --set name=value):"]
    for name, diagnostic in DIAGNOSTICS.items():
        lines += _item(name, diagnostic.summary, 18)
        lines += _item("", "settings: " + ", ".join(settings_names(diagnostic.measurement)), 18)
    lines += ["", "SPEC forms (--denoiser):"]
    for form, text in SPEC_FORMS.items():
        lines += _item(form, text, 25)
    lines += ["", "A Measurement class of your own is named by its dotted path (my_module.MyMeasurement).",
              "Settings start from the measurement's defaults, then the init_args of a callback measuring it in",
              "CONFIG's trainer.callbacks (a run's config.yaml reproduces what the run logged), then --set.",
              "Noise levels stay inside the model's range (a DDPM table's, say): the diagnostic's own range is",
              "narrowed to it unless --sigma-min/--sigma-max say otherwise."]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m diffuse_feat.analyze", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run one diagnostic once on a model you already have; writes DIR/<diagnostic>.json and .png.",
        epilog=_epilog())
    parser.add_argument("diagnostic", metavar="<diagnostic>",
                        help=f"one of {', '.join(DIAGNOSTICS)}, or my_module.MyMeasurement")
    parser.add_argument("--denoiser", required=True, metavar="SPEC", help="the model (SPEC forms below)")
    parser.add_argument("--data", required=True, type=Path, metavar="CONFIG",
                        help="a YAML of train.py's format; its data section gives the DataModule")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="settings",
                        help="a setting of the diagnostic (YAML value), repeatable")
    parser.add_argument("--sigma-min", type=float, help="lowest noise level the diagnostic may use")
    parser.add_argument("--sigma-max", type=float, help="highest noise level the diagnostic may use")
    parser.add_argument("--no-ema", dest="ema", action="store_false", help="a checkpoint's live weights, not its EMA")
    parser.add_argument("--timesteps", default="interpolate", help="discrete schedules: how a sigma becomes a "
                        "timestep, interpolate (fractional) or nearest (integer)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--class-label", type=int, metavar="K", help="the class a class-conditional model (an EDM "
                        "network, a diffusers UNet2DModel with num_class_embeds) is told on every call")
    group = parser.add_argument_group("python: models (what the network predicts and how it was trained)")
    group.add_argument("--parametrization", help="eps, v, x0, edm (EDM's F) or flow (rectified-flow velocity)")
    group.add_argument("--process", help="ddpm, vp, ve, edm or rectified_flow")
    group.add_argument("--num-train-timesteps", type=int, default=1000, help="ddpm: number of timesteps")
    group.add_argument("--beta-schedule", default="linear", help="ddpm: linear or cosine")
    group.add_argument("--beta-start", type=float, default=1e-4, help="ddpm: first beta")
    group.add_argument("--beta-end", type=float, default=0.02, help="ddpm: last beta")
    group.add_argument("--beta-min", type=float, default=0.1, help="vp: beta(0)")
    group.add_argument("--beta-max", type=float, default=20.0, help="vp: beta(1)")
    group.add_argument("--sigma-data", type=float, default=0.5, help="edm: sigma_data")
    group.add_argument("--time-scale", type=float, default=1.0, help="the network is told time_scale * t")
    return parser


def parse_settings(pairs: list[str]) -> dict:
    settings = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"--set {pair!r} is not name=value; write it as --set num_pairs=50")
        settings[name.strip()] = yaml.safe_load(value)
    return settings


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    with one_sentence_errors():
        if args.timesteps not in ("interpolate", "nearest"):
            raise ConfigError(f"--timesteps {args.timesteps!r} is not interpolate or nearest; pick one")
        python = PythonModel(args.parametrization, args.process, args.num_train_timesteps, args.beta_schedule,
                             args.beta_start, args.beta_end, args.beta_min, args.beta_max, args.sigma_data,
                             args.time_scale)
        start = time.perf_counter()
        result = analyze(args.diagnostic, args.denoiser, args.data, args.out, settings=parse_settings(args.settings),
                         sigma_min=args.sigma_min, sigma_max=args.sigma_max, ema=args.ema, python=python,
                         timesteps=args.timesteps, device=args.device, class_label=args.class_label)
    print(f"{args.diagnostic}: wrote {args.out / (args.diagnostic + '.json')} and .png in "
          f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
