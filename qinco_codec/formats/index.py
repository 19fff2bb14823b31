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


def index_chunk_count(prefix, expected_chunks):
    """chunk_count from the first 16 bytes of the index, checked against the header."""
    tag, _, count = INDEX_PREFIX.unpack(prefix)
    if tag != INDEX_TAG:
        raise QncFormatError(f"bad index tag {tag!r} (expected {INDEX_TAG!r}); the file is "
                             f"corrupted or has more chunks than its header declares")
    if count != expected_chunks:
        raise QncFormatError(f"inconsistent header: the index lists {count} chunks, the header's "
                             f"n and chunk_rows imply {expected_chunks}")
    return count


def decode_index(data, *, expected_chunks, data_start, index_offset, min_chunk_length):
    """Decode the index and check that its chunks tile [data_start, index_offset) in order.

    Returns a list of (chunk_offset, chunk_length).
    """
    count = index_chunk_count(data[:INDEX_PREFIX.size], expected_chunks)
    if len(data) != index_size(count):
        raise QncFormatError(f"index is {len(data)} bytes, {count} chunks need {index_size(count)}")
    body = data[:-INDEX_CRC.size]
    (stored_crc,) = INDEX_CRC.unpack_from(data, len(body))
    computed = crc32(body)
    if stored_crc != computed:
        raise QncFormatError(f"index checksum mismatch (stored 0x{stored_crc:08x}, computed "
                             f"0x{computed:08x})")
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
