"""Wall time on a CPU shared with other jobs: the same workload idle and beside two busy processes, and the ratio.

Each workload runs as a user would run it, in a fresh process with the thread policy ``diffuse_feat`` applies on
import (``diffuse_feat/threads.py``), unless ``--policy off`` (``DIFFUSE_FEAT_THREADS=off``: torch's own defaults,
what every run did before the policy existed):

* ``train``: ``python train.py`` (the default experiment; ``--max-epochs`` shortens it), in a scratch folder;
* ``tests``: ``python -m pytest -q`` in the repository (extra ``--pytest`` arguments select a subset);
* ``bp``: ``--calls`` identical calls of exact belief propagation (RHM v=32, m=8, s=2, L=10, 256 trees) at the
  default number of threads; the time of every call is kept, so one call stuck behind a spinning thread shows.

"Loaded" means two extra processes that spin on the CPU for the whole workload (``while True: pass``), started
by this script. Other jobs on the machine are not controlled: the 1-minute load average before and after each
measurement is printed with it (``--wait-idle S`` waits up to S seconds for a load below 0.5 before the idle run).
Goal: loaded <= 3x idle.

    python benchmarks/shared_cpu.py train [--max-epochs 60] [--policy on|off] [--repo PATH] [--wait-idle 0]
    python benchmarks/shared_cpu.py tests [--pytest "tests/test_training.py"]
    python benchmarks/shared_cpu.py bp [--calls 10]
    [--only idle|loaded]  [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

BP_CALLS = """
import json, sys, time
import diffuse_feat  # the thread policy, as every entry point applies it
import torch
from diffuse_feat.data.rhm import RHMGrammar
from diffuse_feat.denoisers.rhm_bp import RHMBeliefPropagation, soft_evidence

grammar = RHMGrammar.random(32, 32, 8, 2, 10, seed=0)
trees = grammar.sample_trees(256, torch.Generator().manual_seed(0))
evidence = soft_evidence(trees[-1], 0.7, 32)
bp = RHMBeliefPropagation(grammar.rules, 32)
times = []
for _ in range(int(sys.argv[1])):
    start = time.perf_counter()
    bp.run(evidence)
    times.append(time.perf_counter() - start)
print(json.dumps({"threads": torch.get_num_threads(), "calls": times}))
"""


def load() -> float:
    return os.getloadavg()[0]


def wait_for_idle(seconds: float) -> float:
    """Wait (up to ``seconds``) for a 1-minute load average below 0.5; returns the load when measuring starts."""
    deadline = time.monotonic() + seconds
    while load() >= 0.5 and time.monotonic() < deadline:
        time.sleep(10)
    return load()


class BusyProcesses:
    """``count`` processes spinning on the CPU while the ``with`` block runs."""

    def __init__(self, count: int):
        self.count, self.procs = count, []

    def __enter__(self):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.count)]
        time.sleep(1.0)  # let the scheduler see them before timing starts
        return self

    def __exit__(self, *exc):
        for proc in self.procs:
            proc.kill()
            proc.wait()


def command(args: argparse.Namespace, scratch: Path) -> tuple[list[str], Path]:
    python = sys.executable
    if args.what == "train":
        cmd = [python, str(args.repo / "train.py"), "fit", "--config", str(args.repo / "configs" / "default.yaml"),
               "--trainer.enable_progress_bar=false"]
        if args.max_epochs is not None:
            cmd.append(f"--trainer.max_epochs={args.max_epochs}")
        return cmd, scratch
    if args.what == "tests":
        return [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *shlex.split(args.pytest)], args.repo
    return [python, "-c", BP_CALLS, str(args.calls)], scratch


def measure(args: argparse.Namespace, busy: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(args.repo)}
    # this script does not import diffuse_feat: a GOMP_SPINCOUNT or OMP_WAIT_POLICY of the caller reaches the workload
    # and wins over the policy, which is how other settings are compared (GOMP_SPINCOUNT=10000 python ...)
    if args.policy == "off":
        env["DIFFUSE_FEAT_THREADS"] = "off"
    with tempfile.TemporaryDirectory() as tmp, BusyProcesses(busy):
        cmd, cwd = command(args, Path(tmp))
        load_before = load()
        start = time.perf_counter()
        out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    result = {"seconds": seconds, "load_before": load_before, "load_after": load(), "busy_processes": busy}
    if args.what == "bp":
        calls = json.loads(out.stdout.strip().splitlines()[-1])
        result.update(threads=calls["threads"], calls=calls["calls"], slowest_call=max(calls["calls"]),
                      median_call=sorted(calls["calls"])[len(calls["calls"]) // 2])
    if args.what == "tests":
        result["summary"] = out.stdout.strip().splitlines()[-1]
    return result


def describe(name: str, r: dict) -> str:
    text = f"{name:>7}: {r['seconds']:8.1f} s  (load {r['load_before']:.2f} -> {r['load_after']:.2f}"
    text += f", {r['busy_processes']} busy processes)"
    if "calls" in r:
        text += f"  per call: median {r['median_call']:.3f} s, slowest {r['slowest_call']:.3f} s"
        text += f", {r['threads']} threads"
    if "summary" in r:
        text += f"  [{r['summary']}]"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["train", "tests", "bp"])
    parser.add_argument("--policy", choices=["on", "off"], default="on")
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout to run (default: this one)")
    parser.add_argument("--max-epochs", type=int, default=None, help="train: shorter than the default 60 epochs")
    parser.add_argument("--pytest", default="", help="tests: extra pytest arguments (a subset)")
    parser.add_argument("--calls", type=int, default=10, help="bp: identical calls")
    parser.add_argument("--only", choices=["idle", "loaded"], default=None)
    parser.add_argument("--wait-idle", type=float, default=0.0, help="seconds to wait for load < 0.5 before idle")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON into this folder")
    args = parser.parse_args()
    args.repo = args.repo.resolve()

    results = {}
    loadavg_at_start = os.getloadavg()
    if args.only != "loaded":
        wait_for_idle(args.wait_idle)
        results["idle"] = measure(args, busy=0)
        print(describe("idle", results["idle"]), flush=True)
    if args.only != "idle":
        results["loaded"] = measure(args, busy=2)
        print(describe("loaded", results["loaded"]), flush=True)
    if len(results) == 2:
        ratio = results["loaded"]["seconds"] / results["idle"]["seconds"]
        results["ratio"] = ratio
        print(f"  ratio: {ratio:.2f}x loaded / idle (goal <= 3)")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        suffix = (f"-epochs_{args.max_epochs}" if args.max_epochs else "") + (f"-{args.only}" if args.only else "")
        path = args.out / f"shared_cpu-{args.what}-policy_{args.policy}{suffix}.json"
        # the machine is shared: "idle" means no busy process of ours, other jobs' load is recorded with it
        record = {"what": args.what, "policy": args.policy, "max_epochs": args.max_epochs, "pytest": args.pytest,
                  "cpus": os.cpu_count(), "loadavg_at_start": loadavg_at_start, **results}
        path.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
