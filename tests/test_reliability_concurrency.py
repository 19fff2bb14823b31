"""Reliability: concurrent readers. Several threads and several processes (multiprocessing,
spawn) decoding one .qnc file at once get identical results; an iteration over a file keeps
reading the old file when another .qnc is renamed onto its path mid-iteration (the way every
writer of this package replaces a file)."""
import io
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import qinco_codec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reliability_util import one_torch_thread  # noqa: F401 - autouse fixture
from reliability_util import (decode_digests, decode_digests_star, glove, start_worker,
                              small_model)

N = 5000
THREADS = 4



@pytest.fixture(scope="module")
def qnc(tmp_path_factory):
    """A 5000-vector file (K=16, M=4, 64-row chunks, embedded model) and its reference decode."""
    path = tmp_path_factory.mktemp("conc") / "x.qnc"
    model_path, model = small_model()
    qinco_codec.compress(glove("base", N), path, model_path, chunk_rows=64, quiet=True, B=1)
    with qinco_codec.open(path) as f:
        ref = {"codes": f.codes(), "full": f.decode(), "half": f.decode(steps=2),
               "rows": f.decode(rows=slice(1000, 3500)),
               "iter": np.concatenate(list(f.iter_decode(batch_size=777)))}
    return path, ref


def read_everything(f):
    return {"codes": f.codes(), "full": f.decode(), "half": f.decode(steps=2),
            "rows": f.decode(rows=slice(1000, 3500)),
            "iter": np.concatenate(list(f.iter_decode(batch_size=777)))}


def assert_same(got, ref, who):
    for key in ref:
        np.testing.assert_array_equal(got[key], ref[key], err_msg=f"{who}: {key}")


def test_threads_with_their_own_handles_get_identical_results(qnc):
    path, ref = qnc
    barrier = threading.Barrier(THREADS)

    def work(i):
        with qinco_codec.open(path) as f:
            barrier.wait()  # all start together
            return read_everything(f)

    for _ in range(2):
        with ThreadPoolExecutor(THREADS) as pool:
            for i, got in enumerate(pool.map(work, range(THREADS))):
                assert_same(got, ref, f"thread {i}")


def test_processes_spawned_get_identical_results(qnc):
    """Processes started with multiprocessing's spawn method (two at a time, one torch thread
    each, as this process), each opening the file, decoding at the full rate and at a 2-byte
    prefix, all at once."""
    path, ref = qnc
    expected = {}
    for nbytes in (None, 2):
        expected[nbytes] = decode_digests(path, nbytes)[:3]
    jobs = [(str(path), nbytes) for _ in range(2) for nbytes in (None, 2)]
    ctx = multiprocessing.get_context("spawn")
    both_up = ctx.Barrier(2)   # no job starts before both workers have (else one may do them all)
    with ctx.Pool(2, initializer=start_worker, initargs=(1, both_up)) as pool:
        results = pool.map(decode_digests_star, jobs, chunksize=1)
    assert len({pid for *_, pid in results}) >= 2
    for (path_, nbytes), got in zip(jobs, results):
        assert got[:3] == expected[nbytes], nbytes


class SlowFile(io.RawIOBase):
    """A seekable binary file whose reads take a millisecond (a network file system, say), so
    that threads sharing one handle interleave between seek() and read()."""

    def __init__(self, path):
        self._f = open(path, "rb", buffering=0)

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=0):
        return self._f.seek(offset, whence)

    def tell(self):
        return self._f.tell()

    def readinto(self, buffer):
        time.sleep(0.001)
        return self._f.readinto(buffer)

    def close(self):
        self._f.close()
        super().close()


def test_threads_sharing_one_handle_get_identical_results(qnc):
    path, ref = qnc
    with qinco_codec.open(SlowFile(path)) as f:
        f.model  # noqa: B018 - resolved once, before the threads start
        errors = []

        def work(i):
            try:
                return read_everything(f)
            except Exception as exc:  # noqa: BLE001
                errors.append(f"thread {i}: {type(exc).__name__}: {exc}")
                return None

        with ThreadPoolExecutor(THREADS) as pool:
            results = list(pool.map(work, range(THREADS)))
    assert not errors, errors[:2]
    for i, got in enumerate(results):
        assert_same(got, ref, f"thread {i}")


@pytest.mark.parametrize("replace_with", ["os.replace", "qinco_codec.compress"])
def test_iteration_keeps_reading_the_old_file_after_an_atomic_replace(qnc, tmp_path,
                                                                      replace_with):
    """iter_decode over a path onto which another .qnc is renamed after the first batch yields
    exactly the old file's vectors; so do later reads through the same handle, and the model
    resolved lazily after the replacement is the old file's embedded model."""
    path, ref = qnc
    target = tmp_path / "live.qnc"
    target.write_bytes(path.read_bytes())
    model_path, _ = small_model()
    other = glove("base", N + 3000)[N:]
    with qinco_codec.open(target) as f:
        it = f.iter_decode(batch_size=700)
        batches = [next(it)]
        if replace_with == "os.replace":
            replacement = tmp_path / "other.qnc"
            qinco_codec.compress(other, replacement, model_path, chunk_rows=100, quiet=True, B=1)
            os.replace(replacement, target)
        else:  # the package's own atomic writer, onto the very path being read
            qinco_codec.compress(other, target, model_path, chunk_rows=100, quiet=True, B=1)
        batches += list(it)
        full = np.concatenate(batches)
        np.testing.assert_array_equal(f.codes(), ref["codes"])
        np.testing.assert_array_equal(f.decode(rows=slice(1000, 3500)), ref["rows"])
    with qinco_codec.open(path) as f0:
        np.testing.assert_array_equal(full, np.concatenate(list(f0.iter_decode(batch_size=700))))
    with qinco_codec.open(target) as f2:  # the path now names the new file
        assert f2.n == 3000


def test_model_is_resolved_lazily_from_the_open_handle(qnc, tmp_path):
    """The embedded model is read through the open handle when first needed, after the path was
    replaced by a file with another model: it is still the old file's model."""
    path, ref = qnc
    target = tmp_path / "live.qnc"
    target.write_bytes(path.read_bytes())
    from qinco_codec.model import QincoModel
    from qinco_codec.rq_init import init_from_rq
    other_model = init_from_rq(QincoModel.from_preset("qinco2-XS", 50, 2, K=16),
                               glove("train", 1000), seed=1)
    with qinco_codec.open(target) as f:
        replacement = tmp_path / "other.qnc"
        qinco_codec.compress(glove("base", 100), replacement, other_model, quiet=True)
        os.replace(replacement, target)
        np.testing.assert_array_equal(f.decode(), ref["full"])
