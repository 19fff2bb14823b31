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

But a sleeping wait costs a wake-up at every barrier, and the encoder and decoder run many small
matmuls: on an idle 2-core machine PASSIVE made 2-thread encoding of a qinco2-S model at d=384
3x slower than the runtime's default (10 against 31 vectors/s; decoding 3,700 against 13,500),
slower even than 1 thread. So the choice follows the load, once, when the package is imported:

* `busy_cores` reads how many of this process's cores other work keeps busy: the 1-minute load
  average, scaled from the machine's cores to this process's (a container's cores see the
  host's load), a core counting from 0.75 of a process; QINCO_BUSY_CORES overrides it.
* `apply_wait_policy`: on a busy machine it sets OMP_WAIT_POLICY=PASSIVE (waiting threads
  sleep); on an idle one it leaves the OpenMP runtime its default (brief spinning pays there).
  A policy the user set is kept. The runtime reads the variable once, when torch loads it, so
  this runs before `import torch`: `qinco_codec/__init__.py` calls it at package import (the
  package imports torch lazily, and every qinco-* command imports the package first). A program
  that imported torch before qinco_codec keeps the policy it started with.
* `default_threads` is the thread count without --threads: OMP_NUM_THREADS when set, else the
  cores this process may run on (taskset / cgroup affinity, which torch's own default ignores)
  less the busy ones, at least 1: with other work on the cores, fewer threads wait at fewer
  barriers.

The load average also counts this process's own recent work (it matters for a long-running
program that imports the package late) and lags by about a minute; --threads and the
environment variables decide where that guess is wrong.

This module imports neither torch nor numpy.
"""
import os

from .errors import InputError

WAIT_POLICY = "OMP_WAIT_POLICY"
NUM_THREADS = "OMP_NUM_THREADS"
BUSY_CORES = "QINCO_BUSY_CORES"
DEFAULT_WAIT_POLICY = "PASSIVE"   # what a busy machine gets
UNSET = "UNSET"                   # what apply_wait_policy reports when it leaves the runtime's default


def busy_cores(environ=None, cores=None):
    """Cores of this process's that other work keeps busy (see the module docstring), in
    [0, cores - 1]: QINCO_BUSY_CORES when set, else the 1-minute load average scaled to `cores`."""
    environ = os.environ if environ is None else environ
    cores = available_cores() if cores is None else cores
    text = environ.get(BUSY_CORES, "").strip()
    if text:
        if not text.isdigit():
            raise InputError(f"environment variable {BUSY_CORES}: expected a whole number of cores, "
                             f"got {text!r}")
        busy = int(text)
    else:
        try:
            load = os.getloadavg()[0]
        except (OSError, AttributeError):   # not available on this system
            return 0
        # a core counts as busy from 0.75 of a process on it: a load average still decaying
        # from work that has ended (it lags by about a minute) does not take a core away
        busy = int(cores * min(1.0, load / (os.cpu_count() or cores)) + 0.25)
    return max(0, min(cores - 1, busy))


def apply_wait_policy(environ=None, busy=None):
    """On a busy machine (`busy` cores, default `busy_cores()`), set OMP_WAIT_POLICY=PASSIVE in
    `environ` (default: os.environ) unless it holds a value already (the user's choice is kept);
    on an idle one leave it unset. Returns the policy in force, UNSET for the runtime's default."""
    environ = os.environ if environ is None else environ
    if environ.get(WAIT_POLICY, "").strip():
        return environ[WAIT_POLICY]
    if (busy_cores(environ) if busy is None else busy) > 0:
        environ[WAIT_POLICY] = DEFAULT_WAIT_POLICY
        return DEFAULT_WAIT_POLICY
    return UNSET


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
    """Threads to use when none are asked for: OMP_NUM_THREADS if set, else the cores this
    process may run on less the busy ones (`busy_cores`), at least 1."""
    cores = available_cores()
    return env_threads(environ) or max(1, cores - busy_cores(environ, cores))


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
