"""``python -m diffuse_feat.reproduce table DIR``: the README's result tables are that command's output on the
committed ``results/quick`` (so they cannot drift) and every module's ``table_rows`` keeps the contract."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from diffuse_feat.reproduce import EXPERIMENTS
from diffuse_feat.reproduce.__main__ import main
from diffuse_feat.reproduce.table import (
    ROW_KEYS,
    SOURCES,
    begin_marker,
    end_marker,
    render,
    render_all,
    row_mismatches,
    table_rows_of,
)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "results" / "quick"
README = (REPO / "README.md").read_text()


MINE = EXPERIMENTS


def readme_block(name: str) -> str:
    begin, end = begin_marker(name), end_marker(name)
    assert begin in README and end in README, f"README has no {begin} ... {end} block"
    return README.split(begin, 1)[1].split(end, 1)[0].strip()


@pytest.mark.parametrize("name", MINE)
def test_committed_results_exist_with_sources(name):
    payload = json.loads((RESULTS / f"{name}.json").read_text())
    assert (RESULTS / f"{name}.png").exists() and len(payload["seeds"]) >= 3
    # a top-level map (summary -> source) or a source on each headline block
    sources = payload["sources"].values() if "sources" in payload else [
        block["source"] for block in payload.values() if isinstance(block, dict) and "source" in block]
    assert sources and set(sources) <= set(SOURCES)


def test_readme_tables_are_the_table_command_output():
    tables, notes = render_all(RESULTS)
    assert set(MINE) <= set(tables), notes
    for name, table in tables.items():
        assert readme_block(name) == table, f"README table {name} differs: run python -m diffuse_feat.reproduce " \
                                            "table results/quick and paste its block"


@pytest.mark.parametrize("name", MINE)
def test_table_rows_keep_the_contract(name):
    rows = table_rows_of(name, json.loads((RESULTS / f"{name}.json").read_text()))
    assert rows and all(set(r) == set(ROW_KEYS) and r["source"] in SOURCES for r in rows)
    assert all(isinstance(r["value"], float) and (r["se"] is None or r["se"] >= 0) for r in rows)
    assert len({r["quantity"] for r in rows}) == len(rows)  # quantities name rows uniquely (slow tests match on them)


def test_a_module_without_table_rows_gets_one_line_not_a_crash(tmp_path, monkeypatch, capsys):
    module = importlib.import_module("diffuse_feat.reproduce.regimes")
    monkeypatch.delattr(module, "table_rows", raising=False)
    (tmp_path / "regimes.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        main(["table", str(tmp_path)])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["regimes: diffuse_feat.reproduce.regimes defines no table_rows(payload), so no table"]


def test_table_command_prints_marked_blocks(tmp_path, capsys):
    for name in MINE:
        (tmp_path / f"{name}.json").write_text((RESULTS / f"{name}.json").read_text())
    with pytest.raises(SystemExit) as exit_info:
        main(["table", str(tmp_path)])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and all(begin_marker(n) in out and end_marker(n) in out for n in MINE)


def test_row_mismatches_uses_two_standard_errors_plus_the_floor():
    old = [{"quantity": "q", "value": 1.0, "se": 0.1, "source": "trained", "paper": None}]
    near = [{**old[0], "value": 1.0 + 2 * 0.1 * 2**0.5 + 0.009}]
    far = [{**old[0], "value": 1.0 + 2 * 0.1 * 2**0.5 + 0.011}]
    assert row_mismatches(near, old, floor=0.01) == []
    assert len(row_mismatches(far, old, floor=0.01)) == 1
    assert row_mismatches([], old, floor=0.01) == ["q: missing from the fresh run"]


def test_a_bar_in_a_quantity_stays_inside_its_cell():
    row = {"quantity": "max |phi - theory|", "value": 0.5, "se": None, "source": "exact", "paper": None}
    line = render([row]).splitlines()[-1]
    assert line.count(" | ") == 4 and "max \\|phi - theory\\|" in line
