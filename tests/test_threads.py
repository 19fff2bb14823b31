"""The thread policy (qinco_codec/threads.py): on a busy machine importing the package sets
OMP_WAIT_POLICY=PASSIVE before torch loads its OpenMP runtime (on an idle one it leaves the
runtime's default) unless the user chose a policy, and the commands' default thread count
honours OMP_NUM_THREADS, else leaves out the busy cores. QINCO_BUSY_CORES stands in for the load
average so that the checks do not depend on what else the machine runs. Each check runs in a fresh interpreter, since the OpenMP
runtime reads its environment once per process."""
import os
import subprocess
import sys

import pytest

from qinco_codec import threads
from qinco_codec.errors import InputError


def _python(code, **env):
    """Run `code` in a fresh interpreter with the environment changed by env (None: unset)."""
    full = dict(os.environ)
    for key, value in env.items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    r = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    return r


# OMP_DISPLAY_ENV makes the OpenMP runtime (GNU libgomp, loaded by torch) print the settings it
# read. Unset, libgomp also displays 'PASSIVE' but spins 300,000 times before sleeping; an explicit
# PASSIVE makes that GOMP_SPINCOUNT 0, so the spin count shows whether torch saw the variable.
SHOW = ("import os, qinco_codec, torch; torch.ones(4) + 1; "
        "print('env', os.environ['OMP_WAIT_POLICY'])")
NO_SPIN = "GOMP_SPINCOUNT = '0'"


def test_import_sets_passive_on_a_busy_machine_and_torch_sees_it():
    r = _python(SHOW, OMP_WAIT_POLICY=None, OMP_DISPLAY_ENV="VERBOSE", GOMP_SPINCOUNT=None,
                QINCO_BUSY_CORES="1")
    assert "env PASSIVE" in r.stdout
    assert NO_SPIN in r.stderr, r.stderr                       # what libgomp read


def test_import_leaves_the_runtime_default_on_an_idle_machine():
    code = "import os, qinco_codec, torch; print('env', os.environ.get('OMP_WAIT_POLICY'))"
    r = _python(code, OMP_WAIT_POLICY=None, OMP_DISPLAY_ENV="VERBOSE", GOMP_SPINCOUNT=None,
                QINCO_BUSY_CORES="0")
    assert "env None" in r.stdout and NO_SPIN not in r.stderr, r.stderr


def test_torch_imported_first_keeps_the_runtime_default():
    """The control for the test above: set after torch has loaded, the policy is too late."""
    late = "import os, torch, qinco_codec; print('env', os.environ['OMP_WAIT_POLICY'])"
    r = _python(late, OMP_WAIT_POLICY=None, OMP_DISPLAY_ENV="VERBOSE", GOMP_SPINCOUNT=None,
                QINCO_BUSY_CORES="1")
    assert "env PASSIVE" in r.stdout and NO_SPIN not in r.stderr, r.stderr


@pytest.mark.parametrize("value", ["ACTIVE", "passive"])
def test_import_keeps_the_users_policy(value):
    r = _python(SHOW, OMP_WAIT_POLICY=value, OMP_DISPLAY_ENV="VERBOSE", GOMP_SPINCOUNT=None,
                QINCO_BUSY_CORES="1")
    assert f"env {value}" in r.stdout
    assert f"OMP_WAIT_POLICY = '{value.upper()}'" in r.stderr, r.stderr
    assert (NO_SPIN in r.stderr) == (value.upper() == "PASSIVE")


def test_apply_wait_policy_on_a_mapping():
    assert threads.apply_wait_policy(env := {}, busy=1) == "PASSIVE" and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert threads.apply_wait_policy(env := {"OMP_WAIT_POLICY": " "}, busy=1) == "PASSIVE"
    assert threads.apply_wait_policy(env := {"OMP_WAIT_POLICY": "ACTIVE"}, busy=1) == "ACTIVE"
    assert threads.apply_wait_policy(env := {}, busy=0) == "UNSET" and env == {}


def test_busy_cores_from_the_environment_and_bounds():
    cores = threads.available_cores()
    assert threads.busy_cores({"QINCO_BUSY_CORES": "0"}) == 0
    assert threads.busy_cores({"QINCO_BUSY_CORES": "99"}) == cores - 1   # always one core left
    assert 0 <= threads.busy_cores({}) <= cores - 1                       # from the load average
    with pytest.raises(InputError, match="QINCO_BUSY_CORES: expected a whole number of cores, got 'x'"):
        threads.busy_cores({"QINCO_BUSY_CORES": "x"})
    assert threads.default_threads({"QINCO_BUSY_CORES": "0"}) == cores
    assert threads.default_threads({"QINCO_BUSY_CORES": "99"}) == 1


def test_default_threads_honours_omp_num_threads():
    cores = threads.available_cores()
    idle = {"QINCO_BUSY_CORES": "0"}
    assert threads.default_threads(idle) == cores
    assert threads.default_threads({"OMP_NUM_THREADS": "", **idle}) == cores
    assert threads.default_threads({"OMP_NUM_THREADS": "3"}) == 3
    assert threads.default_threads({"OMP_NUM_THREADS": "5,2"}) == 5      # per nesting level
    for bad in ("0", "two", "-1"):
        with pytest.raises(InputError, match=f"OMP_NUM_THREADS: expected a positive integer, got '{bad}'"):
            threads.default_threads({"OMP_NUM_THREADS": bad})


# a command with the shared --threads option that prints the thread count torch then has
CLI = """
import click, torch
from qinco_codec.cli.common import command, threads_option
@command("probe", "probe")
@threads_option
def probe():
    click.echo(f"threads {torch.get_num_threads()}")
probe.main(args=ARGS, prog_name="probe")
"""


OTHER = threads.available_cores() + 1   # a count the affinity default would not give


@pytest.mark.parametrize("env,args,expected", [
    (str(OTHER), [], OTHER),                 # the default honours OMP_NUM_THREADS
    (str(OTHER), ["--threads", "2"], 2),     # --threads wins over it
    (None, [], threads.available_cores()),   # unset: the cores this process may run on (idle)
])
def test_cli_default_threads(env, args, expected):
    r = _python(CLI.replace("ARGS", repr(args)), OMP_NUM_THREADS=env, QINCO_BUSY_CORES="0")
    assert r.stdout.strip() == f"threads {expected}"


def test_cli_bad_omp_num_threads_is_a_one_line_error():
    full = dict(os.environ, OMP_NUM_THREADS="lots")
    r = subprocess.run([sys.executable, "-c", CLI.replace("ARGS", "[]")], env=full, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 1
    # (libgomp, loaded with torch, prints its own warning first)
    assert r.stderr.strip().splitlines()[-1] == ("probe: error: environment variable OMP_NUM_THREADS: expected a "
                                "positive integer, got 'lots'")


def test_requested_threads_reach_torch_imported_later():
    """--threads is applied without importing torch (a command refused on its arguments never
    pays for it); torch, imported afterwards, starts with that many threads."""
    code = ("import sys; from qinco_codec.threads import request_threads; request_threads(1); "
            "assert 'torch' not in sys.modules; import torch; print(torch.get_num_threads())")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"   # torch alone would take every core
