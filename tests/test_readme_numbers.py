"""The README's measured GPU figures are the ones the benchmark runs wrote to ``benchmarks/results/*.json``.

Each entry reads a JSON value (or a figure computed from several), formats it as the README prints it and
checks that exact text is in the README: a re-run that changes a result fails here until the README says
the new number.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
README = (REPO / "README.md").read_text()


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def minutes_of_steps(images_per_s: float, batch: int, steps: int) -> float:
    return steps * batch / images_per_s / 60


def cpu_step_text(mlp: dict) -> str:
    ratios, pieces = mlp["step_ratio_per_repeat"], mlp["per_step_us"]
    ours = sum(v for k, v in pieces.items() if k not in ("lightning_loop_and_rest", "total_extra"))
    return (f"digits MLP {mlp['step_ratio']:.3f} ({mlp['hand_ms_per_step']:.2f} vs {mlp['trainer_ms_per_step']:.2f} "
            f"ms/step; repeats {min(ratios):.3f} to {max(ratios):.3f}); of the {pieces['total_extra']:.0f} µs a step "
            f"added, the framework's own pieces take {ours:.0f} µs and Lightning's loop the rest")


def expected_texts() -> list[tuple[str, str]]:
    """``(README text, where it comes from)`` pairs."""
    precision = load("precision-h200.json")
    cifar, mnist = precision["configs"]["cifar10_unet"], precision["configs"]["mnist_unet"]
    step = load("training_step-h200.json")["backbones"]["unet"]
    ops = load("op_count-cpu.json")["configs"]
    us_per_op = {name: 1e6 * 128 / precision["configs"][name]["bf16_images_per_s"] / ops[name]["bf16_ops_per_step"]
                 for name in ops}
    return [
        (f"a CIFAR-10 step launches {ops['cifar10_unet']['bf16_ops_per_step']:,} operators in bf16-mixed "
         f"({ops['cifar10_unet']['fp32_ops_per_step']:,} in fp32:\nautocast adds "
         f"{ops['cifar10_unet']['bf16_casts_added']} casts), an MNIST step {ops['mnist_unet']['bf16_ops_per_step']:,}",
         "op_count"),
        (f"the same time per operator, {us_per_op['cifar10_unet']:.0f} and {us_per_op['mnist_unet']:.0f} µs",
         "time per operator"),
        (f"{cifar['bf16_images_per_s']:,.0f} images/s in bf16-mixed\nand {cifar['fp32_images_per_s']:,.0f} in fp32 "
         f"({cifar['bf16_over_fp32']:.2f}×)", "precision: CIFAR-10 eager"),
        (f"at {mnist['bf16_images_per_s']:,.0f} and {mnist['fp32_images_per_s']:,.0f} ({mnist['bf16_over_fp32']:.2f}×)",
         "precision: MNIST eager"),
        (f"{cifar['compiled_bf16_images_per_s']:,.0f} images/s in bf16-mixed, {cifar['compile_speedup']:.2f}× eager, "
         f"after {cifar['compile_seconds']:.1f} s", "precision: compiled"),
        (f"take {minutes_of_steps(cifar['bf16_images_per_s'], 128, 39_100):.0f} min\n(CIFAR-10 eager, "
         f"{minutes_of_steps(cifar['compiled_bf16_images_per_s'], 128, 39_100):.0f} min compiled) and "
         f"{minutes_of_steps(mnist['bf16_images_per_s'], 128, 18_760):.0f} min", "whole-run step time"),
        (f"H200: U-Net {step['step_ratio']:.3f} ({step['hand_ms_per_step']:.2f} vs {step['trainer_ms_per_step']:.2f} "
         "ms/step", "training_step"),
        (cpu_step_text(load("training_step-cpu.json")["backbones"]["mlp"]), "training_step on the CPU"),
        (f"H200: CIFAR-10 {cifar['bf16_over_fp32']:.2f}× ({cifar['bf16_images_per_s']:,.0f} vs "
         f"{cifar['fp32_images_per_s']:,.0f}), MNIST {mnist['bf16_over_fp32']:.2f}× ({mnist['bf16_images_per_s']:,.0f} "
         f"vs {mnist['fp32_images_per_s']:,.0f}), compiled CIFAR-10 {cifar['compile_speedup']:.2f}×", "precision row"),
        *shared_cpu_texts(),
        *adapter_texts(),
        *slurm_texts(),
    ]


def slurm_texts() -> list[tuple[str, str]]:
    """The task grid's rows: ``grid_launcher.py`` (processes launcher vs before) and ``slurm_task_cost.py``."""
    launcher = load("grid_launcher-cpu.json")["reproductions"]
    cost = load("slurm_task_cost-cpu.json")
    ratios = [(f"{name} {r['ratio']:.3f} ({r['grid_seconds'][0]:.0f} vs {r['before_seconds'][0]:.0f} s)",
               f"grid_launcher: {name}") for name, r in launcher.items()]
    return [*ratios,
            (f"{cost['single_task_median_seconds']:.2f} s from submit to record, one task at a time (median of "
             f"{len(cost['single_task_seconds'])}", "slurm_task_cost: one task"),
            (f"an array of {cost['array_tasks']} in {cost['array_seconds']:.1f} s "
             f"({cost['array_seconds_per_task']:.2f} s a task)", "slurm_task_cost: array")]


def adapter_texts() -> list[tuple[str, str]]:
    """The wrapping-overhead row: ``benchmarks/adapter_overhead.py``'s JSON (idle CPU, median over runs)."""
    one, sixteen, many = load("adapter_overhead-cpu.json")["rows"]
    return [(f"{one['ratio_median']:.3f} at batch 1 (+{one['overhead_us']:.0f} µs on {one['bare_ms']:.2f} ms; runs "
             f"{min(one['ratio_runs']):.3f}–{max(one['ratio_runs']):.3f}), {sixteen['ratio_median']:.3f} at 16, "
             f"{many['ratio_median']:.3f} at 128; target 1.05", "adapter_overhead")]


def shared_cpu_texts() -> list[tuple[str, str]]:
    """The shared-CPU row: ``benchmarks/shared_cpu.py``'s JSONs (see its docstring for what idle/loaded mean)."""
    on20, off20, off10 = (load(f"shared_cpu-train-policy_{p}.json")
                          for p in ("on-epochs_20", "off-epochs_20-idle", "off-epochs_10"))
    bp, tests_on, tests_off = (load(f"shared_cpu-{w}.json")
                               for w in ("bp-policy_on", "tests-policy_on", "tests-policy_off-idle"))

    def span(r: dict) -> str:
        return f"{r['idle']['seconds']:.1f} s → {r['loaded']['seconds']:.1f} s ({r['ratio']:.2f}×)"

    return [
        (f"20 epochs: {span(on20)} on; idle off {off20['idle']['seconds']:.1f} s", "shared_cpu: train"),
        (f"(off, 10 epochs, at load 4–8): {span(off10)}", "shared_cpu: train before"),
        (f"median call {bp['idle']['median_call']:.3f} s idle, {bp['loaded']['median_call']:.3f} s loaded, whole run "
         f"{bp['ratio']:.2f}×", "shared_cpu: bp"),
        (f"(56 tests): {span(tests_on)} on, idle off {tests_off['idle']['seconds']:.1f} s", "shared_cpu: tests"),
    ]


@pytest.mark.parametrize(("text", "source"), expected_texts(), ids=[s for _, s in expected_texts()])
def test_readme_quotes_the_measured_figure(text, source):
    assert text in README, f"README does not say {text!r} ({source}); update it from benchmarks/results"
