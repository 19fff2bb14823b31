"""Vector file readers and writers: round trips for every format, batching, memory mapping,
streams, and a clear InputError for every malformed input."""
import io
import os
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from qinco_codec.errors import InputError
from qinco_codec.readers import (
    SUPPORTED_EXTENSIONS, iter_npy_stream, open_vectors, read_ints, read_vectors,
    write_npy_stream, write_vectors)


@pytest.fixture
def vectors():
    return np.random.default_rng(0).standard_normal((37, 6)).astype(np.float32)


def _vecs_bytes(array, dims=None):
    """Hand-built TEXMEX rows: int32 dimension, then the values in the array's own dtype."""
    dims = [array.shape[1]] * len(array) if dims is None else dims
    return b"".join(np.int32(d).tobytes() + row.tobytes() for d, row in zip(dims, array))


def _bin_bytes(array):
    """Hand-built big-ann-benchmarks file: uint32 (n, dim) header, then the values."""
    return np.array(array.shape, "<u4").tobytes() + array.tobytes()


class _Pipe(io.RawIOBase):
    """A non-seekable stream that, like a pipe, returns at most a few bytes per read."""

    def __init__(self, data, chunk=7):
        self._data, self._pos, self._chunk = data, 0, chunk

    def readable(self):
        return True

    def readinto(self, buffer):
        size = min(len(buffer), self._chunk, len(self._data) - self._pos)
        buffer[:size] = self._data[self._pos:self._pos + size]
        self._pos += size
        return size


def _npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_importing_the_readers_does_not_import_torch():
    code = "import sys, qinco_codec.readers; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


# --- round trips -----------------------------------------------------------------------------

@pytest.mark.parametrize("ext", [".npy", ".fvecs", ".fbin"])
def test_write_then_read_round_trips(tmp_path, vectors, ext):
    path = tmp_path / f"x{ext}"
    write_vectors(path, vectors)
    source = open_vectors(path)
    assert (source.n, source.dim, len(source)) == vectors.shape + (len(vectors),)
    assert source.dtype == np.float32 and source.format == ext[1:]
    assert source.path == str(path)
    np.testing.assert_array_equal(read_vectors(path), vectors)


def test_write_npy_keeps_float16_and_casts_the_rest_to_float32(tmp_path, vectors):
    write_vectors(tmp_path / "h.npy", vectors.astype(np.float16))
    write_vectors(tmp_path / "d.npy", vectors.astype(np.float64))
    assert np.load(tmp_path / "h.npy").dtype == np.float16
    assert np.load(tmp_path / "d.npy").dtype == np.float32
    assert read_vectors(tmp_path / "h.npy").dtype == np.float32


@pytest.mark.parametrize("ext,dtype", [(".fvecs", "<f4"), (".bvecs", "u1"), (".ivecs", "<i4")])
def test_texmex_formats_read_hand_built_files(tmp_path, ext, dtype):
    array = np.random.default_rng(1).integers(0, 200, (9, 5)).astype(dtype)
    (tmp_path / f"x{ext}").write_bytes(_vecs_bytes(array))
    source = open_vectors(tmp_path / f"x{ext}")
    assert (source.n, source.dim, source.dtype, source.format) == (9, 5, np.dtype(dtype), ext[1:])
    np.testing.assert_array_equal(source.read(), array.astype(np.float32))


@pytest.mark.parametrize("ext,dtype", [(".fbin", "<f4"), (".u8bin", "u1"), (".ibin", "<i4")])
def test_bin_formats_read_hand_built_files(tmp_path, ext, dtype):
    array = np.random.default_rng(2).integers(0, 200, (11, 3)).astype(dtype)
    (tmp_path / f"x{ext}").write_bytes(_bin_bytes(array))
    source = open_vectors(tmp_path / f"x{ext}")
    assert (source.n, source.dim, source.dtype, source.format) == (11, 3, np.dtype(dtype), ext[1:])
    np.testing.assert_array_equal(source.read(), array.astype(np.float32))


def test_fvecs_written_by_us_matches_the_texmex_layout(tmp_path, vectors):
    write_vectors(tmp_path / "x.fvecs", vectors)
    assert (tmp_path / "x.fvecs").read_bytes() == _vecs_bytes(vectors)
    write_vectors(tmp_path / "x.fbin", vectors)
    assert (tmp_path / "x.fbin").read_bytes() == _bin_bytes(vectors)


@pytest.mark.parametrize("dtype", ["<f8", ">f4", "<i2", "u1", "<f2"])
def test_npy_of_any_numeric_dtype_reads_as_float32(tmp_path, dtype):
    array = np.arange(24).reshape(4, 6).astype(dtype)
    np.save(tmp_path / "x.npy", array)
    source = open_vectors(tmp_path / "x.npy")
    assert source.dtype == np.dtype(dtype)
    out = source.read()
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, array.astype(np.float32))


def test_fortran_order_npy_reads_in_row_order(tmp_path, vectors):
    np.save(tmp_path / "f.npy", np.asfortranarray(vectors))
    out = open_vectors(tmp_path / "f.npy").read(3, 10)
    assert out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, vectors[3:10])


def test_empty_bin_and_npy_files_have_zero_rows(tmp_path):
    write_vectors(tmp_path / "e.npy", np.zeros((0, 4), np.float32))
    write_vectors(tmp_path / "e.fbin", np.zeros((0, 4), np.float32))
    for name in ("e.npy", "e.fbin"):
        source = open_vectors(tmp_path / name)
        assert (source.n, source.dim) == (0, 4)
        assert source.read().shape == (0, 4)
        assert list(source.iter_batches()) == []


def test_read_ints_returns_int64_ground_truth(tmp_path):
    ids = np.random.default_rng(3).integers(0, 10 ** 6, (7, 10)).astype("<i4")
    (tmp_path / "gt.ivecs").write_bytes(_vecs_bytes(ids))
    (tmp_path / "gt.ibin").write_bytes(_bin_bytes(ids))
    for name in ("gt.ivecs", "gt.ibin"):
        out = read_ints(tmp_path / name)
        assert out.dtype == np.int64
        np.testing.assert_array_equal(out, ids)


# --- batches and memory mapping --------------------------------------------------------------

@pytest.mark.parametrize("ext", [".npy", ".fvecs", ".fbin"])
@pytest.mark.parametrize("batch_size", [1, 5, 37, 1000])
def test_batches_concatenate_to_the_whole_read(tmp_path, vectors, ext, batch_size):
    write_vectors(tmp_path / f"x{ext}", vectors)
    source = open_vectors(tmp_path / f"x{ext}")
    batches = list(source.iter_batches(batch_size))
    assert all(len(b) <= batch_size and b.dtype == np.float32 for b in batches)
    np.testing.assert_array_equal(np.concatenate(batches), source.read())
    part = list(source.iter_batches(batch_size, start=4, stop=30))
    np.testing.assert_array_equal(np.concatenate(part), vectors[4:30])


def test_read_returns_a_writable_copy(tmp_path, vectors):
    write_vectors(tmp_path / "x.fbin", vectors)
    out = open_vectors(tmp_path / "x.fbin").read(0, 5)
    out *= 2  # must not touch the read-only file mapping
    assert out.flags["C_CONTIGUOUS"] and out.flags["OWNDATA"]
    np.testing.assert_array_equal(read_vectors(tmp_path / "x.fbin"), vectors)


@pytest.mark.parametrize("ext", [".npy", ".fbin"])
def test_huge_sparse_file_opens_without_loading_it(tmp_path, ext):
    """A 1 GiB (sparse) file: opening it and reading two rows reads only those (NumPy reports
    its allocations to tracemalloc)."""
    n, dim = 1 << 18, 1024
    path = tmp_path / f"big{ext}"
    with open(path, "wb") as f:
        if ext == ".npy":
            np.lib.format.write_array_header_1_0(
                f, {"descr": "<f4", "fortran_order": False, "shape": (n, dim)})
        else:
            f.write(np.array([n, dim], "<u4").tobytes())
        header = f.tell()
        f.seek(header + (n - 1) * dim * 4)
        f.write(np.full(dim, 7.0, "<f4").tobytes())
    tracemalloc.start()
    try:
        source = open_vectors(path)
        tail = source.read(n - 2, n)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < (16 << 20), f"opening and reading two rows allocated {peak:,} bytes"
    np.testing.assert_array_equal(tail, [[0.0] * dim, [7.0] * dim])


# --- streams ---------------------------------------------------------------------------------

def test_npy_stream_written_to_a_pipe_is_a_valid_npy(vectors):
    out = io.BytesIO()
    write_npy_stream(out, [vectors[:10], vectors[10:]], len(vectors), 6, np.float16)
    loaded = np.load(io.BytesIO(out.getvalue()))
    assert loaded.dtype == np.float16
    np.testing.assert_array_equal(loaded, vectors.astype(np.float16))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_npy_stream_round_trips_through_a_non_seekable_stream(vectors, dtype):
    out = io.BytesIO()
    write_npy_stream(out, [vectors], len(vectors), 6, dtype)
    stream = iter_npy_stream(io.BufferedReader(_Pipe(out.getvalue())), batch_size=8)
    assert (stream.n, stream.dim, stream.dtype) == (37, 6, np.dtype(dtype))
    batches = list(stream)
    assert [len(b) for b in batches] == [8, 8, 8, 8, 5]
    assert all(b.dtype == np.float32 for b in batches)
    np.testing.assert_array_equal(np.concatenate(batches), vectors.astype(dtype))


def test_npy_stream_from_a_raw_unbuffered_pipe(vectors):
    stream = iter_npy_stream(_Pipe(_npy_bytes(vectors), chunk=3), batch_size=10)
    np.testing.assert_array_equal(np.concatenate(list(stream.batches)), vectors)


def test_npy_stream_from_an_os_pipe(vectors):
    read_fd, write_fd = os.pipe()
    writer = threading.Thread(target=lambda: _write_and_close(write_fd, _npy_bytes(vectors)))
    writer.start()
    with os.fdopen(read_fd, "rb") as pipe:
        batches = list(iter_npy_stream(pipe, batch_size=16))
    writer.join()
    np.testing.assert_array_equal(np.concatenate(batches), vectors)


def _write_and_close(fd, data):
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def test_fortran_order_npy_stream(vectors):
    data = _npy_bytes(np.asfortranarray(vectors))
    batches = list(iter_npy_stream(io.BufferedReader(_Pipe(data)), batch_size=10))
    np.testing.assert_array_equal(np.concatenate(batches), vectors)


def test_npy_stream_that_ends_early_says_how_many_rows_arrived(vectors):
    data = _npy_bytes(vectors)
    header = len(data) - vectors.nbytes
    truncated = data[:header + 5 * 6 * 4 + 3]  # 5 whole rows and a bit
    stream = iter_npy_stream(io.BufferedReader(_Pipe(truncated)), batch_size=4)
    with pytest.raises(InputError, match="stdin ended after 5 of 37 rows"):
        list(stream)


@pytest.mark.parametrize("data,fragment", [
    (b"not an npy file at all", "not a valid .npy"),
    (b"", "not a valid .npy"),
    (b"\x93NUMPY\x09\x00xx", "unsupported .npy format version"),
])
def test_npy_stream_with_a_bad_header(data, fragment):
    with pytest.raises(InputError, match=fragment) as info:
        iter_npy_stream(io.BufferedReader(_Pipe(data)))
    assert "stdin" in str(info.value)


@pytest.mark.parametrize("array,fragment", [
    (np.arange(5, dtype=np.float32), "got a 1-D array"),
    (np.array([["a", "b"]]), "numeric"),
])
def test_npy_stream_with_a_bad_array(array, fragment):
    with pytest.raises(InputError, match=fragment):
        iter_npy_stream(io.BufferedReader(_Pipe(_npy_bytes(array))))


def test_write_npy_stream_rejects_batches_that_do_not_match_the_header(vectors):
    with pytest.raises(InputError, match="batches gave 37 rows, the header announced 40"):
        write_npy_stream(io.BytesIO(), [vectors], 40, 6, np.float32)
    with pytest.raises(InputError, match="does not fit the announced shape"):
        write_npy_stream(io.BytesIO(), [vectors, vectors], 40, 6, np.float32)
    with pytest.raises(InputError, match="float32 or float16"):
        write_npy_stream(io.BytesIO(), [vectors], 37, 6, np.int8)


# --- errors ----------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file: .*nope.fvecs"):
        open_vectors(tmp_path / "nope.fvecs")


def test_directory_is_not_a_vector_file(tmp_path):
    (tmp_path / "dir.npy").mkdir()
    with pytest.raises(InputError, match="dir.npy: not a regular file"):
        open_vectors(tmp_path / "dir.npy")


def test_unknown_extension_lists_the_supported_ones(tmp_path):
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(InputError, match=r"x\.csv: unsupported file extension '\.csv'") as info:
        open_vectors(tmp_path / "x.csv")
    assert all(ext in str(info.value) for ext in SUPPORTED_EXTENSIONS)


def test_truncated_fbin_names_expected_and_actual_size(tmp_path, vectors):
    data = _bin_bytes(vectors)
    (tmp_path / "t.fbin").write_bytes(data[:-10])
    expected, actual = len(data), len(data) - 10
    with pytest.raises(InputError, match=rf"t\.fbin: file truncated: .*n=37, dim=6.* "
                                         rf"{expected} bytes, the file has {actual} bytes"):
        open_vectors(tmp_path / "t.fbin")


def test_fbin_with_trailing_bytes(tmp_path, vectors):
    (tmp_path / "t.u8bin").write_bytes(_bin_bytes(vectors.astype("u1")) + b"xx")
    with pytest.raises(InputError, match="has trailing bytes"):
        open_vectors(tmp_path / "t.u8bin")


def test_bin_shorter_than_its_header(tmp_path):
    (tmp_path / "t.ibin").write_bytes(b"\x01\x00")
    with pytest.raises(InputError, match=r"t\.ibin: expected an 8-byte \(n, dim\) header, "
                                         r"the file has 2 bytes"):
        open_vectors(tmp_path / "t.ibin")


def test_fvecs_size_not_a_multiple_of_the_row_size(tmp_path, vectors):
    (tmp_path / "t.fvecs").write_bytes(_vecs_bytes(vectors)[:-4])
    row = 4 + 6 * 4
    size = 37 * row - 4
    with pytest.raises(InputError, match=rf"t\.fvecs: file size {size} bytes is not a multiple "
                                         rf"of the row size {row} bytes"):
        open_vectors(tmp_path / "t.fvecs")


def test_fvecs_whose_last_row_dimension_differs(tmp_path, vectors):
    # 36 rows of dim 6 plus one row announcing 5 values and padded to the same row size.
    dims = [6] * 36 + [5]
    (tmp_path / "t.fvecs").write_bytes(_vecs_bytes(vectors, dims))
    with pytest.raises(InputError, match=r"t\.fvecs: row 36 has dimension 5, expected 6"):
        open_vectors(tmp_path / "t.fvecs")


def test_fvecs_whose_middle_row_dimension_differs_fails_when_read(tmp_path, vectors):
    dims = [6] * 20 + [9] + [6] * 16
    (tmp_path / "t.bvecs").write_bytes(_vecs_bytes(vectors.astype("u1"), dims))
    source = open_vectors(tmp_path / "t.bvecs")
    source.read(0, 20)
    with pytest.raises(InputError, match=r"row 20 has dimension 9, expected 6"):
        list(source.iter_batches(8))


@pytest.mark.parametrize("data,fragment", [
    (b"", "expected at least one .fvecs row"),
    (np.int32(0).tobytes(), "row 0 announces dimension 0"),
    (np.int32(-3).tobytes() + b"\0" * 12, "row 0 announces dimension -3"),
])
def test_fvecs_with_an_impossible_first_row(tmp_path, data, fragment):
    (tmp_path / "t.fvecs").write_bytes(data)
    with pytest.raises(InputError, match=fragment):
        open_vectors(tmp_path / "t.fvecs")


@pytest.mark.parametrize("array,fragment", [
    (np.array([[1, "a"]], dtype=object), "numeric .*got object"),
    (np.array([["ab", "cd"]]), "numeric .*got <U2"),
    (np.ones((3, 2), dtype=np.complex64), "numeric .*got complex64"),
    (np.ones(5, np.float32), r"2-D array of shape \(n, dim\), got a 1-D array of shape \(5,\)"),
    (np.ones((2, 3, 4), np.float32), r"got a 3-D array of shape \(2, 3, 4\)"),
    (np.ones((3, 0), np.float32), "at least one dimension per vector"),
])
def test_npy_with_unusable_contents(tmp_path, array, fragment):
    np.save(tmp_path / "bad.npy", array, allow_pickle=True)
    with pytest.raises(InputError, match=fragment) as info:
        open_vectors(tmp_path / "bad.npy")
    assert "bad.npy" in str(info.value)


def test_npy_with_bad_magic(tmp_path):
    (tmp_path / "bad.npy").write_bytes(b"PK\x03\x04 this is a zip")
    with pytest.raises(InputError, match=r"bad\.npy: not a valid \.npy file: .*magic"):
        open_vectors(tmp_path / "bad.npy")


def test_truncated_npy(tmp_path, vectors):
    data = _npy_bytes(vectors)
    (tmp_path / "t.npy").write_bytes(data[:-1])
    with pytest.raises(InputError, match=rf"t\.npy: file truncated: .*shape \(37, 6\) of float32 "
                                         rf"means {len(data)} bytes, the file has "
                                         rf"{len(data) - 1} bytes"):
        open_vectors(tmp_path / "t.npy")


def test_read_ints_rejects_float_vectors(tmp_path, vectors):
    write_vectors(tmp_path / "x.fbin", vectors)
    with pytest.raises(InputError, match=r"x\.fbin: expected integer ids, got float32"):
        read_ints(tmp_path / "x.fbin")


def test_out_of_range_reads_and_bad_batch_size(tmp_path, vectors):
    write_vectors(tmp_path / "x.npy", vectors)
    source = open_vectors(tmp_path / "x.npy")
    with pytest.raises(InputError, match=r"row range \[30, 40\) is outside the file's 37 rows"):
        source.read(30, 40)
    with pytest.raises(InputError, match="row range"):
        source.read(-1, 3)
    with pytest.raises(InputError, match="batch_size must be at least 1, got 0"):
        next(source.iter_batches(0))


@pytest.mark.parametrize("name,array,fragment", [
    ("x.bvecs", np.ones((2, 2)), r"cannot write '\.bvecs' files; writable formats: "
                                 r"\.npy, \.fvecs, \.fbin"),
    ("x.npy", np.ones(4), "got a 1-D array"),
    ("x.fbin", np.array([["a"]]), "numeric"),
    ("x.fvecs", np.ones((0, 3)), "cannot write zero vectors to .fvecs"),
])
def test_write_rejects_bad_requests_and_leaves_no_file(tmp_path, name, array, fragment):
    with pytest.raises(InputError, match=fragment):
        write_vectors(tmp_path / name, array)
    assert os.listdir(tmp_path) == []


def test_write_replaces_atomically_and_leaves_no_temporary_file(tmp_path, vectors):
    write_vectors(tmp_path / "x.fbin", vectors[:3])
    write_vectors(tmp_path / "x.fbin", vectors)
    assert os.listdir(tmp_path) == ["x.fbin"]
    np.testing.assert_array_equal(read_vectors(tmp_path / "x.fbin"), vectors)
