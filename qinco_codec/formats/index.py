"""The chunk index and the fixed-size trailer at the end of a .qnc file (SPEC.md sections
"Index" and "Trailer"): a seeking reader finds the index through the trailer and then reads
only the chunks it needs; a streaming reader checks the index against what it has read.
"""
from .errors import QncFormatError
from .layout import (INDEX_CRC, INDEX_ENTRY, INDEX_PREFIX, INDEX_TAG, TRAILER_CRC, TRAILER_FIELDS,
                     TRAILER_MAGIC, TRAILER_SIZE, crc32, index_size)


def encode_index(entries):
    """Index bytes for a list of (chunk_offset, chunk_length) pairs."""
    body = INDEX_PREFIX.pack(INDEX_TAG, 0, len(entries))
    body += b"".join(INDEX_ENTRY.pack(offset, length) for offset, length in entries)
    return body + INDEX_CRC.pack(crc32(body))


def encode_trailer(index_offset, index_length):
    """The 28-byte trailer pointing at the index, its CRC-32 last."""
    fields = TRAILER_FIELDS.pack(index_offset, index_length, TRAILER_MAGIC)
    return fields + TRAILER_CRC.pack(crc32(fields))


def decode_trailer(data, *, file_size, data_start):
    """Return (index_offset, index_length) after checking the trailer's magic and CRC and that
    the index fits between the code stream and the trailer exactly."""
    fields = data[:TRAILER_FIELDS.size]
    index_offset, index_length, magic = TRAILER_FIELDS.unpack(fields)
    if magic != TRAILER_MAGIC:
        raise QncFormatError(f"no .qnc trailer at end of file (found {magic.hex(' ')}, expected "
                             f"{TRAILER_MAGIC.hex(' ')}): the file is truncated or has trailing "
                             f"bytes")
    (stored_crc,) = TRAILER_CRC.unpack_from(data, TRAILER_FIELDS.size)
    computed = crc32(fields)
    if stored_crc != computed:
        raise QncFormatError(f"trailer checksum mismatch (stored 0x{stored_crc:08x}, computed "
                             f"0x{computed:08x})")
    if (index_offset < data_start or index_length < index_size(0)
            or index_offset + index_length != file_size - TRAILER_SIZE):
        raise QncFormatError(f"trailer points at index [{index_offset}, "
                             f"{index_offset + index_length}), which is not the span between "
                             f"the code stream start ({data_start}) and the trailer "
                             f"({file_size - TRAILER_SIZE}); the file is truncated or corrupted")
    return index_offset, index_length


def decode_index(data, *, expected_chunks, data_start, index_offset, min_chunk_length):
    """Decode the index and check that its chunks tile [data_start, index_offset) in order.

    The index's length follows from the header alone (20 + 16 * C, C = ceil(n / chunk_rows)),
    so `data` is checked against it first and `index_crc32` is verified before any other index
    field is used (SPEC.md 11.1): then the tag, chunk_count and the entries.
    Returns a list of (chunk_offset, chunk_length).
    """
    expected_size = index_size(expected_chunks)
    if len(data) != expected_size:
        raise QncFormatError(f"the index is {len(data)} bytes, but the header's n and chunk_rows "
                             f"imply {expected_chunks} chunks, whose index is {expected_size} "
                             f"bytes")
    body = data[:-INDEX_CRC.size]
    (stored_crc,) = INDEX_CRC.unpack_from(data, len(body))
    computed = crc32(body)
    tag, _, count = INDEX_PREFIX.unpack_from(data)
    if stored_crc != computed:
        if tag != INDEX_TAG:  # only to word the message: nothing of the index is used
            raise QncFormatError(f"no index where the header's {expected_chunks} chunks end (found "
                                 f"{tag!r}, expected tag {INDEX_TAG!r}, and a checksum mismatch): "
                                 f"the file is corrupted or has more chunks than its header "
                                 f"declares")
        raise QncFormatError(f"index checksum mismatch (stored 0x{stored_crc:08x}, computed "
                             f"0x{computed:08x})")
    if tag != INDEX_TAG:
        raise QncFormatError(f"bad index tag {tag!r} (expected {INDEX_TAG!r})")
    if count != expected_chunks:
        raise QncFormatError(f"inconsistent header: the index lists {count} chunks, the header's "
                             f"n and chunk_rows imply {expected_chunks}")
    entries = [INDEX_ENTRY.unpack_from(data, offset)
               for offset in range(INDEX_PREFIX.size, len(body), INDEX_ENTRY.size)]
    position = data_start
    for c, (offset, length) in enumerate(entries):
        if offset != position or length < min_chunk_length:
            raise QncFormatError(f"index entry for chunk {c} (offset {offset}, length {length}) "
                                 f"does not follow the previous chunk at {position} or is "
                                 f"shorter than {min_chunk_length} bytes")
        position += length
    if position != index_offset:
        raise QncFormatError(f"chunks end at {position} but the index starts at {index_offset}")
    return entries
