"""The CPU thread policy every entry point gets by importing ``diffuse_feat`` (``train.py``, the reproductions, the
tests, CI): nothing for the user to do, and an explicit setting of theirs always wins.

torch runs its CPU kernels on an OpenMP thread team (GNU libgomp in the PyPI wheels). By default a thread that
reaches the end of a parallel region *spins* for ~300,000 iterations waiting for its team mates. On a machine whose
cores are shared with other jobs the team mate is often not running, so the spinning thread burns the very core that
team mate needs, and every small kernel waits for a time slice: the default experiment took 722 s beside two busy
processes instead of 23 s idle. ``GOMP_SPINCOUNT=1000`` keeps a short spin (a few microseconds, enough for
back-to-back kernels on an idle machine) and then sleeps, giving the core back. Measured with
``benchmarks/shared_cpu.py`` on 2 cores (``train.py``, 20 epochs; idle / beside two busy processes): 12.3 / 27.4 s
with it, 11.9-15.0 s idle without (five runs); sleeping at once (``OMP_WAIT_POLICY=PASSIVE``, this policy's first
version) gave 16.1-19.4 / 26.2 s, a quarter slower idle. Exact BP, median call: 0.115 / 0.331 s with it, 0.265 /
0.235 s with PASSIVE. libgomp reads this once, when it is loaded, so it must be in the environment before ``torch``
is imported; child processes (DDP ranks, data-loader workers, subprocesses) inherit it.

Opt out with ``DIFFUSE_FEAT_THREADS=off``; ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` set by the user are left as
they are, and so is the number of threads (``OMP_NUM_THREADS``, ``torch.set_num_threads``).
"""

from __future__ import annotations

import os
import sys

__all__ = ["OPT_OUT", "POLICY", "SPINCOUNT", "apply_thread_policy", "thread_policy"]

#: environment variable that turns the policy off (value ``off``)
OPT_OUT = "DIFFUSE_FEAT_THREADS"
#: what the policy puts in the environment, and how :func:`thread_policy` reports it
SPINCOUNT = "1000"
POLICY = f"GOMP_SPINCOUNT={SPINCOUNT}"


def apply_thread_policy(environ: dict[str, str] | None = None, torch_loaded: bool | None = None) -> str:
    """Put ``GOMP_SPINCOUNT=1000`` in the environment unless the user chose otherwise or torch is already loaded.

    Returns what happened, in words (:func:`thread_policy` reports it).
    """
    environ = os.environ if environ is None else environ
    torch_loaded = "torch" in sys.modules if torch_loaded is None else torch_loaded
    if environ.get(OPT_OUT, "").lower() == "off":
        return f"off ({OPT_OUT}=off)"
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return "the user's OpenMP wait policy"
    if torch_loaded:  # OpenMP already read its environment; set GOMP_SPINCOUNT before starting Python
        return "not applied: torch was imported before diffuse_feat"
    environ["GOMP_SPINCOUNT"] = SPINCOUNT
    return POLICY


_APPLIED = apply_thread_policy()


def thread_policy() -> str:
    """What the import of ``diffuse_feat`` did to the thread settings of this process."""
    return _APPLIED
