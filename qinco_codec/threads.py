"""The package's CPU thread policy, in one place: fast on a busy machine by default.

Why. torch's CPU kernels (and faiss's) run on an OpenMP thread pool. By default an OpenMP thread
that waits at a barrier for the others spins on its core instead of sleeping (GNU libgomp spins
for about 300,000 iterations; OMP_WAIT_POLICY=ACTIVE spins indefinitely). On an idle machine that
saves a wake-up; on a shared one (a laptop, a CI runner, a server other jobs use) the spinning
threads take the cores away from the threads that have work, and every barrier waits for a
thread the OS has descheduled. Measured on 2 cores with two other busy processes: encoding 3,000
vectors with the default 2 threads took 7.7x as long as with 1 thread (decoding 6.4x), and
40-70x under heavier load; with OMP_WAIT_POLICY=PASSIVE the same encode with 2 threads took
1.1 s. `qinco-bench speed --busy N` measures it on any machine.

So:

* `apply_wait_policy` sets OMP_WAIT_POLICY=PASSIVE (waiting threads sleep) unless the user set
  a policy. The OpenMP runtime reads the variable once, when torch loads it, so this has to run
  before `import torch`: `qinco_codec/__init__.py` calls it at package import (the package imports
  torch lazily, and every qinco-* command imports the package first). A program that imported
  torch before qinco_codec keeps the policy it started with; set the variable in the environment
  to choose it there.
* `default_threads` is the thread count the qinco-* commands use without --threads:
  OMP_NUM_THREADS when the user set it, else the cores this process may run on (taskset / cgroup
  affinity, which torch's own default ignores).

This module imports neither torch nor numpy.
"""
import os

from .errors import InputError

WAIT_POLICY = "OMP_WAIT_POLICY"
NUM_THREADS = "OMP_NUM_THREADS"
DEFAULT_WAIT_POLICY = "PASSIVE"


def apply_wait_policy(environ=None):
    """Set OMP_WAIT_POLICY to PASSIVE in `environ` (default: os.environ) unless it holds a
    non-empty value already (the user's choice is kept). Returns the policy in force."""
    environ = os.environ if environ is None else environ
    if not environ.get(WAIT_POLICY, "").strip():
        environ[WAIT_POLICY] = DEFAULT_WAIT_POLICY
    return environ[WAIT_POLICY]


def available_cores():
    """Cores this process may run on (respects taskset / cgroup affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def env_threads(environ=None):
    """The thread count OMP_NUM_THREADS asks for, or None when it is unset or empty. OpenMP
    allows a list per nesting level ("4,2"): the first entry counts. A value that is not a
    positive integer is an InputError naming the variable."""
    environ = os.environ if environ is None else environ
    text = environ.get(NUM_THREADS, "").strip()
    if not text:
        return None
    first = text.split(",")[0].strip()
    if not first.isdigit() or int(first) < 1:
        raise InputError(f"environment variable {NUM_THREADS}: expected a positive integer, "
                         f"got {text!r}")
    return int(first)


def default_threads(environ=None):
    """Threads to use when none are asked for: OMP_NUM_THREADS if set, else `available_cores()`."""
    return env_threads(environ) or available_cores()


def request_threads(n):
    """Use n CPU threads for torch, without importing it: torch started already is told now;
    otherwise OMP_NUM_THREADS is set for the thread pool it starts on import (so a command that
    fails on its arguments or inputs never pays torch's import). Returns n."""
    import sys
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    else:
        os.environ[NUM_THREADS] = str(n)
    return n
