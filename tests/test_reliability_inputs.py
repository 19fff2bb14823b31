"""Reliability: input validation across the Python API and the command line. Non-finite values,
empty inputs, dimension mismatches, every numeric dtype (cast to float32), memory-mapped and
non-contiguous arrays, unusable dtypes and shapes, and .npy streams on stdin that end early or
are not .npy at all. Every refusal is a clear error that leaves no output and no temporary
file behind."""
import io
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import qinco_codec
from qinco_codec.errors import InputError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reliability_util import one_torch_thread  # noqa: F401 - autouse fixture
from reliability_util import assert_one_line_error, cli, glove, leftovers, npy, run, small_model

N = 300



@pytest.fixture(scope="module")
def model():
    return small_model()  # (path, QincoModel), K=16, M=4, 50-d


@pytest.fixture(scope="module")
def x():
    return glove("base", N)


def compress(x, path, model_path, **kw):
    return qinco_codec.compress(x, path, model_path, quiet=True, B=1, **kw)


def qnc_bytes(x, path, model_path, **kw):
    compress(x, path, model_path, **kw)
    return Path(path).read_bytes()


# -- refusals through the API ------------------------------------------------------------------

@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("row", [0, 257])  # 257: a later batch, after chunks were written
def test_non_finite_values_are_refused_and_leave_nothing(tmp_path, model, x, value, row):
    bad = x.copy()
    bad[row, 7] = value
    out = tmp_path / "out.qnc"
    with pytest.raises(InputError, match=r"non-finite value .*column 7"):
        compress(bad, out, model[0], batch_size=64, chunk_rows=16)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("row", [
    0, pytest.param(257)])
def test_non_finite_error_names_the_row_of_the_input(tmp_path, model, x, row):
    bad = x.copy()
    bad[row, 7] = np.nan
    with pytest.raises(InputError) as info:
        compress(bad, tmp_path / "out.qnc", model[0], batch_size=64, chunk_rows=16)
    assert f"at row {row}, column 7" in str(info.value), str(info.value)


@pytest.mark.parametrize("array,fragment", [
    (np.zeros((10, 49), np.float32), "dimension"),
    (np.zeros((10, 51), np.float32), "dimension"),
    (np.zeros(50, np.float32), "2-D"),
    (np.zeros((2, 5, 50), np.float32), "2-D"),
    # refused by the container writer's dtype check ("source_dtype='bool' is not one of ...")
    # before the vectors' own check ("expected a numeric array"): an InputError either way
    (np.zeros((10, 50), bool), "numeric|source_dtype"),
    (np.zeros((10, 50), np.complex64), "numeric|source_dtype"),
    (np.zeros((10, 50), object), "numeric|source_dtype"),
    (np.array([["a"] * 50] * 3), "numeric|source_dtype"),
])
def test_unusable_arrays_are_refused_and_leave_nothing(tmp_path, model, array, fragment):
    with pytest.raises(InputError, match=fragment):
        compress(array, tmp_path / "out.qnc", model[0])
    assert leftovers(tmp_path) == []


def test_empty_input_round_trips_through_the_api(tmp_path, model):
    out = tmp_path / "empty.qnc"
    compress(np.empty((0, 50), np.float32), out, model[0])
    with qinco_codec.open(out) as f:
        assert f.n == 0 and f.codes().shape == (0, 4)
        assert f.decode().shape == (0, 50) and f.decode(steps=2).dtype == np.float32
        assert list(f.iter_decode()) == []


# -- dtypes and layouts: cast, never refused, same codes --------------------------------------

@pytest.mark.parametrize("dtype", ["float16", "float64", ">f4", "int8", "uint8", "int16", "int32",
                                   "uint64"])
def test_numeric_dtypes_are_cast_to_float32(tmp_path, model, x, dtype):
    """Integer data (scaled to use the type's range) and other float widths give exactly the
    codes of their float32 conversion; the header records the source dtype."""
    model_path, m = model
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        lo = np.iinfo(dt).min if dt.kind == "i" else 0
        src = np.clip(np.round(x * 20 + (0 if dt.kind == "i" else 60)), lo,
                      min(np.iinfo(dt).max, 2 ** 20)).astype(dt)
    else:
        src = x.astype(dt)
    out = tmp_path / "out.qnc"
    compress(src, out, model_path)
    with qinco_codec.open(out) as f:
        np.testing.assert_array_equal(f.codes(), m.encode(src.astype(np.float32), B=1))
        assert f.header.source_dtype == dt.newbyteorder("=").name
        assert f.decode().dtype == np.float32


def test_memory_mapped_input_gives_the_same_bytes(tmp_path, model, x):
    path = npy(tmp_path / "x.npy", x)
    ref = qnc_bytes(x, tmp_path / "a.qnc", model[0])
    assert qnc_bytes(np.load(path, mmap_mode="r"), tmp_path / "b.qnc", model[0]) == ref
    mm = np.memmap(tmp_path / "raw.f32", np.float32, "w+", shape=x.shape)
    mm[:] = x
    mm.flush()
    ro = np.memmap(tmp_path / "raw.f32", np.float32, "r", shape=x.shape)
    assert qnc_bytes(ro, tmp_path / "c.qnc", model[0]) == ref
    assert qnc_bytes(path, tmp_path / "d.qnc", model[0]) == ref  # a path: read batch by batch


def test_non_contiguous_arrays_give_the_same_bytes_as_contiguous_ones(tmp_path, model, x):
    import torch
    ref = qnc_bytes(x, tmp_path / "ref.qnc", model[0])
    wide = np.zeros((N, 70), np.float32)
    wide[:, 10:60] = x
    twice = np.repeat(x, 2, axis=0)
    views = {
        "fortran": np.asfortranarray(x),
        "column slice": wide[:, 10:60],
        "every other row": twice[::2],
        "reversed twice": x[::-1][::-1],
        "transposed copy": x.T.copy().T,
        "torch tensor": torch.from_numpy(x.copy()),
        "non-contiguous torch": torch.from_numpy(wide)[:, 10:60],
    }
    for name, view in views.items():
        assert qnc_bytes(view, tmp_path / "v.qnc", model[0]) == ref, name


# -- the command line ------------------------------------------------------------------------

def npy_header(shape, dtype="<f4"):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue()


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory, model, x):
    """Every qinco-compress run of this module, two at a time (each loads torch for seconds):
    {name: (directory, CompletedProcess, fragments expected in the error line or None)}."""
    tmp_path = tmp_path_factory.mktemp("cli_inputs")
    model_path = model[0]
    nan = x.copy()
    nan[123, 4] = np.nan
    body = np.ascontiguousarray(x[:100]).tobytes()
    cases = {
        "nan": (npy(tmp_path / "nan.npy", nan), None, ["non-finite value", "row 123"]),
        "dimension": (npy(tmp_path / "d49.npy", x[:, :49]), None, ["dimension 49", "50"]),
        "stdin ends early": ("-", npy_header((1000, 50)) + body[:len(body) - 13],
                             ["stdin ended after 99 of 1000 rows"]),
        "stdin not npy": ("-", b"hello, this is not an npy file\n" * 10,
                          ["stdin", "not a valid .npy"]),
        "stdin empty": ("-", b"", ["stdin", "not a valid .npy"]),
        "stdin 3-D": ("-", npy_header((2, 3, 50)) + bytes(2 * 3 * 50 * 4), ["2-D"]),
        "truncated file": (None, None, ["truncated"]),
    }
    trunc = tmp_path / "trunc.npy"
    trunc.write_bytes(npy(tmp_path / "full.npy", x).read_bytes()[:-100])
    cases["truncated file"] = (trunc, None, ["truncated"])
    # and runs that must succeed
    full = tmp_path / "full.npy"
    cases["ok: file"] = (full, None, None)
    cases["ok: stdin"] = ("-", full.read_bytes(), None)
    cases["ok: empty"] = (npy(tmp_path / "empty.npy", np.empty((0, 50), np.float32)), None, None)

    def attempt(name):
        src, stdin, fragments = cases[name]
        d = tmp_path / name.replace(" ", "_").replace(":", "")
        d.mkdir()
        args = [cli("qinco-compress"), src, d / "out.qnc", "--model", model_path, "--quiet"]
        r = run(args, input=stdin, text=False) if stdin is not None else run(args)
        return name, (d, r, fragments)

    with ThreadPoolExecutor(2) as pool:
        return dict(pool.map(attempt, sorted(cases)))


def test_command_line_refusals_leave_no_output(cli_runs):
    """Non-finite values, a dimension mismatch, a truncated .npy, and on stdin: an .npy that
    ends early, garbage, nothing, a 3-D array. Each: one line on stderr, exit 1, nothing
    written (no output, no temporary file)."""
    refusals = {k: v for k, v in cli_runs.items() if not k.startswith("ok:")}
    assert len(refusals) == 7
    for name, (d, r, fragments) in refusals.items():
        assert_one_line_error(r, "qinco-compress", *fragments)
        assert leftovers(d) == [], (name, leftovers(d))


def test_empty_file_round_trips_through_the_command_line(cli_runs, tmp_path):
    d, r, _ = cli_runs["ok: empty"]
    assert r.returncode == 0, r.stderr
    qnc = d / "out.qnc"
    out = tmp_path / "back.npy"
    run([cli("qinco-decompress"), qnc, out, "--quiet"], check=0)
    back = np.load(out)
    assert back.shape == (0, 50) and back.dtype == np.float32
    with qinco_codec.open(qnc) as f:
        assert f.n == 0 and f.dim == 50


def test_stdin_input_gives_the_same_bytes_as_the_file(cli_runs, model, x):
    """A complete .npy on stdin (read once, batch by batch) encodes to the same file as the
    file itself, and as the API."""
    (da, ra, _), (db, rb, _) = cli_runs["ok: file"], cli_runs["ok: stdin"]
    assert ra.returncode == 0 and rb.returncode == 0, (ra.stderr, rb.stderr)
    assert (da / "out.qnc").read_bytes() == (db / "out.qnc").read_bytes()
    qinco_codec.compress(x, da / "api.qnc", model[0], quiet=True)
    assert (da / "api.qnc").read_bytes() == (da / "out.qnc").read_bytes()
