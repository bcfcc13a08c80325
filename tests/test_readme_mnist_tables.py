"""The README's MNIST tables are what ``python -m diffuse_feat.reproduce table results/mnist`` prints from the
committed JSONs, each between its markers, never typed by hand."""

from __future__ import annotations

import pytest

from diffuse_feat.reproduce.table import begin_marker, end_marker, render_all

from .test_training import REPO

RESULTS = REPO / "results" / "mnist"


@pytest.fixture(scope="module")
def tables():
    return render_all(RESULTS)


@pytest.mark.parametrize("name", ["regimes_mnist", "feature_learning_mnist", "gaussian_structure_mnist",
                                  "hierarchy_mnist"])
def test_readme_table_is_the_table_command_output_on_results_mnist(tables, name):
    printed, notes = tables
    assert name in printed, notes
    readme = (REPO / "README.md").read_text()
    block = readme.split(begin_marker(name), 1)[1].split(end_marker(name), 1)[0].strip()
    assert block == printed[name], "run python -m diffuse_feat.reproduce table results/mnist and paste it"
