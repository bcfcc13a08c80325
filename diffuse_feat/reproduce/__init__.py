"""Reproductions of the four papers' results: ``python -m diffuse_feat.reproduce <name> --out DIR [--quick]``.

Each experiment is a module ``diffuse_feat.reproduce.<name>`` defining

* ``DESCRIPTION: str`` — one line for ``--help``;
* ``add_arguments(parser)`` — its own options (optional);
* ``run(out: Path, quick: bool, seed: int, args: argparse.Namespace) -> dict`` — does the work and writes
  ``out/<name>.json`` and ``out/<name>.png``; returns the JSON payload.
"""

EXPERIMENTS = ("gaussian_structure", "regimes", "hierarchy", "feature_learning")
