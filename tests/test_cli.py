"""`python train.py` as a newcomer meets it: the command-line shape, and every mistake as at most 3 lines of stderr
whose last names the field and the fix (run as a user runs it, in a subprocess)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
TINY = ["--data.init_args.n_train=128", "--data.init_args.batch_size=64",
        "--model.init_args.backbone.init_args.width=16", "--model.init_args.backbone.init_args.depth=1",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--trainer.callbacks.init_args.num_samples=2", "--trainer.callbacks.init_args.num_steps=2"]


def train_py(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "DIFFUSE_FEAT_TRACEBACK"}
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env={**environ, **env},
                          capture_output=True, text=True, timeout=300)


def stopped_with(result: subprocess.CompletedProcess, *words: str) -> str:
    """The one complaint of a run that stopped: exit status 1, at most 3 lines on stderr, the last with ``words``."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr[-3000:]
    assert 1 <= len(lines) <= 3, result.stderr[-3000:]
    assert "LightningCLI's args parameter" not in result.stderr
    for word in words:
        assert word in lines[-1], lines[-1]
    return lines[-1]


def _broken_checkpoint(path: Path, keep_bytes: int | None) -> Path:
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "global_step": 3}, path)
    if keep_bytes is not None:
        path.write_bytes(path.read_bytes()[:keep_bytes])
    return path


MISTAKES = {
    "negative n_train": (["--data.init_args.n_train=-5"], ["data.n_train", ">= 1"]),
    "negative lr": (["--model.init_args.lr=-1"], ["model.lr", "> 0"]),
    "zero batch_size": (["--data.init_args.batch_size=0"], ["data.batch_size", ">= 1"]),
    "unknown key": (["--model.init_args.no_such_key=1"], ["no_such_key", "--print_config"]),
    "unknown argument": (["--trainer.max_epochz=3"], ["max_epochz", "--print_config"]),
    # no abbreviations: a missing letter is a typo, not a prefix of --trainer.max_epochs
    "abbreviation": (["--trainer.max_epoch=3"], ["--trainer.max_epoch=3: no such setting",
                                                  "(did you mean --trainer.max_epochs?)"]),
    "swapped letters": (["--trainer.max_epcohs=3"], ["(did you mean --trainer.max_epochs?)"]),
    "model typo": (["--model.init_args.lrr=0.1"], ["no such setting 'lrr' (did you mean --model.init_args.lr?)"]),
    # one learning rate: the optimizer's own is not a setting (the model's lr is what it gets)
    "optimizer lr": (["--model.init_args.optimizer.init_args.lr=0.1"],
                     ["no such setting 'lr' (did you mean --model.init_args.lr?)"]),
    "missing checkpoint": (["--ckpt_path=nowhere/last.ckpt"], ["--ckpt_path", "no file", ".ckpt"]),
    "empty checkpoint": (["--ckpt_path=empty.ckpt"], ["--ckpt_path", "empty", "another checkpoint"]),
    "truncated checkpoint": (["--ckpt_path=truncated.ckpt"], ["--ckpt_path", "truncated", "another checkpoint"]),
    "download offline": (["--data=diffuse_feat.data.MNISTDataModule", "--data.init_args.root=data",
                          "--data.init_args.download=true"], ["data.download", "copy the files", "download=true"]),
}


# Runs train.py once per mistake, as `python train.py ARGS` would, in children forked from one process that has
# imported the package (a fresh interpreter per mistake costs ~3 s of imports each on this CPU).
FORKED_TRAIN_PY = """
import json, os, runpy, sys
cases, train_py, results = json.loads(sys.argv[1]), sys.argv[2], {}
sys.path[0] = os.path.dirname(train_py)  # as for `python train.py`: the checkout's packages, whatever the cwd
import diffuse_feat.cli
for name, (cwd, args) in cases.items():
    err_path = os.path.join(cwd, "stderr.txt")
    pid = os.fork()
    if pid == 0:
        os.chdir(cwd)
        fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 2)  # sys.stderr itself stays the object Lightning's log handlers hold, as in train.py
        sys.argv = [train_py, *args]
        code = 0
        try:
            runpy.run_path(train_py, run_name="__main__")
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 2
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    results[name] = [os.waitstatus_to_exitcode(status), open(err_path).read()]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def mistakes_run(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    cases = {}
    for name, (args, _) in MISTAKES.items():
        folder = tmp_path_factory.mktemp(name.replace(" ", "_"))
        _broken_checkpoint(folder / "truncated.ckpt", keep_bytes=500)
        (folder / "empty.ckpt").write_bytes(b"")
        cases[name] = [str(folder), [*TINY, "--trainer.max_steps=2", *args]]
    offline = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "no_proxy": ""}
    environ = {k: v for k, v in os.environ.items() if k != "DIFFUSE_FEAT_TRACEBACK"}
    out = subprocess.run([sys.executable, "-c", FORKED_TRAIN_PY, json.dumps(cases), str(REPO / "train.py")],
                         cwd=REPO, env={**environ, **offline}, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    return {name: (Path(cases[name][0]), subprocess.CompletedProcess(cases[name][1], rc, "", err))
            for name, (rc, err) in results.items()}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_each_mistake_stops_with_one_sentence_naming_the_field_and_the_fix(mistake, mistakes_run):
    folder, result = mistakes_run[mistake]
    stopped_with(result, *MISTAKES[mistake][1])
    assert not any((folder / "runs").rglob("version_*")), "a failed start left a run folder behind"


def test_arguments_without_subcommand_or_config_run_the_default_experiment(tmp_path):
    result = train_py("--model.init_args.lr=1e-3", "--trainer.max_steps=2", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LightningCLI's args parameter" not in result.stderr
    saved = (tmp_path / "runs" / "default" / "version_0" / "config.yaml").read_text()
    assert "DigitsDataModule" in saved and "lr: 0.001" in saved
    result = train_py("fit", "--trainer.max_steps=2", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "runs" / "default" / "version_1" / "checkpoints" / "last.ckpt").is_file()


def test_a_run_prints_where_it_goes_and_nothing_else(tmp_path):
    """Two lines (run folder and TensorBoard; at the end the checkpoint) besides the bar: no Lightning info lines, no
    litlogger tip, no srun advice outside a SLURM allocation (Debian's slurm-wlm is installed where CI runs this),
    no second checkpoint file, and on resume no "Checkpoint directory ... exists and is not empty"."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    first = subprocess.run([sys.executable, str(REPO / "train.py"), *TINY, "--trainer.max_epochs=1",
                            "--trainer.log_every_n_steps=1"], cwd=tmp_path,
                           env=environ, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    run = "runs/default/version_0"
    assert first.stdout.splitlines() == [
        f"Training {run}; watch it with: tensorboard --logdir {run}",
        f"Done after step 2: {run}, checkpoint {run}/checkpoints/last.ckpt; see it with: tensorboard --logdir {run}"]
    assert first.stderr == ""
    assert sorted(p.name for p in (tmp_path / run / "checkpoints").iterdir()) == ["epoch=0-step=2.ckpt", "last.ckpt"]
    assert (tmp_path / run / "checkpoints" / "last.ckpt").is_symlink()  # one file, not two identical ones
    resumed = subprocess.run([sys.executable, str(REPO / "train.py"), "--ckpt_path", f"{run}/checkpoints/last.ckpt",
                              "--trainer.max_epochs=2"], cwd=tmp_path, env=environ, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines()[0] == f"Resuming {run} at step 2; watch it with: tensorboard --logdir {run}"
    assert resumed.stderr == ""


def test_the_readmes_start_here_output_is_what_a_default_run_prints():
    """The lines around the bar in README's "Start here" are the ones the test above checks for a tiny run, here for
    the default experiment: 60 epochs of 12 batches (1,500 training digits in batches of 128)."""
    import re

    readme = (REPO / "README.md").read_text()
    shown = re.search(r"<!-- start-here-output -->\n```\n(.*?)```", readme, flags=re.S).group(1).splitlines()
    run = "runs/default/version_0"
    assert shown[0] == f"Training {run}; watch it with: tensorboard --logdir {run}"
    assert shown[1].startswith("Epoch 59: 100%|██████████| 12/12 [") and "step=720/720, v_num=0" in shown[1]
    assert shown[2] == (f"Done after step 720: {run}, checkpoint {run}/checkpoints/last.ckpt; see it with: "
                        f"tensorboard --logdir {run}")


def test_print_config_and_help(tmp_path):
    printed = train_py("--print_config", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert "class_path: diffuse_feat.modules.DiffusionModule" in printed.stdout
    assert "class_path: diffuse_feat.data.DigitsDataModule" in printed.stdout
    model = yaml.safe_load(printed.stdout)["model"]["init_args"]
    assert model["lr"] == 0.002 and "lr" not in model["optimizer"]["init_args"]  # one learning rate, one setting
    shown = train_py("--help", cwd=tmp_path).stdout
    for common in ("--trainer.max_epochs", "--model.init_args.lr", "--ckpt_path", "python train.py fit --help"):
        assert common in " ".join(shown.split()), common


# ----- resuming a run ---------------------------------------------------------------------------------------------
def _first_run(tmp_path: Path, monkeypatch) -> Path:
    from diffuse_feat.cli import DiffuseFeatCLI

    monkeypatch.chdir(tmp_path)
    cli = DiffuseFeatCLI(args=[*TINY, "--trainer.max_epochs=1"])
    return Path(cli.trainer.log_dir).resolve()


def test_a_resume_continues_in_the_runs_own_folder_even_moved_and_without_its_arguments(tmp_path, monkeypatch):
    from diffuse_feat.cli import DiffuseFeatCLI

    run_dir = _first_run(tmp_path, monkeypatch)
    moved = tmp_path / "elsewhere" / "old_name" / "version_7"
    moved.parent.mkdir(parents=True)
    run_dir.rename(moved)
    resumed = DiffuseFeatCLI(args=["--ckpt_path", str(moved / "checkpoints" / "last.ckpt"), "--trainer.max_epochs=3"])
    assert Path(resumed.trainer.log_dir).resolve() == moved
    assert torch.load(moved / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6
    assert not list(moved.rglob("last-v*.ckpt"))
    assert not list((tmp_path / "runs").rglob("version_*")), "the resume opened a new run folder"


def test_a_changed_hyperparameter_on_resume_is_refused_in_one_sentence(tmp_path, monkeypatch, capsys):
    from diffuse_feat.cli import main

    last = _first_run(tmp_path, monkeypatch) / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    with pytest.raises(SystemExit):
        main(["--ckpt_path", str(last), "--model.init_args.lr=0.01", "--trainer.max_epochs=2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.init_args.lr is 0.01 (the run used 0.002)" in err[0], err
    assert "without --ckpt_path" in err[0] and last.read_bytes() == before


def test_resuming_a_run_already_past_max_epochs_is_one_sentence(tmp_path, monkeypatch, capsys):
    from diffuse_feat.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):  # stopped in its second epoch (2 steps an epoch), after step 3
        main([*TINY, "--trainer.max_epochs=5", "--trainer.callbacks+=tests.helpers.SignalAtStep",
              "--trainer.callbacks.init_args.step=3"])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["--ckpt_path", "runs/default/version_0/checkpoints/last.ckpt", "--trainer.max_epochs=0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --ckpt_path: that run is already in epoch 1, past --trainer.max_epochs=0; give a larger "
                   "--trainer.max_epochs to train it further"], err


def test_a_second_process_on_the_same_run_folder_is_refused_and_a_killed_ones_lock_is_gone(tmp_path, monkeypatch,
                                                                                         capsys):
    from diffuse_feat.cli import main
    from diffuse_feat.run_folder import RunLock

    run_dir = _first_run(tmp_path, monkeypatch)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from diffuse_feat.run_folder import RunLock; "
                               "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)",
                               str(run_dir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SystemExit):
            main(["--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt"), "--trainer.max_epochs=2"])
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"in use by process {holder.pid}" in err[0], err
    finally:
        holder.kill()  # as kill -9 would: no clean-up ran in it
        holder.wait()
    RunLock(run_dir).acquire().release()  # the kernel dropped the killed process's lock


def test_a_start_that_fails_after_the_trainer_is_built_leaves_no_run_folder(tmp_path, monkeypatch, capsys):
    from diffuse_feat.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):  # the data are split in setup, after the run folder was claimed
        main([*TINY, "--data.init_args.n_train=100000"])
    assert "data.n_train=100000 exceeds" in capsys.readouterr().err
    assert not list((tmp_path / "runs").rglob("version_*"))
