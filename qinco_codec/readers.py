"""Vector files in and out: the formats embedding datasets are actually distributed in.

Supported for reading (format chosen by extension):

* ``.npy``  -- NumPy arrays of shape (n, dim), any integer or float dtype;
* ``.fvecs`` / ``.bvecs`` / ``.ivecs`` -- TEXMEX (SIFT1M, GIST1M, Deep1B ...): every row is a
  little-endian int32 dimension followed by that many float32 / uint8 / int32 values;
* ``.fbin`` / ``.u8bin`` / ``.ibin`` -- big-ann-benchmarks: a header of two little-endian
  uint32 (n, dim), then n * dim float32 / uint8 / int32 values.

Writing: `.npy` (float32 or float16), `.fvecs` and `.fbin` (float32), a whole array at once
(`write_vectors`) or batch by batch in bounded memory (`write_vector_stream` to a file, which
appears atomically; `write_npy_stream` to any stream, such as stdout).

Files are never loaded whole: opening reads the header, and rows are fetched batch by batch
with positional reads, so datasets larger than RAM can be encoded in bounded memory (and a file
truncated while it is read gives an InputError, where a memory map would die of SIGBUS).
Every layout problem is checked against the file size when the file is opened and reported as
an `InputError` naming the file, what was expected and what was found, instead of surfacing
later as garbage vectors. This module needs only NumPy (no torch), so the container
tools can use it cheaply.
"""
import os
import weakref

import numpy as np

from .formats.atomic import atomic_output
from .errors import InputError

DEFAULT_BATCH_SIZE = 65536

_VECS_DTYPES = {".fvecs": np.dtype("<f4"), ".bvecs": np.dtype("u1"), ".ivecs": np.dtype("<i4")}
_BIN_DTYPES = {".fbin": np.dtype("<f4"), ".u8bin": np.dtype("u1"), ".ibin": np.dtype("<i4")}
SUPPORTED_EXTENSIONS = (".npy", *_VECS_DTYPES, *_BIN_DTYPES)
WRITABLE_EXTENSIONS = (".npy", ".fvecs", ".fbin")
NPY_OUTPUT_DTYPES = (np.dtype("<f4"), np.dtype("<f2"))
_NUMERIC_KINDS = "fiu"
_VECS_DIM_DTYPE = np.dtype("<i4")
_BIN_HEADER_DTYPE = np.dtype("<u4")
_BIN_HEADER_BYTES = 2 * _BIN_HEADER_DTYPE.itemsize


class VectorSource:
    """A vector file opened for batched reading as float32, whatever its on-disk format.

    Attributes: `path`, `n` (rows), `dim`, `dtype` (the on-disk dtype), `format` (extension
    without the dot, e.g. 'fvecs'). Opening reads only the header, so it is cheap for a file of
    any size; each read then fetches just the rows asked for with positional reads of the open
    file (not a memory map: a file truncated while it is read would kill the process with
    SIGBUS there, and here gives an InputError saying so). The file is held open until
    `close()`, the end of a `with` block, or the object is garbage-collected.
    """

    def __init__(self, path, fmt, n, dim, dtype, offset, texmex=False, fortran_order=False):
        self.path = path
        self.format = fmt
        self.n, self.dim = n, dim
        self.dtype = dtype
        self._offset = offset
        self._texmex = texmex  # each row is an int32 dimension then its values (TEXMEX)
        self._fortran = fortran_order
        self._table_dtype = _texmex_row_dtype(path, dim, dtype) if texmex else None
        self._row_bytes = (_VECS_DIM_DTYPE.itemsize if texmex else 0) + dim * dtype.itemsize
        self._end = offset + n * self._row_bytes  # the file size the header promises
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self._closer = weakref.finalize(self, os.close, self._fd)

    def __len__(self):
        return self.n

    def __repr__(self):
        return (f"VectorSource({self.path!r}, format={self.format!r}, n={self.n}, "
                f"dim={self.dim}, dtype={self.dtype.name})")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Close the file; reading afterwards is an error."""
        self._closer()

    def read(self, start=0, stop=None):
        """Rows [start, stop) as a fresh, writable, C-contiguous float32 array (n_rows, dim)."""
        return self._read_as(start, stop, np.float32)

    def iter_batches(self, batch_size=DEFAULT_BATCH_SIZE, start=0, stop=None):
        """Yield rows [start, stop) in order as float32 arrays of at most `batch_size` rows."""
        start, stop = self._check_range(start, stop)
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        for lo in range(start, stop, batch_size):
            yield self.read(lo, min(lo + batch_size, stop))

    def _read_as(self, start, stop, dtype):
        """Rows [start, stop) in a new C-contiguous array of `dtype`."""
        start, stop = self._check_range(start, stop)
        if self._fortran:
            rows = self._read_fortran(start, stop)
        else:
            offset = self._offset + start * self._row_bytes
            if self._texmex:
                table = np.empty(stop - start, self._table_dtype)
                self._pread_into(table, offset)
                self._check_row_dims(table["dim"], start)
                rows = table["vec"]
            else:
                rows = np.empty((stop - start, self.dim), self.dtype)
                self._pread_into(rows, offset)
        if rows.dtype == dtype and rows.flags.c_contiguous and rows.flags.writeable:
            return rows
        return np.array(rows, dtype=dtype, order="C")

    def _read_fortran(self, start, stop):
        """A Fortran-order .npy stores column after column: one read per column."""
        rows = np.empty((self.dim, stop - start), self.dtype)
        for j in range(self.dim):
            self._pread_into(rows[j], self._offset + (j * self.n + start) * self.dtype.itemsize)
        return rows.T

    def _pread_into(self, array, offset):
        """Fill the contiguous `array` with the file's bytes from `offset`; an InputError when
        the file ends first (it is shorter than its header said when it was opened)."""
        view = memoryview(array.reshape(-1).view(np.uint8))
        got = 0
        while got < len(view):
            part = _pread(self._fd, view[got:], offset + got)
            if part == 0:
                raise InputError(
                    f"{self.path}: the file ends at byte {offset + got}, its header promised "
                    f"{self._end} bytes: it was truncated while it was being read")
            got += part

    def _check_range(self, start, stop):
        """Resolve `stop=None` to n and reject ranges outside [0, n]."""
        stop = self.n if stop is None else stop
        if not 0 <= start <= stop <= self.n:
            raise InputError(f"{self.path}: row range [{start}, {stop}) is outside the file's "
                             f"{self.n} rows")
        return start, stop

    def _check_row_dims(self, dims, start):
        """A TEXMEX row whose dimension differs from the first row's means a corrupt file."""
        bad = np.flatnonzero(dims != self.dim)
        if bad.size:
            row = start + int(bad[0])
            raise InputError(f"{self.path}: row {row} has dimension {int(dims[bad[0]])}, "
                             f"expected {self.dim} (the dimension of row 0)")


def _pread(fd, view, offset):
    """Read into the memoryview `view` from `offset` of `fd`; the number of bytes read (0 at
    the end of the file). Positional, so concurrent readers of one source do not interfere."""
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], offset)
    data = os.pread(fd, len(view), offset)
    view[:len(data)] = data
    return len(data)


def _texmex_row_dtype(path, dim, dtype):
    """One TEXMEX row: the int32 dimension, then `dim` values of `dtype`."""
    try:
        return np.dtype([("dim", _VECS_DIM_DTYPE), ("vec", dtype, (dim,))])
    except ValueError:  # NumPy record types are limited to 2**31 - 1 bytes
        raise InputError(f"{path}: row 0 announces dimension {dim}, too large for a row this "
                         f"reader can hold: not a vector file") from None


def open_vectors(path):
    """Open a vector file for batched float32 reading; the format is chosen by its extension."""
    path = os.fspath(path)
    ext = _extension(path)
    _check_is_file(path)
    if ext == ".npy":
        return _open_npy(path)
    if ext in _VECS_DTYPES:
        return _open_vecs(path, ext)
    return _open_bin(path, ext)


def read_vectors(path):
    """The whole vector file as one float32 (n, dim) array: for files that fit in memory."""
    return open_vectors(path).read()


def read_ints(path):
    """A whole integer file (ground-truth neighbour ids, .ivecs / .ibin / .npy) as int64."""
    source = open_vectors(path)
    if source.dtype.kind not in "iu":
        raise InputError(f"{source.path}: expected integer ids, got {source.dtype.name} values")
    return source._read_as(0, None, np.int64)


def write_vectors(path, array):
    """Write a 2-D array atomically as .npy (float16 kept, else float32), .fvecs or .fbin."""
    path = os.fspath(path)
    ext = _writable_extension(path)
    array = _check_array(np.asarray(array), path)
    dtype = np.float16 if ext == ".npy" and array.dtype == np.float16 else np.float32
    write_vector_stream(path, _chunks(array, dtype), array.shape[0], array.shape[1], dtype)


def write_vector_stream(path, batches, n, dim, dtype=np.float32):
    """Write batches adding up to (n, dim) vectors to `path` as .npy (float32 or float16),
    .fvecs or .fbin (float32), chosen by extension, holding one batch at a time.

    The file appears atomically (temporary file + rename) and only once complete, so an
    interrupted or failed write leaves nothing under the final name."""
    path = os.fspath(path)
    ext = _writable_extension(path)
    dtype = np.dtype(dtype)
    if ext != ".npy" and dtype != np.float32:
        raise InputError(f"{path}: {ext} stores float32 only; use .npy for {dtype.name}")
    if ext == ".fvecs" and n == 0:
        raise InputError(f"{path}: cannot write zero vectors to .fvecs (the format stores the "
                         f"dimension in each row, so an empty file cannot be read back)")
    if ext == ".fbin" and (n >= 2 ** 32 or dim >= 2 ** 32):
        raise InputError(f"{path}: shape ({n}, {dim}) does not fit the uint32 .fbin header")
    writer = {".npy": write_npy_stream, ".fvecs": _write_fvecs, ".fbin": _write_fbin}[ext]
    with atomic_output(path) as f:
        writer(f, batches, n, dim, dtype)


def write_npy_stream(fileobj, batches, n, dim, dtype):
    """Write an .npy of shape (n, dim) to a possibly non-seekable stream (e.g. stdout).

    The header goes first, which is why the shape must be known up front; each batch is then
    converted to `dtype` (float32 or float16, stored little-endian) and written as it arrives,
    so nothing is held in memory. The batches must add up to exactly n rows of `dim` values.
    """
    dtype = _npy_output_dtype(dtype)
    np.lib.format.write_array_header_1_0(fileobj, {
        "descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
        "shape": (int(n), int(dim))})
    for batch in _checked_batches(batches, n, dim, "npy stream"):
        fileobj.write(np.ascontiguousarray(batch, dtype=dtype).data)


def _checked_batches(batches, n, dim, what):
    """The batches, each checked to be (rows, dim) and, all together, exactly n rows."""
    written = 0
    for batch in batches:
        batch = np.asarray(batch)
        if batch.ndim != 2 or batch.shape[1] != dim or written + batch.shape[0] > n:
            raise InputError(f"{what}: batch of shape {batch.shape} does not fit the "
                             f"announced shape ({n}, {dim}) after {written} rows")
        yield batch
        written += batch.shape[0]
    if written != n:
        raise InputError(f"{what}: batches gave {written} rows, the header announced {n}")


def iter_npy_stream(fileobj, batch_size=DEFAULT_BATCH_SIZE, name="stdin"):
    """Parse an .npy from a non-seekable stream and return an `NpyStream` over it.

    Only the header is read here; rows are read as the batches are consumed, so a stream larger
    than memory can be compressed. `name` is what error messages call the stream.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    dtype, shape, fortran_order = _read_npy_header(fileobj, name)
    return NpyStream(fileobj, name, shape, dtype, fortran_order, batch_size)


class NpyStream:
    """An .npy arriving on a stream: `n`, `dim`, `dtype` from its header, and `batches`.

    `batches` (also what iterating the object gives) yields float32 arrays of at most
    `batch_size` rows, read from the stream as they are consumed; it can be iterated once.
    """

    def __init__(self, fileobj, name, shape, dtype, fortran_order, batch_size):
        self.name = name
        self.n, self.dim = shape
        self.dtype = dtype
        self.batches = (self._fortran_batches(fileobj, batch_size) if fortran_order
                        else self._row_batches(fileobj, batch_size))

    def __iter__(self):
        return self.batches

    def _row_batches(self, fileobj, batch_size):
        """C-order data: read and convert `batch_size` rows at a time."""
        row_bytes = self.dim * self.dtype.itemsize
        for start in range(0, self.n, batch_size):
            rows = min(batch_size, self.n - start)
            data = self._read_exact(fileobj, rows * row_bytes, start)
            yield np.frombuffer(data, self.dtype).reshape(rows, self.dim).astype(np.float32)
        self._check_end(fileobj)

    def _fortran_batches(self, fileobj, batch_size):
        """Fortran-order data stores columns first, so no row is complete before the end."""
        data = self._read_exact(fileobj, self.n * self.dim * self.dtype.itemsize, 0)
        self._check_end(fileobj)
        columns = np.frombuffer(data, self.dtype).reshape((self.n, self.dim), order="F")
        for start in range(0, self.n, batch_size):
            yield np.array(columns[start:start + batch_size], dtype=np.float32, order="C")

    def _check_end(self, fileobj):
        """The stream must end with the last row the header announced: bytes after it (say,
        a second .npy concatenated to the first) are refused as they are in a file."""
        if fileobj.read(1):
            raise InputError(f"{self.name}: has trailing bytes after the {self.n} rows its .npy "
                             f"header announced (shape ({self.n}, {self.dim})); send one .npy "
                             f"per stream")

    def _read_exact(self, fileobj, nbytes, rows_before):
        """Exactly `nbytes` from the stream (pipes return short reads), or an InputError."""
        chunks, got = [], 0
        while got < nbytes:
            chunk = fileobj.read(nbytes - got)
            if not chunk:
                rows = rows_before + got // max(1, self.dim * self.dtype.itemsize)
                raise InputError(f"{self.name} ended after {rows} of {self.n} rows "
                                 f"(the .npy header announced shape ({self.n}, {self.dim}))")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)


def _extension(path):
    """The lower-cased extension of `path`, which must be one we can read."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise InputError(f"{path}: unsupported file extension {ext or '(none)'!r}; "
                         f"supported: {', '.join(SUPPORTED_EXTENSIONS)}")
    return ext


def _writable_extension(path):
    """The lower-cased extension of `path`, which must be one we can write."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in WRITABLE_EXTENSIONS:
        raise InputError(f"{path}: cannot write {ext or 'extension-less'!r} files; "
                         f"writable formats: {', '.join(WRITABLE_EXTENSIONS)}")
    return ext


def _check_is_file(path):
    if not os.path.exists(path):
        raise InputError(f"no such file: {path}")
    if not os.path.isfile(path):
        raise InputError(f"{path}: not a regular file")


def _check_numeric(dtype, name):
    """Only integer and real float values can be compressed (no objects, strings, complex)."""
    if dtype.kind not in _NUMERIC_KINDS:
        raise InputError(f"{name}: expected a numeric (integer or float) dtype, got {dtype}")


def _check_2d(shape, name):
    if len(shape) != 2:
        raise InputError(f"{name}: expected a 2-D array of shape (n, dim), got a "
                         f"{len(shape)}-D array of shape {tuple(shape)}")
    if shape[1] < 1:
        raise InputError(f"{name}: expected at least one dimension per vector, got shape "
                         f"{tuple(shape)}")


def _check_size(path, expected, actual, what):
    """The file size must be exactly what its header implies."""
    if expected != actual:
        problem = "truncated" if actual < expected else "has trailing bytes"
        raise InputError(f"{path}: file {problem}: {what} means {expected} bytes, "
                         f"the file has {actual} bytes")


def _read_npy_header(fileobj, name):
    """(dtype, shape, fortran_order) of a 2-D numeric .npy, leaving `fileobj` at the data."""
    try:
        version = np.lib.format.read_magic(fileobj)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(fileobj)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(fileobj)
        else:
            raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]} "
                             f"(expected 1.0 or 2.0)")
    except ValueError as exc:
        raise InputError(f"{name}: not a valid .npy file: {exc}") from None
    _check_numeric(dtype, name)
    _check_2d(shape, name)
    return dtype, shape, fortran_order


def _open_npy(path):
    with open(path, "rb") as f:
        dtype, shape, fortran_order = _read_npy_header(f, path)
        offset = f.tell()
    n, dim = shape
    _check_size(path, offset + n * dim * dtype.itemsize, os.path.getsize(path),
                f"a {offset}-byte header and shape ({n}, {dim}) of {dtype.name}")
    return VectorSource(path, "npy", n, dim, dtype, offset, fortran_order=fortran_order)


def _open_vecs(path, ext):
    """TEXMEX: the first row's dimension fixes the row size; the size must be a multiple."""
    dtype = _VECS_DTYPES[ext]
    size = os.path.getsize(path)
    if size < _VECS_DIM_DTYPE.itemsize:
        raise InputError(f"{path}: expected at least one {ext} row (a 4-byte dimension "
                         f"first), the file has {size} bytes")
    dim = int(np.fromfile(path, _VECS_DIM_DTYPE, count=1)[0])
    if dim < 1:
        raise InputError(f"{path}: row 0 announces dimension {dim}, expected a positive "
                         f"integer: not a {ext} file")
    row_bytes = _VECS_DIM_DTYPE.itemsize + dim * dtype.itemsize  # a Python int: cannot overflow
    layout = f"4-byte dimension + {dim} x {dtype.name}"
    if row_bytes > size:
        raise InputError(f"{path}: row 0 announces dimension {dim}, i.e. rows of {row_bytes} "
                         f"bytes ({layout}), but the file has only {size} bytes; the file is "
                         f"truncated or not a {ext} file")
    if size % row_bytes:
        raise InputError(f"{path}: file size {size} bytes is not a multiple of the row size "
                         f"{row_bytes} bytes ({layout}); the file is truncated or not a {ext} "
                         f"file")
    source = VectorSource(path, ext[1:], size // row_bytes, dim, dtype, 0, texmex=True)
    source.read(source.n - 1, source.n)  # a last row of another dimension: a corrupt file
    return source


def _open_bin(path, ext):
    """big-ann-benchmarks: (n, dim) header then exactly n * dim values."""
    dtype = _BIN_DTYPES[ext]
    size = os.path.getsize(path)
    if size < _BIN_HEADER_BYTES:
        raise InputError(f"{path}: expected an {_BIN_HEADER_BYTES}-byte (n, dim) header, the "
                         f"file has {size} bytes")
    n, dim = (int(v) for v in np.fromfile(path, _BIN_HEADER_DTYPE, count=2))
    _check_2d((n, dim), path)
    _check_size(path, _BIN_HEADER_BYTES + n * dim * dtype.itemsize, size,
                f"a header of n={n}, dim={dim} with {dtype.name} values")
    return VectorSource(path, ext[1:], n, dim, dtype, _BIN_HEADER_BYTES)


def _check_array(array, path):
    _check_numeric(array.dtype, path)
    _check_2d(array.shape, path)
    return array


def _npy_output_dtype(dtype):
    """float32 or float16, little-endian: what decoded vectors are written as."""
    dtype = np.dtype(dtype).newbyteorder("<")
    if dtype not in NPY_OUTPUT_DTYPES:
        raise InputError(f"npy output dtype must be float32 or float16, got {dtype.name}")
    return dtype


def _chunks(array, dtype):
    """`array` as C-contiguous `dtype` chunks, so writing never copies the whole array."""
    for start in range(0, array.shape[0], DEFAULT_BATCH_SIZE):
        yield np.ascontiguousarray(array[start:start + DEFAULT_BATCH_SIZE], dtype=dtype)


def _write_fvecs(f, batches, n, dim, dtype):
    """TEXMEX rows: a little-endian int32 dimension, then the row's float32 values."""
    row_dtype = np.dtype([("dim", _VECS_DIM_DTYPE), ("vec", "<f4", (dim,))])
    for batch in _checked_batches(batches, n, dim, "fvecs output"):
        table = np.empty(batch.shape[0], row_dtype)
        table["dim"] = dim
        table["vec"] = batch
        f.write(table.data)


def _write_fbin(f, batches, n, dim, dtype):
    """big-ann-benchmarks: a uint32 (n, dim) header, then the float32 values."""
    f.write(np.array([n, dim], _BIN_HEADER_DTYPE).data)
    for batch in _checked_batches(batches, n, dim, "fbin output"):
        f.write(np.ascontiguousarray(batch, dtype="<f4").data)
