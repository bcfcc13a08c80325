"""Several seeds of one reproduction, summarized: every summary ``k`` becomes its mean ``k``, its standard error
``k_se`` and the values ``k_per_seed``; a trend counts only when a difference exceeds two standard errors."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["seed_list", "summarize_over_seeds", "mean_and_se", "exceeds", "SE_MULTIPLE"]

#: a difference counts when it exceeds this many standard errors (of the difference)
SE_MULTIPLE = 2.0


def seed_list(first: int, count: int) -> list[int]:
    """``count`` consecutive seeds from ``first``; refuses ``count < 1`` with one sentence."""
    if count < 1:
        raise ValueError(f"--seeds must be at least 1 (the number of seeds to average over), got {count}")
    return list(range(first, first + count))


def mean_and_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample std with ``n - 1`` over ``sqrt(n)``; 0 for a single value).
    ``None`` or NaN entries make both NaN (a seed without a value is not silently dropped)."""
    xs = [float("nan") if v is None else float(v) for v in values]
    if not xs or any(math.isnan(x) for x in xs):
        return float("nan"), float("nan")
    mean = sum(xs) / len(xs)
    if len(xs) == 1:
        return mean, 0.0
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    return mean, math.sqrt(var / len(xs))


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def summarize_over_seeds(per_seed: Sequence[Mapping[str, Any]], keys: Sequence[str] | None = None) -> dict[str, Any]:
    """``{k: mean, k_se: standard error, k_per_seed: [...]}`` for every numeric ``k`` present in all records (or
    the given ``keys``). Booleans become the fraction of seeds where they hold, lists of numbers are averaged
    element-wise (``k_se`` then a list too); other values are kept when every seed agrees on them."""
    if not per_seed:
        raise ValueError("summarize_over_seeds needs at least one seed's record")
    keys = list(keys) if keys is not None else [k for k in per_seed[0] if all(k in r for r in per_seed)]
    out: dict[str, Any] = {}
    for key in keys:
        values = [r[key] for r in per_seed]
        if all(isinstance(v, bool) for v in values):
            out[key] = sum(values) / len(values)
            out[f"{key}_per_seed"] = values
        elif all(_is_number(v) for v in values):
            out[key], out[f"{key}_se"] = mean_and_se(values)
            out[f"{key}_per_seed"] = values
        elif all(isinstance(v, list) and len(v) == len(values[0]) and all(_is_number(x) for x in v) for v in values):
            pairs = [mean_and_se(column) for column in zip(*values, strict=True)]
            out[key] = [m for m, _ in pairs]
            out[f"{key}_se"] = [s for _, s in pairs]
        elif all(v == values[0] for v in values):
            out[key] = values[0]
    return out


def exceeds(a: float, a_se: float, b: float, b_se: float, multiple: float = SE_MULTIPLE) -> bool:
    """Whether ``b - a`` is positive by more than ``multiple`` standard errors of the difference (independent
    seeds: ``sqrt(a_se^2 + b_se^2)``). With zero standard errors (one seed) any positive difference counts."""
    return (b - a) > multiple * math.hypot(a_se, b_se)
