"""What the reproductions share about seeds: the ``--seeds``/``--workers`` options, and the summary of nested per-seed
records with :func:`~diffuse_feat.reproduce.seeds.summarize_over_seeds` (the tasks themselves run through
:mod:`.grid`)."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError
from .grid import Task
from .seeds import seed_list, summarize_over_seeds

__all__ = ["add_seed_arguments", "summarize_tree", "check_workers", "seeds_of", "block_tasks", "by_block"]


def add_seed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (seed .. seed + N - 1) to average over")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="worker processes, one CPU thread each (default: 2, or 1 on a one-core machine)")


def check_workers(workers: int) -> int:
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1 (the number of worker processes), got {workers}")
    return workers


def seeds_of(args: argparse.Namespace, first: int) -> list[int]:
    """:func:`seed_list` of ``--seeds`` (default 1 for callers that built ``args`` by hand), as a one-sentence
    :class:`ConfigError` when it is below 1."""
    try:
        return seed_list(first, getattr(args, "seeds", 1))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def block_tasks(experiment: str, blocks: Sequence[str], seeds: Sequence[int], settings: dict) -> list[Task]:
    """One task per (block, seed), in the order of ``blocks`` (longest first, so a pool's last round is short)."""
    return [Task(experiment, (("block", name),), s, settings) for name in blocks for s in seeds]


def by_block(grid: Sequence[Task], records: Sequence[dict], blocks: Sequence[str]
             ) -> tuple[dict[str, list[dict]], dict[str, float]]:
    """Each block's records (their ``record``) in seed order, and its CPU seconds summed over seeds."""
    per_seed = {name: [] for name in blocks}
    cpu = dict.fromkeys(blocks, 0.0)
    for task, saved in zip(grid, records, strict=True):
        per_seed[task["block"]].append(saved["record"])
        cpu[task["block"]] += saved["cpu_seconds"]
    return per_seed, cpu


def _pooled_se(values: list) -> Any:
    """Standard error of a mean over seeds from each seed's own standard error: ``sqrt(sum se^2) / N``."""
    if all(isinstance(v, list) for v in values):
        return [_pooled_se(list(column)) for column in zip(*values, strict=True)]
    if any(v is None for v in values):
        return None
    return math.sqrt(sum(float(v) ** 2 for v in values)) / len(values)


def summarize_tree(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """:func:`summarize_over_seeds` applied at every level of nested per-seed dicts (and lists of dicts, element by
    element): numbers become ``k``, ``k_se``, ``k_per_seed``; number lists are averaged element-wise. Where a record
    carries its own standard error ``k_se`` (a binomial error, say), ``k_se`` of the summary pools those instead of
    the spread over seeds, so it stays meaningful with one seed. A value every seed shares exactly (a grid, a
    count) is a setting and stays as it is (no ``k_se``)."""
    out = summarize_over_seeds(records)
    for key in records[0]:
        values = [r.get(key) for r in records]
        if all(v == values[0] for v in values) and not isinstance(values[0], Mapping):  # a setting (a grid, a count)
            out[key] = values[0]
            out.pop(f"{key}_se", None)
            out.pop(f"{key}_per_seed", None)
        elif key.endswith("_se") and key[:-3] in records[0] and all(key in r for r in records):
            out[key] = _pooled_se([r[key] for r in records])
            out.pop(f"{key}_se", None)
            out.pop(f"{key}_per_seed", None)
    for key in records[0]:
        values = [r.get(key) for r in records]
        if all(isinstance(v, Mapping) for v in values):
            out[key] = summarize_tree(values)
        elif all(isinstance(v, list) and len(v) == len(values[0]) and v and all(isinstance(x, Mapping) for x in v)
                 for v in values):
            out[key] = [summarize_tree(list(column)) for column in zip(*values, strict=True)]
        elif all(isinstance(v, list) and len(v) == len(values[0]) and v and all(isinstance(x, list) for x in v)
                 for v in values):  # a table [row][column]: averaged cell by cell
            rows = [summarize_over_seeds([{"x": row} for row in column]) for column in zip(*values, strict=True)]
            out[key], out[f"{key}_se"] = [r.get("x") for r in rows], [r.get("x_se") for r in rows]
    return out
