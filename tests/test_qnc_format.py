"""Tests of the .qnc container byte layer (qinco_codec.formats): round trips on files and pipes,
golden vectors, SPEC.md's worked example, partial reads, and rejection of malformed files."""
import hashlib
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import zstandard

import qinco_codec.formats as formats
import spec_reader  # tests/spec_reader.py: the reader written from SPEC.md alone
from qinco_codec.errors import InputError, QncFormatError
from qinco_codec.formats import QncHeader, QncReader, QncWriter
from qinco_codec.formats.annotate import annotated_hexdump
from qinco_codec.formats.header import encode_fixed_header
from qinco_codec.formats.index import encode_index, encode_trailer
from qinco_codec.formats.layout import (CHUNK_CRC, CHUNK_PREFIX, CHUNK_TAG, ENCODING_RAW,
                                        ENCODING_ZSTD, HEADER_CRC, HEADER_FIELDS, PLANE_ENTRY,
                                        SECTION_CRC, SECTION_EMBEDDED_MODEL, SECTION_FIELDS,
                                        SECTION_FLAG_REQUIRED, SECTION_HEADER_SIZE,
                                        SECTION_MODEL_CONFIG, SECTION_USER_METADATA,
                                        TRAILER_CRC, TRAILER_FIELDS, TRAILER_SIZE,
                                        chunk_header_size, crc32)
from qinco_codec.formats.sections import decode_json, encode_json, encode_section
from qinco_codec.formats.layout import SECTION_QUALITY_REPORT

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(formats.__file__).resolve().parent / "golden"
SHA = hashlib.sha256(b"model").digest()


def _load_make_golden():
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_golden = _load_make_golden()


class Pipe(io.RawIOBase):
    """A non-seekable byte stream that returns short reads, like a pipe."""

    def __init__(self, data):
        self._data = io.BytesIO(data)
        self._calls = 0

    def readable(self):
        return True

    def readinto(self, buffer):
        self._calls += 1
        piece = self._data.read(min(len(buffer), 1 + self._calls % 37))
        buffer[:len(piece)] = piece
        return len(piece)


def write_file(path, codes, *, K, chunk_rows=7, zstd_level=3, metadata=None, model_bytes=None,
               split=(5, 1, 13)):
    """Write `codes` with several write_codes calls of uneven sizes; return the file bytes."""
    sha = hashlib.sha256(model_bytes).digest() if model_bytes is not None else SHA
    with QncWriter(path, n=len(codes), dim=4, source_dtype="float32", K=K, M=codes.shape[1],
                   model_sha256=sha, model_config={"K": K}, metadata=metadata,
                   model_bytes=model_bytes, chunk_rows=chunk_rows, zstd_level=zstd_level) as w:
        start = 0
        for size in split:
            w.write_codes(codes[start:start + size])
            start = min(start + size, len(codes))
        w.write_codes(codes[start:])
    return Path(path).read_bytes()


def random_codes(n, M, K, seed=0):
    codes = np.random.default_rng(seed).integers(0, K, (n, M))
    codes[:, M // 2:] = codes[:, M // 2:] % 8 == 0  # mostly zeros: zstd planes appear
    return codes.astype(np.uint8 if K <= 256 else np.uint16)


def patch_header(data, **changes):
    """Return `data` with fixed-header fields replaced and the header CRC recomputed."""
    names = ["magic", "major", "minor", "header_size", "n", "sections_length", "dim", "K", "M",
             "chunk_rows", "source_dtype", "bytes_per_code", "flags", "model_sha256"]
    fields = dict(zip(names, HEADER_FIELDS.unpack_from(data)))
    fields.update(changes)
    head = HEADER_FIELDS.pack(*(fields[k] for k in names))
    return head + HEADER_CRC.pack(crc32(head)) + data[HEADER_FIELDS.size + HEADER_CRC.size:]


def single_chunk_file(planes, *, rows, K=256, sections=None):
    """A file with one chunk whose planes are given as (encoding, stored bytes, raw_len), every
    CRC and offset correct: lets tests hand-craft plane contents. `sections` is a list of
    (type, flags, payload), by default just an empty model_config."""
    if sections is None:
        sections = [(SECTION_MODEL_CONFIG, SECTION_FLAG_REQUIRED, b"{}")]
    config = b"".join(encode_section(*section) for section in sections)
    head = encode_fixed_header(n=rows, sections_length=len(config), dim=1, K=K, M=len(planes),
                               chunk_rows=rows, source_dtype="float32", model_sha256=SHA)
    table = b"".join(PLANE_ENTRY.pack(len(stored), raw_len, crc32(stored), encoding)
                     for encoding, stored, raw_len in planes)
    chunk_head = CHUNK_PREFIX.pack(CHUNK_TAG, 0, rows, len(planes)) + table
    chunk = chunk_head + CHUNK_CRC.pack(crc32(chunk_head)) + b"".join(p[1] for p in planes)
    start = len(head) + len(config)
    index = encode_index([(start, len(chunk))])
    return head + config + chunk + index + encode_trailer(start + len(chunk), len(index))


def sections_of(data):
    """[(offset of the section header, type, flags, length)] of every section of `data`."""
    header_size = int.from_bytes(data[12:16], "little")
    end = header_size + HEADER_FIELDS.unpack_from(data)[5]
    found, at = [], header_size
    while at < end:
        kind, flags, length, _ = SECTION_FIELDS.unpack_from(data, at)
        found.append((at, kind, flags, length))
        at += SECTION_HEADER_SIZE + length
    return found


def patch_section(data, at, **changes):
    """`data` with fields of the section header at `at` replaced (type, flags, length,
    payload_crc32) and its header CRC recomputed, so that only the changed values are wrong."""
    names = ["type", "flags", "length", "payload_crc32"]
    fields = dict(zip(names, SECTION_FIELDS.unpack_from(data, at)))
    fields.update(changes)
    packed = SECTION_FIELDS.pack(*(fields[k] for k in names))
    return data[:at] + packed + SECTION_CRC.pack(crc32(packed)) + data[at + SECTION_HEADER_SIZE:]


def patch_trailer(data, **changes):
    """`data` with trailer fields replaced and the trailer CRC recomputed."""
    names = ["index_offset", "index_length", "magic"]
    fields = dict(zip(names, TRAILER_FIELDS.unpack_from(data, len(data) - TRAILER_SIZE)))
    fields.update(changes)
    packed = TRAILER_FIELDS.pack(*(fields[k] for k in names))
    return data[:-TRAILER_SIZE] + packed + TRAILER_CRC.pack(crc32(packed))


def read_all(data, mode):
    """Decode every code of `data` through a seekable file object or a pipe."""
    with QncReader(io.BytesIO(data) if mode == "seek" else Pipe(data)) as r:
        return r.codes()


MODES = ["seek", "pipe"]


# -- round trips -------------------------------------------------------------------------------

@pytest.mark.parametrize("K,M,n,chunk_rows,zstd_level", [
    (4, 2, 3, 2, None), (256, 16, 300, 64, 3), (4096, 5, 100, 7, 3), (65536, 3, 50, 50, 1),
    (256, 1, 1, 1, 3), (2, 4, 129, 128, 22)])
def test_round_trip(tmp_path, K, M, n, chunk_rows, zstd_level):
    codes = random_codes(n, M, K)
    data = write_file(tmp_path / "a.qnc", codes, K=K, chunk_rows=chunk_rows, zstd_level=zstd_level,
                      metadata={"b": [1, 2], "a": "é"}, model_bytes=b"model")
    expected_header = QncHeader(version=(1, 0), n=n, dim=4, source_dtype="float32", K=K,
                                bytes_per_code=1 if K <= 256 else 2, M=M, chunk_rows=chunk_rows,
                                model_sha256=SHA, model_config={"K": K},
                                metadata={"a": "é", "b": [1, 2]}, has_embedded_model=True)
    for source in (tmp_path / "a.qnc", io.BytesIO(data), Pipe(data)):
        with QncReader(source) as r:
            assert r.header == expected_header
            assert r.model_bytes() == b"model"
            got = r.codes()
            assert got.dtype == codes.dtype and got.shape == (n, M)
            np.testing.assert_array_equal(got, codes)
            assert r.bytes_read <= len(data)
    for source in (io.BytesIO(data), Pipe(data)):
        with QncReader(source) as r:
            chunks = list(r.iter_chunks(steps=M // 2 + 1))
        assert [start for start, _ in chunks] == list(range(0, n, chunk_rows))
        np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), codes[:, :M // 2 + 1])


def test_real_os_pipe(tmp_path):
    codes = random_codes(500, 8, 256)
    data = write_file(tmp_path / "a.qnc", codes, K=256, chunk_rows=64)
    read_fd, write_fd = os.pipe()

    def feed():
        with os.fdopen(write_fd, "wb") as f:
            f.write(data)

    thread = threading.Thread(target=feed)
    thread.start()
    with os.fdopen(read_fd, "rb") as f, QncReader(f) as r:
        assert not r.seekable
        np.testing.assert_array_equal(r.codes(steps=3), codes[:, :3])
        assert r.bytes_read == len(data)
    thread.join()


def test_pipe_is_read_once(tmp_path):
    data = write_file(tmp_path / "a.qnc", random_codes(20, 2, 16), K=16)
    r = QncReader(Pipe(data))
    r.codes()
    with pytest.raises(InputError, match="only once"):
        r.codes()


@pytest.mark.parametrize("mode", MODES)
def test_empty_file_round_trip(tmp_path, mode):
    codes = np.zeros((0, 4), np.uint16)
    data = write_file(tmp_path / "e.qnc", codes, K=1024, split=())
    with QncReader(io.BytesIO(data) if mode == "seek" else Pipe(data)) as r:
        assert r.header.n == 0 and r.header.num_chunks == 0
        got = r.codes(steps=2)
        assert got.shape == (0, 2) and got.dtype == np.uint16
    assert list(QncReader(io.BytesIO(data)).iter_chunks()) == []
    assert QncReader(Pipe(data)).plane_sizes() == []


def test_codes_row_and_step_selection(tmp_path):
    n, M = 103, 6
    codes = random_codes(n, M, 4096, seed=3)
    data = write_file(tmp_path / "a.qnc", codes, K=4096, chunk_rows=10)
    selections = [slice(None), slice(5, 47), slice(-20, None), slice(50, 40), slice(100, 500),
                  np.array([5, 102, 0, 5, -1, 37]), [3, 2, 1], np.array([], np.int64), []]
    for mode in MODES:
        for rows in selections:
            for steps in (1, 4, M):
                with QncReader(io.BytesIO(data) if mode == "seek" else Pipe(data)) as r:
                    got = r.codes(steps=steps, rows=rows)
                want = codes[rows if not isinstance(rows, list) else np.array(rows, int)][:, :steps]
                np.testing.assert_array_equal(got, want)
                assert got.shape == want.shape and got.dtype == np.uint16
    r = QncReader(io.BytesIO(data))
    for bad in (dict(steps=0), dict(steps=M + 1), dict(steps=2.0), dict(rows=slice(0, 9, 2)),
                dict(rows=[n]), dict(rows=[-n - 1]), dict(rows=np.array([[1]])),
                dict(rows=np.array([1.5]))):
        with pytest.raises(InputError):
            r.codes(**bad)


@pytest.mark.parametrize("mode", MODES)
def test_empty_row_selection_reads_no_chunk(tmp_path, mode):
    """SPEC.md 11.3 (G13): an empty row range reads no chunk, so it returns a (0, steps) array
    even where the chunk it would have started in is corrupt; on a pipe the code stream stays
    unread for a later request."""
    n, M = 103, 4
    codes = random_codes(n, M, 256, seed=5)
    data = bytearray(write_file(tmp_path / "a.qnc", codes, K=256, chunk_rows=10))
    with QncReader(io.BytesIO(bytes(data))) as r:
        entries = r._chunks
    for c in (0, len(entries) - 1):  # the chunks holding row 5 and row n (= the last chunk)
        offset, length = entries[c]
        data[offset + length - 1] ^= 0xFF  # the last plane's last byte: its CRC fails
    data = bytes(data)
    for steps in (1, M):
        with QncReader(io.BytesIO(data) if mode == "seek" else Pipe(data)) as r:
            before = r.bytes_read
            for rows in (slice(5, 5), slice(n, n + 10), slice(50, 40), slice(-3, -3),
                         np.array([], np.int64), []):
                got = r.codes(steps=steps, rows=rows)
                assert got.shape == (0, steps) and got.dtype == np.uint8
            assert r.bytes_read == before
            np.testing.assert_array_equal(r.codes(steps=steps, rows=slice(10, 20)),
                                          codes[10:20, :steps])
    with pytest.raises(QncFormatError, match="chunk 0, plane 4: checksum mismatch"):
        QncReader(io.BytesIO(data)).codes(rows=slice(5, 6))


def test_plane_sizes_account_for_every_byte(tmp_path):
    codes = random_codes(300, 8, 256)
    data = write_file(tmp_path / "a.qnc", codes, K=256, chunk_rows=64)
    sizes = QncReader(io.BytesIO(data)).plane_sizes()
    assert sizes == QncReader(Pipe(data)).plane_sizes()
    assert len(sizes) == 5 and all(len(chunk) == 8 for chunk in sizes)
    assert any(z for chunk in sizes for *_, z in chunk) and not all(
        z for chunk in sizes for *_, z in chunk)
    assert all(raw == min(64, 300 - 64 * c) for c, chunk in enumerate(sizes) for _, raw, _ in chunk)
    plane_bytes = sum(stored for chunk in sizes for stored, _, _ in chunk)
    with QncReader(io.BytesIO(data)) as r:
        r.codes()
        chunk_bytes = sum(length for _, length in r._chunks)
    assert chunk_bytes == plane_bytes + 5 * chunk_header_size(8)


# -- partial reads -----------------------------------------------------------------------------

def test_reading_half_the_planes_reads_about_half_the_code_bytes(tmp_path):
    codes = random_codes(4096, 16, 256)
    data = write_file(tmp_path / "a.qnc", codes, K=256, chunk_rows=1024, zstd_level=None)
    with QncReader(io.BytesIO(data)) as r:
        code_bytes = sum(length for _, length in r._chunks)
        before = r.bytes_read
        np.testing.assert_array_equal(r.codes(steps=8), codes[:, :8])
        assert r.bytes_read - before <= 0.55 * code_bytes
        assert before + code_bytes <= len(data)


def test_row_selection_reads_only_needed_chunks(tmp_path):
    codes = random_codes(1000, 4, 256)
    data = write_file(tmp_path / "a.qnc", codes, K=256, chunk_rows=100)
    with QncReader(io.BytesIO(data)) as r:
        lengths = [length for _, length in r._chunks]
        before = r.bytes_read
        np.testing.assert_array_equal(r.codes(rows=slice(310, 390)), codes[310:390])
        assert r.bytes_read - before == lengths[3]
        before = r.bytes_read
        np.testing.assert_array_equal(r.codes(rows=[950, 5, 990]), codes[[950, 5, 990]])
        assert r.bytes_read - before == lengths[0] + lengths[9]


# -- golden files and the SPEC example ---------------------------------------------------------

@pytest.mark.parametrize("name", make_golden.names())
def test_golden_file_decodes_to_expected_codes(name):
    data = (GOLDEN / f"{name}.qnc").read_bytes()
    expected = np.load(GOLDEN / f"{name}.npy")
    for mode in MODES:
        got = read_all(data, mode)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    with QncReader(GOLDEN / f"{name}.qnc") as r:
        model = r.model_bytes()
        assert (model is not None) == r.header.has_embedded_model
        if model is not None:
            assert model == make_golden.MODEL
            assert hashlib.sha256(model).digest() == r.header.model_sha256
    # the ivf section (SPEC.md 5.3): what make_golden wrote, as the package and the reader
    # written from SPEC.md alone both parse it, through a file and a pipe
    written = make_golden.CASES.get(name, (None, {}, None))[1].get("ivf")
    spec_ivf = spec_reader.spec_open(data).ivf
    assert (written is None) == (spec_ivf is None)
    for mode in MODES:
        with QncReader(io.BytesIO(data) if mode == "seek" else Pipe(data)) as r:
            ivf = r.ivf()
            assert r.header.has_ivf == (ivf is not None) == (written is not None)
            if ivf is None:
                continue
            residual = make_golden.CASES[name][1].get("ivf_residual", False)
            assert r.header.version == ((1, 3) if residual else (1, 2))
            assert r.header.residual_codes == spec_reader.spec_open(data).residual_codes == residual
            for got in (ivf, spec_ivf):
                assert got.centroids.dtype == np.float32
                np.testing.assert_array_equal(got.centroids, written.centroids)
                np.testing.assert_array_equal(got.list_ids, written.list_ids)
            assert ivf.list_ids.dtype == np.uint16


@pytest.mark.parametrize("name", make_golden.names())
def test_golden_file_is_regenerated_byte_for_byte(name):
    data = (GOLDEN / f"{name}.qnc").read_bytes()
    manifest = json.loads((GOLDEN / "manifest.json").read_text())
    assert manifest["files"][name]["sha256"] == hashlib.sha256(data).hexdigest()
    zstd_now = make_golden.zstd_version()
    if manifest["files"][name]["uses_zstd"] and manifest["zstd_version"] != zstd_now:
        pytest.skip(f"zstd {zstd_now} differs from the golden files' "
                    f"{manifest['zstd_version']}: compressed planes may differ")
    assert make_golden.build(name) == data


def test_golden_set_covers_the_required_cases():
    headers = {name: QncReader(GOLDEN / f"{name}.qnc").header for name in make_golden.names()}
    manifest = json.loads((GOLDEN / "manifest.json").read_text())["files"]
    assert set(manifest) == set(headers)
    assert any(h.K == 256 and not manifest[name]["uses_zstd"] for name, h in headers.items())
    assert any(h.K == 256 and manifest[name]["uses_zstd"] for name, h in headers.items())
    assert any(h.bytes_per_code == 2 for h in headers.values())
    assert any(h.has_embedded_model for h in headers.values())
    assert any(not h.has_embedded_model and h.n for h in headers.values())
    assert any(h.num_chunks >= 3 for h in headers.values())
    assert any(h.n == 0 for h in headers.values())
    assert any(h.version > (1, 0) for h in headers.values())
    assert any(h.version == (1, 2) and h.has_ivf for h in headers.values())
    ids_encodings = {make_golden.ivf_ids_encoding((GOLDEN / f"{name}.qnc").read_bytes())
                     for name in headers}
    assert {0, 1} <= ids_encodings  # raw and zstd list ids


def test_spec_worked_example_matches_the_code():
    spec = (REPO / "SPEC.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- worked-example:begin -->\n```text\n(.*?)```\n"
                      r"<!-- worked-example:end -->", spec, re.S)
    assert block, "SPEC.md lacks the worked-example block"
    data = (GOLDEN / "tiny_example.qnc").read_bytes()
    assert block.group(1) == annotated_hexdump(data), (
        "SPEC.md's worked example is stale: replace it with the output of "
        "`python qinco_codec/formats/golden/make_golden.py --example`")
    hex_column = "".join(line[8:8 + 24] for line in block.group(1).splitlines()
                         if re.match(r"[0-9a-f]{6}  ", line))
    assert bytes.fromhex(hex_column) == data


def test_determinism(tmp_path):
    codes = random_codes(200, 8, 256)
    a = write_file(tmp_path / "a.qnc", codes, K=256, metadata={"x": 1, "y": [1.5, None]})
    b = write_file(tmp_path / "b.qnc", codes, K=256, metadata={"y": [1.5, None], "x": 1},
                   split=(100, 100))
    assert a == b


def test_formats_layer_does_not_import_torch():
    code = "import sys, qinco_codec.formats; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- writer failures ---------------------------------------------------------------------------

def _leftovers(directory):
    return sorted(p.name for p in Path(directory).iterdir())


def test_writer_exception_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError):
        with QncWriter(tmp_path / "a.qnc", n=10, dim=2, source_dtype="float32", K=16, M=2,
                       model_sha256=SHA, model_config={}) as w:
            w.write_codes(np.zeros((5, 2), np.uint8))
            raise RuntimeError("interrupted")
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("rows", [9, 11, 0])
def test_writer_wrong_row_total_leaves_no_file(tmp_path, rows):
    with pytest.raises(InputError, match="n=10"):
        with QncWriter(tmp_path / "a.qnc", n=10, dim=2, source_dtype="float32", K=16, M=2,
                       model_sha256=SHA, model_config={}, chunk_rows=4) as w:
            w.write_codes(np.zeros((rows, 2), np.uint8))
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("bad", [
    dict(K=3), dict(K=1 << 17), dict(M=0), dict(chunk_rows=0), dict(chunk_rows=(1 << 24) + 1),
    dict(n=-1), dict(dim=0), dict(source_dtype="complex64"), dict(model_sha256=b"short"),
    dict(model_config=[1]), dict(metadata={"x": float("nan")}), dict(zstd_level=-1),
    dict(zstd_level=23), dict(zstd_level=2.0), dict(zstd_level=True), dict(zstd_level="3"),
    dict(model_bytes=b"not the model")])
def test_writer_rejects_bad_arguments(tmp_path, bad):
    kwargs = dict(n=1, dim=2, source_dtype="float32", K=16, M=2, model_sha256=SHA,
                  model_config={})
    kwargs.update(bad)
    with pytest.raises(InputError):
        QncWriter(tmp_path / "a.qnc", **kwargs)
    assert _leftovers(tmp_path) == []


def test_zstd_level_0_stores_raw_planes(tmp_path):
    """zstd_level=0 means what `--zstd-level 0` means: every plane raw, the same bytes as
    zstd_level=None (level 1 on the same codes does use zstd)."""
    codes = np.zeros((300, 4), np.uint8)
    raw = write_file(tmp_path / "none.qnc", codes, K=256, chunk_rows=100, zstd_level=None)
    assert write_file(tmp_path / "zero.qnc", codes, K=256, chunk_rows=100, zstd_level=0) == raw
    assert not any(z for chunk in QncReader(io.BytesIO(raw)).plane_sizes() for *_, z in chunk)
    packed = write_file(tmp_path / "one.qnc", codes, K=256, chunk_rows=100, zstd_level=1)
    assert all(z for chunk in QncReader(io.BytesIO(packed)).plane_sizes() for *_, z in chunk)


@pytest.mark.parametrize("codes", [np.zeros((2, 3)), np.full((2, 2), 16), np.full((2, 2), -1),
                                   np.zeros(2, np.uint8)])
def test_writer_rejects_bad_codes(tmp_path, codes):
    with pytest.raises(InputError):
        with QncWriter(tmp_path / "a.qnc", n=2, dim=2, source_dtype="float32", K=16, M=2,
                       model_sha256=SHA, model_config={}) as w:
            w.write_codes(codes)
    assert _leftovers(tmp_path) == []


# -- malformed files ---------------------------------------------------------------------------

def expect_error(data, fragment, modes=MODES):
    """Reading all of `data` fails with QncFormatError whose message contains `fragment`."""
    for mode in modes:
        with pytest.raises(QncFormatError, match=fragment):
            read_all(data, mode)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """A valid 4-chunk file (rows 64, 64, 64, 8) with raw and zstd planes and an embedded model."""
    return write_file(tmp_path_factory.mktemp("sample") / "s.qnc", random_codes(200, 4, 256),
                      K=256, chunk_rows=64, model_bytes=b"weights" * 10, metadata={"m": 1})


def test_bad_magic(sample):
    expect_error(b"GIF89a" + sample[6:], "bad magic")
    expect_error(b"\x89QNX", "bad magic")


def test_unknown_major_version(sample):
    expect_error(patch_header(sample, major=2), "unsupported .qnc major version 2")
    expect_error(sample[:8] + b"\x00\x00" + sample[10:], "major version 0")


def test_newer_minor_with_unknown_optional_section_is_read():
    data = (GOLDEN / "minor_1_1_unknown_section.qnc").read_bytes()
    with QncReader(io.BytesIO(data)) as r:
        assert r.header.version == (1, 1)
    for mode in MODES:
        np.testing.assert_array_equal(read_all(data, mode), np.load(GOLDEN / "k256_raw.npy"))


def test_unknown_required_section_is_rejected():
    data = make_golden.future_minor_variant((GOLDEN / "k256_raw.qnc").read_bytes())
    at = next(at for at, kind, _, _ in sections_of(data)
              if kind == make_golden.UNKNOWN_SECTION_TYPE)
    expect_error(patch_section(data, at, flags=SECTION_FLAG_REQUIRED), "marked required")
    # reserved flag bits of an unknown optional section are ignored
    np.testing.assert_array_equal(read_all(patch_section(data, at, flags=0xFFFFFFFE), "seek"),
                                  np.load(GOLDEN / "k256_raw.npy"))


# -- the quality_report section (version 1.1, SPEC.md 5.2) ---------------------------------------

QUALITY = {"writer": "test", "rates": [{"steps": 1, "mse": 0.5, "cosine": 0.75}], "sample": {"rows": 3}}


def test_quality_report_round_trip_makes_a_1_1_file_and_its_absence_a_1_0_file(tmp_path):
    codes = random_codes(30, 3, 256)
    kwargs = dict(n=30, dim=4, source_dtype="float32", K=256, M=3, model_sha256=SHA,
                  model_config={"K": 256}, metadata={"m": 1}, chunk_rows=8)
    for quality, version in ((QUALITY, (1, 1)), (None, (1, 0))):
        path = tmp_path / f"{version[1]}.qnc"
        with QncWriter(path, quality_report=quality, **kwargs) as w:
            w.write_codes(codes)
        data = path.read_bytes()
        for mode in MODES:
            with QncReader(io.BytesIO(data) if mode == "seek" else Pipe(data)) as r:
                assert r.header.version == version and r.header.quality_report == quality
                np.testing.assert_array_equal(r.codes(), codes)
        kinds = [kind for _, kind, _, _ in sections_of(data)]
        assert kinds == sorted(kinds) and (SECTION_QUALITY_REPORT in kinds) == (quality is not None)
        f = spec_reader.spec_open(data)
        assert (f.version_major, f.version_minor) == version and f.quality_report == quality
    # with the report, the other sections and the codes are those of the file without it
    without = (tmp_path / "0.qnc").read_bytes()
    assert read_all(without, "seek").tobytes() == read_all((tmp_path / "1.qnc").read_bytes(), "seek").tobytes()


def test_a_reader_that_does_not_know_quality_report_skips_it(monkeypatch):
    """What a 1.0 reader does (SPEC.md 5, 10): type 4 is unknown to it, REQUIRED is clear."""
    data = (GOLDEN / "quality_report.qnc").read_bytes()
    expected = np.load(GOLDEN / "quality_report.npy")
    for table in (spec_reader.MAX_OCCURRENCES, spec_reader.EXACT_FLAGS):
        monkeypatch.delitem(table, spec_reader.SEC_QUALITY_REPORT)
    monkeypatch.setattr(spec_reader, "JSON_TYPES", (1, 2))
    monkeypatch.setattr(spec_reader, "SEC_QUALITY_REPORT", -1)  # no type is 4 to it
    f = spec_reader.spec_open(data)
    assert f.quality_report is None
    np.testing.assert_array_equal(spec_reader.spec_codes(f), expected)
    monkeypatch.undo()
    f = spec_reader.spec_open(data)
    assert f.quality_report["writer"] == "qinco-codec 0.1.0"
    np.testing.assert_array_equal(read_all(data, "seek"), expected)


def test_quality_report_flags_and_occurrences_are_checked():
    data = (GOLDEN / "quality_report.qnc").read_bytes()
    at = next(at for at, kind, _, _ in sections_of(data) if kind == SECTION_QUALITY_REPORT)
    expect_error(patch_section(data, at, flags=SECTION_FLAG_REQUIRED), "quality_report section .* flags")
    with pytest.raises(Exception, match="flags"):
        spec_reader.spec_open(patch_section(data, at, flags=SECTION_FLAG_REQUIRED))
    payload = encode_json({"rates": []}, "quality_report")
    twice = single_chunk_file([(ENCODING_RAW, b"\x01", 1)], rows=1, sections=[
        (SECTION_MODEL_CONFIG, SECTION_FLAG_REQUIRED, b"{}"),
        (SECTION_QUALITY_REPORT, 0, payload), (SECTION_QUALITY_REPORT, 0, payload)])
    expect_error(twice, "duplicate quality_report")
    not_json = single_chunk_file([(ENCODING_RAW, b"\x01", 1)], rows=1, sections=[
        (SECTION_MODEL_CONFIG, SECTION_FLAG_REQUIRED, b"{}"), (SECTION_QUALITY_REPORT, 0, b"[1]")])
    expect_error(not_json, "quality_report section must hold a JSON object")


@pytest.mark.parametrize("minor,extension", [(0, bytes(8)), (0, b"\xff" * (4096 - 88)),
                                             (7, b"\x01" * 12)])
def test_any_header_size_is_accepted_whatever_the_minor_version(minor, extension):
    """G5: header_size in [88, 4096] is valid for every version_minor, 0 included."""
    data = make_golden.future_minor_variant((GOLDEN / "k256_raw.qnc").read_bytes(), minor=minor,
                                            extension=extension, unknown_section=False)
    for mode in MODES:
        with QncReader(io.BytesIO(data) if mode == "seek" else Pipe(data)) as r:
            assert r.header.version == (1, minor)
            np.testing.assert_array_equal(r.codes(), np.load(GOLDEN / "k256_raw.npy"))


def test_every_truncation_is_detected():
    data = (GOLDEN / "embedded_model.qnc").read_bytes()
    for k in range(len(data)):
        expect_error(data[:k], "truncated")


@pytest.mark.parametrize("name", ["k256_zstd", "k4096_u16"])
def test_truncation_and_extension_of_larger_files(name):
    data = (GOLDEN / f"{name}.qnc").read_bytes()
    for k in (0, 7, 15, 87, 88, 150, len(data) // 2, len(data) - TRAILER_SIZE - 1,
              len(data) - TRAILER_SIZE, len(data) - 1):
        expect_error(data[:k], "truncated")
    expect_error(data + b"\0", "trailing bytes|truncated")


@pytest.mark.parametrize("mode", MODES)
def test_flipped_bit_in_plane_names_chunk_and_plane(sample, mode):
    with QncReader(io.BytesIO(sample)) as r:
        offset, _ = r._chunks[1]
        sizes = r.plane_sizes()[1]
    for plane in (1, 3):  # plane 1 raw, plane 3 zstd
        assert sizes[plane - 1][2] == (plane == 3)
        at = offset + chunk_header_size(4) + sum(s for s, _, _ in sizes[:plane - 1]) + 1
        corrupted = bytearray(sample)
        corrupted[at] ^= 0x10
        expect_error(bytes(corrupted), f"chunk 1, plane {plane}: checksum mismatch", [mode])
        if plane > 1:  # the planes before the corrupted one still decode
            with QncReader(io.BytesIO(bytes(corrupted))) as r:
                r.codes(steps=plane - 1, rows=slice(64, 128))


def test_flipped_bits_elsewhere_are_detected(sample):
    with QncReader(io.BytesIO(sample)) as r:
        chunk1, _ = r._chunks[1]
        index_offset = r._chunks[-1][0] + r._chunks[-1][1]
    for at, fragment in ((30, "header checksum mismatch"),
                         (90, "section header at offset 88: checksum mismatch"),
                         (115, "model_config section checksum mismatch"),
                         (chunk1 + 20, "chunk 1: chunk header checksum mismatch"),
                         (index_offset + 20, "index checksum mismatch"),
                         (len(sample) - 10, "no .qnc trailer"),
                         (len(sample) - 3, "trailer checksum mismatch"),
                         (len(sample) - 20, "trailer checksum mismatch")):
        corrupted = bytearray(sample)
        corrupted[at] ^= 0x01
        modes = ["seek"] if "trailer" in fragment else MODES
        expect_error(bytes(corrupted), fragment, modes)


def test_embedded_model_hash_mismatch(sample):
    at = sample.index(b"weights")
    tampered = sample[:at] + b"W" + sample[at + 1:]
    with QncReader(io.BytesIO(tampered)) as r:
        with pytest.raises(QncFormatError, match="embedded_model section checksum"):
            r.model_bytes()
    # same bytes with fresh section CRCs: now only the SHA-256 check can catch it
    fixed = patch_section(tampered, at - SECTION_HEADER_SIZE,
                          payload_crc32=crc32(b"W" + b"eights" + b"weights" * 9))
    for source in (io.BytesIO(fixed), Pipe(fixed)):
        with QncReader(source) as r:
            with pytest.raises(QncFormatError, match="SHA-256"):
                r.model_bytes()


@pytest.mark.parametrize("changes,fragment", [
    (dict(n=260), "the index is 84 bytes, but the header's n and chunk_rows imply 5 chunks, "
                  "whose index is 100 bytes"
                  "|chunk 3: chunk header says chunk 3 with 8 rows.*64 rows"),
    (dict(n=198), "chunk 3: chunk header says chunk 3 with 8 rows.*6 rows"),
    (dict(bytes_per_code=2), "inconsistent header: bytes_per_code=2 does not match K=256"),
    (dict(K=300), "inconsistent header: K=300 must be a power of two"),
    (dict(M=5), "chunk 0: chunk header checksum mismatch"),
    (dict(chunk_rows=0), "chunk_rows=0"),
    (dict(source_dtype=99), "unknown source_dtype code 99"),
    (dict(header_size=20), "header_size=20"),
])
def test_inconsistent_header(sample, changes, fragment):
    expect_error(patch_header(sample, **changes), fragment)


@pytest.mark.parametrize("mode", MODES)
def test_huge_declared_sizes(sample, mode):
    """Lengths beyond the file are rejected before any allocation, on files and pipes."""
    # a pipe reads on into the code stream, whose bytes fail as a section header
    cases = [(patch_header(sample, sections_length=1 << 62),
              r"truncated|runs past|section header at offset \d+: checksum mismatch")]
    # model_config length -> 2**60 with a valid section header CRC
    cases.append((patch_section(sample, 88, length=1 << 60), "declares 1152921504606846976 bytes"))
    with QncReader(io.BytesIO(sample)) as r:
        offset, _ = r._chunks[0]
    stored = bytearray(sample)  # plane 1 stored_len -> 2**31 with a valid chunk header CRC
    at = offset + CHUNK_PREFIX.size
    stored[at:at + 4] = (1 << 31).to_bytes(4, "little")
    end = offset + chunk_header_size(4) - 4
    stored[end:end + 4] = crc32(bytes(stored[offset:end])).to_bytes(4, "little")
    cases.append((bytes(stored), "raw plane has stored_len=2147483648"))
    if mode == "seek":
        cases.append((patch_trailer(sample, index_offset=1 << 63), "trailer points at index"))
        cases.append((patch_trailer(sample, index_length=1 << 63), "trailer points at index"))
    for data, fragment in cases:
        expect_error(data, fragment, [mode])


def test_zstd_planes_must_decompress_to_exactly_raw_len():
    rows = 1000
    zeros = np.zeros(rows, np.uint8).tobytes()
    good = zstandard.ZstdCompressor().compress(zeros)
    np.testing.assert_array_equal(
        read_all(single_chunk_file([(ENCODING_ZSTD, good, rows)], rows=rows), "seek"),
        np.zeros((rows, 1)))
    bomb = zstandard.ZstdCompressor().compress(bytes(100 * rows))
    short = zstandard.ZstdCompressor().compress(bytes(rows - 1))
    size_at = zstandard.frame_header_size(short) - 2  # the 2-byte Frame_Content_Size field
    lying = short[:size_at] + (rows - 256).to_bytes(2, "little") + short[size_at + 2:]
    assert zstandard.get_frame_parameters(lying).content_size == rows
    cases = [
        (bomb, "declares 100000 bytes of content, plane table says raw_len=1000"),
        (short, "declares 999 bytes"),
        (lying, "invalid zstd frame"),  # declares raw_len but holds 999 bytes
        (good + b"\0", "invalid zstd frame"),
        (b"not zstd", "invalid zstd frame"),
    ]
    for stored, fragment in cases:
        assert len(stored) < rows
        expect_error(single_chunk_file([(ENCODING_RAW, zeros, rows), (ENCODING_ZSTD, stored, rows)],
                                       rows=rows), f"chunk 0, plane 2: .*{fragment}")


def test_zstd_frame_must_declare_its_content_size():
    """G3: Frame_Content_Size is mandatory, so that the size is checked before decompressing."""
    rows = 1000
    no_size = zstandard.ZstdCompressor(write_content_size=False)
    for content in (bytes(rows), bytes(100 * rows), bytes(rows - 1)):
        expect_error(single_chunk_file([(ENCODING_ZSTD, no_size.compress(content), rows)],
                                       rows=rows),
                     "chunk 0, plane 1: zstd frame header lacks Frame_Content_Size")


def test_zstd_content_checksum_is_verified_when_present():
    """G9: a frame may carry a content checksum; if it does, it must match."""
    rows = 1000
    codes = (np.arange(rows) % 7 == 0).astype(np.uint8)
    framed = zstandard.ZstdCompressor(write_checksum=True).compress(codes.tobytes())
    assert zstandard.get_frame_parameters(framed).has_checksum
    for mode in MODES:
        np.testing.assert_array_equal(
            read_all(single_chunk_file([(ENCODING_ZSTD, framed, rows)], rows=rows), mode)[:, 0],
            codes)
    bad = framed[:-1] + bytes([framed[-1] ^ 0x01])  # the plane CRC-32 is recomputed over it
    expect_error(single_chunk_file([(ENCODING_ZSTD, bad, rows)], rows=rows),
                 "chunk 0, plane 1: invalid zstd frame.*checksum")


def test_zstd_frame_with_dictionary_is_rejected():
    rows = 1000
    samples = [bytes(np.random.default_rng(i).integers(0, 4, 300).astype(np.uint8))
               for i in range(200)]
    dictionary = zstandard.train_dictionary(1024, samples)
    framed = zstandard.ZstdCompressor(dict_data=dictionary).compress(bytes(rows))
    assert zstandard.get_frame_parameters(framed).dict_id
    expect_error(single_chunk_file([(ENCODING_ZSTD, framed, rows)], rows=rows),
                 "chunk 0, plane 1: zstd frame needs dictionary")


def test_writer_zstd_frames_follow_the_spec_parameters(tmp_path):
    """G3: level 3 by default, Frame_Content_Size written, no checksum, no dictionary ID: the
    frames are exactly python-zstandard's one-shot output with those parameters."""
    codes = random_codes(300, 6, 256)
    for level in (None, 1, 19):
        kwargs = {} if level is None else dict(zstd_level=level)
        path = tmp_path / f"z{level}.qnc"
        with QncWriter(path, n=300, dim=2, source_dtype="float32", K=256, M=6, model_sha256=SHA,
                       model_config={}, chunk_rows=128, **kwargs) as w:
            w.write_codes(codes)
        reference = zstandard.ZstdCompressor(level=level or 3, write_content_size=True,
                                             write_checksum=False, write_dict_id=False)
        data = path.read_bytes()
        found = 0
        with QncReader(io.BytesIO(data)) as r:
            for c, (offset, _) in enumerate(r._chunks):
                at = offset + chunk_header_size(6)
                for step, (stored_len, raw_len, is_zstd) in enumerate(r.plane_sizes()[c]):
                    stored = data[at:at + stored_len]
                    at += stored_len
                    if not is_zstd:
                        continue
                    found += 1
                    params = zstandard.get_frame_parameters(stored)
                    assert params.content_size == raw_len
                    assert not params.has_checksum and params.dict_id == 0
                    assert stored[4] & 0x03 == 0  # Dictionary_ID_flag: no Dictionary_ID field
                    plane = np.ascontiguousarray(codes[128 * c:128 * (c + 1), step]).tobytes()
                    assert stored == reference.compress(plane)
        assert found


def test_codes_must_be_below_K():
    plane = bytes([1, 2, 16, 0])
    expect_error(single_chunk_file([(ENCODING_RAW, plane, 4)], rows=4, K=16),
                 "chunk 0, plane 1: code 16 is not below K=16")


def test_zstd_plane_cannot_claim_more_than_zstd_can_expand():
    """A zstd frame expands at most 32768x; a plane table claiming more is rejected before any
    allocation or decompression."""
    rows = 32768 * 2 + 1
    expect_error(single_chunk_file([(ENCODING_ZSTD, bytes(2), rows)], rows=rows),
                 "chunk 0, plane 1: a zstd frame of stored_len=2 bytes cannot decompress to "
                 "raw_len=65537")


@pytest.mark.parametrize("planes,fragment", [
    ([(ENCODING_ZSTD, bytes(10), 10)], "zstd plane has stored_len=10"),
    ([(ENCODING_RAW, bytes(9), 10)], "raw plane has stored_len=9"),
    ([(7, bytes(10), 10)], "unknown plane encoding 7"),
    ([(ENCODING_RAW, bytes(20), 20)], "raw_len=20, expected"),
])
def test_bad_plane_table(planes, fragment):
    expect_error(single_chunk_file(planes, rows=10), f"chunk 0, plane 1: {fragment}")


def test_trailer_and_index_inconsistencies(sample):
    index_offset, index_length, _ = TRAILER_FIELDS.unpack_from(sample, len(sample) - TRAILER_SIZE)
    moved = sample[:-TRAILER_SIZE] + encode_trailer(index_offset - 1, index_length + 1)
    expect_error(moved, "the index is 85 bytes, but the header's n and chunk_rows imply 4 "
                        "chunks, whose index is 84 bytes", ["seek"])
    expect_error(moved, "trailer points at an index at", ["pipe"])
    with QncReader(io.BytesIO(sample)) as r:
        entries = r._chunks
    last = len(entries) - 1  # move the boundary after chunk 0 by one byte: still tiles the span
    shifted = encode_index([(offset + (c > 0), length + (c == 0) - (c == last))
                            for c, (offset, length) in enumerate(entries)])
    forged = sample[:index_offset] + shifted + encode_trailer(index_offset, len(shifted))
    expect_error(forged, "chunk 0: header and planes take .* the index says", ["seek"])
    expect_error(forged, "the index does not match the chunks", ["pipe"])


def test_index_checksum_is_verified_before_its_fields_are_used(sample):
    """SPEC.md 11.1 (G14): the index length follows from the header, and index_crc32 is checked
    before the tag, chunk_count or any entry is used: a corrupted chunk_count, tag or entry
    reads as a checksum mismatch, in both modes; the same values with a resealed CRC reach the
    field checks."""
    index_offset, index_length, _ = TRAILER_FIELDS.unpack_from(sample, len(sample) - TRAILER_SIZE)

    def patched(at, value, reseal):
        data = bytearray(sample)
        data[index_offset + at:index_offset + at + len(value)] = value
        if reseal:
            body = bytes(data[index_offset:index_offset + index_length - 4])
            data[index_offset + index_length - 4:index_offset + index_length] = \
                CHUNK_CRC.pack(crc32(body))
        return bytes(data)

    crc = "^index checksum mismatch"
    for at, value, unsealed, resealed in (
            (8, (5).to_bytes(8, "little"), crc, "the index lists 5 chunks"),
            (16, (7).to_bytes(8, "little"), crc, "index entry for chunk 0"),
            (0, b"QIDY", "found b'QIDY', expected tag b'QIDX', and a checksum mismatch",
             "^bad index tag b'QIDY'")):
        expect_error(patched(at, value, False), unsealed)
        expect_error(patched(at, value, True), resealed)
    # a pipe holding more chunks than its header declares meets chunk bytes where the index
    # should start: reported as such, from the checksum
    expect_error(patch_header(sample, n=192), "no index where the header's 3 chunks end .*more "
                                              "chunks than its header declares", ["pipe"])


# -- section headers: checksum, type 0, flags of known types (gaps G7, G8, G1) -----------------

def test_section_header_fields_are_checksummed():
    """G7: a flipped byte in any section header field (type, flags, length, payload CRC, header
    CRC) is caught before the section is interpreted, so user_metadata or embedded_model cannot
    silently turn into an unknown optional section."""
    data = (GOLDEN / "embedded_model.qnc").read_bytes()
    found = sections_of(data)
    assert [kind for _, kind, _, _ in found] == [SECTION_MODEL_CONFIG, SECTION_USER_METADATA,
                                                 SECTION_EMBEDDED_MODEL]
    for at, _, _, _ in found:
        for i in range(SECTION_HEADER_SIZE):
            for mask in (0x01, 0x80):
                bad = bytearray(data)
                bad[at + i] ^= mask
                expect_error(bytes(bad), f"section header at offset {at}: checksum mismatch")


def test_section_of_type_0_is_rejected():
    """G8: type 0 is never valid, whatever its flags."""
    for flags in (0, SECTION_FLAG_REQUIRED):
        data = single_chunk_file([(ENCODING_RAW, bytes(4), 4)], rows=4, sections=[
            (0, flags, b""), (SECTION_MODEL_CONFIG, SECTION_FLAG_REQUIRED, b"{}")])
        expect_error(data, "has type 0, which is reserved and never valid")


@pytest.mark.parametrize("kind,flags", [
    (SECTION_MODEL_CONFIG, 0), (SECTION_MODEL_CONFIG, 3), (SECTION_MODEL_CONFIG, 0x80000001),
    (SECTION_USER_METADATA, SECTION_FLAG_REQUIRED), (SECTION_USER_METADATA, 2),
    (SECTION_EMBEDDED_MODEL, SECTION_FLAG_REQUIRED), (SECTION_EMBEDDED_MODEL, 0x100)])
def test_known_section_with_other_flags_is_rejected(kind, flags):
    """G1: the flags of a known section type must be exactly the table's value."""
    sections = {SECTION_MODEL_CONFIG: (SECTION_MODEL_CONFIG, SECTION_FLAG_REQUIRED, b"{}")}
    payload = b"model" if kind == SECTION_EMBEDDED_MODEL else b"{}"
    sections[kind] = (kind, flags, payload)
    data = single_chunk_file([(ENCODING_RAW, bytes(4), 4)], rows=4,
                             sections=[sections[k] for k in sorted(sections)])
    expect_error(data, f"section at offset \\d+ has flags 0x{flags:x}; this section type "
                       f"requires flags 0x")


# -- canonical JSON (gap G2) ---------------------------------------------------------------------

def test_canonical_json_is_exactly_pinned_down():
    obj = {"\U0001F600": 1, "\uff5e": 2, "b": [1.0, -0.0, 0.0001, 1e-05, 1.5e-07, 1e16, 1e15,
                                             123.25, 1.2345678901234568e+17, -2, 10 ** 19],
           "a": "\x01\x1f\x7f\u2028/\"\\\b\f\n\r\té", "A": {"z": True, "y": False, "x": None},
           "B": (1, 2)}
    expected = ('{"A":{"x":null,"y":false,"z":true},"B":[1,2],'
                '"a":"\\u0001\\u001f\x7f\u2028/\\"\\\\\\b\\f\\n\\r\\té",'
                '"b":[1.0,-0.0,0.0001,1e-05,1.5e-07,1e+16,1000000000000000.0,123.25,'
                '1.2345678901234568e+17,-2,10000000000000000000],'
                '"\uff5e":2,"\U0001F600":1}').encode("utf-8")
    assert encode_json(obj, "x") == expected
    assert decode_json(expected, "x") == {**obj, "B": [1, 2]}
    # the SPEC.md example
    assert encode_json({"b": [1.0, 1e-5, 10 ** 19], "a": "é\n/", "A": True}, "x") == \
        '{"A":true,"a":"é\\n/","b":[1.0,1e-05,10000000000000000000]}'.encode("utf-8")


@pytest.mark.parametrize("obj", [{1: "a"}, {"a": {2: 1}}, {"a": [{None: 1}]}, {"s": "\ud800"},
                                 {"x": float("inf")}, {"x": [float("nan")]}, {"x": object()},
                                 {"x": b"bytes"}])
def test_writer_refuses_json_without_canonical_form(tmp_path, obj):
    with pytest.raises(InputError):
        encode_json(obj, "metadata")
    with pytest.raises(InputError):
        QncWriter(tmp_path / "a.qnc", n=1, dim=2, source_dtype="float32", K=16, M=2,
                  model_sha256=SHA, model_config={}, metadata=obj)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("payload,fragment", [
    (b'{"a":1,"a":2}', "duplicate object key 'a'"),
    (b'{"a":1,"\\u0061":1}', "duplicate object key 'a'"),
    (b'{"x":{"b":1,"b":1}}', "duplicate object key 'b'"),
    (b'{"l":[0,{"c":{},"c":{}}]}', "duplicate object key 'c'"),
    (b'{"a":1e400}', "does not fit a finite binary64"),
    (b'{"a":[-1.5e999]}', "does not fit a finite binary64"),
    (b'{"a":NaN}', "non-standard JSON constant NaN"),
    (b'\xef\xbb\xbf{}', "not valid JSON: Unexpected UTF-8 BOM"),
    (b'{"a":"\xff"}', "not valid UTF-8"),
    (b'{"a":}', "not valid JSON: Expecting value"),
    (b'[]', "must hold a JSON object"),
    # SPEC.md 5: a reader accepts integers of up to 4300 digits and nesting up to 512 levels
    (b'{"K":' + b"9" * 4301 + b'}', r"integer 999999999999\.\.\.\(4301 digits\) has more than the "
                                      r"4300 digits a reader accepts"),
    (b'{"K":' + b"9" * 5000 + b'}', r"\(5000 digits\) has more than the 4300 digits"),
    (b'{"K":-' + b"9" * 5000 + b'}', r"\(5000 digits\) has more than the 4300 digits"),
    (b'{"K":' + b"0" * 30 + b'}', "not valid JSON"),  # leading zeros are not JSON
    (b'{"a":' + b"[" * 512 + b"]" * 512 + b'}', "nested 513 levels deep, more than 512"),
    (b'{"a":' + b'{"b":' * 512 + b"1" + b"}" * 513, "nested 513 levels deep, more than 512"),
    (b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b'}', "nested more than 512 levels deep"),
])
def test_reader_rejects_invalid_json_sections(payload, fragment):
    """G2: duplicate names (at any depth, compared after unescaping) and numbers overflowing
    binary64 are rejected, besides NaN/Infinity, bad UTF-8 and non-objects; G12: so are
    integers of more than 4300 digits and nesting deeper than 512 levels, each with a message
    naming the rule (a 4301-digit integer is not "invalid UTF-8")."""
    for kind in (SECTION_MODEL_CONFIG, SECTION_USER_METADATA):
        sections = [(SECTION_MODEL_CONFIG, SECTION_FLAG_REQUIRED, b"{}"),
                    (SECTION_USER_METADATA, 0, b"{}")]
        sections[kind - 1] = (kind, sections[kind - 1][1], payload)
        data = single_chunk_file([(ENCODING_RAW, bytes(4), 4)], rows=4, sections=sections)
        expect_error(data, fragment)


def test_reader_accepts_non_canonical_json():
    payload = b' { "b" : 1 ,\n "a" : [ 1E2 , 9' + b"9" * 300 + b'.5, -0 ] } '
    data = single_chunk_file([(ENCODING_RAW, bytes(4), 4)], rows=4, sections=[
        (SECTION_MODEL_CONFIG, SECTION_FLAG_REQUIRED, payload)])
    with QncReader(io.BytesIO(data)) as r:
        assert r.header.model_config == {"a": [100.0, float("9" * 301 + ".5"), 0], "b": 1}


def test_json_limits_are_inclusive():
    """SPEC.md 5 (G12): a writer stays within [-2^63, 2^64) and 64 levels of nesting (inclusive),
    and refuses one past each."""
    edge = {"lo": -(1 << 63), "hi": (1 << 64) - 1, "deep": {"a": [[]]}}
    for _ in range(60):
        edge = {"d": edge}  # the innermost [] is now at depth 64
    text = encode_json(edge, "metadata")
    assert decode_json(text, "metadata") == edge
    for bad, fragment in (({"x": 1 << 64}, "integer 18446744073709551616 is outside"),
                          ({"x": [-(1 << 63) - 1]}, "integer -9223372036854775809 is outside"),
                          ({"x": 10 ** 5000}, "integer with about 5001 digits is outside"),
                          ({"d": edge}, "nested more than 64 levels deep")):
        with pytest.raises(InputError, match=fragment):
            encode_json(bad, "metadata")
    assert encode_json({"t": True, "f": 1.5e300}, "m") == b'{"f":1.5e+300,"t":true}'


def test_reader_accepts_what_earlier_writers_could_write():
    """SPEC.md 5: writers before the limits were set could write any integer Python prints (up to
    4300 digits) and deep nesting; a reader accepts integers of up to 4300 digits and 512 levels,
    so such files keep opening, while this writer refuses to write them."""
    big = int("9" * 4300)
    deep = b'{"a":' + b"[" * 511 + b"]" * 511 + b"}"
    for payload in (b'{"K":' + b"9" * 4300 + b'}', b'{"x":[18446744073709551616,-9223372036854775809]}', deep):
        data = single_chunk_file([(ENCODING_RAW, bytes(4), 4)], rows=4, sections=[
            (SECTION_MODEL_CONFIG, SECTION_FLAG_REQUIRED, b"{}"), (SECTION_USER_METADATA, 0, payload)])
        with QncReader(io.BytesIO(data)) as r:
            assert r.header.metadata == decode_json(payload, "metadata")
    assert decode_json(b'{"K":' + b"9" * 4300 + b'}', "m") == {"K": big}


# -- limits: chunk count, header_size, prefix length, allocation (gaps G4, G5, G6) ---------------

def test_chunk_count_must_be_below_2_to_the_32(tmp_path, sample):
    """G4: ceil(n / chunk_rows) < 2^32, checked by the writer and the reader."""
    for n, chunk_rows in ((1 << 32, 1), ((1 << 32) * 64 - 63, 64), (1 << 64 - 1, 1 << 24)):
        with pytest.raises(InputError, match="must be below 2\\*\\*32"):
            QncWriter(tmp_path / "a.qnc", n=n, dim=2, source_dtype="float32", K=16, M=2,
                      model_sha256=SHA, model_config={}, chunk_rows=chunk_rows)
    QncWriter(tmp_path / "a.qnc", n=(1 << 32) - 1, dim=2, source_dtype="float32", K=16, M=2,
              model_sha256=SHA, model_config={}, chunk_rows=1)  # at the limit: accepted
    assert _leftovers(tmp_path) == []
    expect_error(patch_header(sample, n=(1 << 32) * 64), "inconsistent header: n=.* make "
                 "4294967296 chunks; ceil\\(n / chunk_rows\\) must be below 2\\*\\*32")
    # one chunk fewer passes the header check and fails on the index instead
    expect_error(patch_header(sample, n=((1 << 32) - 1) * 64),
                 "imply 4294967295 chunks, whose index is|chunk 3: chunk header says chunk 3 "
                 "with 8 rows")


def test_header_size_outside_88_4096_is_rejected(sample):
    for header_size in (87, 4097, 1 << 31):
        expect_error(patch_header(sample, header_size=header_size),
                     f"header_size={header_size} must be in \\[88, 4096\\]")


def test_prefix_steps_must_be_in_1_to_M(sample):
    """G6: a prefix read of b steps requires 1 <= b <= M (M = 4 here)."""
    for mode in MODES:
        for bad in (0, 5, -1, True):
            with QncReader(io.BytesIO(sample) if mode == "seek" else Pipe(sample)) as r:
                with pytest.raises(InputError, match="must be an integer in \\[1, M=4\\]"):
                    r.codes(steps=bad)
                with pytest.raises(InputError, match="must be an integer in \\[1, M=4\\]"):
                    next(r.iter_chunks(steps=bad))
        for b in (1, 4):
            with QncReader(io.BytesIO(sample) if mode == "seek" else Pipe(sample)) as r:
                assert r.codes(steps=b).shape == (200, b)


@pytest.mark.parametrize("mode", MODES)
def test_declared_sizes_do_not_drive_allocations(mode):
    """A 2.5 kB file declaring 2^24 rows of 4 zstd planes (plausible stored sizes, valid CRCs,
    garbage frames): decoding fails without allocating anything near the 64 MiB the header
    implies."""
    import tracemalloc
    rows = 1 << 24
    garbage = bytes(range(256)) * 2 + bytes(88)  # 600 bytes, not a zstd frame
    data = single_chunk_file([(ENCODING_ZSTD, garbage, rows)] * 4, rows=rows)
    assert len(data) < 3000
    tracemalloc.start()
    try:
        with pytest.raises(QncFormatError, match="chunk 0, plane 1: invalid zstd frame"):
            read_all(data, mode)
        with pytest.raises(QncFormatError, match="chunk 0, plane 1: invalid zstd frame"):
            QncReader(io.BytesIO(data) if mode == "seek" else Pipe(data)).codes(
                rows=slice(5, rows - 5))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak


def test_large_compressed_output_is_still_decoded(tmp_path):
    """The allocation guard falls back to growing the output; it does not refuse files whose
    planes compress far better than PREALLOCATE_FACTOR."""
    codes = np.zeros((200_000, 3), np.uint8)
    codes[::1000, 0] = 7
    data = write_file(tmp_path / "z.qnc", codes, K=256, chunk_rows=65536, split=())
    assert len(data) * 64 < codes.size
    for mode in MODES:
        np.testing.assert_array_equal(read_all(data, mode), codes)
    with QncReader(io.BytesIO(data)) as r:
        np.testing.assert_array_equal(r.codes(rows=slice(100, 150_000), steps=2),
                                      codes[100:150_000, :2])
