"""Independent reader and emitter of the `.qnc` container, written from SPEC.md alone.

It imports nothing of qinco_codec: it is the second implementation that the package's reader
and writer are checked against (tests/test_spec_reader.py), and the structure-aware emitter the
fuzzer mutates files with (tests/fuzz_qnc.py). Everything here follows the text of SPEC.md; a
comment names the section each rule comes from.

* Reading: `spec_open(data)` checks the fixed header, the sections, the trailer and the index
  (section 11.1 steps 1-3) and returns a `SpecFile`; `spec_chunk_header`, `spec_read_chunk` and
  `spec_codes` read chunks and planes (steps 4-5). Every violation raises `SpecFormatError`;
  a bad request (a prefix length outside [1, M]) raises ValueError.
* The rule that matches a file to its model (section 13): `model_problem`.
* What a random-access prefix read touches (section 11.3): `random_access_bytes`.
* Writing: `QncParts` is a file as its content (header fields, sections, chunks of planes);
  `emit` serializes it, deriving every length, offset, count and CRC-32 unless told to write
  another value, and records where each field and CRC group lies (for the fuzzer's CRC repair).
  `spec_parts` / `spec_build` make a file from codes; `to_parts` turns a valid file back into
  parts. `canonical_json` is the JSON text of section 5.1.

SPEC.md gaps found while writing the first version of this reader, and how SPEC.md settles
each (this module follows the current text):

  G1 (section 5): the flags of the known types (1-3; 4 since 1.1) must equal the table's value
     exactly.
  G2 (sections 5, 5.1): canonical JSON is defined byte for byte; duplicate names at any depth
     and numbers overflowing binary64 are rejected.
  G3 (sections 6.2, 12): the zstd frame parameters behind reproducible bytes.
  G4 (sections 4, 6): C = ceil(n / chunk_rows) must be < 2^32.
  G5 (sections 4, 10): any header_size in [88, 4096] is accepted whatever version_minor is.
  G6 (section 11.3): a prefix read of b steps requires 1 <= b <= M.
  G7 (sections 1, 5, 8): section_header_crc32 and trailer_crc32: every byte is under a CRC.
  G8 (section 5): a section of type 0 is a format error.
  G9 (section 6.2): a zstd content checksum, when present, must be verified.
  G10 (section 13): the model's dim and K equal the header's, the header's M at most the
     model's (the file may store a prefix of the model's steps).
  G11 (section 5): `model_config` is an informative summary; a reader needs none of its keys.
  G12 (section 5): JSON nesting depth <= 64, integers in [-2^63, 2^64).
  G13 (section 11.3): an empty row range reads no chunk.
  G14 (sections 7, 11.1, 11.4): the index length follows from the header's C; index_crc32 is
     verified before any other index field is used; section headers of skipped sections are
     among the bytes a random-access read touches.

Version 1.2 (section 5.3, the `ivf` section, type 5) was added to this reader from the text of
section 5.3 alone: `_parse_ivf` checks the payload in the order that section lists and fills
`SpecFile.ivf` (a `SpecIvf`); `ivf_payload` builds a payload field by field (any field may be
given a wrong value, for the fuzzer and the refusal tests).
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from dataclasses import dataclass, field, replace

import numpy as np
import zstandard

# ---------------------------------------------------------------------------------------------
# Byte layout (sections 4-8)

MAGIC = b"\x89QNC\r\n\x1a\n"  # section 4
TRAILER_MAGIC = b"\x89QNCEND\n"  # section 8
CHUNK_TAG = b"QCHK"  # section 6.1
INDEX_TAG = b"QIDX"  # section 7
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # section 6.2
FIXED_HEADER_MIN = 88
FIXED_HEADER_MAX = 4096

HEADER = struct.Struct("<8sHHIQQIIIIBBH32s")      # 84 bytes, then extension bytes, then CRC
HEADER_KEYS = ("magic", "version_major", "version_minor", "header_size", "n", "sections_length",
               "dim", "K", "M", "chunk_rows", "source_dtype", "bytes_per_code", "header_flags",
               "model_sha256")
SECTION = struct.Struct("<IIQI")                    # type, flags, length, payload_crc32
CHUNK = struct.Struct("<4sIII")                     # tag, chunk_index, row_count, plane_count
PLANE = struct.Struct("<IIIB3s")                    # stored_len, raw_len, crc32, encoding, reserved
INDEX = struct.Struct("<4sIQ")                      # tag, reserved, chunk_count
ENTRY = struct.Struct("<QQ")                        # chunk_offset, chunk_length
TRAILER = struct.Struct("<QQ8s")                    # index_offset, index_length, magic
U32 = struct.Struct("<I")
SECTION_HEADER_SIZE = SECTION.size + 4  # section 5: ... payload_crc32, section_header_crc32
TRAILER_SIZE = TRAILER.size + 4  # section 8: index_offset, index_length, trailer_magic, crc

# numeric fields of each structure: name -> width in bytes (the fuzzer's field table)
HEADER_WIDTHS = {"version_major": 2, "version_minor": 2, "header_size": 4, "n": 8,
                 "sections_length": 8, "dim": 4, "K": 4, "M": 4, "chunk_rows": 4,
                 "source_dtype": 1, "bytes_per_code": 1, "header_flags": 2, "header_crc32": 4}
SECTION_WIDTHS = {"type": 4, "flags": 4, "length": 8, "payload_crc32": 4, "header_crc32": 4}
CHUNK_WIDTHS = {"chunk_index": 4, "row_count": 4, "plane_count": 4, "chunk_crc32": 4}
PLANE_WIDTHS = {"stored_len": 4, "raw_len": 4, "crc32": 4, "encoding": 1}
INDEX_WIDTHS = {"reserved": 4, "chunk_count": 8, "index_crc32": 4}
ENTRY_WIDTHS = {"offset": 8, "length": 8}
TRAILER_WIDTHS = {"index_offset": 8, "index_length": 8, "trailer_crc32": 4}

DTYPES = {  # section 4.1
    1: "float32", 2: "float16", 3: "bfloat16", 4: "float64", 5: "int8", 6: "uint8",
    7: "int16", 8: "uint16", 9: "int32", 10: "uint32", 11: "int64", 12: "uint64",
}
DTYPE_CODES = {v: k for k, v in DTYPES.items()}

SEC_MODEL_CONFIG, SEC_USER_METADATA, SEC_EMBEDDED_MODEL, SEC_QUALITY_REPORT = 1, 2, 3, 4
SEC_IVF = 5  # section 5.3, since version 1.2
SEC_IVF_RESIDUAL = 6  # section 5.4, since version 1.3
# section 5: occurrences allowed for the types version 1.3 knows (type 0: "never")
MAX_OCCURRENCES = {SEC_MODEL_CONFIG: 1, SEC_USER_METADATA: 1, SEC_EMBEDDED_MODEL: 1,
                   SEC_QUALITY_REPORT: 1, SEC_IVF: 1, SEC_IVF_RESIDUAL: 1}
REQUIRED = 1
# section 5, "flags (exact value)" column
EXACT_FLAGS = {SEC_MODEL_CONFIG: REQUIRED, SEC_USER_METADATA: 0, SEC_EMBEDDED_MODEL: 0,
               SEC_QUALITY_REPORT: 0, SEC_IVF: 0, SEC_IVF_RESIDUAL: REQUIRED}
JSON_TYPES = (SEC_MODEL_CONFIG, SEC_USER_METADATA, SEC_QUALITY_REPORT)
# sections 10, 12: the minor version that defines each type
SECTION_MINOR = {SEC_MODEL_CONFIG: 0, SEC_USER_METADATA: 0, SEC_EMBEDDED_MODEL: 0,
                 SEC_QUALITY_REPORT: 1, SEC_IVF: 2, SEC_IVF_RESIDUAL: 3}
# section 5.4: the ivf_residual payload, exactly 8 bytes: offset_kind (u32), 4 reserved bytes
IVF_RESIDUAL = struct.Struct("<I4s")
OFFSET_KIND_LIST_CENTROID = 1

# section 5.3: the ivf payload's head: n, dim, nlist, id_bytes, ids_encoding, 6 reserved bytes,
# ids_stored_len; then nlist * dim binary32 centroids; then the stored list ids
IVF_HEAD = struct.Struct("<QIIBB6sQ")  # 32 bytes
IVF_MAX_NLIST = 1 << 24

# section 5: JSON payload limits
MAX_JSON = 1 << 24
MAX_JSON_DEPTH = 64   # what a writer may use
JSON_INT_MIN, JSON_INT_END = -(1 << 63), 1 << 64  # a writer's integers lie in [JSON_INT_MIN, JSON_INT_END)
READ_MAX_JSON_DEPTH = 512   # what a reader must accept (section 5)
READ_MAX_INT_DIGITS = 4300


class SpecFormatError(ValueError):
    """A violation of SPEC.md found by this reader."""


def _need(cond, msg):
    if not cond:
        raise SpecFormatError(msg)


def crc32(data) -> int:
    """CRC-32/ISO-HDLC (section 2), through zlib."""
    return zlib.crc32(data) & 0xFFFFFFFF


def crc32_reference(data: bytes) -> int:
    """Appendix A, bit by bit."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xEDB88320 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def _take(data: bytes, off: int, size: int, what: str) -> bytes:
    # section 11.2: check declared sizes/offsets against the file size before reading
    _need(0 <= off and 0 <= size and off + size <= len(data),
          f"{what}: range [{off}, {off + size}) lies outside the file ({len(data)} bytes)")
    return data[off:off + size]


# ---------------------------------------------------------------------------------------------
# JSON payloads (section 5) and canonical JSON (section 5.1)

def _reject_constant(name):
    raise SpecFormatError(f"non-standard JSON constant {name}")


def _pairs_to_dict(pairs):
    # section 5: two members with the same name (after unescaping), at any depth -> reject
    names = [name for name, _ in pairs]
    _need(len(set(names)) == len(names), f"JSON object has a repeated member name in {names}")
    return dict(pairs)


def _binary64(text):
    # section 5: a number with fraction/exponent that overflows binary64 -> reject
    value = float(text)
    _need(value not in (float("inf"), float("-inf")), f"JSON number {text} overflows binary64")
    return value


def _readable_int(text):
    # section 5: a reader accepts integers of up to 4300 digits (earlier writers could write
    # them), judged on the digits before any conversion
    _need(len(text.lstrip("-")) <= READ_MAX_INT_DIGITS,
          f"JSON integer {text[:24]}... ({len(text.lstrip('-'))} digits) has more than "
          f"{READ_MAX_INT_DIGITS} digits")
    return int(text)


def json_depth(value) -> int:
    """Nesting depth as section 5 counts it: an array or object is one level deeper than the
    array or object holding it; the top-level object is at depth 1; scalars add nothing."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            stack.extend((child, d + 1) for child in (v.values() if isinstance(v, dict) else v))
    return deepest


def json_object(payload: bytes, what: str) -> dict:
    """Decode a JSON section payload with every rule of section 5."""
    _need(len(payload) <= MAX_JSON, f"{what}: JSON payload longer than 2^24 bytes")
    try:
        text = bytes(payload).decode("utf-8", errors="strict")
    except UnicodeDecodeError as e:
        raise SpecFormatError(f"{what}: invalid UTF-8 ({e})") from None
    _need(not text.startswith("\ufeff"), f"{what}: byte order mark")
    try:
        obj = json.loads(text, parse_constant=_reject_constant, parse_float=_binary64,
                         parse_int=_readable_int, object_pairs_hook=_pairs_to_dict)
    except json.JSONDecodeError as e:
        raise SpecFormatError(f"{what}: invalid JSON ({e})") from None
    except RecursionError:  # Python's parser gives up far deeper than the limit
        raise SpecFormatError(f"{what}: JSON nested deeper than {READ_MAX_JSON_DEPTH} levels") from None
    _need(isinstance(obj, dict), f"{what}: JSON value is not an object")
    depth = json_depth(obj)
    _need(depth <= READ_MAX_JSON_DEPTH, f"{what}: JSON nested {depth} levels deep, more than "
                                        f"{READ_MAX_JSON_DEPTH} levels")
    return obj


def canonical_json(obj) -> bytes:
    """Section 5.1."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


# ---------------------------------------------------------------------------------------------
# Reading (sections 4-9, 11)

@dataclass
class SpecSection:
    type: int
    flags: int
    offset: int  # of the section header
    length: int
    payload_crc32: int


@dataclass
class SpecFile:
    data: bytes
    version_major: int
    version_minor: int
    header_size: int
    n: int
    sections_length: int
    dim: int
    K: int
    M: int
    chunk_rows: int
    source_dtype_code: int
    bytes_per_code: int
    header_flags: int
    model_sha256: bytes
    sections: list = field(default_factory=list)
    model_config: dict | None = None
    user_metadata: dict | None = None
    embedded_model: bytes | None = None
    quality_report: dict | None = None  # section 5.2 (version 1.1)
    ivf: "SpecIvf | None" = None  # section 5.3 (version 1.2)
    residual_codes: bool = False  # section 5.4 (version 1.3): vectors add the list's centroid
    index_offset: int = 0
    index_length: int = 0
    chunks: list = field(default_factory=list)  # (chunk_offset, chunk_length)

    @property
    def data_start(self):
        return self.header_size + self.sections_length

    @property
    def C(self):
        return -(-self.n // self.chunk_rows)

    @property
    def source_dtype(self):
        return DTYPES[self.source_dtype_code]

    @property
    def code_dtype(self):
        return np.dtype("<u1") if self.bytes_per_code == 1 else np.dtype("<u2")

    def rows_in_chunk(self, c):
        return min(self.chunk_rows, self.n - c * self.chunk_rows)


@dataclass
class SpecIvf:
    """An ivf section as section 5.3 describes it."""
    nlist: int
    id_bytes: int
    ids_encoding: int
    reserved: bytes
    centroids: np.ndarray  # (nlist, dim) float32
    list_ids: np.ndarray   # (n,) unsigned, in row order


def _parse_ivf(payload: bytes, f: "SpecFile") -> SpecIvf:
    """Section 5.3, checked in the order its last paragraph gives (the payload CRC is already
    verified): the head's fields, the exact length, then the centroids, then the list ids."""
    _need(len(payload) >= 32, f"ivf: payload of {len(payload)} bytes is shorter than 32")
    n, dim, nlist, id_bytes, encoding, reserved, stored_len = IVF_HEAD.unpack_from(payload)
    _need(n == f.n, f"ivf: n={n} differs from the header's n={f.n}")
    _need(dim == f.dim, f"ivf: dim={dim} differs from the header's dim={f.dim}")
    _need(1 <= nlist <= IVF_MAX_NLIST, f"ivf: nlist={nlist} not in [1, 2^24]")
    _need(id_bytes == (2 if nlist <= 65536 else 4), f"ivf: id_bytes={id_bytes} does not match nlist={nlist}")
    _need(encoding in (0, 1), f"ivf: unknown ids_encoding {encoding}")
    raw_len = n * id_bytes
    if encoding == 0:
        _need(stored_len == raw_len, f"ivf: raw ids_stored_len {stored_len} != n * id_bytes = {raw_len}")
    else:
        _need(1 <= stored_len < raw_len, f"ivf: zstd ids_stored_len {stored_len} not in [1, {raw_len})")
        _need(raw_len <= 32768 * stored_len, "ivf: ids_raw_len > 32768 * ids_stored_len")
    _need(len(payload) == 32 + 4 * nlist * dim + stored_len,
          f"ivf: length {len(payload)} != 32 + 4 * nlist * dim + ids_stored_len")
    centroids = np.frombuffer(payload, "<f4", nlist * dim, 32).reshape(nlist, dim)
    _need(bool(np.isfinite(centroids).all()), "ivf: a centroid component is not finite")
    stored = payload[32 + 4 * nlist * dim:]
    raw = stored if encoding == 0 else _unzstd(stored, raw_len, "ivf list ids")
    ids = np.frombuffer(raw, "<u2" if id_bytes == 2 else "<u4")
    _need(n == 0 or int(ids.max()) < nlist, f"ivf: a list id is >= nlist={nlist}")
    return SpecIvf(nlist, id_bytes, encoding, reserved, centroids.astype(np.float32), ids)


def ivf_payload(centroids, list_ids, *, n=None, dim=None, nlist=None, id_bytes=None,
                ids_encoding=None, reserved=bytes(6), ids_stored_len=None, stored=None,
                level=3, tail=b"") -> bytes:
    """An ivf payload (section 5.3) of `centroids` (nlist, dim) and `list_ids` (n,): every field
    derived unless given (a wrong value is written as given). The list ids are stored as one
    zstd frame at `level` when strictly shorter (section 12; level None: raw), unless
    `ids_encoding`/`stored` say otherwise. `tail`: bytes appended after the list ids."""
    centroids = np.asarray(centroids, dtype="<f4")
    list_ids = np.asarray(list_ids)
    nl = centroids.shape[0] if nlist is None else nlist
    width = (2 if centroids.shape[0] <= 65536 else 4) if id_bytes is None else id_bytes
    raw = np.ascontiguousarray(list_ids, dtype="<u2" if width == 2 else "<u4").tobytes()
    if stored is None:
        stored, enc = raw, 0
        if level is not None and raw:
            z = spec_zstd(level).compress(raw)
            if len(z) < len(raw):
                stored, enc = z, 1
    else:
        enc = 0 if stored == raw else 1
    enc = enc if ids_encoding is None else ids_encoding
    head = IVF_HEAD.pack(len(list_ids) if n is None else n, centroids.shape[1] if dim is None else dim,
                         nl, width, enc, reserved, len(stored) if ids_stored_len is None else ids_stored_len)
    return head + centroids.tobytes() + stored + tail


def _parse_fixed_header(data: bytes) -> SpecFile:
    # section 11.1 step 1, in the order given there
    _need(len(data) >= 8 and data[:8] == MAGIC, "header: bad magic")
    _need(len(data) >= 16, "header: truncated")
    major, minor, header_size = struct.unpack_from("<HHI", data, 8)
    _need(major == 1, f"header: unsupported version_major {major}")  # before the CRC (section 10)
    _need(FIXED_HEADER_MIN <= header_size <= FIXED_HEADER_MAX,
          f"header: header_size {header_size} not in [88, 4096]")
    hdr = _take(data, 0, header_size, "header")
    (stored_crc,) = struct.unpack_from("<I", hdr, header_size - 4)
    _need(crc32(hdr[:header_size - 4]) == stored_crc, "header: checksum mismatch")
    n, sections_length, dim, K, M, chunk_rows, dt, bpc, hflags = struct.unpack_from("<QQIIIIBBH", hdr, 16)
    sha = hdr[52:84]
    _need(dim >= 1, "header: dim must be >= 1")
    _need(2 <= K <= 65536 and K & (K - 1) == 0, f"header: K={K} is not a power of two in [2, 65536]")
    _need(1 <= M <= 65535, f"header: M={M} not in [1, 65535]")
    _need(1 <= chunk_rows <= 1 << 24, f"header: chunk_rows={chunk_rows} not in [1, 2^24]")
    _need(bpc == (1 if K <= 256 else 2), f"header: bytes_per_code={bpc} does not match K={K}")
    _need(dt in DTYPES, f"header: unknown source_dtype {dt}")
    # header_flags and bytes [84, header_size - 4): reserved, ignored (covered by the CRC)
    f = SpecFile(data, major, minor, header_size, n, sections_length, dim, K, M, chunk_rows,
                 dt, bpc, hflags, bytes(sha))
    _need(f.C < 1 << 32, "header: ceil(n / chunk_rows) must be < 2^32")  # section 4 (G4)
    return f


def _parse_sections(f: SpecFile, verify_skipped: bool = True) -> None:
    data = f.data
    end = f.data_start
    # the sections area, an index of >= 20 bytes and the trailer must fit in the file
    _need(end + 20 + TRAILER_SIZE <= len(data),
          f"sections: sections_length={f.sections_length} runs past the end of the file")
    counts = {}
    pos = f.header_size
    while pos < end:
        _need(end - pos >= SECTION_HEADER_SIZE, f"section at {pos}: header crosses the end of the sections area")
        typ, sflags, length, pcrc, hcrc = struct.unpack_from("<IIQII", data, pos)
        # section 5: the header CRC first, before type, flags or length are used
        _need(crc32(data[pos:pos + 20]) == hcrc, f"section at {pos}: section header checksum mismatch")
        _need(typ != 0, f"section at {pos}: type 0 is a format error")
        if typ in EXACT_FLAGS:
            _need(sflags == EXACT_FLAGS[typ],
                  f"section at {pos}: type {typ} must have flags {EXACT_FLAGS[typ]}, has {sflags:#x}")
        _need(length <= end - pos - SECTION_HEADER_SIZE,
              f"section at {pos} (type {typ}): length {length} exceeds the sections area")
        payload = data[pos + SECTION_HEADER_SIZE:pos + SECTION_HEADER_SIZE + length]
        if typ in MAX_OCCURRENCES:
            counts[typ] = counts.get(typ, 0) + 1
            _need(counts[typ] <= MAX_OCCURRENCES[typ], f"section type {typ}: occurs more often than allowed")
        else:  # unknown: bits 1-31 of flags ignored, REQUIRED -> reject
            _need(not (sflags & REQUIRED), f"section type {typ:#x}: unknown and REQUIRED")
        # the CRC of every payload this reader uses; by default also of the sections it skips
        # (allowed: a reader MAY skip verifying those, section 5)
        if typ in MAX_OCCURRENCES or verify_skipped:
            _need(crc32(payload) == pcrc, f"section type {typ}: payload checksum mismatch")
        if typ == SEC_MODEL_CONFIG:
            f.model_config = json_object(payload, "model_config")
        elif typ == SEC_USER_METADATA:
            f.user_metadata = json_object(payload, "user_metadata")
        elif typ == SEC_QUALITY_REPORT:  # informative (section 5): any keys are accepted
            f.quality_report = json_object(payload, "quality_report")
        elif typ == SEC_IVF:  # this reader uses every section it knows: checked at open
            f.ivf = _parse_ivf(payload, f)
        elif typ == SEC_IVF_RESIDUAL:
            _need(length == IVF_RESIDUAL.size,
                  f"ivf_residual: payload of {length} bytes, must be exactly {IVF_RESIDUAL.size}")
            kind, _reserved = IVF_RESIDUAL.unpack(payload)
            _need(kind == OFFSET_KIND_LIST_CENTROID, f"ivf_residual: unknown offset_kind {kind}")
            f.residual_codes = True
        elif typ == SEC_EMBEDDED_MODEL:
            _need(hashlib.sha256(payload).digest() == f.model_sha256,
                  "embedded_model: SHA-256 does not match model_sha256")
            f.embedded_model = bytes(payload)
        f.sections.append(SpecSection(typ, sflags, pos, length, pcrc))
        pos += SECTION_HEADER_SIZE + length
    _need(pos == end, "sections: do not exactly fill the sections area")
    _need(counts.get(SEC_MODEL_CONFIG, 0) == 1, "sections: model_config missing")
    _need(not f.residual_codes or f.ivf is not None,
          "sections: ivf_residual without an ivf section")


def spec_vector_offsets(f: SpecFile, rows=None) -> np.ndarray | None:
    """Section 13 / 5.4: what is added to the model's output of each row (rows: None for all, or
    row numbers) to give its vector: the centroid of its ivf list when the file has an
    ivf_residual section, else nothing (None)."""
    if not f.residual_codes:
        return None
    ids = f.ivf.list_ids if rows is None else f.ivf.list_ids[np.asarray(rows)]
    return f.ivf.centroids[ids.astype(np.int64)]


def check_index(idx: bytes, f: SpecFile, index_offset: int) -> list:
    """The index (section 7), its length already known to be 20 + 16*C (C from the header):
    index_crc32 first, then tag, chunk_count and the tiling rule (section 11.1 step 3).
    Returns [(chunk_offset, chunk_length)]."""
    C = f.C
    _need(len(idx) == 20 + 16 * C, f"index: {len(idx)} bytes, C={C} chunks need {20 + 16 * C}")
    (icrc,) = struct.unpack_from("<I", idx, 16 + 16 * C)
    _need(crc32(idx[:16 + 16 * C]) == icrc, "index: checksum mismatch")
    _need(idx[:4] == INDEX_TAG, "index: bad tag")
    (chunk_count,) = struct.unpack_from("<Q", idx, 8)
    _need(chunk_count == C, f"index: chunk_count {chunk_count} != {C}")
    expect = f.data_start
    chunks = []
    for c in range(C):
        off, length = struct.unpack_from("<QQ", idx, 16 + 16 * c)
        _need(off == expect, f"index: chunk {c} offset {off} != {expect}")
        _need(length >= 20 + 17 * f.M, f"index: chunk {c} length {length} < 20 + 17*M")
        chunks.append((off, length))
        expect = off + length
    _need(expect == index_offset, "index: chunks do not end at index_offset")
    return chunks


def _parse_trailer_and_index(f: SpecFile) -> None:
    data = f.data
    size = len(data)
    _need(size >= TRAILER_SIZE, "trailer: file too short")
    index_offset, index_length, tmagic, tcrc = struct.unpack_from("<QQ8sI", data, size - TRAILER_SIZE)
    _need(tmagic == TRAILER_MAGIC, "trailer: bad magic")
    _need(crc32(data[size - TRAILER_SIZE:size - 4]) == tcrc, "trailer: checksum mismatch")
    _need(index_offset >= f.data_start, "trailer: index_offset < data_start")
    _need(index_length >= 20, "trailer: index_length < 20")
    _need(index_offset + index_length == size - TRAILER_SIZE, "trailer: index does not end where the trailer starts")
    C = f.C
    _need(index_length == 20 + 16 * C, f"index: index_length {index_length} != 20 + 16*C (C={C})")
    idx = _take(data, index_offset, index_length, "index")
    f.chunks = check_index(idx, f, index_offset)
    f.index_offset, f.index_length = index_offset, index_length


def spec_open(data: bytes, verify_skipped: bool = True) -> SpecFile:
    """Seeking reader (section 11.3 steps 1-2): fixed header, sections, trailer, index.
    `verify_skipped=False` leaves the payload CRC of sections of unknown types unchecked, as
    section 5 allows (MAY)."""
    data = bytes(data)
    f = _parse_fixed_header(data)
    _parse_sections(f, verify_skipped)
    _parse_trailer_and_index(f)
    return f


def spec_chunk_header(f: SpecFile, c: int) -> list:
    """Parse and verify chunk c's header (section 6.1, 11.1 step 4). Returns plane entries."""
    off, length = f.chunks[c]
    M = f.M
    rows = f.rows_in_chunk(c)
    hlen = 20 + 16 * M
    ch = _take(f.data, off, hlen, f"chunk {c} header")
    _need(ch[:4] == CHUNK_TAG, f"chunk {c}: bad tag")
    (hcrc,) = struct.unpack_from("<I", ch, 16 + 16 * M)
    _need(crc32(ch[:16 + 16 * M]) == hcrc, f"chunk {c}: header checksum mismatch")
    chunk_index, row_count, plane_count = struct.unpack_from("<III", ch, 4)
    _need(chunk_index == c, f"chunk {c}: chunk_index {chunk_index}")
    _need(row_count == rows, f"chunk {c}: row_count {row_count} != {rows}")
    _need(plane_count == M, f"chunk {c}: plane_count {plane_count} != M={M}")
    entries = []
    total = hlen
    pos = off + hlen
    for s in range(1, M + 1):
        stored_len, raw_len, pcrc, enc = struct.unpack_from("<IIIB", ch, 16 + 16 * (s - 1))
        _need(enc in (0, 1), f"chunk {c}, plane {s}: unknown encoding {enc}")
        _need(raw_len == rows * f.bytes_per_code, f"chunk {c}, plane {s}: raw_len {raw_len} != rows*bytes_per_code")
        if enc == 0:
            _need(stored_len == raw_len, f"chunk {c}, plane {s}: raw plane with stored_len != raw_len")
        else:
            _need(1 <= stored_len < raw_len, f"chunk {c}, plane {s}: zstd stored_len not in [1, raw_len)")
        entries.append(dict(offset=pos, stored_len=stored_len, raw_len=raw_len, crc32=pcrc, encoding=enc))
        pos += stored_len
        total += stored_len
    _need(total == length, f"chunk {c}: header + stored lengths {total} != index chunk_length {length}")
    return entries


def _unzstd(stored: bytes, raw_len: int, where: str) -> bytes:
    # section 6.2 and 11.2
    _need(stored[:4] == ZSTD_MAGIC, f"{where}: not a zstd frame (bad or skippable-frame magic)")
    try:
        params = zstandard.get_frame_parameters(stored)
    except zstandard.ZstdError as e:
        raise SpecFormatError(f"{where}: bad zstd frame header ({e})") from None
    _need(params.dict_id == 0, f"{where}: zstd frame uses a dictionary")
    # section 6.2: Frame_Content_Size MUST be present and equal raw_len
    _need(params.content_size != zstandard.CONTENTSIZE_UNKNOWN, f"{where}: no Frame_Content_Size")
    _need(params.content_size == raw_len,
          f"{where}: Frame_Content_Size {params.content_size} != raw_len {raw_len}")
    # a content checksum, if present, is verified by libzstd during decompression (G9)
    try:
        raw = zstandard.ZstdDecompressor().decompress(
            stored, max_output_size=raw_len, allow_extra_data=False, read_across_frames=False)
    except zstandard.ZstdError as e:
        raise SpecFormatError(f"{where}: zstd error ({e})") from None
    _need(len(raw) == raw_len, f"{where}: zstd frame decompressed to {len(raw)} bytes, not {raw_len}")
    return raw


def spec_read_chunk(f: SpecFile, c: int, b: int, stats: dict | None = None) -> np.ndarray:
    """Codes of steps 1..b of chunk c, shape (rows_c, b) (section 11.3 step 3)."""
    entries = spec_chunk_header(f, c)
    rows = f.rows_in_chunk(c)
    out = np.empty((rows, b), dtype=f.code_dtype.newbyteorder("="))
    for s in range(1, b + 1):
        e = entries[s - 1]
        where = f"chunk {c}, plane {s}"
        stored = _take(f.data, e["offset"], e["stored_len"], where)
        _need(crc32(stored) == e["crc32"], f"{where}: checksum mismatch")  # before decompressing
        if e["encoding"] == 0:
            raw = stored
        else:
            raw = _unzstd(stored, e["raw_len"], where)
        codes = np.frombuffer(raw, dtype=f.code_dtype)
        _need(int(codes.max()) < f.K, f"{where}: code >= K={f.K}")
        out[:, s - 1] = codes
        if stats is not None:
            stats[e["encoding"]] = stats.get(e["encoding"], 0) + 1
    return out


def check_steps(f: SpecFile, steps):
    """Section 11.3 (G6): a prefix of b steps needs 1 <= b <= M; anything else is a usage
    error (ValueError, not a format error)."""
    b = f.M if steps is None else steps
    if not 1 <= b <= f.M:
        raise ValueError(f"steps must be in [1, {f.M}]")
    return b


def chunks_for_rows(f: SpecFile, start: int, stop: int) -> range:
    """The chunks holding rows [start, stop): none for an empty range (G13)."""
    if stop <= start:
        return range(0)
    return range(start // f.chunk_rows, -(-stop // f.chunk_rows))


def spec_codes(data, steps: int | None = None, stats: dict | None = None,
               rows: slice | None = None) -> np.ndarray:
    """Codes of steps 1..b (default M) of all rows, or of the rows of a step-1 slice (read
    from the chunks holding them only); (rows, b) uint8 or uint16. `data`: the file's bytes,
    or a SpecFile spec_open returned."""
    f = data if isinstance(data, SpecFile) else spec_open(data)
    b = check_steps(f, steps)
    rows = slice(None) if rows is None else rows
    if rows.step not in (None, 1):
        raise ValueError(f"rows slice must have step 1, got {rows.step}")
    start, stop, _ = rows.indices(f.n)
    stop = max(start, stop)
    out = np.empty((stop - start, b), dtype=np.uint8 if f.bytes_per_code == 1 else np.uint16)
    for c in chunks_for_rows(f, start, stop):
        r0 = c * f.chunk_rows
        block = spec_read_chunk(f, c, b, stats)
        lo, hi = max(start, r0), min(stop, r0 + len(block))
        out[lo - start:hi - start] = block[lo - r0:hi - r0]
    return out


def random_access_bytes(f: SpecFile, steps: int, chunks) -> int:
    """Section 11.3: the bytes a random-access reader reads to decode `steps` steps of the rows
    in `chunks` (the embedded model and unknown sections skipped, the JSON sections read): the
    fixed header, every section header, the JSON payloads, the trailer, the index, and per
    chunk its header and first `steps` planes."""
    total = f.header_size + TRAILER_SIZE + f.index_length
    for s in f.sections:
        total += SECTION_HEADER_SIZE + (s.length if s.type in JSON_TYPES else 0)
    for c in chunks:
        total += 20 + 16 * f.M + sum(e["stored_len"] for e in spec_chunk_header(f, c)[:steps])
    return total


def model_problem(f: SpecFile, *, dim: int, K: int, M: int) -> str | None:
    """Section 13 (G10): why a model of (dim, K, M) cannot decode this file, or None. The
    header's dim and K must equal the model's; the header's M (steps stored) must be at most
    the model's M, since a file may store a prefix of the model's steps."""
    if dim != f.dim or K != f.K or M < f.M:
        return (f"model (dim={dim}, K={K}, M={M}) cannot decode a file with dim={f.dim}, "
                f"K={f.K}, M={f.M}: dim and K must be equal and M at least the file's")
    return None


def to_source_dtype(values, name: str) -> np.ndarray:
    """Section 4.1: decoded binary32 values converted to the source dtype `name`: floats by
    round-to-nearest-even, integers rounded to nearest (ties to even) then clamped."""
    values = np.asarray(values, dtype=np.float32)
    if name == "bfloat16":  # the upper 16 bits of the binary32, rounded to nearest even
        bits = values.view(np.uint32).astype(np.uint64)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        return rounded.astype(np.uint16)  # the bfloat16 bit patterns
    dtype = np.dtype(name)
    if dtype.kind == "f":
        return values.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.rint(values.astype(np.float64)), info.min, info.max).astype(dtype)


# ---------------------------------------------------------------------------------------------
# Writing: a file as its content, emitted with every derived field computed (section 12)

@dataclass
class Plane:
    encoding: int
    reserved: bytes
    raw_len: int
    stored: bytes


@dataclass
class Chunk:
    tag: bytes
    index: int
    rows: int
    planes: list


@dataclass
class Section:
    type: int
    flags: int
    payload: bytes


@dataclass
class QncParts:
    """A .qnc file as its content; lengths, offsets and CRCs are derived when emitted."""
    header: dict
    extension: bytes
    sections: list
    chunks: list
    index_tag: bytes = INDEX_TAG
    index_reserved: int = 0
    trailer_magic: bytes = TRAILER_MAGIC

    def copy(self):
        return QncParts(dict(self.header), self.extension,
                        [replace(s) for s in self.sections],
                        [replace(c, planes=[replace(p) for p in c.planes]) for c in self.chunks],
                        self.index_tag, self.index_reserved, self.trailer_magic)


def to_parts(data: bytes) -> QncParts:
    """QncParts of a valid file (checked by spec_open and every chunk header on the way)."""
    f = spec_open(data)
    header = dict(zip(HEADER_KEYS, HEADER.unpack_from(f.data)))
    sections = [Section(s.type, s.flags,
                        f.data[s.offset + SECTION_HEADER_SIZE:s.offset + SECTION_HEADER_SIZE + s.length])
                for s in f.sections]
    chunks = []
    for c, (offset, _) in enumerate(f.chunks):
        planes = []
        for j, e in enumerate(spec_chunk_header(f, c)):
            reserved = f.data[offset + CHUNK.size + j * PLANE.size + 13:offset + CHUNK.size + (j + 1) * PLANE.size]
            planes.append(Plane(e["encoding"], reserved, e["raw_len"],
                                f.data[e["offset"]:e["offset"] + e["stored_len"]]))
        chunks.append(Chunk(CHUNK_TAG, c, f.rows_in_chunk(c), planes))
    (index_reserved,) = struct.unpack_from("<I", f.data, f.index_offset + 4)
    return QncParts(header, f.data[HEADER.size:f.header_size - 4], sections, chunks,
                    INDEX_TAG, index_reserved, TRAILER_MAGIC)


class Emitted:
    """Bytes of an emitted file plus, for CRC repair after byte-level damage, the CRC groups
    (level, crc_offset, covered_start, covered_end) and the field table (offset, size, key)."""

    def __init__(self):
        self.buf = bytearray()
        self.groups = []
        self.fields = []

    def put(self, key, fmt, value):
        self.fields.append((len(self.buf), struct.calcsize(fmt), key))
        self.buf += struct.pack(fmt, value)

    def raw(self, key, data):
        self.fields.append((len(self.buf), len(data), key))
        self.buf += data


def emit(parts, overrides=None):
    """Serialize `parts`; every derived field (lengths, offsets, counts, CRCs) is computed unless
    `overrides` maps its key to a value, which is then written as is (CRCs covering it are
    computed over the overridden bytes). Returns an Emitted."""
    ov = overrides or {}
    val = lambda key, computed: ov.get(key, computed)  # noqa: E731
    e = Emitted()

    # sections first (their total length goes in the header)
    sec = Emitted()
    for i, s in enumerate(parts.sections):
        start = len(sec.buf)
        sec.put(("section", i, "type"), "<I", val(("section", i, "type"), s.type))
        sec.put(("section", i, "flags"), "<I", val(("section", i, "flags"), s.flags))
        sec.put(("section", i, "length"), "<Q", val(("section", i, "length"), len(s.payload)))
        sec.put(("section", i, "payload_crc32"), "<I",
                val(("section", i, "payload_crc32"), crc32(s.payload)))
        sec.put(("section", i, "header_crc32"), "<I",
                val(("section", i, "header_crc32"), crc32(bytes(sec.buf[start:start + 20]))))
        sec.groups += [(0, start + 16, start + 24, start + 24 + len(s.payload)),
                       (1, start + 20, start, start + 20)]
        sec.raw(("section", i, "payload"), s.payload)

    h = parts.header
    for key in HEADER_KEYS:
        computed = len(sec.buf) if key == "sections_length" else h[key]
        if key in ("magic", "model_sha256"):
            e.raw(("header", 0, key), ov.get(("header", 0, key), computed))
        else:
            fmt = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}[HEADER_WIDTHS[key]]
            e.put(("header", 0, key), fmt, val(("header", 0, key), computed))
    e.raw(("header", 0, "extension"), parts.extension)
    e.put(("header", 0, "header_crc32"), "<I", val(("header", 0, "header_crc32"), crc32(bytes(e.buf))))
    e.groups.append((1, len(e.buf) - 4, 0, len(e.buf) - 4))

    base = len(e.buf)
    e.buf += sec.buf
    e.fields += [(off + base, size, key) for off, size, key in sec.fields]
    e.groups += [(lv, crc + base, s + base, t + base) for lv, crc, s, t in sec.groups]

    entries = []
    for c, ch in enumerate(parts.chunks):
        start = len(e.buf)
        e.raw(("chunk", c, "tag"), val(("chunk", c, "tag"), ch.tag))
        e.put(("chunk", c, "chunk_index"), "<I", val(("chunk", c, "chunk_index"), ch.index))
        e.put(("chunk", c, "row_count"), "<I", val(("chunk", c, "row_count"), ch.rows))
        e.put(("chunk", c, "plane_count"), "<I", val(("chunk", c, "plane_count"), len(ch.planes)))
        data_at = start + CHUNK.size + PLANE.size * len(ch.planes) + 4
        for j, p in enumerate(ch.planes):
            key = lambda name: ("plane", (c, j), name)  # noqa: E731
            e.put(key("stored_len"), "<I", val(key("stored_len"), len(p.stored)))
            e.put(key("raw_len"), "<I", val(key("raw_len"), p.raw_len))
            e.put(key("crc32"), "<I", val(key("crc32"), crc32(p.stored)))
            e.put(key("encoding"), "<B", val(key("encoding"), p.encoding))
            e.raw(key("reserved"), val(key("reserved"), p.reserved))
            e.groups.append((0, len(e.buf) - 8, data_at, data_at + len(p.stored)))
            data_at += len(p.stored)
        e.put(("chunk", c, "chunk_crc32"), "<I",
              val(("chunk", c, "chunk_crc32"), crc32(bytes(e.buf[start:]))))
        e.groups.append((1, len(e.buf) - 4, start, len(e.buf) - 4))
        for j, p in enumerate(ch.planes):
            e.raw(("plane", (c, j), "data"), p.stored)
        entries.append((start, len(e.buf) - start))

    index_offset = len(e.buf)
    e.raw(("index", 0, "tag"), parts.index_tag)
    e.put(("index", 0, "reserved"), "<I", val(("index", 0, "reserved"), parts.index_reserved))
    e.put(("index", 0, "chunk_count"), "<Q", val(("index", 0, "chunk_count"), len(entries)))
    for c, (offset, length) in enumerate(entries):
        e.put(("entry", c, "offset"), "<Q", val(("entry", c, "offset"), offset))
        e.put(("entry", c, "length"), "<Q", val(("entry", c, "length"), length))
    e.put(("index", 0, "index_crc32"), "<I",
          val(("index", 0, "index_crc32"), crc32(bytes(e.buf[index_offset:]))))
    e.groups.append((1, len(e.buf) - 4, index_offset, len(e.buf) - 4))
    index_length = len(e.buf) - index_offset

    start = len(e.buf)
    e.put(("trailer", 0, "index_offset"), "<Q", val(("trailer", 0, "index_offset"), index_offset))
    e.put(("trailer", 0, "index_length"), "<Q", val(("trailer", 0, "index_length"), index_length))
    e.raw(("trailer", 0, "magic"), parts.trailer_magic)
    e.put(("trailer", 0, "trailer_crc32"), "<I",
          val(("trailer", 0, "trailer_crc32"), crc32(bytes(e.buf[start:]))))
    e.groups.append((1, len(e.buf) - 4, start, len(e.buf) - 4))
    return e


def repair_crcs(buf, groups, dirty):
    """Recompute, innermost first, every CRC whose covered bytes intersect a dirty range, and
    cascade (a rewritten CRC field dirties the structures that cover it). In place."""
    dirty = list(dirty)
    for level in (0, 1):
        for lv, at, start, end in groups:
            if lv != level or end > len(buf) or at + 4 > len(buf):
                continue
            if any(a < end and start < b for a, b in dirty):
                buf[at:at + 4] = U32.pack(crc32(bytes(buf[start:end])))
                dirty.append((at, at + 4))
    return buf


def numeric_fields(emitted):
    """(key, width) of every integer field of an emitted file."""
    out = []
    for _, size, key in emitted.fields:
        kind, _, name = key
        widths = {"header": HEADER_WIDTHS, "section": SECTION_WIDTHS, "chunk": CHUNK_WIDTHS,
                  "plane": PLANE_WIDTHS, "index": INDEX_WIDTHS, "entry": ENTRY_WIDTHS,
                  "trailer": TRAILER_WIDTHS}[kind]
        if name in widths:
            out.append((key, widths[name]))
    return out


def spec_zstd(level=3):
    """Section 12: one-shot, content size written, no checksum, no dictionary ID, 1 thread."""
    return zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=False,
                                    write_dict_id=False, threads=0)


def default_plane(level=3):
    """A plane encoder (chunk, step, raw bytes) -> (encoding, stored bytes, raw_len): zstd at
    `level` kept only when strictly shorter (section 6.2); None: every plane raw."""
    cctx = spec_zstd(level) if level is not None else None

    def enc(c, s, raw):
        if level is not None:
            z = cctx.compress(raw)
            if len(z) < len(raw):
                return 1, z, len(raw)
        return 0, raw, len(raw)
    return enc


def spec_parts(codes, *, K, chunk_rows, dim=4, source_dtype=1, model_sha256=bytes(32),
               sections=None, plane=None, version=None, header_ext=b"", header_flags=0,
               M=None, n=None, bytes_per_code=None) -> QncParts:
    """The parts of a .qnc file holding `codes` (section 12). sections: list of (type, flags,
    payload); plane: a plane encoder as returned by default_plane (zstd level 3 by default);
    version: (1, the lowest minor defining every section's type) unless given (section 12);
    M, n, bytes_per_code: header values other than those the codes imply."""
    codes = np.asarray(codes)
    bpc = (1 if K <= 256 else 2) if bytes_per_code is None else bytes_per_code
    if sections is None:
        sections = [(1, 1, canonical_json({"arch": "test"}))]
    plane = plane or default_plane()
    if version is None:
        version = (1, max((SECTION_MINOR.get(t, 0) for t, _, _ in sections), default=0))
    header = dict(magic=MAGIC, version_major=version[0], version_minor=version[1],
                  header_size=88 + len(header_ext), n=codes.shape[0] if n is None else n,
                  sections_length=None, dim=dim, K=K, M=codes.shape[1] if M is None else M,
                  chunk_rows=chunk_rows, source_dtype=source_dtype, bytes_per_code=bpc,
                  header_flags=header_flags, model_sha256=model_sha256)
    dt = "<u1" if bpc == 1 else "<u2"
    chunks = []
    for c in range(-(-codes.shape[0] // chunk_rows)):
        block = codes[c * chunk_rows:(c + 1) * chunk_rows]
        planes = []
        for s in range(1, block.shape[1] + 1):
            enc, stored, raw_len = plane(c, s, np.ascontiguousarray(block[:, s - 1]).astype(dt).tobytes())
            planes.append(Plane(enc, bytes(3), raw_len, stored))
        chunks.append(Chunk(CHUNK_TAG, c, block.shape[0], planes))
    return QncParts(header, header_ext, [Section(t, fl, p) for t, fl, p in sections], chunks)


def spec_build(codes, **kwargs) -> bytes:
    """The bytes of the file spec_parts describes."""
    return bytes(emit(spec_parts(codes, **kwargs)).buf)
