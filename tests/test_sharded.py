"""compress_sharded and qinco-shard: shards on chunk boundaries, encoded on Ray tasks or in local
processes, merge into exactly the file one `compress` writes with the same model and options
(codes and every other byte: the driver measures the quality report on compress's sample);
reruns redo only the shards that are missing or do not verify; failed tasks are retried."""
import os

import numpy as np
import pytest

import qinco_codec
from qinco_codec.cli.shard import main as shard_main
from qinco_codec.errors import InputError, QincoError
from qinco_codec.formats import QncReader
from qinco_codec.sharded import FAULT_ENV, shard_ranges

from cli_util import cli_runner

ROWS, CHUNK = 1100, 128  # 9 chunks, the last of 76 rows


@pytest.fixture(scope="module")
def work(tmp_path_factory, glove_base, rq_model):
    """The input file, the model file and the single-process compress of them."""
    d = tmp_path_factory.mktemp("sharded")
    np.save(d / "x.npy", glove_base[:ROWS])
    rq_model.save(d / "model.safetensors")
    qinco_codec.compress(d / "x.npy", d / "whole.qnc", str(d / "model.safetensors"),
                         chunk_rows=CHUNK, quiet=True)
    return d


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray of 2 CPUs for the module's Ray tests (it takes seconds to start)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def _assert_same_file(merged, whole):
    """The merged file holds the single compress's codes, and is that file byte for byte (same
    sections: model_config, embedded model, quality report)."""
    with QncReader(merged) as m, QncReader(whole) as w:
        assert np.array_equal(m.codes(), w.codes())
        assert m.header.quality_report == w.header.quality_report is not None
    assert merged.read_bytes() == whole.read_bytes()


def _identity(paths):
    return {p: (os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in paths}


def test_shard_ranges_fall_on_chunk_boundaries():
    assert shard_ranges(1100, 128, 4) == [(0, 256), (256, 512), (512, 768), (768, 1100)]
    assert shard_ranges(300, 128, 8) == [(0, 128), (128, 256), (256, 300)]  # one per chunk
    assert shard_ranges(0, 128, 3) == [(0, 0)]
    for n, rows, k in [(10**6, 65536, 7), (999, 10, 13)]:
        bounds = shard_ranges(n, rows, k)
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(lo % rows == 0 and lo < hi for lo, hi in bounds)


def test_on_ray_4_shards_merge_into_the_single_compress(work, ray_cluster, tmp_path):
    s = qinco_codec.compress_sharded(work / "x.npy", tmp_path / "shards",
                                     str(work / "model.safetensors"), shards=4,
                                     chunk_rows=CHUNK, use_ray=True)
    assert s["engine"].startswith("Ray (2 CPUs") and len(s["written"]) == 4
    assert [os.path.basename(p) for p in s["paths"]] == [f"shard-0000{i}-of-00004.qnc"
                                                         for i in range(4)]
    m = qinco_codec.merge(s["paths"], tmp_path / "merged.qnc")
    assert (m["chunks_copied"], m["chunks_repacked"]) == (9, 0)
    _assert_same_file(tmp_path / "merged.qnc", work / "whole.qnc")


@pytest.mark.slow  # four runs, each starting worker processes (torch's import): 15-60 s
def test_in_local_processes_with_a_retried_task_then_reruns(work, tmp_path, monkeypatch):
    """Without Ray; shard 1's worker dies (exits) once and the shard is retried in a new pool.
    Then a rerun after deleting shard 1 and
    corrupting shard 2 rewrites those two only (the others keep their inode and mtime), and a
    rerun with another parameter rewrites all."""
    out, model = tmp_path / "shards", str(work / "model.safetensors")
    monkeypatch.setenv(FAULT_ENV, f"1:{tmp_path / 'failed-once'}:exit")
    s = qinco_codec.compress_sharded(work / "x.npy", out, model, shards=4, chunk_rows=CHUNK,
                                     use_ray=False, workers=2)
    assert (tmp_path / "failed-once").exists() and len(s["written"]) == 4
    assert s["engine"] == "2 local processes"
    qinco_codec.merge(s["paths"], tmp_path / "merged.qnc")
    _assert_same_file(tmp_path / "merged.qnc", work / "whole.qnc")

    paths = s["paths"]
    os.remove(paths[1])
    data = bytearray(open(paths[2], "rb").read())
    data[-100] ^= 0x01  # a plane byte of the last chunk
    open(paths[2], "wb").write(bytes(data))
    before = _identity([paths[0], paths[3]])
    again = qinco_codec.compress_sharded(work / "x.npy", out, model, shards=4, chunk_rows=CHUNK,
                                         use_ray=False, workers=2)
    assert again["written"] == paths[1:3] and again["skipped"] == [paths[0], paths[3]]
    assert _identity([paths[0], paths[3]]) == before
    qinco_codec.merge(paths, tmp_path / "merged.qnc", quiet=True, metadata=None)
    _assert_same_file(tmp_path / "merged.qnc", work / "whole.qnc")

    third = qinco_codec.compress_sharded(work / "x.npy", out, model, shards=4, chunk_rows=CHUNK,
                                         use_ray=False, workers=2)
    assert third["written"] == [] and third["rows_encoded"] == 0  # all verified: nothing to do
    changed = qinco_codec.compress_sharded(work / "x.npy", out, model, shards=4,
                                           chunk_rows=CHUNK, zstd_level=0, use_ray=False,
                                           workers=2, report=False)
    assert changed["written"] == paths


def test_a_task_that_keeps_failing_ends_the_run_naming_its_shard(work, tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, f"0:{tmp_path / 'failed-once'}")
    with pytest.raises(QincoError, match=r"shard .*shard-00000-of-00002.qnc failed after 1 "
                                         r"attempt: injected fault"):
        qinco_codec.compress_sharded(work / "x.npy", tmp_path / "out",
                                     str(work / "model.safetensors"), shards=2, chunk_rows=512,
                                     use_ray=False, workers=1, retries=0, report=False)
    assert os.path.exists(tmp_path / "out" / "shard-00001-of-00002.qnc")  # the other one stays
    assert sorted(os.listdir(tmp_path / "out")) == ["shard-00001-of-00002.qnc",
                                                    "shard.manifest.json"]


def test_bad_arguments_are_refused_before_any_work(work, tmp_path):
    model = str(work / "model.safetensors")
    with pytest.raises(InputError, match=r"shards=0 must be a positive integer"):
        qinco_codec.compress_sharded(work / "x.npy", tmp_path, model, shards=0)
    np.save(tmp_path / "y.npy", np.zeros((10, 7), np.float32))
    with pytest.raises(InputError, match=r"y.npy: vectors of dimension 7, the first input has 50"):
        qinco_codec.compress_sharded([work / "x.npy", tmp_path / "y.npy"], tmp_path, model)
    with pytest.raises(InputError, match=r"row range \[5, 2000\) is not within its 1100 rows"):
        qinco_codec.compress_sharded((work / "x.npy", 5, 2000), tmp_path, model)
    assert not list(tmp_path.glob("*.qnc"))


def test_qinco_shard_files_and_ranges_end_to_end(work, tmp_path):
    """Two inputs (a row range of one file, then another file) as one collection, merged by
    --merge: the file compress writes of the same rows."""
    x = np.load(work / "x.npy")
    np.save(tmp_path / "tail.npy", x[600:])
    out = tmp_path / "merged.qnc"
    args = [f"{work / 'x.npy'}[:600]", str(tmp_path / "tail.npy"), "-o", str(tmp_path / "sh"),
            "--model", str(work / "model.safetensors"), "--shards", "3", "--chunk-rows",
            str(CHUNK), "--workers", "2", "--merge", str(out)]
    result = cli_runner().invoke(shard_main, args)
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith(("sharded", "merged"))]
    assert lines[0].startswith(f"sharded {ROWS:,} vectors into 3 shards in {tmp_path / 'sh'}: 3 "
                               f"written, 0 skipped")
    assert lines[1].startswith(f"merged 3 shards into {out}: {ROWS:,} vectors, 9 chunks copied")
    _assert_same_file(out, work / "whole.qnc")
    again = cli_runner().invoke(shard_main, args + ["-f", "-q"])
    assert again.exit_code == 0 and again.stderr == ""
    refused = cli_runner().invoke(shard_main, args)
    assert refused.exit_code == 1 and refused.stderr.startswith("qinco-shard: error: --merge ")
    assert "already exists" in refused.stderr and len(refused.stderr.splitlines()) == 1


def test_qinco_shard_help_version_and_argument_errors(tmp_path):
    runner = cli_runner()
    result = runner.invoke(shard_main, ["--help"])
    assert result.exit_code == 0 and result.stdout.startswith("Usage: qinco-shard")
    assert "qinco-shard" in result.stdout.split("Examples:")[1]
    assert runner.invoke(shard_main, ["-h"]).stdout == result.stdout
    assert runner.invoke(shard_main, ["--version"]).stdout.startswith("qinco-shard ")
    missing = runner.invoke(shard_main, [str(tmp_path / "no.npy"), "-o", str(tmp_path / "o"),
                                         "--model", str(tmp_path / "no.npy"), "--shards", "2"])
    assert missing.exit_code == 1 and missing.stderr.startswith("qinco-shard: error: ")
    assert "no.npy" in missing.stderr and len(missing.stderr.splitlines()) == 1
    stdin = runner.invoke(shard_main, ["-", "-o", str(tmp_path / "o"), "--model", "-",
                                       "--shards", "2"])
    assert stdin.exit_code != 0 and "stdin cannot be sharded" in stdin.stderr


@pytest.mark.slow  # a real process, signalled mid-run
def test_sigterm_ends_the_run_with_one_line_and_no_partial_shard(work, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "sh"
    proc = subprocess.Popen([sys.executable, "-m", "qinco_codec.cli.shard", str(work / "x.npy"),
                             "-o", str(out), "--model", str(work / "model.safetensors"),
                             "--shards", "2", "--chunk-rows", "512", "--A", "0", "--B", "16",
                             "--workers", "2"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list(out.glob(".*.tmp")):
        time.sleep(0.2)
    assert list(out.glob(".*.tmp")), "no shard was being written"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert err.strip().splitlines()[-1] == "qinco-shard: error: terminated by SIGTERM"
    # nothing partial: no temporary file is left, and a shard that finished before the signal
    # landed (the workers race it) is a whole file that verifies
    names = sorted(p.name for p in out.iterdir())
    assert "shard.manifest.json" in names and not [n for n in names if n.startswith(".")], names
    assert set(names) - {"shard.manifest.json"} <= {"shard-00000-of-00002.qnc",
                                                     "shard-00001-of-00002.qnc"}, names
    for path in out.glob("shard-*.qnc"):
        with qinco_codec.open(path) as f:
            f.verify()
