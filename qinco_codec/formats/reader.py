"""`QncReader`: reads a .qnc file from a path, a seekable binary file, or a pipe
(SPEC.md, "Reader rules").

Seekable input: the fixed header, the JSON sections, the trailer and the index are read up front;
afterwards each request reads only the chunk headers and plane prefixes it needs. Pipe input
(not seekable): the header and sections are read up front, then the code stream can be consumed
once, front to back, skipping by reading and discarding; the index and trailer are checked
against what was read when the stream is consumed to its end.
"""
import hashlib
import os
import threading

import numpy as np

from .errors import InputError, QncFormatError
from .chunks import RawChunk, decode_chunk_header, decode_plane, verify_planes
from .header import QncHeader, decode_fixed_header, decode_header_prefix
from .index import decode_index, decode_trailer
from .ivf import decode_ivf
from .residual import decode_ivf_residual
from .layout import (ENCODING_ZSTD, HEADER_PREFIX, JSON_SECTIONS, MAX_JSON_SECTION,
                     SECTION_EMBEDDED_MODEL, SECTION_HEADER_SIZE, SECTION_IVF, SECTION_IVF_RESIDUAL,
                     SECTION_MODEL_CONFIG,
                     SECTION_QUALITY_REPORT, SECTION_USER_METADATA, TRAILER_SIZE, chunk_header_size,
                     chunk_row_count, index_size)
from .sections import check_section_payload, decode_json, decode_section_header, is_required
from .source import ByteSource

# A seekable read of a row range allocates its output up front only when that is at most this
# many times the file size; beyond that the output grows chunk by chunk as chunks decode.
PREALLOCATE_FACTOR = 64


class QncReader:
    """Random-access (seekable input) or one-pass (pipe) reader of a .qnc file.

    `source` is a path or a binary file object; a file object passed in is not closed by
    `close()`. Every malformation raises QncFormatError; bad arguments raise InputError.
    """

    def __init__(self, source):
        if isinstance(source, (str, os.PathLike)):
            self._file, self._owns_file = open(source, "rb"), True
        else:
            self._file, self._owns_file = source, False
        self._stream_used = False
        self._lock = threading.RLock()
        try:
            self._src = ByteSource(self._file)
            self._read_preamble()
            if self._src.seekable:
                self._chunks = self._read_index()
        except BaseException:
            self.close()
            raise

    @property
    def seekable(self):
        """False when reading a pipe: then the code stream can be read only once, in order."""
        return self._src.seekable

    @property
    def bytes_read(self):
        """Bytes read from the underlying file so far."""
        return self._src.bytes_read

    def close(self):
        """Close the file if this reader opened it."""
        if self._owns_file:
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- public reads ------------------------------------------------------------------------

    @property
    def model_size(self):
        """Length in bytes of the embedded model section's payload; None when there is none."""
        return None if self._model is None else self._model[0].length

    def model_bytes(self):
        """The embedded safetensors model file, checked against the header SHA-256; None when
        the file only names its model by hash."""
        if self._model is None:
            return None
        section, offset, payload = self._model
        if payload is None:
            with self._lock:
                self._src.seek(offset)
                payload = self._src.read(section.length, "embedded_model section")
        check_section_payload(section, payload)
        digest = hashlib.sha256(payload).digest()
        if digest != self.header.model_sha256:
            raise QncFormatError(f"embedded model SHA-256 {digest.hex()} does not match the "
                                 f"header's model_sha256 {self.header.model_sha256.hex()}")
        return payload

    @property
    def ivf_size(self):
        """Length in bytes of the ivf section's payload; None when the file has none."""
        return None if self._ivf_section is None else self._ivf_section[0].length

    def ivf(self):
        """The file's inverted lists (formats.ivf.IvfSection: centroids and each row's list id,
        SPEC.md 5.3), or None when it has no ivf section. Read, checked and decoded on the first
        call (on a pipe its payload was kept when the sections were read), then kept."""
        if self._ivf_section is None:
            return None
        with self._lock:
            if self._ivf is None:
                section, offset, payload = self._ivf_section
                if payload is None:
                    self._src.seek(offset)
                    payload = self._src.read(section.length, "ivf section")
                check_section_payload(section, payload)
                self._ivf = decode_ivf(payload, dim=self.header.dim, n=self.header.n)
                self._ivf_section = (section, offset, None)  # the decoded form is kept instead
        return self._ivf

    def codes(self, steps=None, rows=None):
        """Codes of the first `steps` steps (default M) for `rows`: None (all rows), a slice with
        step 1, or a 1-D integer index array. Returns (len(rows), steps) uint8/uint16.

        Only the chunks holding the requested rows are decoded, and in each only the first
        `steps` planes are read. An empty selection (`slice(5, 5)`, `slice(n, n + 10)`, an empty
        array) reads no chunk at all (SPEC.md 11.3), so it succeeds whatever the chunks hold,
        and on a pipe it leaves the code stream unread.
        """
        steps = self._check_steps(steps)
        if rows is None or isinstance(rows, slice):
            return self._codes_range(steps, rows)
        return self._codes_indices(steps, rows)

    def iter_chunks(self, steps=None):
        """Yield (row_start, codes of that chunk's rows for the first `steps` steps) in order."""
        steps = self._check_steps(steps)
        for c, block in self._blocks(steps, None):
            yield c * self.header.chunk_rows, block

    def raw_chunks(self):
        """Yield every chunk as a `RawChunk` (header and stored planes, CRCs verified, nothing
        decompressed), in order: what a writer's `write_raw_chunk` copies byte for byte. On a
        pipe this consumes the code stream and checks index and trailer at its end."""
        if self.seekable:
            for c in range(self.header.num_chunks):
                with self._lock:
                    chunk = self._seek_chunk_header(c)
                    stored = self._src.read(chunk.stored_len(), f"chunk {c} planes")
                verify_planes(chunk, stored)
                yield RawChunk(chunk, stored)
        else:
            for _, chunk, stored in self._stream(None, None, raw=True):
                verify_planes(chunk, stored)
                yield RawChunk(chunk, stored)

    def plane_sizes(self):
        """Per chunk, per plane: (stored_len, raw_len, is_zstd). Reads only chunk headers on a
        seekable file; consumes the stream on a pipe."""
        if self.seekable:
            with self._lock:
                headers = [self._seek_chunk_header(c) for c in range(self.header.num_chunks)]
        else:
            headers = (chunk for _, chunk, _ in self._stream(0, None))
        return [[(p.stored_len, p.raw_len, p.encoding == ENCODING_ZSTD) for p in chunk.planes]
                for chunk in headers]

    # -- opening -----------------------------------------------------------------------------

    def _read_preamble(self):
        """Fixed header and sections: sets self.header and what the code stream needs."""
        src = self._src
        prefix = src.read_at_most(HEADER_PREFIX.size)
        header_size = decode_header_prefix(prefix)
        fixed = decode_fixed_header(prefix + src.read(header_size - len(prefix), "fixed header"))
        self._data_start = header_size + fixed.sections_length
        if src.size is not None and self._data_start > src.size:
            raise QncFormatError(f"sections_length={fixed.sections_length} runs past the end of "
                                 f"the file ({src.size} bytes): truncated or corrupted")
        found = self._read_sections(fixed.sections_length)
        if SECTION_MODEL_CONFIG not in found:
            raise QncFormatError("the model_config section is missing")
        self._model = found.get(SECTION_EMBEDDED_MODEL)
        self._ivf_section, self._ivf = found.get(SECTION_IVF), None
        if SECTION_IVF_RESIDUAL in found and SECTION_IVF not in found:
            raise QncFormatError("the ivf_residual section says the codes are residuals to the "
                                 "ivf centroids, but the file has no ivf section")
        self.header = QncHeader(
            version=fixed.version, n=fixed.n, dim=fixed.dim, source_dtype=fixed.source_dtype,
            K=fixed.K, bytes_per_code=fixed.bytes_per_code, M=fixed.M,
            chunk_rows=fixed.chunk_rows, model_sha256=fixed.model_sha256,
            model_config=found[SECTION_MODEL_CONFIG],
            metadata=found.get(SECTION_USER_METADATA), has_embedded_model=self._model is not None,
            quality_report=found.get(SECTION_QUALITY_REPORT), has_ivf=SECTION_IVF in found,
            residual_codes=SECTION_IVF_RESIDUAL in found)

    def _read_sections(self, length):
        """Parse the sections area; returns {type: decoded JSON, or for the model (section
        header, payload offset, payload or None) of the embedded model and the ivf section}. Unknown optional sections are skipped."""
        src, found = self._src, {}
        end = src.position + length
        while src.position < end:
            at = src.position
            if end - at < SECTION_HEADER_SIZE:
                raise QncFormatError(f"sections area ends {end - at} bytes into a "
                                     f"{SECTION_HEADER_SIZE}-byte section header")
            section = decode_section_header(src.read(SECTION_HEADER_SIZE, "section header"), at)
            if section.length > end - src.position:
                raise QncFormatError(f"{section.name} section declares {section.length} bytes, "
                                     f"only {end - src.position} remain in the sections area")
            what = f"{section.name} section"
            if section.type in found:
                raise QncFormatError(f"duplicate {what}")
            if section.type in (SECTION_EMBEDDED_MODEL, SECTION_IVF):
                # read when asked for; kept in memory only on a pipe, where it cannot be read
                # again later
                offset = src.position
                payload = None if src.seekable else src.read(section.length, what)
                if payload is None:
                    src.skip(section.length, what)
                found[section.type] = (section, offset, payload)
            elif section.type == SECTION_IVF_RESIDUAL:
                # within the sections area (checked above), so bounded by the file's size
                payload = src.read(section.length, what)
                check_section_payload(section, payload)
                found[section.type] = decode_ivf_residual(payload)
            elif section.type in JSON_SECTIONS:
                if section.length > MAX_JSON_SECTION:
                    raise QncFormatError(f"{what} is {section.length} bytes, over the "
                                         f"{MAX_JSON_SECTION}-byte limit for JSON sections")
                payload = src.read(section.length, what)
                check_section_payload(section, payload)
                found[section.type] = decode_json(payload, section.name)
            elif is_required(section):
                raise QncFormatError(f"{what} is marked required but this reader does not know "
                                     f"it: the file needs a newer reader")
            else:
                src.skip(section.length, what)
        return found

    def _read_index(self):
        """Trailer and index of a seekable file; returns [(chunk_offset, chunk_length)]."""
        src = self._src
        if src.size < self._data_start + TRAILER_SIZE:
            raise QncFormatError(f"truncated file: {src.size} bytes leave no room for the index "
                                 f"and trailer after the sections")
        src.seek(src.size - TRAILER_SIZE)
        index_offset, index_length = decode_trailer(src.read(TRAILER_SIZE, "trailer"),
                                                    file_size=src.size, data_start=self._data_start)
        src.seek(index_offset)
        return decode_index(src.read(index_length, "index"),
                            expected_chunks=self.header.num_chunks, data_start=self._data_start,
                            index_offset=index_offset, min_chunk_length=self._min_chunk_length())

    def _min_chunk_length(self):
        """A chunk is at least its header plus one byte per plane."""
        return chunk_header_size(self.header.M) + self.header.M

    # -- the code stream ---------------------------------------------------------------------

    def _check_steps(self, steps):
        M = self.header.M
        if steps is None:
            return M
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or \
                not 1 <= steps <= M:
            raise InputError(f"steps={steps!r} must be an integer in [1, M={M}]")
        return int(steps)

    def _codes_range(self, steps, rows):
        """Codes for all rows (rows=None) or a contiguous slice of them."""
        n, chunk_rows, dtype = self.header.n, self.header.chunk_rows, self.header.code_dtype
        if rows is None:
            start, stop, wanted = 0, n, None
        else:
            if rows.step not in (None, 1):
                raise InputError(f"rows slice must have step 1, got {rows.step}")
            start, stop, _ = rows.indices(n)
            if stop <= start:
                return np.empty((0, steps), dtype)
            wanted = range(start // chunk_rows, -(-stop // chunk_rows))
        # (position in the output of the chunk's first row, the chunk's rows inside the range)
        pieces = ((c * chunk_rows - start, block[max(start - c * chunk_rows, 0):
                                                 stop - c * chunk_rows])
                  for c, block in self._blocks(steps, wanted))
        declared = (stop - start) * steps * self.header.bytes_per_code
        if not self.seekable or declared > PREALLOCATE_FACTOR * self._src.size:
            # n is not checked against the file yet (pipe), or the request is far larger than
            # the file (highly compressed planes, or a forged n): grow with the decoded data
            return np.concatenate([np.empty((0, steps), dtype)] + [piece for _, piece in pieces])
        out = np.empty((stop - start, steps), dtype)
        for at, piece in pieces:
            out[max(at, 0):max(at, 0) + len(piece)] = piece
        return out

    def _codes_indices(self, steps, rows):
        """Codes for an arbitrary integer index array (any order, repeats allowed)."""
        n, chunk_rows = self.header.n, self.header.chunk_rows
        idx = np.asarray(rows)
        if idx.size == 0 and idx.ndim == 1:
            idx = idx.astype(np.int64)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise InputError(f"rows must be None, a slice or a 1-D integer array, got "
                             f"{idx.dtype} array of shape {idx.shape}")
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise InputError(f"rows must be in [-n, n) with n={n}, got values in "
                             f"[{idx.min()}, {idx.max()}]")
        idx = np.where(idx < 0, idx + n, idx).astype(np.int64)
        out = np.empty((idx.size, steps), self.header.code_dtype)
        if idx.size == 0:
            return out
        chunk_of = idx // chunk_rows
        order = np.argsort(chunk_of, kind="stable")
        wanted = np.unique(chunk_of)
        firsts = np.searchsorted(chunk_of[order], wanted, "left")
        lasts = np.searchsorted(chunk_of[order], wanted, "right")
        for i, (c, block) in enumerate(self._blocks(steps, wanted.tolist())):
            positions = order[firsts[i]:lasts[i]]
            out[positions] = block[idx[positions] - c * chunk_rows]
        return out

    def _blocks(self, steps, wanted):
        """Yield (chunk index, (rows, steps) codes) for the chunks in `wanted` (ascending; None
        means all chunks)."""
        if self.seekable:
            for c in range(self.header.num_chunks) if wanted is None else wanted:
                yield c, self._seek_chunk(c, steps)
        else:
            for c, _, block in self._stream(steps, wanted):
                yield c, block

    def _seek_chunk(self, c, steps):
        """Read chunk c's header and its first `steps` planes from a seekable file (the seek and
        reads hold a lock, so threads sharing one reader cannot interleave them)."""
        with self._lock:
            chunk = self._seek_chunk_header(c)
            data = self._src.read(chunk.stored_len(steps), f"chunk {c} planes 1..{steps}")
        return self._decode_planes(chunk, data, steps)

    def _seek_chunk_header(self, c):
        """Read chunk c's header and check its total length against the index."""
        offset, length = self._chunks[c]
        self._src.seek(offset)
        chunk = self._read_chunk_header(c)
        if chunk.size + chunk.stored_len() != length:
            raise QncFormatError(f"chunk {c}: header and planes take "
                                 f"{chunk.size + chunk.stored_len()} bytes, the index says "
                                 f"{length}")
        return chunk

    def _read_chunk_header(self, c):
        h = self.header
        data = self._src.read(chunk_header_size(h.M), f"chunk {c} header")
        return decode_chunk_header(data, index=c, rows=chunk_row_count(c, h.n, h.chunk_rows),
                                   M=h.M, bpc=h.bytes_per_code)

    def _decode_planes(self, chunk, data, steps):
        """(rows, steps) codes from the stored bytes of the chunk's first `steps` planes.

        Each plane is verified and decoded before the chunk's output is allocated, so that no
        allocation rests on the row count and plane sizes the chunk header merely declares."""
        planes, view, position = [], memoryview(data), 0
        for j, entry in enumerate(chunk.planes[:steps]):
            stored = view[position:position + entry.stored_len]
            planes.append(decode_plane(stored, entry, where=f"chunk {chunk.index}, plane {j + 1}",
                                       bpc=self.header.bytes_per_code, K=self.header.K))
            position += entry.stored_len
        if not planes:
            return np.empty((chunk.rows, 0), self.header.code_dtype)
        return np.stack(planes, axis=1)

    def _stream(self, steps, wanted, raw=False):
        """One pass over a pipe: yield (chunk index, chunk header, codes or None) for the chunks
        in `wanted` (None: all, then check index, trailer and end of file); with `raw`, all the
        chunk's stored plane bytes instead of codes."""
        if self._stream_used:
            raise InputError("this reader reads a pipe, whose code stream can be read only once; "
                             "open a seekable file for repeated or random access")
        self._stream_used = True
        src, h = self._src, self.header
        remaining = None if wanted is None else set(wanted)
        observed = []
        for c in range(h.num_chunks):
            if remaining is not None and not remaining:
                return
            offset = src.position
            chunk = self._read_chunk_header(c)
            take = h.M if raw else steps if remaining is None or c in remaining else 0
            data = src.read(chunk.stored_len(take), f"chunk {c} planes 1..{take}")
            src.skip(chunk.stored_len() - len(data), f"chunk {c} remaining planes")
            observed.append((offset, src.position - offset))
            if raw:
                yield c, chunk, data
            elif take or remaining is None:
                yield c, chunk, self._decode_planes(chunk, data, take) if take else None
            if remaining is not None:
                remaining.discard(c)
        if remaining is None:
            self._check_stream_end(observed)

    def _check_stream_end(self, observed):
        """After the last chunk of a pipe: the index must list exactly the chunks read, then the
        trailer must point at it, then the file must end."""
        src = self._src
        index_offset = src.position
        # its length follows from the header, so no index field is used before its CRC
        data = src.read(index_size(self.header.num_chunks), "index")
        entries = decode_index(data, expected_chunks=self.header.num_chunks,
                               data_start=self._data_start, index_offset=index_offset,
                               min_chunk_length=self._min_chunk_length())
        if entries != observed:
            raise QncFormatError("the index does not match the chunks in the stream")
        trailer = decode_trailer(src.read(TRAILER_SIZE, "trailer"), file_size=src.position,
                                 data_start=self._data_start)
        if trailer != (index_offset, len(data)):
            raise QncFormatError(f"trailer points at an index at {trailer[0]} of {trailer[1]} "
                                 f"bytes; the stream has it at {index_offset}, {len(data)} bytes")
        if not src.at_end():
            raise QncFormatError("trailing bytes after the trailer")
