"""The ivf section (SPEC.md 5.3, .qnc 1.2): its byte layout and every refusal (package and the
spec-only reader of tests/spec_reader.py agree), older readers skipping it, lazy reading, and
building it: qinco_codec.add_ivf, compress(ivf=...), qinco-index and qinco-compress --ivf."""
import hashlib
import io
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import zstandard

import spec_reader  # tests/spec_reader.py: written from SPEC.md alone
from pipe_stream import Pipe
from qinco_codec.errors import InputError, QncFormatError
from qinco_codec.formats import QncReader, QncWriter
from qinco_codec.formats.ivf import IvfSection, decode_ivf, encode_ivf
from qinco_codec.formats.layout import (IVF_HEAD, SECTION_FLAG_REQUIRED, SECTION_IVF,
                                        SECTION_MODEL_CONFIG)
from qinco_codec.formats.sections import encode_section

GOLDEN = Path(__file__).resolve().parents[1] / "qinco_codec" / "formats" / "golden"
SHA = hashlib.sha256(b"model").digest()


def lists(n, dim, nlist, seed=0, sort=False):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, nlist, n)
    return IvfSection(rng.standard_normal((nlist, dim)).astype(np.float32),
                      np.sort(ids) if sort else ids)


def write(path, n=50, dim=4, ivf=None, zstd_level=3, quality_report=None, chunk_rows=16):
    codes = np.random.default_rng(1).integers(0, 256, (n, 3)).astype(np.uint8)
    with QncWriter(path, n=n, dim=dim, source_dtype="float32", K=256, M=3, model_sha256=SHA,
                   model_config={"K": 256}, chunk_rows=chunk_rows, zstd_level=zstd_level,
                   quality_report=quality_report, ivf=ivf) as w:
        w.write_codes(codes)
    return Path(path).read_bytes(), codes


def assert_same(got, want):
    assert got.centroids.dtype == np.float32 and got.centroids.flags.c_contiguous
    np.testing.assert_array_equal(got.centroids, np.asarray(want.centroids, np.float32))
    np.testing.assert_array_equal(got.list_ids, want.list_ids)


# -- the section's bytes -------------------------------------------------------------------------

@pytest.mark.parametrize("n,dim,nlist,level,sort,id_dtype,encoding", [
    (50, 4, 5, None, False, np.uint16, 0), (600, 8, 3, 3, True, np.uint16, 1),
    (0, 7, 2, 3, False, np.uint16, 0), (1, 1, 1, 3, False, np.uint16, 0),
    (300, 2, 65536, 3, False, np.uint16, None), (200, 1, 65537, 3, False, np.uint32, None)])
def test_round_trip_of_the_payload(n, dim, nlist, level, sort, id_dtype, encoding):
    section = lists(n, dim, nlist, sort=sort)
    payload = encode_ivf(section, zstd_level=level)
    head = IVF_HEAD.unpack(payload[:32])
    assert head[:4] == (n, dim, nlist, 2 if id_dtype == np.uint16 else 4)
    assert encoding is None or head[4] == encoding
    assert len(payload) == 32 + 4 * nlist * dim + head[5]
    got = decode_ivf(payload, dim=dim, n=n)
    assert_same(got, section)
    assert got.list_ids.dtype == id_dtype and got.nlist == nlist and got.n == n
    np.testing.assert_array_equal(got.list_sizes(), np.bincount(section.list_ids, minlength=nlist))
    # the spec-only reader parses the same payload to the same lists
    f = spec_reader.SpecFile(b"", 1, 2, 88, n, 0, dim, 256, 1, 1, 1, 1, 0, bytes(32))
    parsed = spec_reader._parse_ivf(payload, f)
    np.testing.assert_array_equal(parsed.centroids, section.centroids)
    np.testing.assert_array_equal(parsed.list_ids, section.list_ids)


def test_zstd_is_kept_only_when_shorter_and_follows_the_plane_rules():
    sorted_ids = encode_ivf(lists(1000, 2, 4, sort=True), zstd_level=3)
    random_ids = encode_ivf(lists(1000, 2, 60000), zstd_level=3)
    assert sorted_ids[17] == 1 and random_ids[17] == 0  # ids_encoding
    frame = sorted_ids[32 + 4 * 4 * 2:]
    params = zstandard.get_frame_parameters(frame)
    assert params.content_size == 2000 and not params.dict_id and not params.has_checksum
    assert frame == spec_reader.spec_zstd(3).compress(
        np.sort(np.random.default_rng(0).integers(0, 4, 1000)).astype("<u2").tobytes())


@pytest.mark.parametrize("mode", ["seek", "pipe"])
def test_writer_and_reader_round_trip_make_a_1_2_file(tmp_path, mode):
    section = lists(50, 4, 7)
    for quality in (None, {"writer": "test"}):
        data, codes = write(tmp_path / "a.qnc", ivf=section, quality_report=quality)
        with QncReader(io.BytesIO(data) if mode == "seek" else Pipe(data)) as r:
            assert r.header.version == (1, 2) and r.header.has_ivf
            assert r.header.quality_report == quality
            np.testing.assert_array_equal(r.codes(), codes)
            assert_same(r.ivf(), section)
            assert r.ivf() is r.ivf()  # decoded once
        kinds = [s.type for s in spectrum(data)]
        assert kinds == sorted(kinds) and kinds[-1] == SECTION_IVF
    plain, codes = write(tmp_path / "b.qnc")
    with QncReader(io.BytesIO(plain)) as r:
        assert r.header.version == (1, 0) and not r.header.has_ivf and r.ivf() is None
        assert r.ivf_size is None


def spectrum(data):
    return spec_reader.spec_open(data).sections


def test_the_section_is_read_only_when_asked_for(tmp_path):
    """On a seekable file opening skips the payload (SPEC.md 11.3); a damaged payload then
    fails ivf() alone, and the codes still decode (a reader that does not use it MAY skip it)."""
    section = lists(500, 16, 64)
    data, codes = write(tmp_path / "a.qnc", n=500, dim=16, ivf=section, zstd_level=None)
    sec = next(s for s in spectrum(data) if s.type == SECTION_IVF)
    r = QncReader(io.BytesIO(data))
    assert r.bytes_read < len(data) - sec.length and r.ivf_size == sec.length
    bad = bytearray(data)
    bad[sec.offset + 24 + 40] ^= 1  # a centroid byte
    r = QncReader(io.BytesIO(bytes(bad)))
    np.testing.assert_array_equal(r.codes(), codes)
    with pytest.raises(QncFormatError, match="ivf section checksum mismatch"):
        r.ivf()
    with pytest.raises(spec_reader.SpecFormatError, match="payload checksum mismatch"):
        spec_reader.spec_open(bytes(bad))


def test_a_reader_that_does_not_know_the_ivf_section_decodes_the_codes(monkeypatch):
    """What a 1.0 or 1.1 reader does (SPEC.md 5, 10): type 5 is unknown to it and its REQUIRED
    bit is clear, so it skips the section and reads the same codes."""
    for name in ("ivf", "ivf_zstd"):
        data = (GOLDEN / f"{name}.qnc").read_bytes()
        assert all(s.flags == 0 for s in spectrum(data) if s.type == SECTION_IVF)
        expected = np.load(GOLDEN / f"{name}.npy")
        with monkeypatch.context() as m:
            for table in (spec_reader.MAX_OCCURRENCES, spec_reader.EXACT_FLAGS):
                m.delitem(table, spec_reader.SEC_IVF)
            m.setattr(spec_reader, "SEC_IVF", -1)  # no type is 5 to it
            f = spec_reader.spec_open(data)
            assert f.ivf is None and any(s.type == SECTION_IVF for s in f.sections)
            np.testing.assert_array_equal(spec_reader.spec_codes(f), expected)
        assert spec_reader.spec_open(data).ivf is not None
        np.testing.assert_array_equal(QncReader(io.BytesIO(data)).codes(), expected)


# -- refusals ------------------------------------------------------------------------------------

N, DIM, NLIST = 40, 3, 5
CENTROIDS = np.random.default_rng(3).standard_normal((NLIST, DIM)).astype(np.float32)
IDS = np.random.default_rng(4).integers(0, NLIST, N)
RAW_IDS = IDS.astype("<u2").tobytes()


def _nan_centroids(value):
    c = CENTROIDS.copy()
    c[2, 1] = value
    return c


# name: (spec_reader.ivf_payload keyword arguments, the package's message, the spec reader's)
REFUSALS = {
    "short payload": (dict(cut=20), "shorter than its 32-byte head", "shorter than 32"),
    "n differs": (dict(n=N + 1), "says n=41", "n=41 differs"),
    "dim differs": (dict(dim=DIM - 1), "dim=2", "dim=2 differs"),
    "nlist 0": (dict(nlist=0), "nlist=0 must be in", "nlist=0 not in"),
    "nlist over 2^24": (dict(nlist=2 ** 24 + 1), "must be in [1, 16777216]", "not in [1, 2^24]"),
    "nlist off by one": (dict(nlist=NLIST + 1), "bytes, expected", "length"),
    "id_bytes 4 for 5 lists": (dict(id_bytes=4), "id_bytes=4, expected 2", "does not match nlist"),
    "ids_encoding 2": (dict(ids_encoding=2), "unknown ids_encoding 2", "unknown ids_encoding"),
    "raw ids of the wrong length": (dict(ids_stored_len=2 * N - 1), "expected n * id_bytes",
                                    "!= n * id_bytes"),
    "zstd not shorter": (dict(ids_encoding=1, stored=RAW_IDS), "must be in [1, n * id_bytes",
                         "not in [1,"),
    "zstd frame of other content": (
        dict(stored=zstandard.ZstdCompressor().compress(np.zeros(N - 1, "<u2").tobytes())),
        "declares 78 bytes", "Frame_Content_Size 78"),
    "zstd frame without content size": (
        dict(stored=zstandard.ZstdCompressor(write_content_size=False).compress(bytes(2 * N)),
             ids_encoding=1), "lacks Frame_Content_Size", "no Frame_Content_Size"),
    "a byte after the ids": (dict(tail=b"\0"), "bytes, expected", "length"),
    "a list id = nlist": (dict(list_ids=np.where(np.arange(N) == 7, NLIST, IDS)),
                          "list id 5 is not below nlist=5", ">= nlist"),
    "a NaN centroid": (dict(centroids=_nan_centroids(np.nan)), "NaN or infinity", "not finite"),
    "an infinite centroid": (dict(centroids=_nan_centroids(-np.inf)), "NaN or infinity",
                             "not finite"),
}


def _bad_payload(kwargs):
    kwargs = dict(kwargs)
    cut = kwargs.pop("cut", None)
    payload = spec_reader.ivf_payload(kwargs.pop("centroids", CENTROIDS),
                                      kwargs.pop("list_ids", IDS), level=None, **kwargs)
    return payload[:cut] if cut else payload


def _file_with(payload, flags=0, times=1):
    sections = [(SECTION_MODEL_CONFIG, SECTION_FLAG_REQUIRED, b"{}")] + \
        [(SECTION_IVF, flags, payload)] * times
    return spec_reader.spec_build(np.zeros((N, 2), np.uint8), K=256, chunk_rows=16, dim=DIM,
                                  sections=sections)


def test_a_valid_payload_built_from_the_spec_is_accepted_by_both_readers():
    data = _file_with(_bad_payload({}))
    assert_same(QncReader(io.BytesIO(data)).ivf(), IvfSection(CENTROIDS, IDS))
    np.testing.assert_array_equal(spec_reader.spec_open(data).ivf.list_ids, IDS)
    reserved = _file_with(spec_reader.ivf_payload(CENTROIDS, IDS, reserved=b"\xff" * 6))
    assert_same(QncReader(io.BytesIO(reserved)).ivf(), IvfSection(CENTROIDS, IDS))  # ignored


@pytest.mark.parametrize("name", sorted(REFUSALS))
@pytest.mark.parametrize("mode", ["seek", "pipe"])
def test_every_broken_rule_is_refused_in_one_line(name, mode):
    kwargs, message, spec_message = REFUSALS[name]
    data = _file_with(_bad_payload(kwargs))
    with pytest.raises(QncFormatError) as info:
        with QncReader(io.BytesIO(data) if mode == "seek" else Pipe(data)) as r:
            np.testing.assert_array_equal(r.codes(), np.zeros((N, 2), np.uint8))
            r.ivf()
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith("ivf section")
    with pytest.raises(spec_reader.SpecFormatError, match=re.escape(spec_message)):
        spec_reader.spec_open(data)


def test_flags_and_occurrences_are_checked():
    payload = _bad_payload({})
    for data, message in ((_file_with(payload, flags=SECTION_FLAG_REQUIRED), "ivf section .* flags"),
                          (_file_with(payload, times=2), "duplicate ivf section")):
        with pytest.raises(QncFormatError, match=message):
            QncReader(io.BytesIO(data))
        with pytest.raises(spec_reader.SpecFormatError):
            spec_reader.spec_open(data)


def test_declared_sizes_are_checked_before_allocating():
    """A head declaring 2^24 lists of 2^32-1 dimensions in a 40-byte payload is refused without
    allocating anything like what it declares (SPEC.md 11.2)."""
    payload = IVF_HEAD.pack(2 ** 40, 2 ** 32 - 1, 2 ** 24, 4, 0, 2 ** 42) + bytes(8)
    tracemalloc.start()
    try:
        with pytest.raises(QncFormatError, match="bytes, expected"):
            decode_ivf(payload, dim=2 ** 32 - 1, n=2 ** 40)
        assert tracemalloc.get_traced_memory()[1] < 1 << 20
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("bad,message", [
    (lambda: IvfSection(CENTROIDS, IDS[:-1]), "list_ids must be a (40,) integer array"),
    (lambda: IvfSection(CENTROIDS[:, :2], IDS), "shape (nlist >= 1, dim=3)"),
    (lambda: IvfSection(CENTROIDS[:0], IDS[:0] * 0), "shape (nlist >= 1, dim=3)"),
    (lambda: IvfSection(_nan_centroids(np.nan), IDS), "must be finite"),
    (lambda: IvfSection(np.full((NLIST, DIM), 1e39), IDS), "must be finite (as float32)"),
    (lambda: IvfSection(CENTROIDS, np.where(IDS == 0, NLIST, IDS)), "in [0, nlist=5)"),
    (lambda: IvfSection(CENTROIDS, IDS - 1), "in [0, nlist=5)"),
    (lambda: IvfSection(CENTROIDS, IDS.astype(float)), "integer array"),
    (lambda: (CENTROIDS, IDS), "must be an IvfSection"),
])
def test_the_writer_refuses_a_section_no_reader_would_accept(tmp_path, bad, message):
    with pytest.raises(InputError, match=re.escape(message)):
        QncWriter(tmp_path / "x.qnc", n=N, dim=DIM, source_dtype="float32", K=256, M=2,
                  model_sha256=SHA, model_config={}, ivf=bad())
    assert not (tmp_path / "x.qnc").exists()


# -- building the lists: add_ivf, compress(ivf=...), qinco-index, qinco-compress --ivf ----------

D, ROWS = 16, 1500


@pytest.fixture(scope="module")
def vectors():
    """Clustered synthetic vectors: 12 centres, so that inverted lists have structure."""
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((12, D)).astype(np.float32) * 3
    x = centres[rng.integers(0, 12, ROWS + 2000)] + rng.standard_normal((ROWS + 2000, D))
    return x[:ROWS].astype(np.float32), x[ROWS:].astype(np.float32)  # (base, train)


@pytest.fixture(scope="module")
def model(vectors):
    """An untrained QINCo2 model (RQ initialisation) of 4 steps, greedy."""
    from qinco_codec.model import QincoModel
    from qinco_codec.rq_init import init_from_rq

    m = init_from_rq(QincoModel.from_preset("qinco2-XS", D, 4), vectors[1], seed=0)
    m.config = m.config.replace(B=1)
    return m


@pytest.fixture(scope="module")
def plain_file(tmp_path_factory, vectors, model):
    """A 1.1 file (quality report, metadata, embedded model) of 6 chunks, without lists."""
    import qinco_codec

    path = tmp_path_factory.mktemp("ivf") / "plain.qnc"
    qinco_codec.compress(vectors[0], path, model, chunk_rows=256, metadata={"m": "é"}, quiet=True)
    return path


def chunks_of(path):
    """Every chunk as stored: (row count, plane table, stored plane bytes)."""
    with QncReader(path) as r:
        return [(raw.header.rows, raw.header.planes, raw.planes) for raw in r.raw_chunks()]


def test_add_ivf_keeps_every_chunk_and_the_decoded_vectors(tmp_path, plain_file):
    import qinco_codec
    from qinco_codec.ivf_file import sample_rows
    from qinco_codec.search.ivf import assign, train_coarse

    out = tmp_path / "ivf.qnc"
    before = plain_file.read_bytes()
    info = qinco_codec.add_ivf(plain_file, 10, out=out, sample=800, seed=3)
    assert plain_file.read_bytes() == before  # the source is untouched
    assert chunks_of(out) == chunks_of(plain_file)
    with qinco_codec.open(plain_file) as a, qinco_codec.open(out) as b:
        assert (a.header.version, b.header.version) == ((1, 1), (1, 2))
        for field in ("n", "dim", "K", "M", "chunk_rows", "source_dtype", "model_sha256",
                      "model_config", "metadata", "quality_report"):
            assert getattr(a.header, field) == getattr(b.header, field), field
        assert a._reader.model_bytes() == b._reader.model_bytes()
        decoded = a.decode()
        np.testing.assert_array_equal(b.decode(), decoded)
        ivf = b._reader.ivf()
    # the lists are what the recipe says: k-means on the decoded sample, nearest centroid
    sample = decoded[sample_rows(ROWS, 800, 3)]
    np.testing.assert_array_equal(ivf.centroids, train_coarse(sample, 10, seed=3))
    np.testing.assert_array_equal(ivf.list_ids, assign(decoded, ivf.centroids))
    sizes = ivf.list_sizes()
    assert info == {"path": str(out), "n": ROWS, "nlist": 10, "sample": 800,
                    "list_size_min": sizes.min(), "list_size_median": float(np.median(sizes)),
                    "list_size_max": sizes.max(), "ivf_bytes": QncReader(out).ivf_size,
                    "file_size": out.stat().st_size}
    assert info["ivf_bytes"] <= 32 + 4 * 10 * D + 2 * ROWS


def test_add_ivf_in_place_replaces_the_lists_atomically(tmp_path, plain_file):
    import qinco_codec

    path = tmp_path / "a.qnc"
    path.write_bytes(plain_file.read_bytes())
    qinco_codec.add_ivf(path, 4)
    qinco_codec.add_ivf(path, 6, seed=1)  # replaces the 4 lists
    with QncReader(path) as r:
        assert r.ivf().nlist == 6 and r.ivf().n == ROWS
    assert chunks_of(path) == chunks_of(plain_file)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.qnc"]  # no temporary file left


@pytest.mark.parametrize("kwargs,message", [
    (dict(nlist=0), "nlist=0 must be in [1, 1,500]"),
    (dict(nlist=ROWS + 1), "nlist=1501 must be in [1, 1,500]"),
    (dict(nlist=True), "nlist must be an integer"),
    (dict(nlist=2.0), "nlist must be an integer"),
    (dict(nlist=8, sample=7), "sample=7 rows cannot fit nlist=8 centroids"),
    (dict(nlist=8, sample=0), "sample must be a positive integer"),
])
def test_add_ivf_refusals_leave_the_file_as_it_was(tmp_path, plain_file, kwargs, message):
    import qinco_codec

    path = tmp_path / "a.qnc"
    path.write_bytes(plain_file.read_bytes())
    with pytest.raises(InputError, match=re.escape(message)) as info:
        qinco_codec.add_ivf(path, **kwargs)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == plain_file.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.qnc"]


def test_add_ivf_refuses_an_empty_file(tmp_path, model):
    import qinco_codec

    path = tmp_path / "e.qnc"
    qinco_codec.compress(np.zeros((0, D), np.float32), path, model, quiet=True)
    with pytest.raises(InputError, match="the file has no rows to fit inverted lists on"):
        qinco_codec.add_ivf(path, 1)


def test_compress_with_ivf_assigns_the_original_vectors_and_keeps_the_codes(tmp_path, vectors,
                                                                             model, plain_file):
    import qinco_codec
    from qinco_codec.search.ivf import assign

    path = tmp_path / "c.qnc"
    summary = qinco_codec.compress(vectors[0], path, model, chunk_rows=256, metadata={"m": "é"},
                                   quiet=True, ivf=12)
    assert chunks_of(path) == chunks_of(plain_file)  # the same codes, byte for byte
    with QncReader(path) as r:
        assert r.header.version == (1, 2) and r.header.quality_report is not None
        ivf = r.ivf()
    np.testing.assert_array_equal(ivf.list_ids, assign(vectors[0], ivf.centroids))
    sizes = ivf.list_sizes()
    assert summary["ivf"] == {"nlist": 12, "residual_codes": False, "list_size_min": sizes.min(),
                              "list_size_median": float(np.median(sizes)),
                              "list_size_max": sizes.max()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.qnc"]
    with pytest.raises(InputError, match=re.escape("ivf=1501 must be in [1, 1,500]")):
        qinco_codec.compress(vectors[0], tmp_path / "d.qnc", model, quiet=True, ivf=ROWS + 1)
    assert not (tmp_path / "d.qnc").exists()


def test_the_lists_make_an_ivf_search_equal_the_exhaustive_one_at_full_nprobe(tmp_path,
                                                                              plain_file, vectors):
    """The section is what search-core's engine reads: at nprobe = nlist it scans every row."""
    import qinco_codec

    out = tmp_path / "s.qnc"
    qinco_codec.add_ivf(plain_file, 8, out=out)
    queries = vectors[1][:20]
    with qinco_codec.open(plain_file) as a, qinco_codec.open(out) as b:
        Da, Ia = a.search(queries, k=5, shortlist=ROWS)
        Db, Ib = b.search(queries, k=5, shortlist=ROWS, nprobe=8)
        np.testing.assert_array_equal(Ia, Ib)
        _, Ic = b.search(queries, k=5, shortlist=ROWS, nprobe=1)
        assert not np.array_equal(Ic, Ia)  # one list of 8 does not hold every neighbour


# -- the commands ----------------------------------------------------------------------------------

def run_cli(main, *args, code=0):
    from cli_util import cli_runner

    result = cli_runner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_qinco_index_end_to_end(tmp_path, plain_file):
    from qinco_codec.cli import index, info

    path = tmp_path / "a.qnc"
    path.write_bytes(plain_file.read_bytes())
    result = run_cli(index.main, path, "--ivf", 8, "-o", tmp_path / "b.qnc", "--sample", 900)
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"indexed {path}: 1,500 vectors in 8 lists (rows per list min ")
    assert f"wrote {tmp_path / 'b.qnc'}" in lines[-1] and "centroids fitted on 900 rows" in lines[-1]
    assert path.read_bytes() == plain_file.read_bytes()
    shown = run_cli(info.main, tmp_path / "b.qnc").stdout
    assert "format:      .qnc version 1.2" in shown and "ivf:         8 inverted lists" in shown
    assert "ivf:         none" in run_cli(info.main, path).stdout
    run_cli(index.main, path, "--ivf", 5, "--quiet")  # in place
    assert run_cli(index.main, path, "--ivf", 5, "--quiet").stderr == ""
    with QncReader(path) as r:
        assert r.ivf().nlist == 5
    assert chunks_of(path) == chunks_of(plain_file)


@pytest.mark.parametrize("args,code,message", [
    (("--ivf", 0), 2, "Invalid value for '--ivf'"),
    ((), 2, "Missing option '--ivf'"),
    (("--ivf", 1501), 1, "nlist=1501 must be in [1, 1,500]"),
    (("--ivf", 8, "--sample", 4), 1, "sample=4 rows cannot fit nlist=8 centroids"),
    (("--ivf", 8, "-o", "{exists}"), 1, "already exists"),
    (("--ivf", 8, "-o", "{file}"), 1, "name the same file"),
    (("--ivf", 8, "-o", "-"), 1, "OUT.qnc: '-' is not supported"),
])
def test_qinco_index_refusals_are_one_line(tmp_path, plain_file, args, code, message):
    from qinco_codec.cli import index

    path = tmp_path / "a.qnc"
    path.write_bytes(plain_file.read_bytes())
    (tmp_path / "exists.qnc").write_bytes(b"x")
    args = [str(a).format(exists=tmp_path / "exists.qnc", file=path) for a in args]
    result = run_cli(index.main, path, *args, code=code)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qinco-index: error: "), result.stderr
    assert message in lines[0]
    assert path.read_bytes() == plain_file.read_bytes()
    for missing in ("-", tmp_path / "nope.qnc"):
        result = run_cli(index.main, missing, "--ivf", 2, code=1)
        assert len(result.stderr.strip().splitlines()) == 1


def test_qinco_compress_with_ivf_end_to_end(tmp_path, vectors, model, plain_file):
    from qinco_codec.cli import compress
    from qinco_codec.serialize import save_model

    np.save(tmp_path / "x.npy", vectors[0])
    save_model(model, tmp_path / "m.safetensors")
    result = run_cli(compress.main, tmp_path / "x.npy", tmp_path / "x.qnc", "--model",
                     tmp_path / "m.safetensors", "--chunk-rows", 256, "--ivf", 6,
                     "--metadata", '{"m": "é"}')
    assert any(line.startswith("ivf:         6 inverted lists") for line in result.stderr.splitlines())
    with QncReader(tmp_path / "x.qnc") as r:
        assert r.header.version == (1, 2) and r.ivf().nlist == 6
    assert chunks_of(tmp_path / "x.qnc") == chunks_of(plain_file)
    bad = run_cli(compress.main, tmp_path / "x.npy", tmp_path / "y.qnc", "--model",
                  tmp_path / "m.safetensors", "--ivf", 2000, code=1)
    assert bad.stderr.strip().splitlines() == [
        "qinco-compress: error: ivf=2000 must be in [1, 1,500] (at most the 1,500 rows of the "
        "file and the format's 16,777,216)"]
    assert not (tmp_path / "y.qnc").exists()
