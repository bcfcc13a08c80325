"""A grid task whose training was stopped mid-way continues from its checkpoint when it runs again, and ends with the
very record an uninterrupted run writes: for each kind of training the reproductions run (in-memory digits with a
mid-epoch loader state, an endless stream of fresh draws, EMA with a measurement at the end, full-batch gradient
descent with alignment curves over training), on settings small enough for seconds."""

from __future__ import annotations

import dataclasses

import pytest

from diffuse_feat.reproduce import feature_learning, hierarchy, regimes
from diffuse_feat.reproduce.grid import Task, execute, training_folder
from diffuse_feat.reproduce.task_training import TaskCheckpoint, TaskTrainings, checkpointed_trainings

EVERY_STEP = 1e-9  # seconds between checkpoints: one after every step but the last
NEVER = 1e9


class Killed(Exception):
    """Stands for the job's end (a preemption, a timeout, kill -9) right after a checkpoint."""


@pytest.fixture
def stop_after(monkeypatch):
    """``stop_after(training, step)``: the first run of a task stops right after training ``training`` (its number
    in the task) has checkpointed step ``step``."""
    def arm(training: int, step: int) -> None:
        saving = TaskCheckpoint.on_train_batch_end
        fired = []

        def on_train_batch_end(self, trainer, *args):
            saving(self, trainer, *args)
            if not fired and self.index == training and trainer.global_step == step:
                assert self.path.is_file()
                fired.append(step)
                raise Killed(f"training {training} stopped after step {step}")

        monkeypatch.setattr(TaskCheckpoint, "on_train_batch_end", on_train_batch_end)
    return arm


@pytest.fixture
def final_weights(monkeypatch):
    """The weights each training of a task ends with, in order (one list per run), as exact bytes: more telling
    than a record, which a few steps of warm-up barely move."""
    runs: list[list[bytes]] = []

    def on_fit_start(self, trainer, pl_module):
        if self.index == 0:  # a run of the task begins
            runs.append([])

    def on_train_end(self, trainer, pl_module):
        runs[-1].append(b"".join(p.detach().cpu().numpy().tobytes() for p in pl_module.parameters()))

    monkeypatch.setattr(TaskCheckpoint, "on_fit_start", on_fit_start, raising=False)
    monkeypatch.setattr(TaskCheckpoint, "on_train_end", on_train_end, raising=False)
    return runs


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def interrupted_and_resumed(task: Task, tmp_path, stop_after, weights, training: int, step: int
                            ) -> tuple[dict, dict]:
    """(the uninterrupted record, the record of a run stopped at ``step`` of ``training`` and run again); the
    trainings of both end with the same weights, bit for bit."""
    straight = execute(task, tmp_path / "straight", checkpoint_every_s=NEVER)
    assert straight["resumed"] == [] and not list((tmp_path / "straight").rglob("*.ckpt"))
    stop_after(training, step)
    with pytest.raises(Killed):
        execute(task, tmp_path / "stopped", checkpoint_every_s=EVERY_STEP)
    assert (training_folder(tmp_path / "stopped", task) / f"fit-{training}" / "last.ckpt").is_file()
    again = execute(task, tmp_path / "stopped", checkpoint_every_s=EVERY_STEP)
    assert not training_folder(tmp_path / "stopped", task).exists()  # removed once the record is written
    first, stopped, resumed = weights
    assert len(stopped) == training and len(resumed) == len(first) > training
    assert resumed == first
    return straight, again


def test_the_digits_block_resumes_its_second_training_mid_epoch_and_redoes_the_first_ones_last_step(
        tmp_path, stop_after, final_weights, monkeypatch):
    tiny = dataclasses.replace(regimes.QUICK, diffusion_steps=12, diffusion_width=32, classifier_steps=9,
                               digit_pairs=16, reference_samples=64, digit_clone_times=(0.2, 0.6, 1.5))
    monkeypatch.setattr(regimes, "QUICK", tiny)
    task = Task("regimes", (("block", "digits"),), 0, {"quick": True, "device": "cpu", "digits_n": 200})
    straight, again = interrupted_and_resumed(task, tmp_path, stop_after, final_weights, training=1, step=4)
    # the first training finished before the stop: it continues from its last checkpoint, one step before its end
    assert again["resumed"] == [{"training": 0, "step": 11}, {"training": 1, "step": 4}]
    assert without_timings(again["record"]) == without_timings(straight["record"])


def test_an_endless_stream_of_fresh_draws_resumes_with_the_batches_an_uninterrupted_run_trains_on(
        tmp_path, stop_after, final_weights, monkeypatch):
    tiny = dataclasses.replace(regimes.QUICK_LEARNED, spec_dim=8, spec_steps=10, spec_batch=16, spec_pairs=8,
                               spec_clone_times=(1.0, 2.0), width=16, depth=1)
    monkeypatch.setattr(regimes, "QUICK_LEARNED", tiny)
    task = Task("regimes", (("block", "speciation_learned"),), 1, {"quick": True, "device": "cpu", "digits_n": None})
    straight, again = interrupted_and_resumed(task, tmp_path, stop_after, final_weights, training=0, step=6)
    assert again["resumed"] == [{"training": 0, "step": 6}]
    assert without_timings(again["record"]) == without_timings(straight["record"])


def test_ema_and_the_final_measurement_resume_exactly(tmp_path, stop_after, final_weights):
    task = Task("gaussian_structure", (("n", 300),), 0, {"device": "cpu", "width": 16, "depth": 1, "num_samples": 4,
                                                         "threads": 1, "steps": 12})
    straight, again = interrupted_and_resumed(task, tmp_path, stop_after, final_weights, training=0, step=7)
    assert again["resumed"] == [{"training": 0, "step": 7}]
    assert without_timings(again["record"]) == without_timings(straight["record"])


def test_gradient_descent_keeps_its_alignment_curves_across_the_stop(tmp_path, stop_after, final_weights):
    tiny = dataclasses.replace(feature_learning.QUICK, n_snr2=(2.25,), d=64, width=4, diffusion_steps=10,
                               diffusion_every=2, classification_steps=8, classification_every=2, n_test=20,
                               digits_n=6, digits_upsample=1, digits_n_snr2=(6.75,))
    task = Task("feature_learning", (), 0, dataclasses.asdict(tiny))
    straight, again = interrupted_and_resumed(task, tmp_path, stop_after, final_weights, training=1, step=5)
    assert again["resumed"][-1] == {"training": 1, "step": 5}
    assert len(again["record"]["runs"][1]["curves"]["step"]) == len(straight["record"]["runs"][1]["curves"]["step"])
    assert without_timings(again["record"]) == without_timings(straight["record"])


def test_a_categorical_diffusion_model_on_the_rhm_resumes_exactly(tmp_path, stop_after, final_weights, monkeypatch):
    tiny = dataclasses.replace(hierarchy.QUICK, rhm_steps=10, rhm_batch=16, rhm_width=8, rhm_probes=16,
                               rhm_sampler_steps=4)
    monkeypatch.setattr(hierarchy, "QUICK", tiny)
    task = Task("hierarchy", (("block", "learned"),), 0, {"quick": True, "device": "cpu",
                                                          "grammar": hierarchy.RHM_LEARNED})
    straight, again = interrupted_and_resumed(task, tmp_path, stop_after, final_weights, training=0, step=3)
    assert again["resumed"] == [{"training": 0, "step": 3}]
    assert without_timings(again["record"]) == without_timings(straight["record"])


def test_no_checkpoints_are_written_when_asked_for_none_or_outside_a_task(tmp_path):
    from diffuse_feat.reproduce.common import make_trainer
    from diffuse_feat.reproduce.task_training import task_checkpoint

    assert task_checkpoint() is None  # outside a task
    with checkpointed_trainings(tmp_path / "t", every_s=0):
        assert task_checkpoint() is None
        assert not any(isinstance(c, TaskCheckpoint) for c in make_trainer(max_steps=1).callbacks)
    with checkpointed_trainings(tmp_path / "t", every_s=60) as trainings:
        assert isinstance(trainings, TaskTrainings)
        first, second = make_trainer(max_steps=1), make_trainer(max_steps=1)
        folders = [c.folder.name for t in (first, second) for c in t.callbacks if isinstance(c, TaskCheckpoint)]
        assert folders == ["fit-0", "fit-1"]  # numbered in the order the task builds them


def test_checkpoint_minutes_is_checked_and_reaches_the_tasks(tmp_path, capsys):
    from diffuse_feat.reproduce.__main__ import main

    with pytest.raises(SystemExit):
        main(["feature_learning", "--quick", "--checkpoint-minutes", "-1", "--out", str(tmp_path)])
    assert "--checkpoint-minutes -1: give a number of minutes >= 0" in capsys.readouterr().err
