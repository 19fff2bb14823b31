"""How many bytes a .qnc file takes, by arithmetic (SPEC.md sections 3-8): what rate control needs
to keep a whole file within a budget before anything is written.

With every plane stored raw the size is exact; zstd only ever makes a plane smaller (a plane is
stored raw when zstd does not shrink it, SPEC.md 12), so for any zstd level it is an upper bound.
"""
from .layout import (HEADER_SIZE_V1_0, SECTION_HEADER_SIZE, TRAILER_SIZE, chunk_count,
                     chunk_header_size, index_size)


def file_size(n, M, bytes_per_code, chunk_rows, section_payloads=()):
    """Bytes of a file of n rows of M codes in chunks of `chunk_rows` rows, holding sections with
    payloads of the given lengths, every plane stored raw (an upper bound with zstd)."""
    chunks = chunk_count(n, chunk_rows)
    return (HEADER_SIZE_V1_0 + sum(SECTION_HEADER_SIZE + length for length in section_payloads)
            + chunks * chunk_header_size(M) + n * M * bytes_per_code + index_size(chunks)
            + TRAILER_SIZE)
