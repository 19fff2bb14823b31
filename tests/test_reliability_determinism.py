"""Reliability: determinism. The same input, model and options give the same codes and the same
file bytes across runs, across processes, through the API and the CLI, and whatever the number
of torch threads (1 or 2, set in separate processes) on the CPU."""
import hashlib
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import qinco_codec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reliability_util import one_torch_thread  # noqa: F401 - autouse fixture
from reliability_util import cli, glove, npy, run, small_model

N = 800


SCRIPT = r"""
import hashlib, json, sys
import numpy as np, torch
threads, src, out, model = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
torch.set_num_threads(threads)
import qinco_codec
x = np.load(src)
qinco_codec.compress(x, out, model, quiet=True)           # default search: A=16, B=8 (beam)
with qinco_codec.open(out) as f:
    codes = f.codes()
    decoded = f.decode()
m = qinco_codec.load_model(model)
greedy = m.encode(x, B=1)
h = lambda b: hashlib.sha256(b).hexdigest()
print(json.dumps({"threads": torch.get_num_threads(), "file": h(open(out, "rb").read()),
                  "codes": h(codes.tobytes()), "greedy": h(greedy.tobytes()),
                  "decoded": h(decoded.tobytes())}))
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three fresh processes: 1 thread, 2 threads, 2 threads again."""
    d = tmp_path_factory.mktemp("det")
    model_path, _ = small_model()
    src = npy(d / "x.npy", glove("base", N))

    def one(i_threads):
        i, threads = i_threads
        r = run([sys.executable, "-c", SCRIPT, threads, src, d / f"out{i}.qnc", model_path],
                check=0)
        return json.loads(r.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(one, enumerate([1, 2, 2])))
    return d, src, model_path, results


def test_codes_and_file_bytes_do_not_depend_on_the_thread_count(runs):
    _, _, _, results = runs
    assert [r["threads"] for r in results] == [1, 2, 2]
    for key in ("codes", "greedy", "file"):
        assert len({r[key] for r in results}) == 1, (key, results)


def test_decoded_vectors_are_identical_across_runs_and_thread_counts(runs):
    _, _, _, results = runs
    assert len({r["decoded"] for r in results}) == 1, results


def test_same_bytes_through_the_api_in_process_and_the_cli(runs, tmp_path):
    """In this process (its own thread count), twice, and through qinco-compress: the same
    bytes as the subprocesses wrote."""
    d, src, model_path, results = runs
    x = np.load(src)
    digests = set()
    for i in range(2):
        out = tmp_path / f"api{i}.qnc"
        qinco_codec.compress(x, out, model_path, quiet=True)
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    out = tmp_path / "cli.qnc"
    run([cli("qinco-compress"), src, out, "--model", model_path, "--quiet"], check=0)
    digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    assert digests == {results[0]["file"]}


def test_options_change_the_bytes_deterministically(tmp_path):
    """Changing chunk_rows, the zstd level or the metadata changes the bytes, reproducibly, and
    never the codes."""
    model_path, model = small_model()
    x = glove("base", 600)
    seen = {}
    for opts in ({}, {"chunk_rows": 100}, {"zstd_level": 19}, {"metadata": {"a": 1}},
                 {"zstd_level": None}):
        digests, codes = set(), None
        for i in range(2):
            out = tmp_path / f"o{len(seen)}_{i}.qnc"
            qinco_codec.compress(x, out, model_path, quiet=True, B=1, **opts)
            digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
            with qinco_codec.open(out) as f:
                codes = f.codes() if codes is None else codes
                np.testing.assert_array_equal(f.codes(), codes)
        assert len(digests) == 1, opts
        seen[json.dumps(opts, sort_keys=True)] = digests.pop()
    assert len(set(seen.values())) == len(seen)
    np.testing.assert_array_equal(codes, model.encode(x, B=1))
