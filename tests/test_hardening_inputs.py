"""Issue 17, round two of hardening: inputs and readers. Each test is a reproducer from the
issue: lying vector-file headers (bug 4), --metadata too large, too deep or not a file (bugs 2,
3, 8), iter_decode's batch size (11), concatenated .npy on stdin (12), a rate beyond what a
model may have (13), float16 overflow on decompression (14) and an input truncated while it is
compressed (15). Every refusal must be one line naming what was wrong, leave no output behind,
and come before any expensive work."""
import io
import json
import os
import sys
import textwrap

import numpy as np
import pytest

from qinco_codec.errors import InputError
from qinco_codec.readers import iter_npy_stream, open_vectors

sys.path.insert(0, os.path.dirname(__file__))
from reliability_util import one_torch_thread  # noqa: F401,E402 - autouse fixture
from reliability_util import assert_one_line_error, cli, glove, leftovers, npy, run, small_model  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return small_model()[0]


@pytest.fixture(scope="module")
def x():
    return glove("base", 400)


def _npy_bytes(array, fortran=False):
    buf = io.BytesIO()
    np.save(buf, np.asfortranarray(array) if fortran else array)
    return buf.getvalue()


# --- bug 4: a TEXMEX first dimension whose row size does not fit -----------------------------

HUGE_FVECS = b"\x00\x00\x00\x20" + b"\0" * 64  # dimension 2**29: rows of 2**31 + 4 bytes


@pytest.mark.parametrize("ext,dim_bytes,row_bytes", [
    (".fvecs", b"\x00\x00\x00\x20", 4 + 4 * 2 ** 29),
    (".bvecs", b"\xff\xff\xff\x7f", 4 + 2 ** 31 - 1),   # was shown as a negative row size
    (".ivecs", b"\xff\xff\xff\x7f", 4 + 4 * (2 ** 31 - 1)),
], ids=["fvecs", "bvecs", "ivecs"])
def test_a_first_dimension_beyond_the_file_is_one_clear_error(tmp_path, ext, dim_bytes, row_bytes):
    path = tmp_path / f"bad{ext}"
    path.write_bytes(dim_bytes + b"\0" * 64)
    with pytest.raises(InputError) as err:
        open_vectors(path)
    message = str(err.value)
    assert f"rows of {row_bytes} bytes" in message and "the file has only 68 bytes" in message
    assert "-" not in message.split("rows of")[1].split("bytes")[0]


def test_a_row_too_large_to_hold_is_refused_even_when_the_file_is_that_large(tmp_path):
    """A sparse 4 GiB file holding two rows of dimension 2**29: NumPy cannot describe such a
    row (its record sizes are C ints), which used to surface as a raw ValueError."""
    path = tmp_path / "two-huge-rows.fvecs"
    row_bytes = 4 + 4 * 2 ** 29
    with open(path, "wb") as f:
        for row in range(2):
            f.seek(row * row_bytes)
            f.write(np.int32(2 ** 29).tobytes())
        f.truncate(2 * row_bytes)
    with pytest.raises(InputError, match="dimension 536870912, too large"):
        open_vectors(path)


@pytest.mark.parametrize("command", ["qinco-compress", "qinco-train", "qinco-eval"])
def test_the_commands_refuse_a_huge_fvecs_dimension_in_one_line(tmp_path, model, command):
    bad = tmp_path / "bad.fvecs"
    bad.write_bytes(HUGE_FVECS)
    args = {"qinco-compress": [bad, tmp_path / "out.qnc", "--model", model],
            "qinco-train": [bad, "-o", tmp_path / "m.safetensors"],
            "qinco-eval": [model, bad]}[command]
    r = run([cli(command), *args], timeout=300)
    assert_one_line_error(r, command, str(bad), "dimension 536870912")
    assert leftovers(tmp_path, keep={"bad.fvecs"}) == []


# --- bug 12: an .npy stream must end with its last row -----------------------------------------

@pytest.mark.parametrize("fortran", [False, True])
def test_a_stream_with_bytes_after_its_rows_is_refused(fortran):
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    stream = iter_npy_stream(io.BytesIO(_npy_bytes(a, fortran) + _npy_bytes(a)), batch_size=3)
    with pytest.raises(InputError, match=r"stdin: has trailing bytes after the 4 rows its .npy "
                                         r"header announced \(shape \(4, 3\)\)"):
        list(stream.batches)


def test_a_stream_that_ends_with_its_rows_is_read_whole():
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_array_equal(
        np.concatenate(list(iter_npy_stream(io.BytesIO(_npy_bytes(a)), batch_size=3).batches)), a)


def test_concatenated_npy_on_stdin_is_refused_like_the_same_bytes_in_a_file(tmp_path, model, x):
    data = _npy_bytes(x[:100]) + _npy_bytes(x[100:200])
    (tmp_path / "ab.npy").write_bytes(data)
    as_file = run([cli("qinco-compress"), tmp_path / "ab.npy", tmp_path / "f.qnc", "--model", model,
                   "--quiet"])
    assert_one_line_error(as_file, "qinco-compress", "trailing bytes")
    piped = run([cli("qinco-compress"), "-", tmp_path / "p.qnc", "--model", model, "--quiet"],
                input=data,
                text=False)
    assert_one_line_error(piped, "qinco-compress", "stdin: has trailing bytes after the 100 rows")
    assert leftovers(tmp_path, keep={"ab.npy"}) == []


# --- bug 15: the input truncated while it is compressed ---------------------------------------

TRUNCATE_DURING_COMPRESS = textwrap.dedent("""
    import os, sys
    from qinco_codec import readers
    from qinco_codec.cli.compress import main

    read_batches = readers.VectorSource.iter_batches

    def truncate_after_the_first_batch(self, *args, **kwargs):
        for i, batch in enumerate(read_batches(self, *args, **kwargs)):
            yield batch
            if i == 0:  # another process cuts the file in half while it is being compressed
                os.truncate(self.path, os.path.getsize(self.path) // 2)

    readers.VectorSource.iter_batches = truncate_after_the_first_batch
    sys.argv = ["qinco-compress", *sys.argv[1:]]
    main()
""")


@pytest.mark.parametrize("ext", [".npy", ".fvecs"])
def test_an_input_truncated_during_compression_is_one_error_and_leaves_nothing(tmp_path, model, ext):
    """Rows used to come from a memory map: reading past the new end killed the process with
    SIGBUS (exit -7), no message, the temporary output left behind."""
    from qinco_codec.readers import write_vectors

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir(), out.mkdir()
    path = src / f"x{ext}"
    write_vectors(path, np.tile(glove("base", 1000), (40, 1)))  # 40,000 rows: 3 encode batches
    script = tmp_path / "truncating_compress.py"
    script.write_text(TRUNCATE_DURING_COMPRESS)
    r = run([sys.executable, script, path, out / "x.qnc", "--model", model, "--quiet"])
    assert_one_line_error(r, "qinco-compress", str(path), "truncated while it was being read")
    assert leftovers(out) == []


def test_reads_are_positional_and_see_the_file_as_it_is_now(tmp_path):
    """No memory map: a file that shrinks after opening gives an InputError on the next read
    (the same process, no subprocess needed) and the rows before the cut still read."""
    path = tmp_path / "x.npy"
    a = np.arange(4000, dtype=np.float32).reshape(1000, 4)
    np.save(path, a)
    source = open_vectors(path)
    os.truncate(path, os.path.getsize(path) - 4 * 4 * 500)
    np.testing.assert_array_equal(source.read(0, 400), a[:400])
    with pytest.raises(InputError, match=r"x\.npy: the file ends at byte \d+, its header "
                                         r"promised \d+ bytes: it was truncated"):
        source.read(400, 1000)
    source.close()


# --- bugs 2, 3, 8: --metadata too large, too deep, or not a regular file -----------------------

MAX_JSON = 1 << 24  # SPEC.md 5: a JSON section holds at most 2^24 bytes


def _write_one_row(path, metadata):
    from qinco_codec.formats import QncWriter

    with QncWriter(path, n=1, dim=2, source_dtype="float32", K=16, M=1, model_sha256=bytes(32),
                   model_config={"dim": 2}, metadata=metadata, zstd_level=None) as w:
        w.write_codes(np.zeros((1, 1), np.uint8))


def test_the_writer_refuses_metadata_its_readers_would_refuse(tmp_path):
    from qinco_codec.formats import QncReader

    at_limit = {"a": "x" * (MAX_JSON - len('{"a":""}'))}   # exactly 2^24 bytes as stored
    _write_one_row(tmp_path / "ok.qnc", at_limit)
    assert QncReader(str(tmp_path / "ok.qnc")).header.metadata == at_limit
    over = {"a": "x" * (MAX_JSON - len('{"a":""}') + 1)}
    with pytest.raises(InputError, match=r"metadata: 16,777,217 bytes of JSON .*over the "
                                         r"16777216-byte \(16 MiB\) limit of a JSON section"):
        _write_one_row(tmp_path / "over.qnc", over)
    assert leftovers(tmp_path) == ["ok.qnc"]


def _compress_args(tmp_path, x, *extra):
    inp = npy(tmp_path / "x.npy", x[:50])
    return [cli("qinco-compress"), inp, tmp_path / "out.qnc", *extra]


def test_metadata_over_the_limit_as_stored_is_refused_before_training(tmp_path, x):
    """A 10 MiB file whose canonical form (1e5 is stored as 100000.0) is over 16 MiB: refused
    in one line before any training (no progress line on stderr), no output."""
    (tmp_path / "big.json").write_text('{"v": [' + ",".join(["1e5"] * (10 << 18)) + "]}")
    r = run(_compress_args(tmp_path, x, "--metadata", f"@{tmp_path / 'big.json'}",
                           "--max-minutes", "0.05"), timeout=120)
    assert_one_line_error(r, "qinco-compress", "--metadata:", "bytes of JSON",
                          "16777216-byte (16 MiB) limit")
    assert leftovers(tmp_path, keep={"x.npy", "big.json"}) == []


def test_a_metadata_file_over_the_limit_is_refused_unparsed(tmp_path, x):
    (tmp_path / "big.json").write_text('{"a": "' + "x" * MAX_JSON + '"}')
    r = run(_compress_args(tmp_path, x, "--metadata", f"@{tmp_path / 'big.json'}"), timeout=120)
    assert_one_line_error(r, "qinco-compress", f"--metadata: {tmp_path / 'big.json'} is over the "
                                               f"16777216-byte (16 MiB) limit")


@pytest.mark.parametrize("text,fragment", [
    ("[" * 100000, "nested too deeply (a file stores at most 64 levels)"),
    ('{"a":' * 100000 + "1" + "}" * 100000, "nested too deeply"),
    ('{"a":' * 65 + "1" + "}" * 65, "JSON nested more than 64 levels deep"),
])
def test_deeply_nested_metadata_is_one_line(tmp_path, x, text, fragment):
    meta = tmp_path / "deep.json"
    meta.write_text(text)
    r = run(_compress_args(tmp_path, x, "--metadata", f"@{meta}"), timeout=120)
    assert_one_line_error(r, "qinco-compress", "--metadata:", fragment)
    assert leftovers(tmp_path, keep={"x.npy", "deep.json"}) == []


def test_deeply_nested_metadata_on_the_command_line_is_one_line(tmp_path, x):
    r = run(_compress_args(tmp_path, x, "--metadata", '{"a":' * 20000 + "1" + "}" * 20000),
            timeout=120)
    assert_one_line_error(r, "qinco-compress", "--metadata: value is JSON nested too deeply")


@pytest.mark.parametrize("special", ["/dev/zero", "fifo", "directory"])
def test_metadata_must_be_a_regular_file(tmp_path, x, special):
    path = {"/dev/zero": "/dev/zero", "fifo": tmp_path / "fifo", "directory": tmp_path}[special]
    if special == "fifo":
        os.mkfifo(path)   # no writer: opening it for reading would block forever
    r = run(_compress_args(tmp_path, x, "--metadata", f"@{path}"), timeout=120)
    line = assert_one_line_error(r, "qinco-compress", "--metadata: ", str(path))
    assert "not a regular file" in line or "Is a directory" in line


def test_a_metadata_file_is_read_only_up_to_the_limit(tmp_path):
    """A 256 MiB (sparse) file: at most 2^24 + 1 bytes are read before it is refused."""
    import tracemalloc

    from qinco_codec.cli.arguments import parse_json_object

    big = tmp_path / "huge.json"
    with open(big, "wb") as f:
        f.truncate(256 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="is over the 16777216-byte"):
            parse_json_object(f"@{big}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * MAX_JSON + (1 << 20), f"reading --metadata allocated {peak:,} bytes"


# --- bug 11: a batch size below 1 never fills a batch ------------------------------------------

@pytest.mark.parametrize("batch_size", [0, -1, 0.5, True, "2"])
def test_iter_decoded_refuses_a_batch_size_below_one_at_the_call(batch_size):
    """The loop of streaming.iter_decoded waits for `batch_size` rows: with 0 it used to yield
    empty batches forever. Refused when called, before any block is read."""
    from qinco_codec.streaming import iter_decoded, new_stream_stats

    blocks = iter([np.zeros((3, 2), np.int64)])
    with pytest.raises(InputError, match=f"batch_size={batch_size!r} must be a positive integer"):
        iter_decoded(blocks, lambda codes: codes, batch_size, False, new_stream_stats(False))


def test_qnc_iter_decode_refuses_a_batch_size_below_one(tmp_path, model, x):
    import qinco_codec

    qinco_codec.compress(x[:20], tmp_path / "x.qnc", model, quiet=True)
    with qinco_codec.open(tmp_path / "x.qnc") as f:
        for batch_size in (0, -5):
            with pytest.raises(InputError, match="must be a positive integer"):
                f.iter_decode(batch_size=batch_size)
        assert sum(len(b) for b in f.iter_decode(batch_size=7)) == 20


# --- bug 14: float16 output of values beyond its range ------------------------------------------

@pytest.fixture(scope="module")
def large_qnc(tmp_path_factory):
    """A .qnc of 16-d vectors of which rows 40-59 lie far beyond float16's +-65504 (the rest
    within it), with a model fitted to them; and its decoded float32 vectors."""
    import qinco_codec
    from qinco_codec.model import QincoModel
    from qinco_codec.rq_init import init_from_rq

    rng = np.random.default_rng(0)
    data = rng.normal(size=(100, 16)).astype(np.float32)
    data[40:60] *= 1e6
    model = init_from_rq(QincoModel.from_preset("qinco2-XS", 16, 2, K=16), data, seed=0)
    path = tmp_path_factory.mktemp("large") / "large.qnc"
    qinco_codec.compress(data, path, model, quiet=True)
    with qinco_codec.open(path) as f:
        decoded = f.decode()
    return path, decoded


def test_decompress_to_float16_refuses_values_beyond_its_range(tmp_path, large_qnc):
    path, decoded = large_qnc
    with np.errstate(over="ignore"):
        expected = int(np.count_nonzero(np.isinf(decoded.astype(np.float16))))
    assert expected > 0
    r = run([cli("qinco-decompress"), path, tmp_path / "out.npy", "--dtype", "float16", "--quiet"])
    assert_one_line_error(r, "qinco-decompress",
                          f"--dtype float16: {expected:,} of the {decoded.size:,} decoded values "
                          f"are beyond float16's range", "use --dtype float32")
    assert leftovers(tmp_path) == []
    ok = run([cli("qinco-decompress"), path, tmp_path / "out.npy", "--dtype", "float32", "--quiet"])
    assert ok.returncode == 0, ok.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), decoded)


def test_float16_within_range_is_written_and_an_overflow_is_refused_by_rows(tmp_path, large_qnc):
    path, decoded = large_qnc
    out = tmp_path / "small.npy"
    ok = run([cli("qinco-decompress"), path, out, "--dtype", "float16", "--rows", ":40", "--quiet"])
    assert ok.returncode == 0, ok.stderr
    np.testing.assert_array_equal(np.load(out), decoded[:40].astype(np.float16))
    r = run([cli("qinco-decompress"), path, tmp_path / "big.npy", "--dtype", "float16",
             "--rows", "30:70", "--quiet"])
    assert_one_line_error(r, "qinco-decompress", "beyond float16's range")
    assert leftovers(tmp_path) == ["small.npy"]


def test_within_float16_names_the_rows_of_the_first_overflowing_batch():
    from qinco_codec.cli.decompress import within_float16

    batches = [np.ones((3, 2), np.float32), np.full((3, 2), 1e5, np.float32), np.ones((3, 2))]
    it = within_float16(iter(batches), 9)
    assert next(it).dtype == np.float16
    with pytest.raises(InputError, match=r"6 decoded values in rows 3 to 5 \(the first rows "
                                         r"that hold any; decoding stopped there\).*largest 100000"):
        next(it)


# --- bug 13: a rate beyond the most steps a model may have ---------------------------------------

@pytest.mark.parametrize("command,extra", [
    ("train", ["--bytes", "1025"]),
    ("train", ["--bytes", "2050", "--K", "65536"]),   # two bytes per code: 1025 steps
    ("compress", ["--bytes", "1025"]),
])
def test_a_rate_beyond_the_model_limit_is_refused_before_any_vector_is_read(
        tmp_path, x, monkeypatch, command, extra):
    """It used to be refused by the model config only after the training sample was read (and
    for train, after training had begun): now by the rate itself, first, in one line naming
    --bytes and the limit. No vector may be read."""
    import time

    from cli_util import cli_runner
    from qinco_codec.cli import compress, train
    from qinco_codec.readers import VectorSource

    def no_reading(*args, **kwargs):
        raise AssertionError("vectors were read before the rate was checked")

    monkeypatch.setattr(VectorSource, "_read_as", no_reading)
    inp = npy(tmp_path / "x.npy", x[:50])
    args = ([inp, tmp_path / "out.qnc"] if command == "compress" else
            [inp, "-o", tmp_path / "m.safetensors"])
    t0 = time.perf_counter()
    result = cli_runner().invoke({"compress": compress.main, "train": train.main}[command],
                                 [str(a) for a in args] + extra)
    elapsed = time.perf_counter() - t0
    assert result.exit_code == 1, (result.exception, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"qinco-{command}: error: --bytes={extra[1]} exceeds the model " \
        f"format's limit of {1024 * (2 if '65536' in extra else 1)} bytes per vector" in lines[0], \
        result.stderr
    assert elapsed < 1.0, f"refused after {elapsed:.2f} s"
    assert leftovers(tmp_path, keep={"x.npy"}) == []


def test_the_python_api_refuses_more_steps_than_a_model_may_have(tmp_path, x):
    import qinco_codec

    for call in (lambda: qinco_codec.train(x[:50], steps=1025),
                 lambda: qinco_codec.compress(x[:50], tmp_path / "o.qnc", steps=1025)):
        with pytest.raises(InputError, match="steps=1025 exceeds the model format's limit of "
                                             "1024 steps"):
            call()
    assert leftovers(tmp_path) == []
