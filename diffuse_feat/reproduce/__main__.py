"""``python -m diffuse_feat.reproduce <name> --out DIR [--quick]``: run one paper reproduction;
``python -m diffuse_feat.reproduce table DIR``: print the README's result tables from ``DIR/<name>.json``."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from ..errors import ConfigError, one_sentence_errors
from . import EXPERIMENTS
from .seeds import seed_list


def _load(name: str):
    return importlib.import_module(f"diffuse_feat.reproduce.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m diffuse_feat.reproduce",
        description="Reproduce a paper's result; writes <out>/<name>.json and <out>/<name>.png.",
    )
    sub = parser.add_subparsers(dest="name", required=True, metavar="<name>")
    for name in EXPERIMENTS:
        module = _load(name)
        p = sub.add_parser(name, help=module.DESCRIPTION, description=module.DESCRIPTION)
        p.add_argument("--out", type=Path, default=Path("out") / name, help="output folder (default: out/<name>)")
        p.add_argument("--quick", action="store_true", help="a smaller version that finishes in CPU minutes")
        p.add_argument("--seed", type=int, default=0, help="seed for data, initialisation and probes")
        if hasattr(module, "add_arguments"):
            module.add_arguments(p)
    table = sub.add_parser("table", help="print the README's result tables from DIR/<name>.json",
                           description="Print the README's markdown result tables (mean ± SE, source) from the "
                                       "JSON files that the reproductions wrote to DIR.")
    table.add_argument("folder", type=Path, metavar="DIR", help="the reproductions' --out folder, e.g. results/quick")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.name == "table":
        from .table import main as table_main

        raise SystemExit(table_main(args.folder))
    module = _load(args.name)
    start = time.perf_counter()
    with one_sentence_errors():
        if hasattr(args, "seeds"):
            try:
                seed_list(args.seed, args.seeds)
            except ValueError as err:
                raise ConfigError(str(err)) from None
        args.out.mkdir(parents=True, exist_ok=True)
        result = module.run(args.out, args.quick, args.seed, args)
    print(f"{args.name}: wrote {args.out / (args.name + '.json')} and .png in {time.perf_counter() - start:.0f} s",
          file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
