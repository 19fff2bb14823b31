"""`QncWriter`: writes a .qnc file front to back in one pass (SPEC.md, "Writer rules").

The fixed header and sections go out first, then one chunk each time chunk_rows rows have been
buffered, then the index and trailer. The file is built under a temporary name and renamed into
place only when exactly n rows were written and nothing raised, so a reader never sees a partial
or inconsistent file.
"""
import hashlib
import operator

import numpy as np

from .atomic import atomic_output
from .errors import InputError
from .chunks import PlaneEncoder, raw_chunk_header
from .header import encode_fixed_header, parameter_problem
from .index import encode_index, encode_trailer
from .ivf import encode_ivf, ivf_problem
from .residual import encode_ivf_residual
from .layout import (DTYPE_IDS, SECTION_EMBEDDED_MODEL, SECTION_FLAGS, SECTION_IVF, SECTION_IVF_RESIDUAL,
                     SECTION_MINOR,
                     SECTION_MODEL_CONFIG, SECTION_QUALITY_REPORT, SECTION_USER_METADATA,
                     ZSTD_DEFAULT_LEVEL, bytes_per_code, native_code_dtype)
from .sections import encode_json, encode_section


def _dtype_name(source_dtype):
    """Normalize a dtype given as a name ("float32", "bfloat16") or a numpy dtype."""
    if isinstance(source_dtype, str) and source_dtype in DTYPE_IDS:
        return source_dtype
    try:
        name = np.dtype(source_dtype).name
    except TypeError:
        name = None
    if name not in DTYPE_IDS:
        raise InputError(f"source_dtype={source_dtype!r} is not one of {sorted(DTYPE_IDS)}")
    return name


def _as_int(value, what):
    try:
        return operator.index(value)
    except TypeError:
        raise InputError(f"{what} must be an integer, got {value!r}") from None


class QncWriter:
    """Context manager writing n code rows of M steps to a new .qnc file at `path`.

    Call `write_codes` with (rows, M) integer arrays, any number of rows per call, totalling n.
    `zstd_level` 1-22 tries zstd on every plane at that level (SPEC.md 12); 0 or None stores
    every plane raw, as `qinco-compress --zstd-level 0` does (unlike libzstd, where level 0
    means its default level).

    `quality_report` (a dict, optional) is written as the quality_report section (SPEC.md 5,
    version 1.1; the file is then a 1.1 file, else a 1.0 file).

    `ivf` (a formats.ivf.IvfSection, optional) is written as the ivf section (SPEC.md 5.3,
    version 1.2: the file is then a 1.2 file): centroids (nlist, dim) and the list id of each of
    the n rows, in row order; its list ids are zstd-coded at `zstd_level` when that is shorter.

    `ivf_residual=True` (needs `ivf`) adds the ivf_residual section (SPEC.md 5.4, version 1.3:
    the file is then a 1.3 file, which older readers refuse): the codes written are of each
    row's residual to the centroid of its list, so decoding adds that centroid.
    """

    def __init__(self, path, *, n, dim, source_dtype, K, M, model_sha256, model_config,
                 metadata=None, model_bytes=None, chunk_rows=65536,
                 zstd_level=ZSTD_DEFAULT_LEVEL, quality_report=None, ivf=None, ivf_residual=False):
        n, dim, K, M, chunk_rows = (_as_int(v, name) for v, name in (
            (n, "n"), (dim, "dim"), (K, "K"), (M, "M"), (chunk_rows, "chunk_rows")))
        problem = parameter_problem(n=n, dim=dim, K=K, M=M, chunk_rows=chunk_rows,
                                    bpc=bytes_per_code(K))
        if problem:
            raise InputError(problem)
        if zstd_level is not None and (isinstance(zstd_level, bool) or not isinstance(
                zstd_level, int) or not 0 <= zstd_level <= 22):
            raise InputError(f"zstd_level={zstd_level!r} must be an integer in [1, 22], or 0 or "
                             f"None to store every plane raw")
        sha = bytes(model_sha256)
        if len(sha) != 32:
            raise InputError(f"model_sha256 must be 32 bytes (a SHA-256 digest), got {len(sha)}")
        types = [SECTION_MODEL_CONFIG]
        sections = [encode_section(SECTION_MODEL_CONFIG, SECTION_FLAGS[SECTION_MODEL_CONFIG],
                                   encode_json(model_config, "model_config"))]
        if metadata is not None:
            types.append(SECTION_USER_METADATA)
            sections.append(encode_section(SECTION_USER_METADATA,
                                           SECTION_FLAGS[SECTION_USER_METADATA],
                                           encode_json(metadata, "metadata")))
        if model_bytes is not None:
            model_bytes = bytes(model_bytes)
            if hashlib.sha256(model_bytes).digest() != sha:
                raise InputError("model_bytes do not hash to model_sha256: the embedded model "
                                 "must be the safetensors file the header names")
            types.append(SECTION_EMBEDDED_MODEL)
            sections.append(encode_section(SECTION_EMBEDDED_MODEL,
                                           SECTION_FLAGS[SECTION_EMBEDDED_MODEL], model_bytes))
        if quality_report is not None:
            types.append(SECTION_QUALITY_REPORT)
            sections.append(encode_section(SECTION_QUALITY_REPORT,
                                           SECTION_FLAGS[SECTION_QUALITY_REPORT],
                                           encode_json(quality_report, "quality_report")))
        if ivf is not None:
            problem = ivf_problem(ivf, n=n, dim=dim)
            if problem:
                raise InputError(problem)
            types.append(SECTION_IVF)
            sections.append(encode_section(SECTION_IVF, SECTION_FLAGS[SECTION_IVF],
                                           encode_ivf(ivf, zstd_level=zstd_level or None)))
        if ivf_residual:
            if ivf is None:
                raise InputError("ivf_residual=True needs ivf: the codes are residuals to its "
                                 "centroids")
            types.append(SECTION_IVF_RESIDUAL)
            sections.append(encode_section(SECTION_IVF_RESIDUAL,
                                           SECTION_FLAGS[SECTION_IVF_RESIDUAL],
                                           encode_ivf_residual()))
        body = b"".join(sections)
        self._preamble = encode_fixed_header(
            n=n, sections_length=len(body), dim=dim, K=K, M=M, chunk_rows=chunk_rows,
            source_dtype=_dtype_name(source_dtype), model_sha256=sha,
            minor=max(SECTION_MINOR[t] for t in types)) + body
        self._path = path
        self._n, self._K, self._M, self._chunk_rows = n, K, M, chunk_rows
        self._encoder = PlaneEncoder(bytes_per_code(K), zstd_level or None)
        self._buffer = np.empty((min(chunk_rows, n), M), native_code_dtype(bytes_per_code(K)))
        self._filled = 0       # rows waiting in self._buffer
        self._written = 0      # rows accepted by write_codes
        self._chunks = []      # (offset, length) of every chunk written
        self._output = None    # the atomic_output context while open
        self._file = None
        self._offset = 0

    def __enter__(self):
        self._output = atomic_output(self._path)
        self._file = self._output.__enter__()
        try:
            self._write(self._preamble)
        except BaseException as error:  # e.g. a full disk: remove the temporary file now
            self._file = None
            self._output.__exit__(type(error), error, error.__traceback__)
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self._finish()
        except BaseException as error:
            self._file = None
            self._output.__exit__(type(error), error, error.__traceback__)
            raise
        self._file = None
        return self._output.__exit__(exc_type, exc, tb)

    def write_codes(self, codes):
        """Append code rows: a (rows, M) integer array with values in [0, K)."""
        if self._file is None:
            raise InputError("QncWriter.write_codes called outside its `with` block")
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != self._M:
            raise InputError(f"codes must have shape (rows, M={self._M}), got {codes.shape}")
        if not np.issubdtype(codes.dtype, np.integer):
            raise InputError(f"codes must be an integer array, got dtype {codes.dtype}")
        rows = codes.shape[0]
        if self._written + rows > self._n:
            raise InputError(f"too many rows: {self._written + rows} written, header declares "
                             f"n={self._n}")
        if rows and (codes.min() < 0 or codes.max() >= self._K):
            raise InputError(f"codes must be in [0, K={self._K}), got values in "
                             f"[{codes.min()}, {codes.max()}]")
        self._written += rows
        start = 0
        while start < rows:
            take = min(self._chunk_rows - self._filled, rows - start)
            if self._filled == 0 and take == self._chunk_rows:
                self._emit(codes[start:start + take])
            else:
                self._buffer[self._filled:self._filled + take] = codes[start:start + take]
                self._filled += take
                if self._filled == self._chunk_rows:
                    self._emit(self._buffer)
            start += take

    def write_raw_chunk(self, raw):
        """Append a chunk read by `QncReader.raw_chunks()` byte for byte (a new chunk header, the
        planes untouched): no decoding, no recompression. Allowed where a chunk boundary falls
        (no rows buffered by `write_codes`), for a chunk of this file's M and bytes per code
        holding `chunk_rows` rows, or the rows that remain when it is the last chunk."""
        if self._file is None:
            raise InputError("QncWriter.write_raw_chunk called outside its `with` block")
        if self._filled:
            raise InputError(f"write_raw_chunk: {self._filled} rows from write_codes are waiting "
                             f"for a full chunk; raw chunks can only start at a chunk boundary")
        rows, planes = raw.header.rows, raw.header.planes
        expected = min(self._chunk_rows, self._n - self._written)
        if rows != expected:
            raise InputError(f"write_raw_chunk: the chunk holds {rows} rows; chunk "
                             f"{len(self._chunks)} of this file must hold {expected} "
                             f"(chunk_rows={self._chunk_rows}, {self._n - self._written} rows "
                             f"left of n={self._n})")
        if len(planes) != self._M:
            raise InputError(f"write_raw_chunk: the chunk has {len(planes)} planes, this file "
                             f"has M={self._M}")
        raw_len = rows * bytes_per_code(self._K)
        if any(p.raw_len != raw_len for p in planes):
            raise InputError(f"write_raw_chunk: the chunk's planes are not {raw_len} bytes raw "
                             f"(rows x bytes per code for K={self._K})")
        self._written += rows
        header = raw_chunk_header(raw, len(self._chunks))
        self._chunks.append((self._offset, len(header) + len(raw.planes)))
        self._write(header)
        self._write(raw.planes)   # not joined to the header: no copy of the planes

    def _emit(self, codes):
        """Write one chunk holding `codes` and record it for the index."""
        self._filled = 0
        data = self._encoder.encode_chunk(len(self._chunks), codes)
        self._chunks.append((self._offset, len(data)))
        self._write(data)

    def _finish(self):
        """Flush the last (short) chunk, check the row total, write index and trailer."""
        if self._written != self._n:
            raise InputError(f"only {self._written} rows written, header declares n={self._n}; "
                             f"no file was created")
        if self._filled:
            self._emit(self._buffer[:self._filled])
        index = encode_index(self._chunks)
        index_offset = self._offset
        self._write(index)
        self._write(encode_trailer(index_offset, len(index)))

    def _write(self, data):
        self._file.write(data)
        self._offset += len(data)

