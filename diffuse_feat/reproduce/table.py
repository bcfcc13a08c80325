"""``python -m diffuse_feat.reproduce table DIR``: the README's result tables, printed from ``DIR/<name>.json``.

Each reproduction module defines ``table_rows(payload) -> list[dict]``, one dict per headline number with keys
``quantity`` (str), ``value`` (float), ``se`` (float or None: standard error over seeds), ``source``
(``"exact"``: an exact reference such as ``D_G`` or belief propagation; ``"trained"``: a trained network) and
``paper`` (str or None: the paper's reference figure). This command only formats those rows, so the README's
numbers are whatever the committed JSON says (``tests/test_reproduce_table.py`` checks the README against it).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from . import EXPERIMENTS
from .grid import experiment_module

__all__ = ["ROW_KEYS", "SOURCES", "table_rows_of", "table_name", "render", "render_all", "begin_marker",
           "end_marker", "row_mismatches"]

ROW_KEYS = ("quantity", "value", "se", "source", "paper")
SOURCES = ("exact", "trained")


def begin_marker(name: str) -> str:
    return f"<!-- table:{name} -->"


def end_marker(name: str) -> str:
    return f"<!-- /table:{name} -->"


def table_name(name: str, payload: dict) -> str:
    """The README block of a JSON: ``name``, or ``<name>_<data>`` for a run on other data (``regimes --data mnist``
    writes ``regimes.json`` too, into its own folder, and its table is ``regimes_mnist``)."""
    data = payload.get("data", "default")
    return name if data == "default" else f"{name}_{data}"


def table_rows_of(name: str, payload: dict) -> list[dict]:
    """``diffuse_feat.reproduce.<name>.table_rows(payload)``, checked against the contract; AttributeError (with
    one sentence) when the module has no ``table_rows``."""
    module = experiment_module(name, payload.get("data"))
    if not hasattr(module, "table_rows"):
        raise AttributeError(f"{name}: diffuse_feat.reproduce.{name} defines no table_rows(payload), so no table")
    rows = module.table_rows(payload)
    for row in rows:
        if set(row) != set(ROW_KEYS) or row["source"] not in SOURCES:
            raise ValueError(f"{name}.table_rows gave {row!r}: need exactly the keys {ROW_KEYS} and a source in "
                             f"{SOURCES}")
    return rows


def _number(value: float | None, digits: int) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}g}"


def render(rows: list[dict]) -> str:
    """A markdown table: quantity | mean | ± SE | source | paper."""
    lines = ["| quantity | value | ± SE | source | paper |", "|---|---|---|---|---|"]
    for row in rows:
        quantity = row["quantity"].replace("|", "\\|")  # a norm |x| must not split the cell
        lines.append(f"| {quantity} | {_number(row['value'], 3)} | {_number(row['se'], 2)} | {row['source']} "
                     f"| {row['paper'] or '–'} |")
    return "\n".join(lines)


def render_all(folder: str | Path) -> tuple[dict[str, str], list[str]]:
    """``({table_name: table}, notes)`` for every experiment whose ``<name>.json`` is in ``folder``; a module without
    ``table_rows`` gives a one-line note instead of a table."""
    tables, notes = {}, []
    for name in EXPERIMENTS:
        path = Path(folder) / f"{name}.json"
        if not path.exists():
            continue
        payload = json.loads(path.read_text())
        try:
            tables[table_name(name, payload)] = render(table_rows_of(name, payload))
        except AttributeError as err:
            notes.append(str(err))
    return tables, notes


def row_mismatches(fresh: list[dict], committed: list[dict], floor: float, multiple: float = 2.0) -> list[str]:
    """Rows of a fresh run that differ from the committed ones by more than ``multiple`` standard errors of the
    difference plus ``floor`` (one sentence each); rows are matched by ``quantity``."""
    old = {r["quantity"]: r for r in committed}
    out = []
    for row in fresh:
        ref = old.get(row["quantity"])
        if ref is None:
            out.append(f"{row['quantity']}: not in the committed results")
            continue
        se = math.hypot(row["se"] or 0.0, ref["se"] or 0.0)
        if not abs(row["value"] - ref["value"]) <= multiple * se + floor:
            out.append(f"{row['quantity']}: fresh {row['value']:.4g} vs committed {ref['value']:.4g} "
                       f"(allowed {multiple:g} SE = {multiple * se:.3g} + {floor:g})")
    missing = set(old) - {r["quantity"] for r in fresh}
    out += [f"{q}: missing from the fresh run" for q in sorted(missing)]
    return out


def main(folder: Path) -> int:
    if not Path(folder).is_dir():
        print(f"error: {folder} is not a folder; pass the --out folder of the reproductions (e.g. results/quick)",
              file=sys.stderr)
        return 1
    tables, notes = render_all(folder)
    for note in notes:
        print(note)
    for name, table in tables.items():
        print(f"{begin_marker(name)}\n{table}\n{end_marker(name)}\n")
    if not tables and not notes:
        print(f"error: no <name>.json of {', '.join(EXPERIMENTS)} in {folder}", file=sys.stderr)
        return 1
    return 0
