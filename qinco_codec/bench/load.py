"""Speed under load (`qinco-bench speed --busy N`): our encoder and decoder while N other processes
keep cores busy, at several thread counts and OpenMP wait policies.

Why: OpenMP threads that spin while they wait (the ACTIVE policy, and GNU libgomp's default for
its first ~300,000 iterations) take the cores from the threads that have work when other
processes share the machine; `qinco_codec.threads` makes the package default PASSIVE. This module
measures the effect on any machine, so that the choice stays measured rather than assumed:

* `BusyLoad(n)`: n background processes, each a loop of single-threaded numpy matmuls (float64,
  256 x 256), from start to stop. They exit on their own when the parent dies.
* `measure(...)`: for every wait policy, and every thread count, a fresh interpreter (the OpenMP
  runtime reads OMP_WAIT_POLICY once, when torch loads it) loads the model file, encodes a prefix
  of the vectors that fits `time_limit` seconds and decodes its codes; it reports vectors per
  second. Policies: PASSIVE (the package's default), ACTIVE (threads spin while they wait), and
  UNSET: no OMP_WAIT_POLICY, with torch imported before qinco_codec, which is what every process
  got before the package set PASSIVE (GNU libgomp then spins for a while before sleeping). The load runs for the duration of all the measurements. Every run must produce the same
  codes on their common prefix (thread counts and wait policies change speed, not results).

Busy processes are not pinned to cores; with N at least the core count every core has a
competitor, which is the case this benchmark is for.
"""
import datetime
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from ..errors import InputError
from ..progress import note
from ..threads import WAIT_POLICY, available_cores, default_threads
from .common import format_table, write_report

# UNSET: the OpenMP runtime's own default; DEFAULT: what the package chooses by itself (policy
# and thread count from the load, qinco_codec imported before torch)
WAIT_POLICIES = ("PASSIVE", "ACTIVE", "UNSET", "DEFAULT")
LOAD_SETTLE_SECONDS = 75    # how long the 1-minute load average may take to show the busy processes
BUSY_MATRIX = 256           # side of the float64 matrices each busy process multiplies
WORKER_TIMEOUT = 3600       # seconds: a worker that takes longer has hung


# ---------------------------------------------------------------- the load
def spin(parent_pid, size=BUSY_MATRIX):
    """Multiply matrices until the parent process is gone (the body of one busy process)."""
    a = np.random.default_rng(0).standard_normal((size, size))
    b = a.copy()
    while os.getppid() == parent_pid:
        b = a @ b
        b /= np.abs(b).max() or 1.0


class BusyLoad:
    """Context manager: `n` busy-spinning background processes (numpy matmul loops, one BLAS
    thread each) while the block runs; stopped, and waited for, on exit."""

    def __init__(self, n):
        if n < 0:
            raise InputError(f"--busy: expected a number of processes >= 0, got {n}")
        self.n, self.procs = n, []

    def __enter__(self):
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        code = f"from qinco_codec.bench.load import spin; spin({os.getpid()})"
        for _ in range(self.n):
            self.procs.append(subprocess.Popen([sys.executable, "-c", code], env=env,
                                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL))
        return self

    def alive(self):
        """How many of the busy processes are still running."""
        return sum(p.poll() is None for p in self.procs)

    def __exit__(self, *exc):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []
        return False


# ---------------------------------------------------------------- one measurement (a worker)
def worker(model_path, vectors_path, threads, time_limit, policy_seen=None):
    """Encode and decode in this process at `threads` threads; returns the measurement dict.
    (Runs in a fresh interpreter started by `_run_worker`, with the wait policy to measure;
    policy_seen: OMP_WAIT_POLICY as it was when torch was imported, None for unset.)"""
    import torch

    from ..serialize import load_model
    from .common import best_of
    from .speed import _timed_prefix

    from ..threads import default_threads

    threads = threads or default_threads()   # 0: the package's own choice
    torch.set_num_threads(threads)
    model = load_model(model_path)
    model.eval()
    x = np.load(vectors_path)

    def enc(k):
        return model.encode(x[:k], device="cpu")

    k, seconds, cpu, codes = _timed_prefix(enc, len(x), time_limit)
    dsec, _ = best_of(lambda: model.decode(codes, device="cpu"), repeats=2,
                      min_seconds=min(1.0, time_limit))
    return {"threads": threads, "torch_threads": torch.get_num_threads(),
            "wait_policy_in_process": policy_seen or "unset", "n": k,
            "encode_vps": k / seconds if seconds > 0 else None,
            "encode_cpu_per_wall": cpu / seconds if seconds > 0 else None,
            "decode_vps": k / dsec if dsec > 0 else None,
            "codes": np.ascontiguousarray(codes).tolist()}


# torch first, so that an unset policy reaches the OpenMP runtime unset (qinco_codec may set PASSIVE)
_WORKER = ("import os, sys; seen = os.environ.get('OMP_WAIT_POLICY'); import torch; "
           "from qinco_codec.bench.load import worker_main; worker_main(sys.argv[1:], seen)")
# the package first: it picks the policy and (threads 0) the thread count, as the commands do
_DEFAULT_WORKER = ("import os, sys, qinco_codec; seen = os.environ.get('OMP_WAIT_POLICY'); import torch; "
                   "from qinco_codec.bench.load import worker_main; worker_main(sys.argv[1:], seen)")


def worker_main(argv, policy_seen):
    """The worker's command line: MODEL VECTORS THREADS SECONDS; prints the result as JSON."""
    model_path, vectors_path, threads, seconds = argv
    print(json.dumps(worker(model_path, vectors_path, int(threads), float(seconds), policy_seen)))


def _run_worker(model_path, vectors_path, threads, policy, time_limit):
    env = dict(os.environ)
    env.pop(WAIT_POLICY, None)
    if policy == "DEFAULT":
        env.pop("OMP_NUM_THREADS", None)
        threads = 0
    elif policy != "UNSET":
        env[WAIT_POLICY] = policy
    args = [sys.executable, "-c", _DEFAULT_WORKER if policy == "DEFAULT" else _WORKER, model_path,
            vectors_path, str(threads), repr(float(time_limit))]
    try:
        r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise InputError(f"--busy: the measurement at {threads} thread(s), {policy} took more "
                         f"than {WORKER_TIMEOUT} s") from None
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise InputError(f"--busy: the measurement at {threads} thread(s), {policy} failed: {last}")
    out = json.loads(r.stdout)
    out["wait_policy"] = policy
    return out


# ---------------------------------------------------------------- the comparison
def _wait_for_load(busy, quiet):
    """Wait (up to LOAD_SETTLE_SECONDS) until the 1-minute load average shows `busy` processes
    (within half a process) or, with none, has fallen below half a process."""
    deadline = time.monotonic() + LOAD_SETTLE_SECONDS
    note(f"[busy={busy}] waiting for the load average to settle (at most {LOAD_SETTLE_SECONDS} s)", quiet)
    while time.monotonic() < deadline:
        load = os.getloadavg()[0]
        if (load >= busy - 0.5) if busy else (load < 0.5):
            return
        time.sleep(2.0)


def parse_policies(values):
    """('passive,active',) -> ('PASSIVE', 'ACTIVE'); empty -> the policy in force."""
    out = []
    for chunk in values or ():
        for item in str(chunk).replace(",", " ").split():
            if item.upper() not in WAIT_POLICIES:
                raise InputError(f"--wait-policy: expected one of {', '.join(WAIT_POLICIES)}, "
                                 f"got {item!r}")
            out.append(item.upper())
    return tuple(dict.fromkeys(out)) or ((os.environ.get(WAIT_POLICY) or "UNSET").upper(),)


def measure(model, x, busy, threads=None, policies=None, time_limit=5.0, model_desc="", source="",
            quiet=False):
    """Speed of `model` on the vectors x with `busy` busy processes running, for every wait
    policy and thread count (default: the commands' default count, then 1). Returns the result
    dict (see `text_report`)."""
    from ..serialize import save_model

    if time_limit <= 0:
        raise InputError(f"--time-limit must be positive, got {time_limit}")
    threads = tuple(dict.fromkeys(int(t) for t in (threads or (default_threads(), 1))))
    policies = tuple(policies or parse_policies(()))
    runs = []
    with tempfile.TemporaryDirectory(prefix="qinco-bench-load-") as tmp:
        model_path, vectors_path = os.path.join(tmp, "model.safetensors"), os.path.join(tmp, "x.npy")
        save_model(model, model_path)
        np.save(vectors_path, np.ascontiguousarray(x, dtype=np.float32))
        load_start = _load()
        with BusyLoad(busy) as load:
            time.sleep(0.5 if busy else 0.0)   # let the busy processes start spinning
            if "DEFAULT" in policies:          # the package reads the load average: let it rise
                _wait_for_load(busy, quiet)
            for policy in policies:
                for t in (threads if policy != "DEFAULT" else (0,)):   # DEFAULT picks its own count
                    note(f"[busy={busy}] {policy}, {t or 'default'} thread(s): encoding and decoding", quiet)
                    runs.append(_run_worker(model_path, vectors_path, t, policy, time_limit))
            still = load.alive()
        load_end = _load()
    notes = []
    if still < busy:
        notes.append(f"only {still} of the {busy} busy processes were still running at the end")
    codes = [np.asarray(r.pop("codes")) for r in runs]
    common = min(len(c) for c in codes)
    if any(not np.array_equal(c[:common], codes[0][:common]) for c in codes):
        notes.append("the codes differ between runs (they should not: threads and wait policies "
                     "change speed only)")
    for r, c in zip(runs, codes):
        r["codes_sha256"] = hashlib.sha256(np.ascontiguousarray(c[:common], np.int64).tobytes()).hexdigest()[:16]
    for r in runs:
        same = r["wait_policy"] if r["wait_policy"] != "DEFAULT" else "UNSET"   # vs the runtime's 1 thread
        one = next((o for o in runs if o["wait_policy"] == same and o["threads"] == 1), None)
        r["encode_x_one_thread"] = _ratio(r["encode_vps"], one["encode_vps"]) if one else None
        r["decode_x_one_thread"] = _ratio(r["decode_vps"], one["decode_vps"]) if one else None
    notes.append(f"each row: a fresh process with OMP_WAIT_POLICY set as shown (UNSET: not set, "
                 f"torch imported first: the OpenMP runtime's default), encoding a prefix "
                 f"of the vectors that fits {time_limit:g} s (column n) and decoding its codes; "
                 f"x 1 thread: vectors/s over the same policy's 1-thread row")
    if busy:
        notes.append(f"load: {busy} background process(es), each multiplying {BUSY_MATRIX}x"
                     f"{BUSY_MATRIX} float64 matrices in one thread, for the whole measurement")
    return {
        "benchmark": "speed-load",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": {"busy": busy, "threads": list(threads), "wait_policies": list(policies),
                   "default_threads": default_threads(), "cores": available_cores(),
                   "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "n": len(x),
                   "time_limit_s": time_limit, "model": model_desc, "vectors": source,
                   "bytes_per_vector": model.bytes_per_vector, "device": "cpu"},
        "machine": {"load_average_1min_before": load_start, "load_average_1min_after": load_end},
        "runs": runs,
        "notes": notes,
    }


def _ratio(a, b):
    return a / b if a is not None and b else None


def _load():
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


# ---------------------------------------------------------------- reports
COLUMNS = [("wait_policy", "OMP_WAIT_POLICY", ""), ("threads", "threads", "d"), ("n", "n", ",d"),
           ("encode_vps", "enc vec/s", ",.0f"), ("decode_vps", "dec vec/s", ",.0f"),
           ("encode_x_one_thread", "enc x 1 thread", ".2f"),
           ("decode_x_one_thread", "dec x 1 thread", ".2f"),
           ("encode_cpu_per_wall", "enc CPU s / wall s", ".2f")]


def text_report(result, markdown=False):
    c, m = result["config"], result["machine"]
    load = lambda v: "?" if v is None else f"{v:.2f}"
    head = [f"qinco-bench speed --busy {c['busy']}: {c['busy']} busy process(es) on {c['cores']} "
            f"core(s); default threads {c['default_threads']} "
            f"(OMP_NUM_THREADS={c['omp_num_threads'] or 'unset'}); model: {c['model']} "
            f"({c['bytes_per_vector']} B/vector)",
            f"vectors: {c['vectors']}",
            f"1-min load average before / after: {load(m['load_average_1min_before'])} / "
            f"{load(m['load_average_1min_after'])}"]
    lines = [f"- {h}" if markdown else h for h in head] + [""]
    lines.append(format_table(result["runs"], COLUMNS, markdown=markdown))
    lines.append("")
    lines += [f"{'- ' if markdown else '# '}{text}" for text in result["notes"]]
    return "\n".join(lines)


def write_outputs(result, out_dir=None, json_path=None):
    """load.json and load.md under out_dir and/or the JSON at json_path; returns the paths."""
    return write_report(result, "load", "qinco-bench speed under load", text_report(result, markdown=True), out_dir, json_path)
