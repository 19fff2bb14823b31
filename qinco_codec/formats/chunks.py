"""Chunks of the code stream (SPEC.md section 6): a chunk header with the plane table,
then one plane per step, each raw or a single zstd frame.

A plane holds one step's codes for every row of the chunk, so the first b planes of a chunk are
one contiguous run of bytes right after its header: that is what makes prefix decoding cheap.
"""
from typing import NamedTuple

import numpy as np
import zstandard

from .errors import QncFormatError
from .layout import (CHUNK_CRC, CHUNK_PREFIX, CHUNK_TAG, ENCODING_NAMES, ENCODING_RAW,
                     ENCODING_ZSTD, PLANE_ENTRY, ZSTD_MAX_EXPANSION, chunk_header_size,
                     code_dtype, crc32, native_code_dtype)


class PlaneEntry(NamedTuple):
    """One row of a chunk's plane table."""
    stored_len: int
    raw_len: int
    crc32: int
    encoding: int


class ChunkHeader(NamedTuple):
    """A decoded and validated chunk header."""
    index: int
    rows: int
    planes: tuple

    @property
    def size(self):
        """Bytes of the chunk header itself."""
        return chunk_header_size(len(self.planes))

    def stored_len(self, planes=None):
        """Stored bytes of the first `planes` planes (all planes when None)."""
        return sum(p.stored_len for p in self.planes[:planes])


class RawChunk(NamedTuple):
    """A chunk as stored: its decoded header and the stored bytes of all its planes (each plane's
    CRC verified). Copying it into another file with `raw_chunk_header` moves codes without
    decoding or recompressing a plane (merging shards, adding a section to a file)."""
    header: ChunkHeader
    planes: bytes


def _chunk_header_bytes(index, rows, entries):
    """Chunk header bytes (prefix, plane table, CRC-32) for plane-table rows `entries`."""
    head = CHUNK_PREFIX.pack(CHUNK_TAG, index, rows, len(entries)) + b"".join(
        PLANE_ENTRY.pack(*entry) for entry in entries)
    return head + CHUNK_CRC.pack(crc32(head))


def raw_chunk_header(raw, index):
    """The header of `raw` as chunk number `index` of another file (the chunk index is part of
    it); its planes follow byte for byte."""
    return _chunk_header_bytes(index, raw.header.rows, raw.header.planes)


def zstd_compressor(level):
    """The compressor whose frames SPEC.md section 12 pins down: one-shot compression of the
    whole plane (source size known) at `level`, Frame_Content_Size written, no content checksum,
    no dictionary ID, single-threaded, every other parameter at libzstd's default."""
    return zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=False,
                                    write_dict_id=False, threads=0)


class PlaneEncoder:
    """Turns a chunk's (rows, M) code array into chunk bytes; reuses one zstd context."""

    def __init__(self, bpc, zstd_level):
        self._dtype = code_dtype(bpc)
        self._zstd = None if zstd_level is None else zstd_compressor(zstd_level)

    def encode_chunk(self, index, codes):
        """Chunk header plus planes for chunk `index` holding `codes` (rows, M)."""
        entries, planes = [], []
        for step in range(codes.shape[1]):
            raw = np.ascontiguousarray(codes[:, step], dtype=self._dtype).tobytes()
            stored, encoding = raw, ENCODING_RAW
            if self._zstd is not None:
                packed = self._zstd.compress(raw)
                if len(packed) < len(raw):
                    stored, encoding = packed, ENCODING_ZSTD
            entries.append(PlaneEntry(len(stored), len(raw), crc32(stored), encoding))
            planes.append(stored)
        return _chunk_header_bytes(index, codes.shape[0], entries) + b"".join(planes)


def decode_chunk_header(data, *, index, rows, M, bpc):
    """Decode the chunk header in `data` and check it against what the file header implies."""
    where = f"chunk {index}"
    body = data[:-CHUNK_CRC.size]
    (stored_crc,) = CHUNK_CRC.unpack_from(data, len(body))
    tag, got_index, got_rows, plane_count = CHUNK_PREFIX.unpack_from(data)
    if tag != CHUNK_TAG:
        raise QncFormatError(f"{where}: bad chunk tag {tag!r} (expected {CHUNK_TAG!r}); "
                             f"the code stream is corrupted or misframed")
    computed = crc32(body)
    if stored_crc != computed:
        raise QncFormatError(f"{where}: chunk header checksum mismatch (stored "
                             f"0x{stored_crc:08x}, computed 0x{computed:08x})")
    if (got_index, got_rows, plane_count) != (index, rows, M):
        raise QncFormatError(f"{where}: chunk header says chunk {got_index} with {got_rows} rows "
                             f"and {plane_count} planes; the file header implies chunk {index} "
                             f"with {rows} rows and {M} planes")
    planes = tuple(PlaneEntry(*PLANE_ENTRY.unpack_from(data, offset))
                   for offset in range(CHUNK_PREFIX.size, len(body), PLANE_ENTRY.size))
    for step, p in enumerate(planes, 1):
        _check_plane_entry(p, f"{where}, plane {step}", rows * bpc)
    return ChunkHeader(index, rows, planes)


def _check_plane_entry(p, where, raw_len):
    """Validate lengths and encoding of one plane-table row before any plane byte is read."""
    if p.encoding not in ENCODING_NAMES:
        raise QncFormatError(f"{where}: unknown plane encoding {p.encoding}")
    if p.raw_len != raw_len:
        raise QncFormatError(f"{where}: raw_len={p.raw_len}, expected rows * bytes_per_code = "
                             f"{raw_len}")
    if p.encoding == ENCODING_RAW and p.stored_len != raw_len:
        raise QncFormatError(f"{where}: raw plane has stored_len={p.stored_len}, "
                             f"expected {raw_len}")
    if p.encoding == ENCODING_ZSTD and not 0 < p.stored_len < raw_len:
        raise QncFormatError(f"{where}: zstd plane has stored_len={p.stored_len}, must be in "
                             f"[1, raw_len={raw_len})")
    if p.encoding == ENCODING_ZSTD and raw_len > ZSTD_MAX_EXPANSION * p.stored_len:
        raise QncFormatError(f"{where}: a zstd frame of stored_len={p.stored_len} bytes cannot "
                             f"decompress to raw_len={raw_len} (zstd expands at most "
                             f"{ZSTD_MAX_EXPANSION}x)")


def verify_planes(chunk, stored):
    """Check the stored bytes of all of `chunk`'s planes against their CRC-32s (no decoding)."""
    view, position = memoryview(stored), 0
    for step, entry in enumerate(chunk.planes, 1):
        computed = crc32(view[position:position + entry.stored_len])
        if computed != entry.crc32:
            raise QncFormatError(f"chunk {chunk.index}, plane {step}: checksum mismatch (stored "
                                 f"0x{entry.crc32:08x}, computed 0x{computed:08x}): the plane "
                                 f"is corrupted")
        position += entry.stored_len


def decode_plane(stored, entry, *, where, bpc, K):
    """Verify a plane's stored bytes and return its codes as a 1-D uint8/uint16 array.

    Codes are checked to be < K, so that a decoder can index its codebooks with them safely.
    """
    computed = crc32(stored)
    if computed != entry.crc32:
        raise QncFormatError(f"{where}: checksum mismatch (stored 0x{entry.crc32:08x}, "
                             f"computed 0x{computed:08x}): the plane is corrupted")
    raw = stored if entry.encoding == ENCODING_RAW else _unzstd(stored, entry.raw_len, where)
    native = native_code_dtype(bpc)
    codes = np.frombuffer(raw, dtype=code_dtype(bpc)).astype(native, copy=False)
    if K < 1 << (8 * bpc) and codes.max() >= K:
        raise QncFormatError(f"{where}: code {codes.max()} is not below K={K}")
    return codes


def _unzstd(stored, raw_len, where):
    """Decompress one zstd frame to exactly raw_len bytes, never producing more.

    The frame header must declare Frame_Content_Size = raw_len and no dictionary; both are
    checked before decompressing. A content checksum, when the frame has one, is verified by
    libzstd while decompressing."""
    try:
        params = zstandard.get_frame_parameters(bytes(stored[:18]))
        if params.content_size == zstandard.CONTENTSIZE_UNKNOWN:
            raise QncFormatError(f"{where}: zstd frame header lacks Frame_Content_Size")
        if params.content_size != raw_len:
            raise QncFormatError(f"{where}: zstd frame declares {params.content_size} bytes of "
                                 f"content, plane table says raw_len={raw_len}")
        if params.dict_id:
            raise QncFormatError(f"{where}: zstd frame needs dictionary {params.dict_id}; "
                                 f"planes are compressed without a dictionary")
        raw = zstandard.ZstdDecompressor().decompress(stored, max_output_size=raw_len,
                                                      allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise QncFormatError(f"{where}: invalid zstd frame or more than raw_len={raw_len} "
                             f"bytes of content: {exc}") from None
    if len(raw) != raw_len:
        raise QncFormatError(f"{where}: zstd frame decompressed to {len(raw)} bytes, "
                             f"expected raw_len={raw_len}")
    return raw
