"""Field-by-field annotated hex dump of a valid .qnc file.

SPEC.md's worked example is this function's output for formats/golden/tiny_example.qnc, and a
test regenerates it, so the example cannot drift from the code. Every byte of the file appears
exactly once, in order.
"""
import numpy as np

from .layout import (CHUNK_CRC, DTYPE_CODES, ENCODING_NAMES, ENCODING_RAW, HEADER_CRC,
                     HEADER_FIELDS, INDEX_CRC, INDEX_ENTRY, INDEX_PREFIX, PLANE_ENTRY,
                     SECTION_CRC, SECTION_EMBEDDED_MODEL, SECTION_FIELDS, SECTION_NAMES,
                     TRAILER_CRC, TRAILER_FIELDS, chunk_count, chunk_row_count, code_dtype)

BYTES_PER_LINE = 8


def annotated_hexdump(data):
    """The annotated dump as text: one line per field (long fields wrap), titled by structure."""
    lines = []
    for offset, size, label in _fields(data):
        if size is None:
            lines.append(f"{'':8}{label}")
            continue
        for start in range(offset, offset + size, BYTES_PER_LINE):
            hex_bytes = data[start:min(start + BYTES_PER_LINE, offset + size)].hex(" ")
            text = label if start == offset else ""
            lines.append(f"{start:06x}  {hex_bytes:<{3 * BYTES_PER_LINE + 1}}{text}".rstrip())
    return "\n".join(lines) + "\n"


def _fields(data):
    """Yield (offset, size, label) for every field, and (None, None, title) for titles."""
    pos = 0

    def field(size, label):
        nonlocal pos
        pos += size
        return pos - size, size, label

    def title(text):
        return None, None, f"-- {text} --"

    (_, major, minor, header_size, n, sections_length, dim, K, M, chunk_rows, dtype, bpc, flags,
     sha) = HEADER_FIELDS.unpack_from(data)
    yield title(f"fixed header ({header_size} bytes)")
    for size, label in ((8, "magic"), (2, f"version_major = {major}"),
                        (2, f"version_minor = {minor}"), (4, f"header_size = {header_size}"),
                        (8, f"n = {n}"), (8, f"sections_length = {sections_length}"),
                        (4, f"dim = {dim}"), (4, f"K = {K}"), (4, f"M = {M}"),
                        (4, f"chunk_rows = {chunk_rows}"),
                        (1, f"source_dtype = {dtype} ({DTYPE_CODES[dtype]})"),
                        (1, f"bytes_per_code = {bpc}"), (2, f"header_flags = {flags}"),
                        (32, "model_sha256"), (HEADER_CRC.size, "header_crc32")):
        yield field(size, label)

    while pos < header_size + sections_length:
        s_type, s_flags, s_len, _ = SECTION_FIELDS.unpack_from(data, pos)
        name = SECTION_NAMES.get(s_type, "unknown")
        yield title(f"section: {name}")
        yield field(4, f"type = {s_type} ({name})")
        yield field(4, f"flags = {s_flags}")
        yield field(8, f"length = {s_len}")
        yield field(4, "payload_crc32")
        yield field(SECTION_CRC.size, "section_header_crc32")
        payload = data[pos:pos + s_len]
        text = (f"{s_len} bytes" if s_type == SECTION_EMBEDDED_MODEL or name == "unknown"
                else f"JSON {payload.decode('utf-8')}")
        yield field(s_len, f"payload: {text}")

    for c in range(chunk_count(n, chunk_rows)):
        rows = chunk_row_count(c, n, chunk_rows)
        yield title(f"chunk {c} (rows {c * chunk_rows}..{c * chunk_rows + rows - 1})")
        yield field(4, "tag \"QCHK\"")
        yield field(4, f"chunk_index = {c}")
        yield field(4, f"row_count = {rows}")
        yield field(4, f"plane_count = {M}")
        planes = []
        for step in range(1, M + 1):
            stored, raw, _, encoding = PLANE_ENTRY.unpack_from(data, pos)
            planes.append((stored, encoding))
            yield field(4, f"plane {step}: stored_len = {stored}")
            yield field(4, f"plane {step}: raw_len = {raw}")
            yield field(4, f"plane {step}: crc32")
            yield field(1, f"plane {step}: encoding = {encoding} ({ENCODING_NAMES[encoding]})")
            yield field(3, f"plane {step}: reserved")
        yield field(CHUNK_CRC.size, "chunk_header_crc32")
        for step, (stored, encoding) in enumerate(planes, 1):
            if encoding == ENCODING_RAW:
                codes = np.frombuffer(data, code_dtype(bpc), stored // bpc, pos).tolist()
                label = f"plane {step} data ({code_dtype(bpc)}): step {step} codes {codes}"
            else:
                label = f"plane {step} data: zstd frame"
            yield field(stored, label)

    count = INDEX_PREFIX.unpack_from(data, pos)[2]
    yield title("index")
    yield field(4, "tag \"QIDX\"")
    yield field(4, "reserved")
    yield field(8, f"chunk_count = {count}")
    for c in range(count):
        offset, length = INDEX_ENTRY.unpack_from(data, pos)
        yield field(8, f"chunk {c}: offset = {offset}")
        yield field(8, f"chunk {c}: length = {length}")
    yield field(INDEX_CRC.size, "index_crc32")

    index_offset, index_length, _ = TRAILER_FIELDS.unpack_from(data, pos)
    yield title("trailer")
    yield field(8, f"index_offset = {index_offset}")
    yield field(8, f"index_length = {index_length}")
    yield field(8, "trailer_magic")
    yield field(TRAILER_CRC.size, "trailer_crc32")
    assert pos == len(data), "annotated_hexdump: fields do not cover the file"
