"""Byte layout of the .qnc container: magic numbers, versions, enums, limits, struct layouts and
the checksum. Every number here is normative and mirrors SPEC.md; the encoders and decoders in the
sibling modules take their widths and offsets from these definitions only.

All integers are little-endian (the `<` in every struct format) and no struct has padding.
"""
import struct
import zlib

MAGIC = b"\x89QNC\r\n\x1a\n"
TRAILER_MAGIC = b"\x89QNCEND\n"
CHUNK_TAG = b"QCHK"
INDEX_TAG = b"QIDX"

VERSION_MAJOR = 1
VERSION_MINOR = 3  # the latest minor version this implementation reads and writes

# Fixed header: magic, version_major, version_minor, header_size, n, sections_length, dim, K, M,
# chunk_rows, source_dtype, bytes_per_code, header_flags, model_sha256; then (after any bytes a
# later minor version appends) header_crc32 as the last 4 bytes of header_size.
HEADER_PREFIX = struct.Struct("<8sHHI")  # the 16 bytes a reader needs before trusting the rest
HEADER_FIELDS = struct.Struct("<8sHHIQQIIIIBBH32s")
HEADER_CRC = struct.Struct("<I")
HEADER_SIZE_V1_0 = HEADER_FIELDS.size + HEADER_CRC.size  # 88
MAX_HEADER_SIZE = 4096

# Section header: type, flags, payload length, CRC-32 of the payload, then a CRC-32 of those 20
# bytes, so that type, flags and length are as well protected as the payload.
SECTION_FIELDS = struct.Struct("<IIQI")
SECTION_CRC = struct.Struct("<I")
SECTION_HEADER_SIZE = SECTION_FIELDS.size + SECTION_CRC.size  # 24
SECTION_FLAG_REQUIRED = 0x1

SECTION_RESERVED = 0  # never valid

SECTION_MODEL_CONFIG = 1
SECTION_USER_METADATA = 2
SECTION_EMBEDDED_MODEL = 3
SECTION_QUALITY_REPORT = 4  # since version 1.1
SECTION_IVF = 5  # since version 1.2: coarse centroids and each row's inverted list (formats/ivf.py)
# since version 1.3, REQUIRED: the codes are residuals to the ivf centroids (formats/residual.py)
SECTION_IVF_RESIDUAL = 6
SECTION_NAMES = {
    SECTION_MODEL_CONFIG: "model_config",
    SECTION_USER_METADATA: "user_metadata",
    SECTION_EMBEDDED_MODEL: "embedded_model",
    SECTION_QUALITY_REPORT: "quality_report",
    SECTION_IVF: "ivf",
    SECTION_IVF_RESIDUAL: "ivf_residual",
}
# The minor version that defines each section type: a writer writes the highest among the
# sections of its file, so a file without a 1.1 section stays a 1.0 file, byte for byte.
SECTION_MINOR = {
    SECTION_MODEL_CONFIG: 0,
    SECTION_USER_METADATA: 0,
    SECTION_EMBEDDED_MODEL: 0,
    SECTION_QUALITY_REPORT: 1,
    SECTION_IVF: 2,
    SECTION_IVF_RESIDUAL: 3,
}
# The exact flags of each known section type; readers reject any other value.
SECTION_FLAGS = {
    SECTION_MODEL_CONFIG: SECTION_FLAG_REQUIRED,
    SECTION_USER_METADATA: 0,
    SECTION_EMBEDDED_MODEL: 0,
    SECTION_QUALITY_REPORT: 0,
    SECTION_IVF: 0,
    SECTION_IVF_RESIDUAL: SECTION_FLAG_REQUIRED,
}
JSON_SECTIONS = (SECTION_MODEL_CONFIG, SECTION_USER_METADATA, SECTION_QUALITY_REPORT)
MAX_JSON_SECTION = 1 << 24  # bytes; bounds what a reader parses as JSON
MAX_JSON_DEPTH = 64  # nesting levels a writer may use; the top-level object is level 1
JSON_INT_MIN, JSON_INT_END = -(1 << 63), 1 << 64  # a writer's JSON integers lie in [JSON_INT_MIN, JSON_INT_END)
# What a reader must still accept: writers before these limits were set (1.0 files) could write up
# to Python's 4300-digit integers and hundreds of nesting levels (SPEC.md 5).
READ_MAX_JSON_DEPTH = 512
READ_MAX_INT_DIGITS = 4300

# ivf section payload (SPEC.md 5.3): a fixed 32-byte head (n, dim, nlist, id_bytes,
# ids_encoding, 6 reserved bytes, ids_stored_len), then nlist x dim float32 centroids, then the
# list id of every row (u16 or u32 each, raw or one zstd frame). Its length is exactly
# IVF_HEAD.size + 4 * nlist * dim + ids_stored_len: nothing may follow.
IVF_HEAD = struct.Struct("<QIIBB6xQ")
IVF_CENTROID_DTYPE = "<f4"
MAX_NLIST = 1 << 24

# ivf_residual section payload (SPEC.md 5.4): offset_kind (u32), then 4 reserved bytes; exactly
# 8 bytes. offset_kind 1: a row's vector is its decoded residual plus the centroid of its list.
IVF_RESIDUAL_PAYLOAD = struct.Struct("<I4x")
OFFSET_LIST_CENTROID = 1


def ivf_id_bytes(nlist):
    """Width of one stored list id: 2 bytes for nlist <= 65536, else 4."""
    return 2 if nlist <= 1 << 16 else 4


def ivf_id_dtype(id_bytes):
    """Little-endian numpy dtype string of a stored list id of `id_bytes` bytes."""
    return "<u2" if id_bytes == 2 else "<u4"


# Chunk header: tag, chunk_index, row_count, plane_count, then plane_count plane entries
# (stored_len, raw_len, crc32 of the stored bytes, encoding, 3 reserved bytes), then a CRC-32 of
# everything before it in the chunk header.
CHUNK_PREFIX = struct.Struct("<4sIII")
PLANE_ENTRY = struct.Struct("<IIIB3x")
CHUNK_CRC = struct.Struct("<I")

ENCODING_RAW = 0
ENCODING_ZSTD = 1
ENCODING_NAMES = {ENCODING_RAW: "raw", ENCODING_ZSTD: "zstd"}
ZSTD_DEFAULT_LEVEL = 3
# Every zstd block that produces output takes at least 4 bytes (3-byte block header plus the byte
# of an RLE block) and produces at most 128 KiB, so no valid frame expands by more than this.
ZSTD_MAX_EXPANSION = (128 * 1024) // 4

# Index: tag, reserved, chunk_count, then chunk_count entries (chunk_offset, chunk_length), then
# a CRC-32 of everything before it in the index.
INDEX_PREFIX = struct.Struct("<4sIQ")
INDEX_ENTRY = struct.Struct("<QQ")
INDEX_CRC = struct.Struct("<I")

# Trailer, the last 28 bytes of every file: index_offset, index_length, trailer magic, then a
# CRC-32 of those 24 bytes.
TRAILER_FIELDS = struct.Struct("<QQ8s")
TRAILER_CRC = struct.Struct("<I")
TRAILER_SIZE = TRAILER_FIELDS.size + TRAILER_CRC.size  # 28

MIN_K = 2
MAX_K = 1 << 16
MAX_M = 0xFFFF
MAX_CHUNK_ROWS = 1 << 24
MAX_CHUNKS = 1 << 32  # ceil(n / chunk_rows) must be below this: chunk_index is a u32

# source_dtype codes: the element type of the vectors that were compressed.
DTYPE_CODES = {
    1: "float32",
    2: "float16",
    3: "bfloat16",
    4: "float64",
    5: "int8",
    6: "uint8",
    7: "int16",
    8: "uint16",
    9: "int32",
    10: "uint32",
    11: "int64",
    12: "uint64",
}
DTYPE_IDS = {name: code for code, name in DTYPE_CODES.items()}


def crc32(data):
    """CRC-32/ISO-HDLC (zlib, IEEE 802.3): reflected polynomial 0xEDB88320, init and xorout
    0xFFFFFFFF. Check value: crc32(b"123456789") == 0xCBF43926."""
    return zlib.crc32(data) & 0xFFFFFFFF


def bytes_per_code(K):
    """Width of one stored code: 1 byte for K <= 256, else 2."""
    return 1 if K <= 256 else 2


def code_dtype(bpc):
    """Little-endian numpy dtype string of a code of `bpc` bytes (as stored)."""
    return "<u1" if bpc == 1 else "<u2"


def native_code_dtype(bpc):
    """numpy dtype of codes of `bpc` bytes in memory: uint8 or uint16."""
    import numpy as np
    return np.dtype(np.uint8 if bpc == 1 else np.uint16)


def chunk_header_size(M):
    """Bytes of a chunk header for M planes."""
    return CHUNK_PREFIX.size + M * PLANE_ENTRY.size + CHUNK_CRC.size


def index_size(chunk_count):
    """Bytes of an index listing `chunk_count` chunks."""
    return INDEX_PREFIX.size + chunk_count * INDEX_ENTRY.size + INDEX_CRC.size


def chunk_count(n, chunk_rows):
    """Number of chunks holding n rows: ceil(n / chunk_rows)."""
    return -(-n // chunk_rows)


def chunk_row_count(index, n, chunk_rows):
    """Rows in chunk `index`: chunk_rows, except the last chunk which holds the remainder."""
    return min(chunk_rows, n - index * chunk_rows)
