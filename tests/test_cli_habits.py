"""Issue 17 at the command line: path collisions (bug 1), the output directory checked before
any work (bug 9), SIGTERM and SIGHUP cleaned up like Ctrl-C (bug 10), and the habits zstd users
expect: -f/--force and kept modes, symbolic links, --version, a missing input reported before
torch is imported, full-disk messages that name the file, `qinco-info --extract-model`, a .qnc
as --model, the --chunk-rows overhead warning and ratios against the input."""
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_util import cli_runner

import qinco_codec
from qinco_codec.cli import bench, compress, decompress, index, info, merge, search, shard, train
from qinco_codec.cli import eval as eval_cmd

N, DIM = 600, 16
ALL_COMMANDS = {"qinco-train": train.main, "qinco-eval": eval_cmd.main,
                "qinco-compress": compress.main, "qinco-decompress": decompress.main,
                "qinco-info": info.main, "qinco-bench": bench.main, "qinco-search": search.main,
                "qinco-index": index.main, "qinco-merge": merge.main, "qinco-shard": shard.main}


def run(cmd, *args, code=0):
    result = cli_runner().invoke(cmd, [str(a) for a in args])
    assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def fails(cmd, *args, code=1, match=()):
    """One line `<prog>: error: ...` on stderr containing every string of `match`."""
    result = run(cmd, *args, code=code)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{cmd.name}: error: "), result.stderr
    for m in (match,) if isinstance(match, str) else match:
        assert str(m) in lines[0], (m, lines[0])
    return lines[0]


def sha256_file(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tmp_files(directory):
    return [p.name for p in Path(directory).rglob("*.tmp")]


@pytest.fixture(autouse=True)
def model_store(tmp_path, monkeypatch):
    monkeypatch.setenv("QINCO_MODEL_DIR", str(tmp_path / "store"))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """16-d vectors (float32 and float16), an untrained 4-byte model (float32 weights) and a
    .qnc of the vectors embedding it."""
    from qinco_codec.model import QincoModel

    d = tmp_path_factory.mktemp("habits")
    x = np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32)
    np.save(d / "x.npy", x)
    np.save(d / "h.npy", x.astype(np.float16))
    QincoModel.from_preset("qinco2-XS", DIM, M=4, K=256).save(d / "m.safetensors")
    run(compress.main, d / "x.npy", d / "a.qnc", "--model", d / "m.safetensors", "-q")
    return d


# ---------------------------------------------------------------- bug 1: path collisions
def test_compress_refuses_an_output_that_is_its_input(work, tmp_path):
    src = tmp_path / "a.npy"
    src.write_bytes((work / "x.npy").read_bytes())
    before = src.read_bytes()
    for out in (src, tmp_path / "." / "a.npy", tmp_path / "sub" / ".." / "a.npy"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        fails(compress.main, src, out, "--model", work / "m.safetensors",
              match=("INPUT and OUTPUT name the same file", str(out)))
    os.link(src, tmp_path / "hard.npy")
    (tmp_path / "soft.npy").symlink_to(src)
    for out in ("hard.npy", "soft.npy"):
        fails(compress.main, src, tmp_path / out, "--model", work / "m.safetensors",
              match="INPUT and OUTPUT")
    assert src.read_bytes() == before and tmp_files(tmp_path) == []


def test_compress_refuses_model_out_on_an_input_or_the_output(work, tmp_path):
    model = tmp_path / "m.safetensors"
    model.write_bytes((work / "m.safetensors").read_bytes())
    src = tmp_path / "x.npy"
    src.write_bytes((work / "x.npy").read_bytes())
    model_before, src_before = model.read_bytes(), src.read_bytes()
    # --model-out equal to --model with --weights float16 silently made the float32 model float16
    fails(compress.main, src, tmp_path / "o.qnc", "--model", model, "--weights", "float16",
          "--model-out", model, match=("--model and --model-out", str(model)))
    fails(compress.main, src, tmp_path / "o.qnc", "--model", model, "--model-out", src,
          match=("INPUT and --model-out", str(src)))
    fails(compress.main, src, tmp_path / "o.qnc", "--model", model,
          "--model-out", tmp_path / "o.qnc", match=("OUTPUT and --model-out", "o.qnc"))
    (tmp_path / "meta.json").write_text('{"a": 1}')
    fails(compress.main, src, tmp_path / "meta.json", "--model", model,
          "--metadata", f"@{tmp_path / 'meta.json'}", match=("--metadata and OUTPUT",))
    assert model.read_bytes() == model_before and src.read_bytes() == src_before
    assert not (tmp_path / "o.qnc").exists()
    assert qinco_codec.load_model(model).sha256 == sha256_file(work / "m.safetensors")


def test_decompress_refuses_an_output_that_is_its_input(work, tmp_path):
    qnc = tmp_path / "a.qnc"
    qnc.write_bytes((work / "a.qnc").read_bytes())
    (tmp_path / "a.npy").symlink_to(qnc)
    fails(decompress.main, qnc, tmp_path / "a.npy", match=("INPUT.qnc and OUTPUT", "a.npy"))
    assert qnc.read_bytes() == (work / "a.qnc").read_bytes()


def test_train_refuses_output_or_checkpoint_on_its_data(work, tmp_path):
    data = tmp_path / "a.npy"
    data.write_bytes((work / "x.npy").read_bytes())
    before = data.read_bytes()
    fails(train.main, data, "-o", data, "--epochs", "1", match=("DATA and -o", str(data)))
    # --resume on the data called it a 'corrupt checkpoint; delete it'
    fails(train.main, data, "-o", tmp_path / "m.safetensors", "--resume", data, "--epochs", "1",
          match=("DATA and --resume", str(data)))
    fails(train.main, data, "-o", tmp_path / "c.ckpt", "--resume", tmp_path / "c.ckpt",
          match=("-o and --resume", "c.ckpt"))
    assert data.read_bytes() == before and os.listdir(tmp_path) == ["a.npy"]


def test_two_inputs_may_be_the_same_file(work):
    """Only outputs must differ: reading one file twice is harmless."""
    from qinco_codec.cli.paths import check_distinct

    src = work / "x.npy"
    check_distinct(inputs=[("DATA", src), ("--queries", src)], outputs=[("-o", work / "new")])
    with pytest.raises(qinco_codec.InputError, match="DATA and -o name the same file"):
        check_distinct(inputs=[("DATA", src), ("--queries", src)], outputs=[("-o", src)])


# ---------------------------------------------------------------- bug 9: output directory first
def test_a_missing_output_directory_is_refused_before_any_work(work, tmp_path, monkeypatch):
    """Refused before training (it was found 50-90 s later), naming OUTPUT, not the temporary
    file; here training would raise if it started."""
    import qinco_codec.training as training

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(training, "train", no_training)
    missing = tmp_path / "nope" / "o.qnc"
    line = fails(compress.main, work / "x.npy", missing, "--max-minutes", "0.01",
                 "--no-embed-model", match=("OUTPUT", str(missing), "does not exist"))
    assert ".tmp" not in line
    fails(train.main, work / "x.npy", "-o", tmp_path / "nope" / "m.safetensors", "--epochs", "1",
          match=("-o", "does not exist"))
    fails(compress.main, work / "x.npy", tmp_path / "o.qnc", "--model", work / "m.safetensors",
          "--model-out", missing, match=("--model-out", "does not exist"))
    fails(decompress.main, work / "a.qnc", tmp_path / "nope" / "o.npy",
          match=("OUTPUT", "does not exist"))


def test_an_unwritable_output_directory_is_refused_before_any_work(work, tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    # root may write anywhere, so the directory is made unwritable for os.access itself
    monkeypatch.setattr(os, "access", lambda p, m, **k: False if os.fspath(p) == str(ro)
                        else real_access(p, m, **k))
    line = fails(compress.main, work / "x.npy", ro / "o.qnc", "--max-minutes", "0.01",
                 "--no-embed-model", match=("OUTPUT", str(ro / "o.qnc"), "not writable"))
    assert ".tmp" not in line
    fails(train.main, work / "x.npy", "-o", ro / "m.safetensors", "--epochs", "1",
          match=("-o", "not writable"))


# ---------------------------------------------------------------- overwrites, as zstd does them
def test_an_existing_output_needs_force(work, tmp_path):
    out = tmp_path / "o.qnc"
    out.write_bytes(b"precious")
    args = (work / "x.npy", out, "--model", work / "m.safetensors", "-q")
    fails(compress.main, *args, match=("OUTPUT", str(out), "already exists", "-f/--force"))
    assert out.read_bytes() == b"precious"
    run(compress.main, *args, "--force")
    assert qinco_codec.open(out).n == N

    npy = tmp_path / "o.npy"
    npy.write_bytes(b"precious")
    fails(decompress.main, work / "a.qnc", npy, "-q", match=("OUTPUT", "already exists"))
    assert npy.read_bytes() == b"precious"
    run(decompress.main, work / "a.qnc", npy, "-q", "-f")
    assert np.load(npy).shape == (N, DIM)

    model = tmp_path / "m.safetensors"
    model.write_bytes(b"precious")
    fails(train.main, work / "x.npy", "-o", model, "--epochs", "1", match=("-o", "already exists"))
    fails(compress.main, work / "x.npy", tmp_path / "new.qnc", "--model", work / "m.safetensors",
          "--model-out", model, match=("--model-out", "already exists"))
    assert model.read_bytes() == b"precious" and not (tmp_path / "new.qnc").exists()


def test_a_replaced_output_keeps_its_mode(work, tmp_path):
    """A 0600 file came back 0644."""
    out = tmp_path / "o.qnc"
    out.write_bytes(b"old")
    os.chmod(out, 0o600)
    run(compress.main, work / "x.npy", out, "--model", work / "m.safetensors", "-q", "-f")
    assert out.stat().st_mode & 0o777 == 0o600 and qinco_codec.open(out).n == N


def test_a_symlinked_output_replaces_its_target(work, tmp_path):
    """Decision: the link is kept and the file it points to is replaced (what `cat > link`
    and zstd -f do), and only with -f, since the output exists."""
    target = tmp_path / "real" / "t.qnc"
    target.parent.mkdir()
    target.write_bytes(b"old")
    link = tmp_path / "link.qnc"
    link.symlink_to(target)
    fails(compress.main, work / "x.npy", link, "--model", work / "m.safetensors", "-q",
          match=("already exists (a symbolic link)", "-f/--force"))
    run(compress.main, work / "x.npy", link, "--model", work / "m.safetensors", "-q", "-f")
    assert link.is_symlink() and qinco_codec.open(target).n == N
    assert sorted(os.listdir(tmp_path)) == ["link.qnc", "real"] and tmp_files(tmp_path) == []


# ---------------------------------------------------------------- --version
@pytest.mark.parametrize("name", sorted(ALL_COMMANDS))
def test_version(name):
    result = run(ALL_COMMANDS[name], "--version")
    assert result.stdout == f"{name} {qinco_codec.__version__}\n"
    assert f"--version" in run(ALL_COMMANDS[name], "--help").stdout


# ---------------------------------------------------------------- missing input before torch
def _error_without_torch(name, args):
    """stderr lines of `qinco-NAME ARGS` run in a fresh process that must fail (exit 1) without
    importing torch."""
    code = (f"import sys\nfrom qinco_codec.cli.{name} import main\n"
            f"rc = main({args!r}, standalone_mode=False)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "sys.exit(rc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    return proc.stderr.strip().splitlines()


@pytest.mark.parametrize("argv", [
    ("compress", ["MISSING", "OUT.qnc", "--model", "MODEL"]),
    ("compress", ["MISSING", "OUT.qnc"]),
    ("train", ["MISSING", "-o", "OUT.safetensors"]),
    ("eval", ["MODEL", "MISSING"]),
    ("decompress", ["MISSING", "OUT.npy"]),
])
def test_a_missing_input_is_reported_before_torch_is_imported(work, tmp_path, argv):
    name, args = argv
    args = [str(work / "m.safetensors") if a == "MODEL" else str(tmp_path / "missing.npy")
            if a == "MISSING" else str(tmp_path / a) if a.startswith("OUT") else a for a in args]
    assert _error_without_torch(name, args) == [
        f"qinco-{name}: error: No such file or directory: {tmp_path / 'missing.npy'}"]


# ---------------------------------------------------------------- [Errno 28] names the path
def test_a_full_disk_names_the_output(work, tmp_path, monkeypatch):
    """ENOSPC from the write (here from fsync, as delayed allocation reports it) names OUTPUT:
    it was '[Errno 28] No space left on device' with no file; nothing is left behind."""
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "o.qnc"
    line = fails(compress.main, work / "x.npy", out, "--model", work / "m.safetensors", "-q",
                 match=f"No space left on device: {out}")
    assert "Errno" not in line
    fails(decompress.main, work / "a.qnc", tmp_path / "o.npy", "-q",
          match=f"No space left on device: {tmp_path / 'o.npy'}")
    assert os.listdir(tmp_path) == ["store"] or os.listdir(tmp_path) == []


@pytest.fixture
def tiny_fs(tmp_path):
    """A 64 KiB tmpfs (skipped where mount is not permitted)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_a_real_full_disk_names_the_output(work, tiny_fs):
    """A real ENOSPC, from the header write as the container opens (before the caller's `with`
    block): '[Errno 28] No space left on device' named no file."""
    out = tiny_fs / "o.qnc"
    fails(compress.main, work / "x.npy", out, "--model", work / "m.safetensors", "-q",
          match=f"No space left on device: {out}")
    fails(info.main, work / "a.qnc", "--extract-model", tiny_fs / "m.safetensors",
          match=f"No space left on device: {tiny_fs / 'm.safetensors'}")
    assert os.listdir(tiny_fs) == []


def test_describe_os_error_names_the_path():
    from qinco_codec.cli.commands import describe_os_error
    assert describe_os_error(OSError(errno.ENOSPC, "No space left on device", "o.qnc")) == \
        "No space left on device: o.qnc"


# ---------------------------------------------------------------- SIGTERM and SIGHUP (bug 10)
SLOW_COMPRESS = """
import sys, time
from qinco_codec.formats.writer import QncWriter
def slow_write(*args, **kwargs):  # called once the temporary file exists
    # short sleeps: a process-directed signal may land on one of torch's threads, which does not
    # interrupt a long sleep of the main thread; its Python handler then runs within 0.1 s
    for _ in range(1200):
        time.sleep(0.1)
QncWriter.write_codes = slow_write
from qinco_codec.cli.compress import main
sys.exit(main(sys.argv[1:], standalone_mode=False))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_termination_signals_clean_up_like_ctrl_c(work, tmp_path, sig):
    """SIGTERM and SIGHUP left a partial `.o.qnc.*.tmp` and printed nothing."""
    out = tmp_path / "o.qnc"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_COMPRESS, str(work / "x.npy"), str(out),
                             "--model", str(work / "m.safetensors"), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a test run under nohup would hand its ignored SIGHUP down, and the
                            # command rightly keeps an ignored SIGHUP ignored
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300  # torch loads slowly on a busy machine
        while not tmp_files(tmp_path):  # wait until the write has begun: deterministic
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no temporary file appeared"
            time.sleep(0.05)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig
    assert stderr.strip().splitlines() == [f"qinco-compress: error: terminated by {sig.name}"]
    assert tmp_files(tmp_path) == [] and not out.exists()


def test_an_ignored_sighup_stays_ignored():
    """Under nohup (SIGHUP ignored) the command keeps ignoring it."""
    from qinco_codec.cli.commands import terminating_signals_raise
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with terminating_signals_raise():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, old)


# ---------------------------------------------------------------- --extract-model, .qnc as --model
def test_extract_model_writes_the_bytes_as_stored(work, tmp_path):
    """It re-serialised to float32 and changed the model id: a float16 model must come out
    byte for byte, hashing to the file's model id."""
    half = tmp_path / "h.qnc"
    run(compress.main, work / "x.npy", half, "--model", work / "m.safetensors", "--weights",
        "float16", "-q")
    file_id = qinco_codec.open(half).model_sha256
    out = tmp_path / "extracted.safetensors"
    result = run(info.main, half, "--extract-model", out)
    assert sha256_file(out) == file_id != sha256_file(work / "m.safetensors")
    assert str(out) in result.stderr and file_id in result.stderr
    fails(info.main, half, "--extract-model", out, match=("--extract-model", "already exists"))
    run(info.main, half, "--extract-model", out, "-f")
    fails(info.main, half, "--extract-model", half, "-f", match=("FILE.qnc and --extract-model",))

    ne = tmp_path / "ne.qnc"
    run(compress.main, work / "x.npy", ne, "--model", work / "m.safetensors", "--no-embed-model", "-q")
    fails(info.main, ne, "--extract-model", tmp_path / "none.safetensors",
          match=("does not embed its model",))
    assert not (tmp_path / "none.safetensors").exists()


def test_a_qnc_is_accepted_as_model(work, tmp_path):
    """compress, decompress and eval take a .qnc as --model / MODEL: its embedded model."""
    qnc = work / "a.qnc"
    out = tmp_path / "again.qnc"
    run(compress.main, work / "x.npy", out, "--model", qnc, "-q", "--no-embed-model")
    f = qinco_codec.open(out, model=qnc)
    assert f.model_sha256 == qinco_codec.open(qnc).model_sha256
    assert np.array_equal(f.codes(), qinco_codec.open(qnc).codes())
    run(decompress.main, out, tmp_path / "o.npy", "--model", qnc, "-q")
    assert np.array_equal(np.load(tmp_path / "o.npy"), qinco_codec.open(qnc).decode())
    rows = json.loads(run(eval_cmd.main, qnc, work / "x.npy", "--json").stdout)
    assert [r["steps"] for r in rows] == [1, 2, 3, 4]
    d = json.loads(run(info.main, out, "--json").stdout)
    assert d["model_in_store"]  # --no-embed-model put the model in the store


def test_a_qnc_without_its_model_is_refused_as_model(work, tmp_path):
    ne = tmp_path / "ne.qnc"
    run(compress.main, work / "x.npy", ne, "--model", work / "m.safetensors", "--no-embed-model", "-q")
    fails(compress.main, work / "x.npy", tmp_path / "o.qnc", "--model", ne,
          match=(str(ne), "does not embed its model"))


# ---------------------------------------------------------------- --chunk-rows overhead
def test_tiny_chunks_warn_when_the_file_outgrows_float32(work, tmp_path):
    """--chunk-rows 1: every row pays a chunk header and an index entry (44 bytes at M=4),
    more than the 64 bytes of float32 storage... with the codes: the file outgrows float32."""
    result = run(compress.main, work / "x.npy", tmp_path / "o.qnc", "--model",
                 work / "m.safetensors", "--chunk-rows", "1", "--no-embed-model")
    warning = [line for line in result.stderr.splitlines() if "--chunk-rows" in line]
    assert len(warning) == 1 and "larger than" in warning[0] and "float32" in warning[0], result.stderr
    d = qinco_codec.open(tmp_path / "o.qnc").describe()
    assert d["file_size"] > d["float32_bytes"]  # the warning was right
    quiet = run(compress.main, work / "x.npy", tmp_path / "p.qnc", "--model",
                work / "m.safetensors", "--chunk-rows", "64", "--no-embed-model")
    assert "--chunk-rows" not in quiet.stderr


# ---------------------------------------------------------------- ratios against the input
def test_the_summary_gives_the_ratio_against_the_input_first(work, tmp_path):
    """A float16 input printed the ratio against float32 (double the real one) first."""
    from qinco_codec.cli.formatting import fmt_ratio

    out = tmp_path / "h.qnc"
    summary = run(compress.main, work / "h.npy", out, "--model", work / "m.safetensors").stderr
    lines = summary.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("compression:"))
    input_size = os.path.getsize(work / "h.npy")
    d = qinco_codec.open(out).describe()
    assert f"vs the input {work / 'h.npy'}" in lines[at]
    assert fmt_ratio(input_size / d["file_size"]) in lines[at]
    assert "vs float32" in lines[at + 1] and fmt_ratio(d["ratio_with_model"]) in lines[at + 1]
    text = run(info.main, out).stdout.splitlines()
    at = next(i for i, line in enumerate(text) if line.startswith("compression:"))
    assert "vs the source float16" in text[at] and "vs float32" in text[at + 1]


@pytest.mark.parametrize("name,args", [
    ("train", ["DATA", "-o", "OUT.safetensors", "--bytes", "1025"]),
    ("compress", ["DATA", "OUT.qnc", "--bytes", "1025"]),
])
def test_a_rate_over_the_format_limit_is_refused_before_torch_is_imported(work, tmp_path, name, args):
    """Issue 17, bug 13: --bytes 1025 is refused in a fresh process without importing torch (the
    --threads option no longer imports it while the arguments are parsed)."""
    np.save(tmp_path / "x.npy", np.zeros((10, 16), np.float32))
    args = [str(tmp_path / "x.npy") if a == "DATA" else str(tmp_path / a) if a.startswith("OUT") else a
            for a in args]
    assert _error_without_torch(name, args) == [
        f"qinco-{name}: error: --bytes=1025 exceeds the model format's limit of 1024 bytes per vector"]
