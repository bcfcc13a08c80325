"""``python -m diffuse_feat.reproduce <name> --out DIR [--quick]``: run one paper reproduction."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from ..errors import UserError
from . import EXPERIMENTS


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
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    module = _load(args.name)
    start = time.perf_counter()
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        result = module.run(args.out, args.quick, args.seed, args)
    except UserError as err:  # bad input: one sentence, no traceback
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"{args.name}: wrote {args.out / (args.name + '.json')} and .png in {time.perf_counter() - start:.0f} s",
          file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
