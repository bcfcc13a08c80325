"""What every slow reproduction test checks: the reproduction's own checks hold, and its headline numbers (its
``table_rows``) agree with the committed ``results/quick/<name>.json`` within two standard errors plus a floor."""

from __future__ import annotations

import json
from pathlib import Path

from diffuse_feat.reproduce.table import row_mismatches, table_rows_of

RESULTS = Path(__file__).resolve().parent.parent / "results" / "quick"


def run_quick(name: str, out: Path) -> dict:
    """``python -m diffuse_feat.reproduce <name> --quick --out out`` (the committed results' command), read back."""
    from diffuse_feat.reproduce.__main__ import main

    main([name, "--quick", "--out", str(out)])
    return json.loads((out / f"{name}.json").read_text())


def assert_matches_committed(name: str, payload: dict, floor: float) -> None:
    committed = json.loads((RESULTS / f"{name}.json").read_text())
    bad = row_mismatches(table_rows_of(name, payload), table_rows_of(name, committed), floor=floor)
    assert not bad, f"{name} differs from results/quick (if intended, rerun it and the table command):\n" + \
        "\n".join(bad)
