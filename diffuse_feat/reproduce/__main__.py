"""``python -m diffuse_feat.reproduce <name> --out DIR [--quick]``: run one paper reproduction as a grid of tasks;
``python -m diffuse_feat.reproduce merge <name> --out DIR``: merge a grid's task records again;
``python -m diffuse_feat.reproduce table DIR``: print the README's result tables from ``DIR/<name>.json``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import ConfigError, one_sentence_errors
from . import EXPERIMENTS
from .grid import experiment_module
from .launch import add_launcher_arguments, merge_experiment, run_experiment
from .seeds import seed_list


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m diffuse_feat.reproduce",
        description="Reproduce a paper's result; writes <out>/<name>.json and <out>/<name>.png, and one record per "
                    "task under <out>/tasks/<name>/ (a rerun runs only the tasks without one).",
    )
    sub = parser.add_subparsers(dest="name", required=True, metavar="<name>")
    for name in EXPERIMENTS:
        module = experiment_module(name)
        p = sub.add_parser(name, help=module.DESCRIPTION, description=module.DESCRIPTION)
        p.add_argument("--out", type=Path, default=Path("out") / name, help="output folder (default: out/<name>)")
        p.add_argument("--quick", action="store_true", help="a smaller version that finishes in CPU minutes")
        p.add_argument("--seed", type=int, default=0, help="seed for data, initialisation and probes")
        if hasattr(module, "add_arguments"):
            module.add_arguments(p)
        add_launcher_arguments(p)
    merge = sub.add_parser("merge", help="merge the task records of a grid into <name>.json, the PNG and the table",
                           description="Merge the task records under DIR/tasks/<name>/ (every task of the grid must "
                                       "have one) into DIR/<name>.json and DIR/<name>.png, without running anything.")
    merge.add_argument("experiment", choices=EXPERIMENTS, metavar="<name>", help=f"one of {', '.join(EXPERIMENTS)}")
    merge.add_argument("--out", type=Path, required=True, metavar="DIR", help="the grid's --out folder")
    table = sub.add_parser("table", help="print the README's result tables from DIR/<name>.json",
                           description="Print the README's markdown result tables (mean ± SE, source) from the "
                                       "JSON files that the reproductions wrote to DIR.")
    table.add_argument("folder", type=Path, metavar="DIR", help="the reproductions' --out folder, e.g. results/quick")
    return parser


def main(argv: list[str] | None = None) -> dict | None:
    args = build_parser().parse_args(argv)
    if args.name == "table":
        from .table import main as table_main

        raise SystemExit(table_main(args.folder))
    start = time.perf_counter()
    with one_sentence_errors():
        if args.name == "merge":
            name, result = args.experiment, merge_experiment(args.experiment, args.out)
        else:
            name = args.name
            if hasattr(args, "seeds"):
                try:
                    seed_list(args.seed, args.seeds)
                except ValueError as err:
                    raise ConfigError(str(err)) from None
            args.out.mkdir(parents=True, exist_ok=True)
            result = run_experiment(name, args)
    if result is not None and not getattr(args, "task", None):
        print(f"{name}: wrote {args.out / (name + '.json')} and .png in {time.perf_counter() - start:.0f} s",
              file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
