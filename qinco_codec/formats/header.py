"""The fixed header: the `QncHeader` a reader exposes, and encoding/decoding of the fixed-size
block at the start of every .qnc file (SPEC.md section "Fixed header").

The checks on the numeric fields live in `parameter_problem` so that the writer (which raises
InputError for bad arguments) and the reader (which raises QncFormatError for bad files) apply
exactly the same rules.
"""
from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np

from .errors import QncFormatError
from .layout import (DTYPE_CODES, DTYPE_IDS, HEADER_CRC, HEADER_FIELDS, HEADER_PREFIX,
                     HEADER_SIZE_V1_0, MAGIC, MAX_CHUNK_ROWS, MAX_CHUNKS, MAX_HEADER_SIZE, MAX_K,
                     MAX_M, MIN_K, VERSION_MAJOR, VERSION_MINOR, bytes_per_code, chunk_count,
                     crc32, native_code_dtype)


@dataclass(frozen=True)
class QncHeader:
    """Everything a .qnc file declares about its contents (fixed header plus JSON sections)."""
    version: tuple
    n: int
    dim: int
    source_dtype: str
    K: int
    bytes_per_code: int
    M: int
    chunk_rows: int
    model_sha256: bytes
    model_config: dict
    metadata: Optional[dict]
    has_embedded_model: bool
    quality_report: Optional[dict] = None  # the quality_report section (version 1.1), if any
    has_ivf: bool = False  # whether the file has an ivf section (version 1.2; QncReader.ivf())
    # whether the codes are residuals to the ivf centroids (the ivf_residual section, version
    # 1.3): a row's vector is then its decoded codes plus the centroid of its list
    residual_codes: bool = False

    @property
    def num_chunks(self):
        """Number of chunks in the code stream: ceil(n / chunk_rows)."""
        return chunk_count(self.n, self.chunk_rows)

    @property
    def code_dtype(self):
        """numpy dtype of decoded codes: uint8 when K <= 256, else uint16."""
        return native_code_dtype(self.bytes_per_code)


class FixedHeader(NamedTuple):
    """The decoded fixed header, before the sections are read."""
    version: tuple
    header_size: int
    n: int
    sections_length: int
    dim: int
    K: int
    M: int
    chunk_rows: int
    source_dtype: str
    bytes_per_code: int
    model_sha256: bytes


def parameter_problem(*, n, dim, K, M, chunk_rows, bpc):
    """Return why these header parameters are invalid, or None when they are valid."""
    if n < 0 or n >= 1 << 64:
        return f"n={n} is not a uint64"
    if not 1 <= dim < 1 << 32:
        return f"dim={dim} must be in [1, 2**32)"
    if not (MIN_K <= K <= MAX_K and K & (K - 1) == 0):
        return f"K={K} must be a power of two in [{MIN_K}, {MAX_K}]"
    if bpc != bytes_per_code(K):
        return f"bytes_per_code={bpc} does not match K={K} (expected {bytes_per_code(K)})"
    if not 1 <= M <= MAX_M:
        return f"M={M} must be in [1, {MAX_M}]"
    if not 1 <= chunk_rows <= MAX_CHUNK_ROWS:
        return f"chunk_rows={chunk_rows} must be in [1, {MAX_CHUNK_ROWS}]"
    if chunk_count(n, chunk_rows) >= MAX_CHUNKS:
        return (f"n={n} and chunk_rows={chunk_rows} make {chunk_count(n, chunk_rows)} chunks; "
                f"ceil(n / chunk_rows) must be below 2**32")
    return None


def encode_fixed_header(*, n, sections_length, dim, K, M, chunk_rows, source_dtype, model_sha256,
                        minor=0):
    """The 88-byte fixed header of version 1.`minor` (no minor version up to VERSION_MINOR adds
    header fields), checksum included."""
    if not 0 <= minor <= VERSION_MINOR:
        raise ValueError(f"minor version {minor} is not in [0, {VERSION_MINOR}]")
    fields = HEADER_FIELDS.pack(MAGIC, VERSION_MAJOR, minor, HEADER_SIZE_V1_0, n,
                                sections_length, dim, K, M, chunk_rows, DTYPE_IDS[source_dtype],
                                bytes_per_code(K), 0, model_sha256)
    return fields + HEADER_CRC.pack(crc32(fields))


def decode_header_prefix(prefix):
    """Check magic and major version in the first 16 bytes of a file; return header_size.

    Any header_size in [88, 4096] is accepted whatever version_minor says: a later minor version
    may append fields before the CRC, and a reader ignores (but checksums) the bytes it does not
    know.

    `prefix` may be shorter when the file is: that is reported as a bad magic number if the
    bytes present already differ from it, else as truncation. The major version is checked before
    anything else is trusted, since another major version may lay out (and checksum) its header
    differently.
    """
    magic = prefix[:len(MAGIC)]
    if not magic:
        raise QncFormatError("not a .qnc file: the file is empty (truncated?)")
    if magic != MAGIC[:len(magic)]:
        raise QncFormatError(f"not a .qnc file: bad magic bytes {magic.hex(' ')} "
                             f"(expected {MAGIC.hex(' ')})")
    if len(prefix) < HEADER_PREFIX.size:
        raise QncFormatError(f"truncated file: {len(prefix)} bytes, shorter than the "
                             f"{HEADER_PREFIX.size}-byte start of the fixed header")
    _, major, minor, header_size = HEADER_PREFIX.unpack(prefix)
    if major != VERSION_MAJOR:
        raise QncFormatError(f"unsupported .qnc major version {major}.{minor} "
                             f"(this reader supports major version {VERSION_MAJOR})")
    if not HEADER_SIZE_V1_0 <= header_size <= MAX_HEADER_SIZE:
        raise QncFormatError(f"header_size={header_size} must be in "
                             f"[{HEADER_SIZE_V1_0}, {MAX_HEADER_SIZE}]")
    return header_size


def decode_fixed_header(data):
    """Decode and validate a whole fixed header (`header_size` bytes, prefix already checked)."""
    (stored_crc,) = HEADER_CRC.unpack_from(data, len(data) - HEADER_CRC.size)
    computed = crc32(data[:-HEADER_CRC.size])
    if stored_crc != computed:
        raise QncFormatError(f"header checksum mismatch (stored 0x{stored_crc:08x}, "
                             f"computed 0x{computed:08x}): the header is corrupted")
    (_, major, minor, header_size, n, sections_length, dim, K, M, chunk_rows, dtype_code, bpc, _,
     sha) = HEADER_FIELDS.unpack_from(data)
    problem = parameter_problem(n=n, dim=dim, K=K, M=M, chunk_rows=chunk_rows, bpc=bpc)
    if problem:
        raise QncFormatError(f"inconsistent header: {problem}")
    if dtype_code not in DTYPE_CODES:
        raise QncFormatError(f"unknown source_dtype code {dtype_code} "
                             f"(known: {sorted(DTYPE_CODES)})")
    return FixedHeader((major, minor), header_size, n, sections_length, dim, K, M, chunk_rows,
                       DTYPE_CODES[dtype_code], bpc, sha)
