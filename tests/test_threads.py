"""The thread policy of ``import diffuse_feat``: waiting OpenMP threads spin briefly, then sleep (a shared CPU); the
user's choice wins."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from diffuse_feat.threads import OPT_OUT, POLICY, apply_thread_policy, thread_policy

REPO = Path(__file__).resolve().parent.parent
PROBE = ("import os, sys, diffuse_feat; "
         "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)")


def _fresh_python(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", OPT_OUT)}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env={**clean, **env}, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def test_importing_the_package_shortens_the_spin_of_waiting_threads_before_torch_is_loaded():
    assert _fresh_python() == "None 1000 False"


def test_the_users_wait_policy_and_the_opt_out_win():
    assert _fresh_python(OMP_WAIT_POLICY="ACTIVE") == "ACTIVE None False"
    assert _fresh_python(GOMP_SPINCOUNT="0") == "None 0 False"
    assert _fresh_python(**{OPT_OUT: "off"}) == "None None False"


def test_torch_loaded_first_is_reported_not_silently_ignored():
    environ: dict[str, str] = {}
    assert apply_thread_policy(environ, torch_loaded=True).startswith("not applied")
    assert environ == {}


def test_the_test_session_itself_runs_under_the_policy():
    # conftest imports diffuse_feat before torch: a plugin importing torch earlier would show here
    if os.environ.get(OPT_OUT, "").lower() == "off":
        pytest.skip(f"{OPT_OUT}=off")
    assert thread_policy() in (POLICY, "the user's OpenMP wait policy")
