"""The byte layer's raw-chunk API (`QncReader.raw_chunks`, `QncWriter.write_raw_chunk`): chunks
copied between files without decoding a plane, as merging shards and rewriting a file's sections
need. Copies must be byte-identical to writing the same codes, and refusals must name the rule."""
import hashlib
import io

import numpy as np
import pytest

from qinco_codec.errors import InputError, QncFormatError
from qinco_codec.formats import QncReader, QncWriter
from qinco_codec.formats.layout import TRAILER_SIZE, index_size

SHA = hashlib.sha256(b"model").digest()


def _write(path, codes, *, K=256, chunk_rows=8, zstd_level=3, metadata=None):
    with QncWriter(path, n=len(codes), dim=4, source_dtype="float32", K=K, M=codes.shape[1],
                   model_sha256=SHA, model_config={"K": K}, metadata=metadata,
                   chunk_rows=chunk_rows, zstd_level=zstd_level) as w:
        w.write_codes(codes)
    return path.read_bytes()


def _codes(n, M=5, K=256, seed=0):
    codes = np.random.default_rng(seed).integers(0, K, (n, M))
    codes[:, 3:] %= 3  # low-entropy planes: some are stored as zstd frames
    return codes.astype(np.uint8 if K <= 256 else np.uint16)


@pytest.mark.parametrize("pipe", [False, True])
@pytest.mark.parametrize("K", [256, 4096])
def test_copying_every_raw_chunk_rebuilds_the_file_byte_for_byte(tmp_path, pipe, K):
    codes = _codes(300, K=K)
    original = _write(tmp_path / "a.qnc", codes, K=K, chunk_rows=128)
    source = io.BufferedReader(io.BytesIO(original)) if not pipe else _Pipe(original)
    with QncReader(source) as r:
        chunks = list(r.raw_chunks())
    assert [c.header.rows for c in chunks] == [128, 128, 44]
    assert any(p.encoding for c in chunks for p in c.header.planes)  # zstd planes were copied
    with QncWriter(tmp_path / "b.qnc", n=300, dim=4, source_dtype="float32", K=K, M=5,
                   model_sha256=SHA, model_config={"K": K}, chunk_rows=128) as w:
        for chunk in chunks:
            w.write_raw_chunk(chunk)
    assert (tmp_path / "b.qnc").read_bytes() == original


def test_raw_chunks_renumber_when_appended_after_coded_rows(tmp_path):
    """Two files concatenated: the second file's chunks become chunks 2.. of the result, which
    reads back as the concatenated codes and equals a file written from them at once."""
    first, second = _codes(16, seed=1), _codes(13, seed=2)
    _write(tmp_path / "s.qnc", second)
    whole = _write(tmp_path / "whole.qnc", np.concatenate([first, second]))
    with QncReader(tmp_path / "s.qnc") as r, QncWriter(
            tmp_path / "m.qnc", n=29, dim=4, source_dtype="float32", K=256, M=5,
            model_sha256=SHA, model_config={"K": 256}, chunk_rows=8) as w:
        w.write_codes(first)
        for chunk in r.raw_chunks():
            w.write_raw_chunk(chunk)
    assert (tmp_path / "m.qnc").read_bytes() == whole


def test_write_raw_chunk_refusals(tmp_path):
    _write(tmp_path / "a.qnc", _codes(12), chunk_rows=8)
    with QncReader(tmp_path / "a.qnc") as r:
        full, short = list(r.raw_chunks())

    def writer(n, M=5, K=256, chunk_rows=8):
        return QncWriter(tmp_path / "out.qnc", n=n, dim=4, source_dtype="float32", K=K, M=M,
                         model_sha256=SHA, model_config={}, chunk_rows=chunk_rows)

    with pytest.raises(InputError, match=r"holds 4 rows; chunk 0 of this file must hold 8"):
        with writer(12) as w:
            w.write_raw_chunk(short)
    with pytest.raises(InputError, match=r"3 rows from write_codes are waiting"):
        with writer(20) as w:
            w.write_codes(_codes(3))
            w.write_raw_chunk(full)
    with pytest.raises(InputError, match=r"5 planes, this file has M=6"):
        with writer(8, M=6) as w:
            w.write_raw_chunk(full)
    with pytest.raises(InputError, match=r"not 16 bytes raw"):
        with writer(8, K=4096) as w:
            w.write_raw_chunk(full)
    assert not (tmp_path / "out.qnc").exists()  # nothing half-written


def test_a_corrupted_plane_is_refused_before_it_is_copied(tmp_path):
    data = bytearray(_write(tmp_path / "a.qnc", _codes(12), zstd_level=0))
    data[-(TRAILER_SIZE + index_size(2)) - 1] ^= 0xFF  # the last byte of the last chunk's planes
    with QncReader(io.BytesIO(bytes(data))) as r:
        with pytest.raises(QncFormatError, match=r"chunk 1, plane 5: checksum mismatch"):
            list(r.raw_chunks())


class _Pipe(io.RawIOBase):
    def __init__(self, data):
        self._data = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, buffer):
        piece = self._data.read(min(len(buffer), 11))
        buffer[:len(piece)] = piece
        return len(piece)
