"""``python -m diffuse_feat.analyze``: the callbacks' numbers on a saved model, any SPEC form, one-sentence errors."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest
import torch

from diffuse_feat.analyze.__main__ import main
from diffuse_feat.cli import DiffuseFeatCLI
from diffuse_feat.reporting import read_jsonl

from .test_training import REPO

DEFAULT = str(REPO / "configs" / "default.yaml")

RUN_CONFIG = """\
model:
  init_args:
    backbone:
      init_args: {width: 16, depth: 1}
data:
  init_args: {n_train: 64, n_val: 24}
trainer:
  max_steps: 24
  limit_val_batches: 0
  num_sanity_val_steps: 0
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: lightning.pytorch.callbacks.EMAWeightAveraging
      init_args: {decay: 0.9, update_starting_at_step: 0}
    - class_path: callbacks.GaussianStructureCallback
      init_args: {every_n_steps: 0, num_pairs: 8, num_sigmas: 6, jacobian_sigmas: [1.0], jacobian_points: 1,
                  jacobian_k: 2, jacobian_probes: 2, num_distill_sigmas: 3, num_samples: 4, sample_steps: 3}
    - class_path: callbacks.RegimesCallback
      init_args: {every_n_steps: 0, num_pairs: 6, num_clone_times: 2, labeler: nearest_train, reference_samples: 40,
                  step: 0.5, num_geometric: 4}
    - class_path: callbacks.SampleGridCallback
      init_args: {every_n_steps: 0, num_samples: 4, num_steps: 3}
"""


def assert_same_numbers(logged, analyzed, path=""):
    """Every number the callback logged is the one analyze wrote (nested lists and dicts too), to float32 rounding:
    the same weights and probes, but the run and analyze may split a matrix product over threads differently."""
    if isinstance(logged, dict):
        for key, value in logged.items():
            assert key in analyzed, f"{path}/{key} missing from analyze's values"
            assert_same_numbers(value, analyzed[key], f"{path}/{key}")
    elif isinstance(logged, list):
        assert isinstance(analyzed, list) and len(logged) == len(analyzed), path
        for i, (a, b) in enumerate(zip(logged, analyzed, strict=True)):
            assert_same_numbers(a, b, f"{path}[{i}]")
    elif isinstance(logged, float):
        assert math.isclose(logged, analyzed, rel_tol=1e-5, abs_tol=1e-6), f"{path}: logged {logged}, got {analyzed}"
    else:
        assert logged == analyzed, f"{path}: logged {logged!r}, got {analyzed!r}"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run")
    (root / "run.yaml").write_text(RUN_CONFIG)
    cli = DiffuseFeatCLI(args=["fit", "--config", DEFAULT, "--config", str(root / "run.yaml"),
                               f"--trainer.logger.init_args.save_dir={root / 'runs'}"])
    return Path(cli.trainer.log_dir)


@pytest.mark.parametrize(("diagnostic", "callback"), [("gaussian_structure", "GaussianStructureCallback"),
                                                      ("regimes", "RegimesCallback"),
                                                      ("sample_grid", "SampleGridCallback")])
def test_analyze_on_a_checkpoint_gives_what_its_callback_logged(trained_run, tmp_path, diagnostic, callback):
    logged = [r for r in read_jsonl(trained_run / "diagnostics.jsonl") if r["name"] == callback]
    assert [r["step"] for r in logged] == [24]  # at the end of training, on the EMA weights
    result = main([diagnostic, "--denoiser", str(trained_run / "checkpoints" / "last.ckpt"),
                   "--data", str(trained_run / "config.yaml"), "--out", str(tmp_path)])
    assert result["denoiser"]["weights"] == "ema" and result["denoiser"]["step"] == 24
    assert json.loads((tmp_path / f"{diagnostic}.json").read_text()) == result
    assert (tmp_path / f"{diagnostic}.png").stat().st_size > 1000
    assert_same_numbers(logged[0]["values"], result["values"])
    [record] = read_jsonl(tmp_path / "diagnostics.jsonl")  # the record the callback wrote, at step 0
    assert record["name"] == callback and record["step"] == 0
    assert_same_numbers(logged[0]["values"], record["values"])
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())


def test_exact_references_are_denoisers_too(tmp_path):
    result = main(["gaussian_structure", "--denoiser", "gaussian", "--data", DEFAULT, "--out", str(tmp_path),
                   "--set", "num_pairs=8", "--set", "num_sigmas=6", "--set", "jacobian_sigmas=[1.0]",
                   "--set", "num_samples=4", "--set", "distill=false"])
    values = result["values"]
    assert result["denoiser"]["kind"] == "exact reference" and result["settings"]["num_pairs"] == 8
    assert values["rmse_to_gaussian_mid"] < 1e-6  # D_G against itself: its curves are the reference's
    own, reference = values["linearity_cosine"], values["gaussian_linearity_cosine"]
    torch.testing.assert_close(torch.tensor(own), torch.tensor(reference))
    assert values["jacobian_distance_s1"] < 1e-4 and values["generation_nmse_to_gaussian"] < 1e-5


def test_the_empirical_denoiser_memorizes_and_bp_keeps_the_class_at_low_noise(tmp_path):
    (tmp_path / "small.yaml").write_text("data:\n  class_path: diffuse_feat.data.DigitsDataModule\n"
                                         "  init_args: {n_train: 64, n_val: 24}\n")
    result = main(["memorization", "--denoiser", "empirical", "--data", str(tmp_path / "small.yaml"),
                   "--out", str(tmp_path), "--set", "num_samples=8"])
    assert result["values"]["memorized_fraction"] >= 0.75 and len(result["values"]["nearest_index"]) == 8
    (tmp_path / "rhm.yaml").write_text("data:\n  class_path: diffuse_feat.data.RHMDataModule\n"
                                       "  init_args: {v: 4, n_c: 2, m: 2, s: 2, L: 2, pool_size: 64, n_val: 16}\n")
    result = main(["forward_backward", "--denoiser", "bp", "--data", str(tmp_path / "rhm.yaml"), "--out",
                   str(tmp_path), "--set", "num_probes=8", "--set", "sigmas=[0.05, 3.0]", "--set", "num_steps=4"])
    values = result["values"]
    assert values["p_class_s0.05"] == 1.0 and values["bp_p_class_s0.05"] > 0.99 and values["p_valid_s0.05"] == 1.0


EXACT_EPS_MODULE = """\
import torch
from diffuse_feat.data import DigitsDataModule
from diffuse_feat.process import DiscreteSchedule, DDPM

gaussian = DigitsDataModule(n_train=64, n_val=24).gaussian_denoiser()
table = DiscreteSchedule.from_ddpm(DDPM(1000))


def net(x_t, t):
    \"\"\"The exact eps-predictor of the digits' Gaussian model under the DDPM schedule (model timesteps).\"\"\"
    sigma, s = table.sigma(t.double()), table.scale(t.double())
    x = x_t.double() / s.reshape(-1, 1, 1, 1)
    return ((x - gaussian(x, sigma)) / sigma.reshape(-1, 1, 1, 1)).float()
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(EXACT_EPS_MODULE + textwrap.dedent("""
        def broken(x_t, t):
            return x_t.reshape(x_t.shape[0], 3, -1) @ torch.ones(5, 2)


        class Flat(torch.nn.Module):
            data_shape = (64,)

            def forward(self, x_t, t):
                return x_t


        flat = Flat()
        """))
    (tmp_path / "small.yaml").write_text("data:\n  class_path: diffuse_feat.data.DigitsDataModule\n"
                                         "  init_args: {n_train: 64, n_val: 24}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_python_eps_model_on_a_ddpm_table_is_measured_inside_its_range(user_module):
    result = main(["gaussian_structure", "--denoiser", "python:my_models.net", "--parametrization", "eps",
                   "--process", "ddpm", "--data", "small.yaml", "--out", "out", "--set", "num_pairs=8",
                   "--set", "num_sigmas=6", "--set", "jacobian_sigmas=[1.0]", "--set", "num_samples=4",
                   "--set", "distill=false"])
    low, high = result["sigma_range"]["model"]
    assert low == pytest.approx(0.01, rel=1e-3) and high == pytest.approx(157.4, rel=1e-3)
    assert result["sigma_range"]["used"] == [low, 80.0]  # the diagnostic's 0.002 .. 80, narrowed to the table
    assert result["values"]["sigmas"][-1] == pytest.approx(low)
    assert result["values"]["rmse_to_gaussian_mid"] < 1e-4  # the wrapped exact eps-predictor is D_G


def run_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    sentence = lines[0][len("error: "):]
    assert ". " not in sentence, f"more than one sentence: {sentence}"
    return sentence


def test_an_unknown_spec_form_is_one_sentence(user_module, capsys):
    (user_module / "model.bin").write_bytes(b"")
    message = run_error(capsys, ["memorization", "--denoiser", "model.bin", "--data", "small.yaml", "--out", "out"])
    assert message.startswith("--denoiser 'model.bin' is neither a run checkpoint (.ckpt), a diffusers folder")
    assert "give one of those" in message


def test_a_folder_without_a_model_is_one_sentence(user_module, capsys):
    (user_module / "empty").mkdir()
    message = run_error(capsys, ["memorization", "--denoiser", "empty", "--data", "small.yaml", "--out", "out"])
    assert message.startswith("--denoiser empty:") and "holds no diffusers model" in message
    assert "save_pretrained" in message


def test_a_model_whose_input_shape_is_not_the_datas_is_one_sentence(user_module, capsys):
    common = ["--parametrization", "x0", "--process", "edm", "--data", "small.yaml", "--out", "out"]
    message = run_error(capsys, ["memorization", "--denoiser", "python:my_models.flat", *common])
    assert message.startswith("--denoiser python:my_models.flat takes samples of shape [64]")
    assert "DigitsDataModule samples of shape [1, 8, 8]" in message and "give data of the model's shape" in message
    message = run_error(capsys, ["memorization", "--denoiser", "python:my_models.broken", *common])
    assert message.startswith("--denoiser python:my_models.broken failed on DigitsDataModule samples of shape")
    assert "RuntimeError" in message and "give a model for that shape" in message


def test_a_parametrization_that_does_not_exist_is_one_sentence(user_module, capsys):
    message = run_error(capsys, ["memorization", "--denoiser", "python:my_models.net", "--parametrization", "score",
                                 "--process", "ddpm", "--data", "small.yaml", "--out", "out"])
    assert message == ("--parametrization 'score' is not one of eps, v, x0, edm, flow; give what "
                       "python:my_models.net predicts")


def test_sigma_outside_a_discrete_schedule_is_one_sentence(user_module, capsys):
    model = ["--denoiser", "python:my_models.net", "--parametrization", "eps", "--process", "ddpm",
             "--num-train-timesteps", "100", "--data", "small.yaml", "--out", "out"]
    message = run_error(capsys, ["sample_grid", *model, "--sigma-max", "80"])
    assert message.startswith("--sigma-max 80 lies outside the noise range of --denoiser python:my_models.net")
    assert "pass --sigma-max 1.3" in message
    # a diagnostic's own noise levels past the table: the message names where to change them
    message = run_error(capsys, ["forward_backward", *model, "--set", "mode=images", "--set", "num_probes=2",
                                 "--set", "sigmas=[0.5, 2.0]"])
    assert message.startswith("forward_backward asked --denoiser python:my_models.net for sigma=2")
    assert "(--set ...) inside it" in message


def test_other_mistakes_are_one_sentence_too(user_module, capsys):
    message = run_error(capsys, ["memorization", "--denoiser", "gaussian", "--data", "small.yaml", "--out", "out",
                                 "--set", "num_pairs=3"])
    assert message.startswith("--set num_pairs: memorization has no setting 'num_pairs'")
    (user_module / "no_data.yaml").write_text("trainer: {max_steps: 1}\n")
    message = run_error(capsys, ["memorization", "--denoiser", "gaussian", "--data", "no_data.yaml", "--out", "out"])
    assert message.startswith("--data no_data.yaml has no data section")
    message = run_error(capsys, ["memorization", "--denoiser", "gaussian", "--parametrization", "eps",
                                 "--data", "small.yaml", "--out", "out"])
    assert message.startswith("--parametrization and --process apply to python: models only")
    message = run_error(capsys, ["forward_backward", "--denoiser", "gaussian", "--data", "small.yaml", "--out", "out"])
    assert "LatentTrees" in message and "mode='images'" in message  # the callback's own capability check


def test_help_lists_the_diagnostics_and_the_spec_forms(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for name in ("gaussian_structure", "regimes", "forward_backward", "memorization", "sample_grid", "PATH.ckpt",
                 "FOLDER", "python:MODULE.ATTR", "gaussian | empirical | bp", "--parametrization", "--sigma-max"):
        assert name in text


def test_the_wrapper_keeps_float64_sigma_for_time_maps():
    from diffuse_feat.analyze.denoiser_spec import DataShapedDenoiser

    seen = []
    shaped = DataShapedDenoiser(lambda x, s: seen.append(s) or x, (2,))
    shaped(torch.zeros(3, 2), 0.5)
    assert seen[0].dtype == torch.float64 and seen[0].shape == (3,)
    with pytest.raises(ValueError, match="finite and >= 0"):
        shaped(torch.zeros(1, 2), -1.0)
