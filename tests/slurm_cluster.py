"""A throwaway single-node SLURM cluster on localhost, for the tests that run grids as real job arrays.

Debian's ``slurm-wlm`` and ``munge`` (``.ci/run`` installs them) give ``munged``, ``slurmctld`` and ``slurmd``; the
fixture starts them as its own child processes in the foreground from a fresh folder, with no accounting (a small
``sacct`` stands in for it so that submitit sees a cancelled job's state), and stops every one of them afterwards,
cancelling what is still queued first. Where the binaries are missing, the tests skip and say so.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "sinfo")

SACCT = """#!/bin/bash
# accounting is off: answer submitit's sacct from squeue (MinJobAge keeps finished jobs listed)
ids=()
while [ $# -gt 0 ]; do
  case "$1" in -j|--jobs) ids+=("$2"); shift 2;; --jobs=*) ids+=("${1#--jobs=}"); shift;; *) shift;; esac
done
echo "JobID|State|NodeList"
for id in "${ids[@]}"; do squeue -h --states=all -o "%i|%T|%N" -j "$id" 2>/dev/null; done
exit 0
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(folder: Path, host: str) -> str:
    return f"""ClusterName=pytest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder}/munge/munge.socket
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/run/slurmctld.pid
SlurmdPidFile={folder}/run/slurmd.pid
SlurmctldLogFile={folder}/log/slurmctld.log
SlurmdLogFile={folder}/log/slurmd.log
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
KillWait=2
MinJobAge=3600
MpiDefault=none
SwitchType=switch/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName={host} CPUs=2 Sockets=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def missing_reason() -> str | None:
    """Why a local SLURM cluster cannot start here, or None."""
    missing = [name for name in DAEMONS if shutil.which(name) is None and not Path(f"/usr/sbin/{name}").exists()]
    if missing:
        return f"no local SLURM: {', '.join(missing)} not installed (apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "no local SLURM: the daemons run as root here"
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "no submitit (pip install -e '.[cluster]')"
    return None


def _wait(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the local SLURM cluster: {what} did not happen within {seconds} s")
        time.sleep(0.1)


def _run(env: dict, *command: str) -> str:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30).stdout


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[dict[str, str]]:
    """Environment variables (``SLURM_CONF``, ``PATH``) under which ``sbatch`` and submitit reach the cluster."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    with local_slurm() as env:
        yield env


@contextlib.contextmanager
def local_slurm() -> Iterator[dict[str, str]]:
    """The cluster for the length of a ``with`` block (the fixture's, and the benchmarks')."""
    # munged needs o+x on every folder above its socket: pytest's tmp_path (under a 0700 folder) will not do
    folder = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))
    for name in ("state", "spool", "log", "run", "munge", "bin"):
        (folder / name).mkdir()
    for path in (folder, folder / "munge"):
        path.chmod(0o755)
    host = socket.gethostname().split(".")[0]
    (folder / "slurm.conf").write_text(_config(folder, host))
    (folder / "bin" / "sacct").write_text(SACCT)
    (folder / "bin" / "sacct").chmod(0o755)
    env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf"),
           "PATH": f"{folder / 'bin'}:/usr/sbin:{os.environ.get('PATH', '')}"}
    daemons: list[subprocess.Popen] = []
    log = open(folder / "log" / "daemons.out", "w")  # noqa: SIM115 (open for the daemons' lifetime)
    try:
        key = folder / "munge" / "munge.key"
        subprocess.run(["mungekey", "-c", "-k", str(key)], env=env, check=True, capture_output=True)
        daemons.append(subprocess.Popen(
            ["munged", "-F", f"--key-file={key}", f"--socket={folder}/munge/munge.socket",
             f"--pid-file={folder}/munge/munged.pid", f"--log-file={folder}/log/munged.log",
             f"--seed-file={folder}/munge/munged.seed"], env=env, stdout=log, stderr=log))
        _wait(lambda: (folder / "munge" / "munge.socket").exists(), 10, "munged's socket")
        daemons.append(subprocess.Popen(["slurmctld", "-D", "-c"], env=env, stdout=log, stderr=log))
        daemons.append(subprocess.Popen(["slurmd", "-D"], env=env, stdout=log, stderr=log))
        _wait(lambda: _run(env, "sinfo", "-h", "-o", "%T").strip() == "idle", 30, "an idle node")
        yield env
    finally:
        jobs = _run(env, "squeue", "-h", "-o", "%A").split() if daemons else []
        if jobs:
            _run(env, "scancel", *jobs)
            _wait(lambda: not _run(env, "squeue", "-h", "-t", "PENDING,RUNNING,COMPLETING", "-o", "%A").split(), 30,
                  "the cancelled jobs' end")
        for daemon in reversed(daemons):
            daemon.terminate()
            try:
                daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        log.close()
        shutil.rmtree(folder, ignore_errors=True)
