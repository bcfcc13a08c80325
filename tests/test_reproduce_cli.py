"""``python -m diffuse_feat.reproduce``: every paper's reproduction is listed and has its own --help."""

from __future__ import annotations

import subprocess
import sys

import pytest

from diffuse_feat.reproduce import EXPERIMENTS
from diffuse_feat.reproduce.__main__ import build_parser


def test_top_level_help_lists_every_reproduction():
    out = subprocess.run([sys.executable, "-m", "diffuse_feat.reproduce", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert all(name in out for name in EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_each_reproduction_has_help_with_quick_and_out(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--quick" in out and "--out" in out
