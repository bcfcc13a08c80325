"""Reproductions of the four papers' results: ``python -m diffuse_feat.reproduce <name> --out DIR [--quick]``.

Each experiment is a module ``diffuse_feat.reproduce.<name>`` defining

* ``DESCRIPTION: str`` — one line for ``--help``;
* ``add_arguments(parser)`` — its own options (optional);
* ``tasks(quick, seed, args) -> (tasks, info)`` — its grid, a list of :class:`~.grid.Task` (one per cell and seed),
  and the plain values its merge needs besides the tasks' records;
* ``run_task(task, out) -> dict`` — one cell, as plain JSON values (a module-level function: it runs in worker
  processes and SLURM jobs); :func:`.grid.execute` writes it atomically under ``out/tasks/<name>/``;
* ``merge(tasks, records, info, out) -> dict`` — writes ``out/<name>.json`` and ``out/<name>.png`` from the records;
  returns the JSON payload.
"""

EXPERIMENTS = ("gaussian_structure", "regimes", "hierarchy", "feature_learning")
