"""The qinco-* command-line tools: in-process through click's CliRunner, plus a few real
subprocess calls of the installed entry points. Small synthetic data and tiny training runs."""
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_util import cli_runner

import qinco_codec
from qinco_codec.cli import compress, decompress, index, info, merge, search, shard, train
from qinco_codec.cli import eval as eval_cmd
from qinco_codec.readers import read_vectors, write_vectors

N, DIM = 2000, 16
COMMANDS = {"qinco-train": train.main, "qinco-eval": eval_cmd.main, "qinco-compress": compress.main,
            "qinco-decompress": decompress.main, "qinco-info": info.main, "qinco-search": search.main,
            "qinco-index": index.main, "qinco-merge": merge.main, "qinco-shard": shard.main}



def run(cmd, *args, input=None, code=0):
    """Invoke a command in-process; check its exit code; return the click Result."""
    result = cli_runner().invoke(cmd, [str(a) for a in args], input=input)
    assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    # every outcome, success or error, ends through sys.exit: no exception escaped
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def fails(cmd, *args, code=1, match=(), input=None):
    """The command fails with exactly one line `<prog>: error: ...` on stderr, no traceback."""
    result = run(cmd, *args, code=code, input=input)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{cmd.name}: error: "), lines[0]
    assert "Traceback" not in result.output + result.stderr
    for m in (match,) if isinstance(match, str) else match:
        assert m in lines[0], (m, lines[0])
    return lines[0]


def sha256_file(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def model_store(tmp_path, monkeypatch):
    """Every test gets its own empty model store (never the user's cache)."""
    store = tmp_path / "store"
    monkeypatch.setenv("QINCO_MODEL_DIR", str(store))
    return store


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def data(work):
    x = np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32)
    path = work / "x.npy"
    np.save(path, x)
    return x, path


@pytest.fixture(scope="module")
def trained(work, data):
    """qinco-train: one epoch of qinco2-XS at 4 bytes per vector."""
    _, xpath = data
    out = work / "m.safetensors"
    args = (xpath, "-o", out, "--preset", "qinco2-XS", "--bytes", "4", "--epochs", "1",
            "--resume", work / "train.ckpt", "--quiet")
    return out, run(train.main, *args), args


@pytest.fixture(scope="module")
def qnc(work, data, trained):
    """qinco-compress with --model, embedded model, user metadata, small chunks."""
    _, xpath = data
    model = trained[0]
    out = work / "a.qnc"
    result = run(compress.main, xpath, out, "--model", model, "--chunk-rows", "512",
                 "--metadata", '{"source": "synthetic", "seed": 0}')
    return out, result


# ---------------------------------------------------------------- help
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help(name):
    result = run(COMMANDS[name], "--help")
    assert result.stdout.startswith(f"Usage: {name}")
    assert "Examples:" in result.stdout and name in result.stdout.split("Examples:")[1]
    assert run(COMMANDS[name], "-h").stdout == result.stdout


# ---------------------------------------------------------------- train, eval
@pytest.mark.parametrize("best, noted", [(0.995, True), (0.9, False)])
def test_train_says_when_the_network_did_not_learn(work, data, trained, monkeypatch, best, noted):
    """A best validation MSE less than 1% below the RQ start's gets a note on stderr naming both and
    the training-set size; a real gain gets none. (train() is replaced by one returning that history.)"""
    from qinco_codec.training import TrainResult
    x, xpath = data
    model = qinco_codec.load_model(trained[0])
    history = [{"epoch": 0, "val_mse": 1.0}, {"epoch": 1, "train_mse": 0.5, "val_mse": best}]
    monkeypatch.setattr(qinco_codec, "train", lambda *a, **k: TrainResult(model, history))
    out = work / f"note-{best}.safetensors"
    result = run(train.main, xpath, "-o", out, "--bytes", "4", "--epochs", "1")
    assert "start_val_mse: 1\n" in result.stdout
    assert ("note: the network gained 0.5% over its RQ start (validation MSE 1 to 0.995): "
            f"{len(x):,} training vectors were too few" in result.stderr) == noted, result.stderr


def test_train_then_eval(work, data, trained):
    x, xpath = data
    model_path, result, args = trained
    out = dict(line.split(": ", 1) for line in result.stdout.strip().splitlines())
    assert out["sha256"] == sha256_file(model_path)
    assert float(out["val_mse"]) > 0 and out["epochs"] == "1"
    assert float(out["start_val_mse"]) >= float(out["val_mse"])   # the best epoch, RQ start included
    assert qinco_codec.load_model(model_path).M == 4
    assert (work / "train.ckpt").is_file()
    # the same command again resumes from the checkpoint (all epochs done): the same model
    again = run(train.main, *args[:-1], "--force")  # -o exists now
    assert "resuming from checkpoint" in again.stderr
    assert again.stdout == result.stdout

    table = run(eval_cmd.main, model_path, xpath).stdout.strip().splitlines()
    assert table[0].split()[:4] == ["steps", "bytes/vec", "MSE", "rel"]
    rows = [line.split() for line in table[1:] if not line.startswith("#")]
    assert [r[0] for r in rows] == ["1", "2", "3", "4"]
    mse = [float(r[2]) for r in rows]
    assert mse == sorted(mse, reverse=True)  # every extra byte helps

    queries = x[:40] + 0.01
    gt = np.argsort(((queries[:, None, :] - x[None]) ** 2).sum(-1), axis=1)[:, :10].astype(np.int32)
    np.save(work / "q.npy", queries)
    np.save(work / "gt.npy", gt)
    rows = json.loads(run(eval_cmd.main, model_path, xpath, "--queries", work / "q.npy",
                          "--gt", work / "gt.npy", "--json", "--B", "2").stdout)
    assert [r["bytes"] for r in rows] == [1, 2, 3, 4]
    assert {"steps", "bytes", "mse", "rel_mse", "R@1", "R@10"} <= set(rows[-1])
    assert 0 <= rows[-1]["R@1"] <= rows[-1]["R@10"] <= 1
    fails(eval_cmd.main, model_path, xpath, "--queries", work / "q.npy", code=2, match="--gt")


# ---------------------------------------------------------------- compress, info
def test_compress_with_model_and_info(data, trained, qnc):
    x, _ = data
    path, result = qnc
    assert result.stdout == ""
    summary = result.stderr
    for text in (f"{N:,} vectors", "4 bytes/vector", "file size", "embedded", "% of the file",
                 "vs float32", "without it", sha256_file(trained[0])):
        assert text in summary, text

    text = run(info.main, path).stdout
    for text_ in ("version 1.1", f"n={N:,}", f"dim={DIM}", "float32", "K=256", "M=4",
                  "1, 2, 3, 4 bytes/vector", sha256_file(trained[0]), "embedded", "preset=qinco2-XS",
                  "zstd saving", "compression:", '"source": "synthetic"'):
        assert text_ in text, text_

    d = json.loads(run(info.main, path, "--json").stdout)
    assert (d["n"], d["dim"], d["K"], d["M"], d["bytes_per_code"]) == (N, DIM, 256, 4, 1)
    assert d["version"] == "1.1" and d["source_dtype"] == "float32"
    assert [r["bytes_per_vector"] for r in d["rates"]] == [1, 2, 3, 4]
    assert d["model_sha256"] == sha256_file(trained[0]) and d["model_embedded"] is True
    assert d["model_bytes"] == os.path.getsize(trained[0])
    assert d["file_size"] == os.path.getsize(path)
    assert d["model_share_of_file"] == pytest.approx(d["model_bytes"] / d["file_size"])
    assert d["ratio_with_model"] == pytest.approx(N * DIM * 4 / d["file_size"])
    assert d["ratio_without_model"] > 10 > d["ratio_with_model"]
    assert d["chunks"] == 4 and len(d["planes"]) == 4
    assert all(p["raw_bytes"] == N and 0 < p["stored_bytes"] <= N for p in d["planes"])
    assert d["codes_stored_bytes"] == sum(p["stored_bytes"] for p in d["planes"])
    assert d["model_config"]["preset"] == "qinco2-XS"
    assert d["metadata"] == {"source": "synthetic", "seed": 0}
    assert "verified" in run(info.main, path, "--verify").stdout


def test_compress_trains_its_own_model(work, data):
    _, xpath = data
    out, model_out = work / "own.qnc", work / "own.safetensors"
    run(compress.main, xpath, out, "--preset", "qinco2-XS", "--bytes", "2", "--max-minutes", "0.01",
        "--train-size", "1000", "--weights", "float16", "--model-out", model_out, "--quiet")
    f = qinco_codec.open(out)
    assert f.bytes_per_vector == 2 and f.n == N and f.header.has_embedded_model
    assert f.model_sha256 == sha256_file(model_out)
    assert f.decode().shape == (N, DIM)


def test_compress_prefix_of_model(work, data, trained, qnc):
    _, xpath = data
    out = work / "prefix.qnc"
    run(compress.main, xpath, out, "--model", trained[0], "--bytes", "2", "-q", "--zstd-level", "0")
    d = json.loads(run(info.main, out, "--json").stdout)
    assert d["M"] == 2 and d["model_config"]["M"] == 4
    assert all(p["zstd_chunks"] == 0 for p in d["planes"])
    assert np.array_equal(qinco_codec.open(out).codes(), qinco_codec.open(qnc[0]).codes(steps=2))


def test_stdin_input(work, data, trained, qnc):
    x, _ = data
    buf = io.BytesIO()
    np.save(buf, x)
    out = work / "stdin.qnc"
    run(compress.main, "-", out, "--model", trained[0], "-q", input=buf.getvalue())
    assert np.array_equal(qinco_codec.open(out).codes(), qinco_codec.open(qnc[0]).codes())


def test_stdout_output_streams_the_container(work, data, trained, qnc, tmp_path, monkeypatch):
    """OUTPUT '-' sends the .qnc to stdout (the same bytes as a file) and creates no file '-'."""
    _, xpath = data
    monkeypatch.chdir(tmp_path)  # a file named '-' would appear here
    result = run(compress.main, xpath, "-", "--model", trained[0], "--chunk-rows", "512",
                 "--metadata", '{"source": "synthetic", "seed": 0}')
    assert result.stdout_bytes == qnc[0].read_bytes()
    assert "wrote stdout:" in result.stderr and "vs float32" in result.stderr
    assert list(tmp_path.iterdir()) == []
    quiet = run(compress.main, xpath, "-", "--model", trained[0], "--bytes", "2", "-q")
    assert quiet.stderr == ""
    with qinco_codec.open(io.BytesIO(quiet.stdout_bytes)) as f:
        assert np.array_equal(f.codes(), qinco_codec.open(qnc[0]).codes(steps=2))
    assert list(tmp_path.iterdir()) == []


def test_summary_and_info_give_the_ratio_to_a_non_float32_source(work, data, trained, tmp_path):
    from qinco_codec.cli.formatting import fmt_ratio

    x, _ = data
    src = tmp_path / "h.npy"
    np.save(src, x.astype(np.float16))
    out = tmp_path / "h.qnc"
    summary = run(compress.main, src, out, "--model", trained[0], "--no-embed-model").stderr
    text = run(info.main, out).stdout
    d = qinco_codec.open(out).describe()
    assert d["source_ratio_without_model"] == pytest.approx(d["ratio_without_model"] / 2)
    assert "vs the source float16" in text  # qinco-info: the vectors in their source dtype
    assert f"{fmt_ratio(d['source_ratio_without_model'])} without it" in text
    # qinco-compress: the input file itself (its .npy header included), like zstd
    input_ratio = os.path.getsize(src) / d["bytes_without_model"]
    assert f"vs the input {src}" in summary
    assert f"{fmt_ratio(input_ratio)} without it" in summary
    for where in (summary, text):
        assert "vs float32" in where


# ---------------------------------------------------------------- decompress
@pytest.mark.parametrize("ext", [".npy", ".fvecs", ".fbin"])
def test_decompress_full(tmp_path, qnc, ext):
    out = tmp_path / f"out{ext}"
    run(decompress.main, qnc[0], out, "-q")
    assert np.array_equal(read_vectors(out), qinco_codec.open(qnc[0]).decode())
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_decompress_prefix_rows_and_stdout(tmp_path, qnc):
    f = qinco_codec.open(qnc[0])
    at2 = f.decode(steps=2)
    run(decompress.main, qnc[0], tmp_path / "b2.npy", "--bytes", "2", "-q")
    assert np.array_equal(np.load(tmp_path / "b2.npy"), at2)

    run(decompress.main, qnc[0], tmp_path / "rows.fbin", "--bytes", "2", "--rows", "300:1100", "-q")
    assert np.array_equal(read_vectors(tmp_path / "rows.fbin"), at2[300:1100])
    run(decompress.main, qnc[0], tmp_path / "tail.fvecs", "--rows", "-10:", "-q")
    assert np.array_equal(read_vectors(tmp_path / "tail.fvecs"), f.decode()[-10:])

    result = run(decompress.main, qnc[0], "-", "--bytes", "2")
    assert np.array_equal(np.load(io.BytesIO(result.stdout_bytes)), at2)
    assert "decode" in result.stderr  # the progress bar goes to stderr

    result = run(decompress.main, qnc[0], "-", "--bytes", "3", "--dtype", "float16", "-q")
    half = np.load(io.BytesIO(result.stdout_bytes))
    assert half.dtype == np.float16 and np.array_equal(half, f.decode(steps=3).astype(np.float16))


def test_no_embed_model(tmp_path, data, trained, model_store, monkeypatch):
    _, xpath = data
    model = trained[0]
    out = tmp_path / "ne.qnc"
    result = run(compress.main, xpath, out, "--model", model, "--no-embed-model", "--bytes", "3")
    assert "not embedded" in result.stderr
    sha = sha256_file(model)
    assert (model_store / f"{sha}.safetensors").is_file()
    d = json.loads(run(info.main, out, "--json").stdout)
    assert d["model_embedded"] is False and d["model_share_of_file"] == 0.0
    assert d["model_in_store"] and d["ratio_with_model"] < d["ratio_without_model"]
    expected = qinco_codec.open(out).decode()

    run(decompress.main, out, tmp_path / "store.npy", "-q")  # found in QINCO_MODEL_DIR
    assert np.array_equal(np.load(tmp_path / "store.npy"), expected)

    monkeypatch.setenv("QINCO_MODEL_DIR", str(tmp_path / "empty"))
    fails(decompress.main, out, tmp_path / "o.npy", "-q", match=(sha, "--model"))
    assert not (tmp_path / "o.npy").exists()
    assert "not found" in run(info.main, out).stdout
    run(decompress.main, out, tmp_path / "given.npy", "--model", model, "-q")
    assert np.array_equal(np.load(tmp_path / "given.npy"), expected)

    # another model (same weights stored as float16: another id) is refused, naming both ids
    from qinco_codec.serialize import save_model
    other = tmp_path / "other.safetensors"
    other_sha = save_model(qinco_codec.load_model(model), other, "float16")
    for qnc_file in (out, trained[0].parent / "a.qnc"):  # not embedded, embedded
        fails(decompress.main, qnc_file, tmp_path / "o.npy", "--model", other, "-q",
              match=("wrong model", sha, other_sha))


def test_decompress_reads_a_given_model_file_once(tmp_path, data, trained, monkeypatch):
    """--model PATH is read (and hashed) once: by the QncFile that checks it, not again by the
    command."""
    import builtins
    import hashlib as hashlib_module

    _, xpath = data
    out = tmp_path / "ne.qnc"
    run(compress.main, xpath, out, "--model", trained[0], "--no-embed-model", "-q")
    model_path = os.path.realpath(trained[0])
    model_bytes = Path(model_path).read_bytes()
    opens, hashed = [], []
    real_open, real_io_open, real_sha256 = builtins.open, io.open, hashlib_module.sha256

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.path.realpath(file) == model_path:
            opens.append(file)
        return real_open(file, *args, **kwargs)

    def counting_sha256(data=b"", **kwargs):
        if bytes(data) == model_bytes:
            hashed.append(1)
        return real_sha256(data, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)
    monkeypatch.setattr(hashlib_module, "sha256", counting_sha256)
    for args in ((out, tmp_path / "a.npy"), (out, tmp_path / "b.npy", "--rows", "0:10"),
                 (out, tmp_path / "c.npy", "--bytes", "2")):
        opens.clear()
        hashed.clear()
        run(decompress.main, *args, "--model", trained[0], "-q")
        assert len(opens) == 1, opens
        assert len(hashed) == 1, hashed
    monkeypatch.undo()
    assert np.array_equal(np.load(tmp_path / "a.npy"), qinco_codec.open(out, model=trained[0]).decode())


# ---------------------------------------------------------------- errors
@pytest.fixture(scope="module")
def two_byte_codes(work):
    """A .qnc with K=512 (2 bytes per code), 2 steps, from an untrained model (no training)."""
    from qinco_codec.model import QincoModel
    model = work / "k512.safetensors"
    QincoModel.from_preset("qinco2-XS", DIM, M=2, K=512).save(model)
    xpath = work / "small.fvecs"
    write_vectors(xpath, np.random.default_rng(1).standard_normal((100, DIM)).astype(np.float32))
    out = work / "k512.qnc"
    run(compress.main, xpath, out, "--model", model, "-q")
    return out, model, xpath


def test_errors_inputs_and_options(tmp_path, data, trained, qnc, two_byte_codes):
    _, xpath = data
    model = trained[0]
    k512, k512_model, small = two_byte_codes
    fails(compress.main, tmp_path / "missing.npy", tmp_path / "o.qnc", "--model", model,
          match="missing.npy")
    fails(decompress.main, tmp_path / "missing.qnc", tmp_path / "o.npy", match="missing.qnc")
    fails(info.main, tmp_path / "missing.qnc", match="missing.qnc")
    fails(eval_cmd.main, tmp_path / "missing.safetensors", xpath, match="missing.safetensors")
    fails(train.main, tmp_path / "missing.npy", "-o", tmp_path / "m.safetensors", match="missing.npy")

    (tmp_path / "x.txt").write_text("1 2 3\n")
    fails(compress.main, tmp_path / "x.txt", tmp_path / "o.qnc", "--model", model, match=".txt")
    fails(decompress.main, qnc[0], tmp_path / "o.txt", match=".txt")
    fails(decompress.main, qnc[0], tmp_path / "o.fvecs", "--dtype", "float16", code=2, match="float32")

    fails(decompress.main, k512, tmp_path / "o.npy", "--bytes", "3", match=("bytes=3", "2 bytes per code"))
    fails(compress.main, small, tmp_path / "o.qnc", "--model", k512_model, "--bytes", "3", match="bytes=3")
    fails(train.main, xpath, "-o", tmp_path / "m.safetensors", "--K", "512", "--bytes", "3", match="bytes=3")
    fails(decompress.main, qnc[0], tmp_path / "o.npy", "--bytes", "5", match=("bytes=5", "4 bytes"))
    fails(compress.main, xpath, tmp_path / "o.qnc", "--model", model, "--bytes", "8", match="bytes=8")
    assert not (tmp_path / "o.npy").exists() and not (tmp_path / "o.qnc").exists()

    fails(compress.main, xpath, tmp_path / "o.qnc", "--model", model, "--metadata", "{bad json",
          match=("--metadata", "not valid JSON"))
    fails(compress.main, xpath, tmp_path / "o.qnc", "--model", model, "--metadata", "[1, 2]",
          match=("--metadata", "JSON object"))
    fails(compress.main, xpath, tmp_path / "o.qnc", "--model", model, "--preset", "qinco2-S", code=2)
    fails(compress.main, xpath, tmp_path / "o.qnc", "--model", xpath, match="safetensors")

    fails(decompress.main, qnc[0], tmp_path / "o.npy", "--rows", "10", code=2, match="--rows")
    fails(decompress.main, qnc[0], tmp_path / "o.npy", "--rows", "10:99999", match="rows")
    fails(decompress.main, qnc[0], tmp_path / "o.npy", "--no-such-option", code=2, match="--no-such-option")
    fails(info.main, code=2, match="FILE.qnc")
    fails(info.main, xpath, match="not a .qnc file")


def test_errors_corrupt_qnc(tmp_path, qnc):
    data = bytearray(qnc[0].read_bytes())
    codes = bytearray(data)
    codes[-200] ^= 0x55  # inside the last chunk's planes
    (tmp_path / "codes.qnc").write_bytes(codes)
    header = bytearray(data)
    header[20] ^= 0x55
    (tmp_path / "header.qnc").write_bytes(header)
    (tmp_path / "trunc.qnc").write_bytes(data[: len(data) // 2])

    fails(decompress.main, tmp_path / "codes.qnc", tmp_path / "o.npy", "-q", match="corrupt")
    fails(info.main, tmp_path / "codes.qnc", "--verify", match="corrupt")
    for name in ("header.qnc", "trunc.qnc"):
        fails(info.main, tmp_path / name)
        fails(decompress.main, tmp_path / name, tmp_path / "o.npy", "-q")
    assert [p.name for p in tmp_path.iterdir() if p.suffix in (".npy", ".tmp")] == []


# ---------------------------------------------------------------- real processes
def _entry_point(name):
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (pip install -e .)")
    return found


def test_info_does_not_import_torch(qnc):
    code = ("import sys\n"
            "from qinco_codec.cli.info import main\n"
            f"rc = main([{str(qnc[0])!r}, '--json'], standalone_mode=False)\n"
            "assert rc == 0, rc\n"
            "assert 'torch' not in sys.modules, 'qinco-info imported torch'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["n"] == N


def test_installed_entry_points(tmp_path, qnc):
    proc = subprocess.run([_entry_point("qinco-decompress"), str(qnc[0]), "-", "--bytes", "2"],
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.load(io.BytesIO(proc.stdout)), qinco_codec.open(qnc[0]).decode(steps=2))

    proc = subprocess.run([_entry_point("qinco-info"), str(tmp_path / "nope.qnc")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"qinco-info: error: No such file or directory: {tmp_path / 'nope.qnc'}"]
