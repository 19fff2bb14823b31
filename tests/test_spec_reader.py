"""The package's .qnc reader and writer cross-checked against the spec-only reader and emitter
of tests/spec_reader.py (written from SPEC.md alone; the gaps it found, G1-G14, are listed
there).

The package is imported only inside tests, to compare results (`QncReader`) and to produce
extra files (`QncWriter`).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import zstandard

from spec_reader import (DTYPES, MAX_OCCURRENCES, REQUIRED, SEC_EMBEDDED_MODEL, SEC_IVF, SEC_MODEL_CONFIG,
                         SEC_USER_METADATA, SECTION_HEADER_SIZE, TRAILER_SIZE, SpecFormatError,
                         canonical_json, chunks_for_rows, crc32, crc32_reference, default_plane,
                         emit, random_access_bytes, spec_build, spec_chunk_header, spec_codes,
                         model_problem, spec_open, spec_parts, spec_read_chunk, spec_zstd,
                         to_source_dtype)

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "qinco_codec" / "formats" / "golden"
SPEC = ROOT / "SPEC.md"

GOLDEN_NAMES = sorted(p.stem for p in GOLDEN.glob("*.qnc"))
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())


def _pkg():
    from qinco_codec.formats import QncReader, QncWriter
    return QncReader, QncWriter


def _golden(name):
    return (GOLDEN / f"{name}.qnc").read_bytes()


def test_spec_reader_imports_nothing_of_the_package():
    """The second implementation must stay independent: importing tests/spec_reader.py (in a
    fresh process) loads no module of qinco_codec, and its source imports none."""
    import ast
    import subprocess
    import sys
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import spec_reader; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'qinco_codec'))")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "tests")], capture_output=True,
                         text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
    tree = ast.parse((ROOT / "tests" / "spec_reader.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names} | {node.module for node in ast.walk(tree)
                                            if isinstance(node, ast.ImportFrom)}
    assert imported and not any(name.startswith("qinco_codec") for name in imported), imported


def test_golden_set_is_complete():
    expected = {"tiny_example", "k256_raw", "k256_zstd", "k4096_u16", "embedded_model",
                "external_model", "empty", "minor_1_1_unknown_section", "ivf",
                "ivf_zstd", "ivf_residual"}  # section 15
    assert expected <= set(GOLDEN_NAMES)
    assert set(MANIFEST["files"]) == set(GOLDEN_NAMES)
    for name in GOLDEN_NAMES:
        data = _golden(name)
        meta = MANIFEST["files"][name]
        assert len(data) == meta["bytes"], name
        assert hashlib.sha256(data).hexdigest() == meta["sha256"], name


def test_crc32_appendix_a():
    assert crc32_reference(b"123456789") == 0xCBF43926 == crc32(b"123456789")
    assert crc32_reference(b"") == 0 == crc32(b"")
    data = _golden("tiny_example")
    assert crc32_reference(data) == crc32(data)


def test_worked_example_dump_matches_file_and_reader():
    """Section 14: the hex dump in SPEC.md is exactly tiny_example.qnc, and our reader agrees."""
    text = SPEC.read_text(encoding="utf-8")
    dump = text.split("<!-- worked-example:begin -->")[1].split("<!-- worked-example:end -->")[0]
    rebuilt = bytearray()
    for line in dump.splitlines():
        m = re.match(r"^([0-9a-f]{6})  ((?:[0-9a-f]{2} ?)+)", line)
        if not m:
            continue
        assert int(m.group(1), 16) == len(rebuilt), line
        rebuilt += bytes.fromhex(m.group(2))
    data = _golden("tiny_example")
    assert bytes(rebuilt) == data
    assert len(data) == 337  # section 14
    f = spec_open(data)
    assert (f.n, f.dim, f.K, f.M, f.chunk_rows, f.bytes_per_code) == (3, 2, 4, 2, 2, 1)
    assert f.source_dtype == "float32"
    assert f.sections_length == 24 + 35 and f.data_start == 0x93
    assert f.model_sha256 == hashlib.sha256(b"").digest()
    assert f.model_config == {"K": 4, "M": 2, "arch": "qinco2", "d": 2}
    assert f.user_metadata is None and f.embedded_model is None
    assert f.chunks == [(0x93, 56), (0x93 + 56, 54)]
    assert (f.index_offset, f.index_length) == (0x93 + 56 + 54, 52)
    assert f.index_offset + 52 + TRAILER_SIZE == len(data)
    assert spec_codes(data).tolist() == [[1, 3], [2, 0], [3, 3]]
    # our spec-only writer reproduces it byte for byte
    built = spec_build(np.array([[1, 3], [2, 0], [3, 3]], dtype=np.uint8), K=4, chunk_rows=2, dim=2,
                       model_sha256=hashlib.sha256(b"").digest(),
                       sections=[(1, 1, canonical_json(f.model_config))], plane=default_plane(None))
    assert built == data


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_golden_codes(name):
    QncReader, _ = _pkg()
    data = _golden(name)
    expected = np.load(GOLDEN / f"{name}.npy")
    stats = {}
    got = spec_codes(data, stats=stats)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    assert bool(stats.get(1)) == MANIFEST["files"][name]["uses_zstd"]
    pkg = QncReader(GOLDEN / f"{name}.qnc").codes()
    assert pkg.dtype == got.dtype and pkg.shape == got.shape
    np.testing.assert_array_equal(pkg, got)


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_golden_header_fields(name):
    QncReader, _ = _pkg()
    f = spec_open(_golden(name))
    h = QncReader(GOLDEN / f"{name}.qnc").header
    assert (h.n, h.dim, h.K, h.M, h.bytes_per_code) == (f.n, f.dim, f.K, f.M, f.bytes_per_code)
    assert bytes(h.model_sha256) == f.model_sha256
    # extra fields the package happens to expose
    assert h.chunk_rows == f.chunk_rows
    assert h.source_dtype == f.source_dtype
    assert tuple(h.version) == (f.version_major, f.version_minor)
    assert h.model_config == f.model_config
    assert (h.metadata or None) == f.user_metadata
    assert h.has_embedded_model == (f.embedded_model is not None)


def test_golden_specifics():
    """Section 15 table: what each golden file exercises."""
    k = spec_open(_golden("k256_raw"))
    assert [k.rows_in_chunk(c) for c in range(k.C)] == [16, 16, 8] and k.user_metadata
    z = spec_open(_golden("k256_zstd"))
    encs = [[e["encoding"] for e in spec_chunk_header(z, c)] for c in range(z.C)]
    assert z.C == 3 and all(e == [0] + [1] * 7 for e in encs)
    u = spec_open(_golden("k4096_u16"))
    assert u.C == 4 and u.bytes_per_code == 2 and u.source_dtype == "float16"
    encs = {e["encoding"] for c in range(u.C) for e in spec_chunk_header(u, c)}
    assert encs == {0, 1}
    e = spec_open(_golden("embedded_model"))
    assert e.source_dtype == "bfloat16" and len(e.embedded_model) == 72
    assert any(ord(ch) > 127 for ch in json.dumps(e.user_metadata, ensure_ascii=False))
    # the embedded safetensors file: one F32 tensor w = [0.5, -1.0] of shape [2]
    (hlen,) = struct.unpack_from("<Q", e.embedded_model, 0)
    st_header = json.loads(e.embedded_model[8:8 + hlen])
    assert st_header["w"]["dtype"] == "F32" and st_header["w"]["shape"] == [2]
    lo, hi = st_header["w"]["data_offsets"]
    w = np.frombuffer(e.embedded_model[8 + hlen + lo:8 + hlen + hi], "<f4")
    assert w.tolist() == [0.5, -1.0]
    for name in GOLDEN_NAMES:
        if name != "tiny_example":
            assert spec_open(_golden(name)).model_sha256 == hashlib.sha256(e.embedded_model).digest(), name
    x = spec_open(_golden("external_model"))
    assert x.source_dtype == "int8" and x.C == 1 and x.embedded_model is None
    em = spec_open(_golden("empty"))
    assert em.n == 0 and em.C == 0 and em.index_offset == em.data_start and em.index_length == 20
    v = spec_open(_golden("minor_1_1_unknown_section"))
    assert (v.version_major, v.version_minor, v.header_size) == (1, 1, 96)
    assert any(s.type == 0x1000 and not s.flags & REQUIRED for s in v.sections)
    np.testing.assert_array_equal(spec_codes(_golden("minor_1_1_unknown_section")),
                                  spec_codes(_golden("k256_raw")))
    i = spec_open(_golden("ivf"))  # section 15: nlist 5, list 3 empty, raw u16 ids, 4 chunks
    assert (i.version_major, i.version_minor) == (1, 2) and i.C == 4 and i.K == 16
    assert (i.ivf.nlist, i.ivf.id_bytes, i.ivf.ids_encoding) == (5, 2, 0)
    j, c = np.meshgrid(np.arange(5), np.arange(4), indexing="ij")
    np.testing.assert_array_equal(i.ivf.centroids, (4 * j + c) / 4 - 2)
    assert np.bincount(i.ivf.list_ids, minlength=5)[3] == 0 and len(i.ivf.list_ids) == i.n
    zi = spec_open(_golden("ivf_zstd"))
    assert zi.ivf.ids_encoding == 1 and zi.quality_report and zi.source_dtype == "float16"
    np.testing.assert_array_equal(zi.ivf.list_ids, np.arange(600) // 200)
    assert {e["encoding"] for c in range(zi.C) for e in spec_chunk_header(zi, c)} == {0, 1}


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_golden_prefix_reads(name):
    QncReader, _ = _pkg()
    data = _golden(name)
    full = np.load(GOLDEN / f"{name}.npy")
    r = QncReader(GOLDEN / f"{name}.qnc")
    for b in range(1, full.shape[1] + 1):
        mine = spec_codes(data, steps=b)
        assert mine.shape == (full.shape[0], b)
        np.testing.assert_array_equal(mine, full[:, :b])
        pkg = r.codes(steps=b)
        assert pkg.dtype == mine.dtype
        np.testing.assert_array_equal(pkg, mine)


def _plane_positions(data):
    """(chunk, plane, offset of a byte in the middle of that plane's stored bytes)."""
    f = spec_open(data)
    out = []
    for c in range(f.C):
        for s, e in enumerate(spec_chunk_header(f, c), start=1):
            out.append((c, s, e["offset"] + e["stored_len"] // 2, e["encoding"]))
    return out


@pytest.mark.parametrize("name", [n for n in GOLDEN_NAMES if n != "empty"])
def test_golden_flipped_plane_byte_rejected(name, tmp_path):
    QncReader, _ = _pkg()
    data = _golden(name)
    positions = _plane_positions(data)
    picks = {positions[0], positions[-1]}
    picks |= set([p for p in positions if p[3] == 1][:1])  # a zstd plane, if any
    for c, s, off, _enc in picks:
        bad = bytearray(data)
        bad[off] ^= 0xFF
        bad = bytes(bad)
        with pytest.raises(SpecFormatError, match=rf"chunk {c}, plane {s}: checksum mismatch"):
            spec_codes(bad)
        p = tmp_path / f"{name}_{c}_{s}.qnc"
        p.write_bytes(bad)
        with pytest.raises(Exception):
            QncReader(p).codes()
        # section 11.1: a reader MAY skip planes it does not need; prefix reads still work
        if s > 1:
            np.testing.assert_array_equal(spec_codes(bad, steps=s - 1), spec_codes(data, steps=s - 1))


def _single_flips(data):
    """Every byte, except that in files over 1500 bytes only every 3rd byte of plane data is
    flipped (plane bytes all sit behind the same CRC check; keeps the suite fast)."""
    dense = set(range(len(data)))
    if len(data) > 1500:
        f = spec_open(data)
        for c in range(f.C):
            for e in spec_chunk_header(f, c):
                dense -= {i for i in range(e["offset"], e["offset"] + e["stored_len"]) if i % 3}
    for i in sorted(dense):
        bad = bytearray(data)
        bad[i] ^= 0xFF
        yield i, bytes(bad)


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_every_single_byte_flip_detected_by_spec_reader(name):
    """Section 1: 'every byte is covered by a checksum, ... every length is explicit and
    checked'. With section_header_crc32 (section 5) and trailer_crc32 (section 8) this holds
    for every byte of the file, section type and flags included (gap G7 closed)."""
    data = _golden(name)
    undetected = []
    for i, bad in _single_flips(data):
        try:
            spec_codes(bad)
        except SpecFormatError:
            continue
        undetected.append(i)
    assert not undetected, undetected
    for cut in (1, 24, len(data) // 2):
        with pytest.raises(SpecFormatError):
            spec_codes(data[:-cut])
    with pytest.raises(SpecFormatError):
        spec_codes(data + b"\0")


def test_section_type_and_flags_are_checksummed():
    """Gap G7 closed: flipping a byte of a section's `type` (which used to turn user_metadata or
    the embedded model into an unknown optional section, silently skipped) or of its reserved
    `flags` bits is now rejected by both readers, through section_header_crc32."""
    QncReader, _ = _pkg()
    data = _golden("embedded_model")
    f = spec_open(data)
    for typ in (SEC_USER_METADATA, SEC_EMBEDDED_MODEL):
        sec = next(s for s in f.sections if s.type == typ)
        for i in (3, 7):  # type 2 -> 0xFF000002 / 3 -> 0xFF000003; flags reserved bits
            bad = bytearray(data)
            bad[sec.offset + i] ^= 0xFF
            with pytest.raises(SpecFormatError, match="section header checksum mismatch"):
                spec_open(bytes(bad))
            with pytest.raises(Exception, match="checksum mismatch"):
                QncReader(io.BytesIO(bytes(bad)))


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_every_single_byte_flip_detected_by_package(name):
    """Same property for the package reader. It may leave the embedded model payload unverified
    until the model is used (sections 5 and 11.1 step 2 allow this), so flips in that payload
    must be caught by `model_bytes()` instead; and it MAY skip the payload CRC of unknown
    optional sections it skips (section 5). Section headers are always verified."""
    QncReader, _ = _pkg()
    data = _golden(name)
    f = spec_open(data)
    lazy, skipped = set(), set()
    for s in f.sections:
        payload = set(range(s.offset + SECTION_HEADER_SIZE, s.offset + SECTION_HEADER_SIZE + s.length))
        if s.type in (SEC_EMBEDDED_MODEL, SEC_IVF):  # read when asked for
            lazy |= payload
        elif s.type not in MAX_OCCURRENCES:
            skipped |= payload
    # the intact file must be readable from the same kind of source, or this test proves nothing
    np.testing.assert_array_equal(QncReader(io.BytesIO(data)).codes(), spec_codes(data))
    accepted = set()
    for i, bad in _single_flips(data):
        try:
            r = QncReader(io.BytesIO(bad))  # seekable in-memory source (same checks as a path)
            r.codes()
            if i in lazy:
                r.model_bytes()
                r.ivf()
        except Exception:
            continue
        accepted.add(i)
    assert accepted <= skipped, sorted(accepted - skipped)


# --- spec-built variants: which must be accepted, which rejected, by both readers -----------

def _codes(n=37, M=3, K=256, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, K, size=(n, M)).astype(np.uint8 if K <= 256 else np.uint16)


def _checksum_plane(c, s, raw):  # zstd frames with a content checksum (MAY, section 6.2)
    z = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(raw)
    return (1, z, len(raw)) if len(z) < len(raw) else (0, raw, len(raw))


def _valid_variants():
    cfg = canonical_json({"arch": "t"})
    skewed = np.minimum(_codes(n=50, M=3, seed=1) // 64, 3).astype(np.uint8)
    return {
        "plain": (dict(codes=_codes(), K=256, chunk_rows=10), _codes()),
        "reverse_section_order": (dict(codes=_codes(), K=256, chunk_rows=10, sections=[
            (2, 0, canonical_json({"b": 1})), (0x80000001, 0, b"private"), (1, 1, cfg)]), _codes()),
        "unknown_optional_section": (dict(codes=_codes(), K=256, chunk_rows=10, sections=[
            (1, 1, cfg), (7, 0, b"\x00" * 5), (0xFFFFFFFF, 0xFFFFFFFE, b"")]), _codes()),
        "minor_9_header_ext": (dict(codes=_codes(), K=256, chunk_rows=10, version=(1, 9),
                                    header_ext=b"\xAA" * 12, header_flags=0xFFFF), _codes()),
        "zstd_with_content_checksum": (dict(codes=skewed, K=4, chunk_rows=25, plane=_checksum_plane), skewed),
        # section 4 / 10: any header_size in [88, 4096], whatever version_minor (G5)
        "minor_0_header_ext": (dict(codes=_codes(), K=256, chunk_rows=10, header_ext=b"\x55" * 8), _codes()),
        "minor_0_header_4096": (dict(codes=_codes(), K=256, chunk_rows=10, header_ext=bytes(4096 - 88)), _codes()),
        "unknown_type_reserved_flags": (dict(codes=_codes(), K=256, chunk_rows=10, sections=[
            (1, 1, cfg), (0x7FFFFFFF, 0xFFFFFFFE, b"x")]), _codes()),
        "reserved_bytes_set": (dict(codes=_codes(), K=256, chunk_rows=10,
                                    hook=_set_reserved), _codes()),
        "k2_n1": (dict(codes=np.array([[1, 0, 1]], dtype=np.uint8), K=2, chunk_rows=1 << 24),
                  np.array([[1, 0, 1]], dtype=np.uint8)),
        "k65536": (dict(codes=_codes(K=65536), K=65536, chunk_rows=8), _codes(K=65536)),
        # section 5 (G12): the JSON limits are inclusive
        "json_at_the_limits": (dict(codes=_codes(), K=256, chunk_rows=10, sections=[
            (1, 1, b'{"lo":-9223372036854775808,"hi":18446744073709551615}'),
            (2, 0, b'{"a":' + b"[" * 63 + b"]" * 63 + b"}")]), _codes()),
    }


def _set_reserved(parts):
    """Set the 3 reserved bytes of every plane entry (the emitter re-seals the chunk CRCs)."""
    for chunk in parts.chunks:
        for plane in chunk.planes:
            plane.reserved = b"\x01\x02\x03"


def _build(hook=None, **kwargs):
    """spec_build, with `hook(parts)` applied to the parts before they are emitted."""
    parts = spec_parts(**kwargs)
    if hook:
        hook(parts)
    return bytes(emit(parts).buf)


@pytest.mark.parametrize("variant", sorted(_valid_variants()))
def test_spec_built_valid_variants_accepted(variant, tmp_path):
    QncReader, _ = _pkg()
    kwargs, expected = _valid_variants()[variant]
    data = _build(**kwargs)
    np.testing.assert_array_equal(spec_codes(data), expected)
    p = tmp_path / "v.qnc"
    p.write_bytes(data)
    np.testing.assert_array_equal(QncReader(p).codes(), expected)


def _reseal_header(h: bytearray):
    hs = struct.unpack_from("<I", h, 12)[0]
    struct.pack_into("<I", h, hs - 4, crc32(bytes(h[:hs - 4])))


def _patch_header(data, fmt, off, value):
    h = bytearray(data)
    struct.pack_into(fmt, h, off, value)
    _reseal_header(h)
    return bytes(h)


def _dictionary():
    rng = np.random.default_rng(0)
    samples = [bytes(rng.integers(0, 4, 200).astype(np.uint8)) + b"sample %d" % i for i in range(300)]
    return zstandard.train_dictionary(2048, samples)


def _embedded_crc_mismatch():
    model = b"not really safetensors"
    data = bytearray(spec_build(codes=_codes(), K=256, chunk_rows=10, model_sha256=hashlib.sha256(model).digest(),
                                sections=[(1, 1, canonical_json({"arch": "t"})), (3, 0, model)]))
    f = spec_open(bytes(data))
    s = next(s for s in f.sections if s.type == SEC_EMBEDDED_MODEL)
    data[s.offset + SECTION_HEADER_SIZE] ^= 1  # a payload byte; both CRCs left as they were
    return bytes(data)


def _invalid_variants():
    cfg = canonical_json({"arch": "t"})
    base = dict(codes=_codes(), K=256, chunk_rows=10)
    good = spec_build(**base)
    sk = np.minimum(_codes(n=200, M=2, seed=2) // 64, 3).astype(np.uint8)

    def zstd_plane(**kw):
        def enc(c, s, raw):
            z = zstandard.ZstdCompressor(level=3, **kw).compress(raw)
            return 1, z, len(raw)
        return enc

    def trailing(c, s, raw):
        z = zstandard.ZstdCompressor(level=3).compress(raw)
        return 1, z + b"\0", len(raw)

    def wrong_fcs(c, s, raw):  # frame says len(raw)-1 bytes; plane entry says len(raw)
        z = zstandard.ZstdCompressor(level=3).compress(raw[:-1])
        return 1, z, len(raw)

    def no_fcs_too_long(c, s, raw):  # frame without content size that decompresses to raw + 1 byte
        z = zstandard.ZstdCompressor(level=3, write_content_size=False).compress(raw + raw[:1])
        return 1, z, len(raw)

    def no_fcs(c, s, raw):  # Frame_Content_Size is mandatory (section 6.2)
        z = zstandard.ZstdCompressor(level=3, write_content_size=False).compress(raw)
        return 1, z, len(raw)

    def bad_content_checksum(c, s, raw):  # plane CRC-32 is computed over the damaged frame (G9)
        z = bytearray(zstandard.ZstdCompressor(level=3, write_checksum=True).compress(raw))
        z[-1] ^= 0x01
        return 1, bytes(z), len(raw)

    def skippable(c, s, raw):
        z = zstandard.ZstdCompressor(level=3).compress(raw)
        return 1, b"\x50\x2a\x4d\x18" + struct.pack("<I", 0) + z, len(raw)

    def raw_short(c, s, raw):
        return 0, raw[:-1], len(raw)

    def bad_encoding(c, s, raw):
        return 2, raw, len(raw)

    def zstd_not_shorter(c, s, raw):  # a valid frame but stored_len >= raw_len
        z = zstandard.ZstdCompressor(level=3).compress(raw)
        return 1, z, len(raw)

    def wrong_raw_len(c, s, raw):
        return 0, raw + b"\0", len(raw) + 1

    def code_ge_k(c, s, raw):
        b = bytearray(raw)
        b[0] = 4
        return 0, bytes(b), len(raw)

    def wrong_chunk_index(parts):
        for c, chunk in enumerate(parts.chunks):
            chunk.index = c + 1

    def flip(data, at):
        bad = bytearray(data)
        bad[at] ^= 0x01
        return bytes(bad)

    meta = spec_build(**base | dict(sections=[(1, 1, cfg), (2, 0, b"{}")]))
    meta_at = spec_open(meta).sections[1].offset
    small = _codes(n=5, M=2, K=4)
    return {
        # section 5 (G7, G8, G1)
        "section_type_0": spec_build(**base | dict(sections=[(0, 0, b""), (1, 1, cfg)])),
        "section_type_0_required": spec_build(**base | dict(sections=[(1, 1, cfg), (0, 1, b"{}")])),
        "section_header_crc_type": flip(meta, meta_at + 3),
        "section_header_crc_flags": flip(meta, meta_at + 4 + 3),
        "section_header_crc_length": flip(meta, meta_at + 8),
        "section_header_crc_itself": flip(meta, meta_at + 20),
        "model_config_flags_0": spec_build(**base | dict(sections=[(1, 0, cfg)])),
        "model_config_reserved_flag": spec_build(**base | dict(sections=[(1, 1 | 4, cfg)])),
        "user_metadata_required": spec_build(**base | dict(sections=[(1, 1, cfg), (2, 1, b"{}")])),
        "embedded_model_flag_bit_31": spec_build(**base | dict(
            model_sha256=hashlib.sha256(b"m").digest(), sections=[(1, 1, cfg), (3, 1 << 31, b"m")])),
        # section 5 JSON rules (G2)
        "json_duplicate_name": spec_build(**base | dict(sections=[(1, 1, b'{"a":1,"a":1}')])),
        "json_duplicate_escaped_name": spec_build(**base | dict(sections=[(1, 1, cfg), (2, 0, b'{"a":1,"\\u0061":2}')])),
        "json_duplicate_nested_name": spec_build(**base | dict(sections=[(1, 1, b'{"x":[{"k":1,"k":2}]}')])),
        "json_number_overflow": spec_build(**base | dict(sections=[(1, 1, b'{"x":1e400}')])),
        # section 5 JSON limits (G12)
        "json_int_4301_digits": spec_build(**base | dict(sections=[(1, 1, b'{"d":' + b"9" * 4301 + b"}")])),
        "json_depth_513": spec_build(**base | dict(sections=[(1, 1, cfg), (2, 0, b'{"a":' + b"[" * 512 + b"]" * 512 + b"}")])),
        "json_depth_100000": spec_build(**base | dict(sections=[(1, 1, b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}")])),
        # section 8
        "trailer_crc_mismatch": flip(good, len(good) - 1),
        "trailer_index_length_flipped": flip(good, len(good) - TRAILER_SIZE + 8),
        # section 4 (G4)
        "chunk_count_2_32": _patch_header(good, "<Q", 16, (1 << 32) * 10),
        # section 6.2 (G3, G9)
        "zstd_no_content_size": spec_build(codes=sk, K=4, chunk_rows=100, plane=no_fcs),
        "zstd_bad_content_checksum": spec_build(codes=sk, K=4, chunk_rows=100, plane=bad_content_checksum),
        "version_major_2": _patch_header(good, "<H", 8, 2),
        "header_size_87": _patch_header(good, "<I", 12, 87),
        "K_not_pow2": _patch_header(good, "<I", 36, 255),
        "K_131072": spec_build(**base | dict(K=1 << 17, bytes_per_code=2)),
        "bpc_mismatch": _patch_header(good, "<B", 49, 2),
        "source_dtype_0": _patch_header(good, "<B", 48, 0),
        "source_dtype_13": _patch_header(good, "<B", 48, 13),
        "dim_0": _patch_header(good, "<I", 32, 0),
        "M_0": _patch_header(good, "<I", 40, 0),
        "chunk_rows_0": _patch_header(good, "<I", 44, 0),
        "n_too_large": _patch_header(good, "<Q", 16, 38),
        "n_too_small": _patch_header(good, "<Q", 16, 36),
        "missing_model_config": spec_build(**base | dict(sections=[(2, 0, b"{}")])),
        "two_model_configs": spec_build(**base | dict(sections=[(1, 1, cfg), (1, 1, cfg)])),
        "two_user_metadata": spec_build(**base | dict(sections=[(1, 1, cfg), (2, 0, b"{}"), (2, 0, b"{}")])),
        "unknown_required_section": spec_build(**base | dict(sections=[(1, 1, cfg), (9, 1, b"x")])),
        "private_required_section": spec_build(**base | dict(sections=[(1, 1, cfg), (0x80000000, 1, b"")])),
        "json_array": spec_build(**base | dict(sections=[(1, 1, b"[1]")])),
        "json_nan": spec_build(**base | dict(sections=[(1, 1, b'{"a":NaN}')])),
        "json_infinity": spec_build(**base | dict(sections=[(1, 1, cfg), (2, 0, b'{"a":-Infinity}')])),
        "json_invalid": spec_build(**base | dict(sections=[(1, 1, b'{"a":}')])),
        "json_bad_utf8": spec_build(**base | dict(sections=[(1, 1, b'{"a":"\xff"}')])),
        "embedded_model_sha_mismatch": spec_build(**base | dict(sections=[(1, 1, cfg), (3, 0, b"model")])),
        "embedded_model_crc_mismatch": _embedded_crc_mismatch(),
        "zstd_trailing_bytes": spec_build(codes=sk, K=4, chunk_rows=100, plane=trailing),
        "zstd_wrong_content_size": spec_build(codes=sk, K=4, chunk_rows=100, plane=wrong_fcs),
        "zstd_no_fcs_too_long": spec_build(codes=sk, K=4, chunk_rows=100, plane=no_fcs_too_long),
        "zstd_skippable_frame": spec_build(codes=sk, K=4, chunk_rows=100, plane=skippable),
        "zstd_with_dictionary": spec_build(codes=sk, K=4, chunk_rows=100, plane=zstd_plane(dict_data=_dictionary())),
        "zstd_stored_not_shorter": spec_build(codes=small, K=4, chunk_rows=5, plane=zstd_not_shorter),
        "raw_stored_len_mismatch": spec_build(codes=small, K=4, chunk_rows=5, plane=raw_short),
        "unknown_encoding": spec_build(codes=small, K=4, chunk_rows=5, plane=bad_encoding),
        "raw_len_mismatch": spec_build(codes=small, K=4, chunk_rows=5, plane=wrong_raw_len),
        "code_ge_K": spec_build(codes=small, K=4, chunk_rows=5, plane=code_ge_k),
        "wrong_chunk_index": _build(wrong_chunk_index, **base),
    }


INVALID = {k: v for k, v in _invalid_variants().items() if v is not None}


@pytest.mark.parametrize("variant", sorted(INVALID))
def test_spec_built_invalid_variants_rejected(variant, tmp_path):
    QncReader, _ = _pkg()
    data = INVALID[variant]
    with pytest.raises(SpecFormatError):
        spec_codes(data)
    p = tmp_path / "bad.qnc"
    p.write_bytes(data)
    with pytest.raises(Exception):
        r = QncReader(p)
        r.codes()
        if variant.startswith("embedded_model"):
            r.model_bytes()  # a reader may verify the model only when it is used (section 5)


@pytest.mark.parametrize("variant,message", [
    ("section_type_0", "type 0 is a format error"),
    ("section_header_crc_type", "section header checksum mismatch"),
    ("model_config_flags_0", "type 1 must have flags 1"),
    ("user_metadata_required", "type 2 must have flags 0"),
    ("json_duplicate_escaped_name", "repeated member name"),
    ("json_number_overflow", "overflows binary64"),
    ("json_int_4301_digits", r"\(4301 digits\) has more than 4300 digits"),
    ("json_depth_513", "nested 513 levels deep, more than 512 levels"),
    ("json_depth_100000", "nested deeper than 512 levels"),
    ("trailer_crc_mismatch", "trailer: checksum mismatch"),
    ("chunk_count_2_32", "ceil\\(n / chunk_rows\\) must be < 2\\^32"),
    ("zstd_no_content_size", "no Frame_Content_Size"),
    ("zstd_bad_content_checksum", "checksum"),
])
def test_spec_reader_rejects_for_the_stated_reason(variant, message):
    """The revised rules (G1-G4, G7-G9, G12) are what rejects these variants, not some other check."""
    with pytest.raises(SpecFormatError, match=message):
        spec_codes(INVALID[variant])


def test_canonical_json_example_of_section_5_1():
    """Section 5.1's worked example, and the number forms it lists."""
    assert canonical_json({"b": [1.0, 1e-5, 10 ** 19], "a": "é\n/", "A": True}) == \
        '{"A":true,"a":"é\\n/","b":[1.0,1e-05,10000000000000000000]}'.encode("utf-8")
    assert len(canonical_json({"b": [1.0, 1e-5, 10 ** 19], "a": "é\n/", "A": True})) == 59
    forms = [1.0, 0.0001, -0.0, 123.25, 1e15, 1e-5, 1.5e-7, 1e16, 1.2345678901234568e17]
    assert canonical_json({"f": forms}) == (b'{"f":[1.0,0.0001,-0.0,123.25,1000000000000000.0,'
                                             b'1e-05,1.5e-07,1e+16,1.2345678901234568e+17]}')
    # names sorted by code point: U+FF5E before U+1F600 (UTF-16 order would be the reverse)
    assert canonical_json({"\U0001F600": 0, "\uff5e": 0}) == '{"\uff5e":0,"\U0001F600":0}'.encode()


def test_prefix_length_must_be_in_1_to_M():
    """Section 11.3 (G6): b = 0 and b > M are refused by both readers."""
    QncReader, _ = _pkg()
    data = _golden("k256_raw")
    for b in (0, 9):
        with pytest.raises(ValueError):
            spec_codes(data, steps=b)
        with pytest.raises(ValueError):
            QncReader(io.BytesIO(data)).codes(steps=b)


def test_empty_row_range_reads_no_chunk():
    """Section 11.3 (G13): an empty row range reads no chunk; both readers return (0, b) codes
    from a file whose chunks are all corrupt, and still refuse a non-empty range of it."""
    QncReader, _ = _pkg()
    data = bytearray(_golden("k256_raw"))  # 40 rows in chunks of 16, 16, 8
    for c, s, off, _enc in _plane_positions(bytes(data)):
        data[off] ^= 0xFF
    data = bytes(data)
    for rows in (slice(5, 5), slice(40, 50), slice(30, 20), slice(-1, -1)):
        for b in (1, 8):
            assert spec_codes(data, steps=b, rows=rows).shape == (0, b)
            r = QncReader(io.BytesIO(data))
            before = r.bytes_read
            got = r.codes(steps=b, rows=rows)
            assert got.shape == (0, b) and got.dtype == np.uint8 and r.bytes_read == before
    with pytest.raises(SpecFormatError, match="chunk 2, plane 1: checksum mismatch"):
        spec_codes(data, rows=slice(39, 45))
    with pytest.raises(Exception, match="chunk 2, plane 1: checksum mismatch"):
        QncReader(io.BytesIO(data)).codes(rows=slice(39, 45))


def test_row_ranges_agree_with_the_package():
    """Every row range of a multi-chunk file, read by both readers at every prefix."""
    QncReader, _ = _pkg()
    data = _golden("k4096_u16")
    full = spec_codes(data)
    r = QncReader(io.BytesIO(data))
    n = len(full)
    for start in range(-2, n + 3, 7):
        for stop in (start - 1, start, start + 1, start + 33, n, n + 5, None):
            for b in (1, full.shape[1]):
                mine = spec_codes(data, steps=b, rows=slice(start, stop))
                np.testing.assert_array_equal(mine, full[start:stop, :b])
                np.testing.assert_array_equal(r.codes(steps=b, rows=slice(start, stop)), mine)


@pytest.mark.parametrize("name", ["embedded_model", "minor_1_1_unknown_section", "k256_zstd",
                                  "k4096_u16", "empty", "ivf"])
def test_random_access_reads_exactly_what_section_11_3_lists(name):
    """Section 11.3 (G14): opening reads the fixed header, every section header (those of the
    skipped embedded model and unknown sections included), the JSON payloads, the trailer and
    the index; a prefix read of some rows then adds, per chunk holding one, its header and
    first b planes. The package reads exactly that many bytes."""
    QncReader, _ = _pkg()
    data = _golden(name)
    f = spec_open(data)
    r = QncReader(io.BytesIO(data))
    assert r.bytes_read == random_access_bytes(f, 1, [])
    skipped = [s for s in f.sections if s.type not in (SEC_MODEL_CONFIG, SEC_USER_METADATA)]
    if name in ("embedded_model", "minor_1_1_unknown_section", "ivf"):
        assert skipped and all(s.length for s in skipped)  # their payloads are not read
    for b in sorted({1, f.M}):
        for start, stop in ((0, 1), (f.n // 2, f.n), (0, f.n)):
            before = r.bytes_read
            r.codes(steps=b, rows=slice(start, stop))
            chunks = chunks_for_rows(f, *slice(start, stop).indices(f.n)[:2])
            assert r.bytes_read - before == random_access_bytes(f, b, chunks) - \
                random_access_bytes(f, b, [])


def _index_variant(sealed, at, value):
    """k256_raw with bytes of its index replaced, index_crc32 recomputed or left stale."""
    data = bytearray(_golden("k256_raw"))
    f = spec_open(bytes(data))
    start = f.index_offset
    data[start + at:start + at + len(value)] = value
    if sealed:
        end = start + f.index_length - 4
        data[end:end + 4] = struct.pack("<I", crc32(bytes(data[start:end])))
    return bytes(data)


@pytest.mark.parametrize("at,value,field_error", [
    (8, struct.pack("<Q", 4), "index: chunk_count 4 != 3"),
    (0, b"QIDY", "index: bad tag"),
    (16, struct.pack("<Q", 7), "index: chunk 0 offset 7"),
])
def test_index_checksum_comes_before_its_fields(at, value, field_error, tmp_path):
    """Sections 7 and 11.1 step 3 (G14): the index length follows from the header's C and the
    trailer, and index_crc32 is verified before the tag, chunk_count or entries are used."""
    QncReader, _ = _pkg()
    stale = _index_variant(False, at, value)
    with pytest.raises(SpecFormatError, match="^index: checksum mismatch$"):
        spec_open(stale)
    with pytest.raises(Exception, match="checksum mismatch"):
        QncReader(io.BytesIO(stale))
    sealed = _index_variant(True, at, value)
    with pytest.raises(SpecFormatError, match=re.escape(field_error)):
        spec_open(sealed)
    with pytest.raises(Exception) as package_error:
        QncReader(io.BytesIO(sealed))
    assert "checksum" not in str(package_error.value)


def test_a_file_storing_a_prefix_matches_its_larger_model(tmp_path):
    """Section 13 (G10): a file holding the first 3 steps of an 8-step model has M = 3 in its
    header while model_config says 8; the model matches it (dim and K equal, 3 <= 8). A model
    with fewer steps than the header, or another dim or K, does not."""
    QncReader, QncWriter = _pkg()
    codes = np.random.default_rng(3).integers(0, 16, (20, 3)).astype(np.uint8)
    path = tmp_path / "prefix.qnc"
    with QncWriter(path, n=20, dim=6, source_dtype="float32", K=16, M=3, model_sha256=bytes(32),
                   model_config={"arch": "qinco2", "dim": 6, "K": 16, "M": 8}) as w:
        w.write_codes(codes)
    f = spec_open(path.read_bytes())
    assert (f.M, f.model_config["M"]) == (3, 8)
    assert QncReader(path).header.M == 3
    np.testing.assert_array_equal(spec_codes(f.data), codes)
    for dim, K, M in ((6, 16, 8), (6, 16, 3)):
        assert model_problem(f, dim=dim, K=K, M=M) is None
    for dim, K, M in ((6, 16, 2), (7, 16, 8), (6, 32, 8), (6, 8, 8)):
        assert "cannot decode" in model_problem(f, dim=dim, K=K, M=M)


@pytest.mark.parametrize("config", [b"{}", b'{"d":4}', b'{"dim":4,"M":99,"K":2}',
                                    b'{"arch":["not","a","name"],"x":{"y":null}}'])
def test_model_config_keys_are_not_needed_to_read(config):
    """Section 5 (G11): model_config is informative; whatever keys it has (the golden files'
    `d`, the package's `dim`, none, values that contradict the header), both readers read the
    codes from the header alone."""
    QncReader, _ = _pkg()
    codes = _codes()
    data = spec_build(codes=codes, K=256, chunk_rows=10, sections=[(1, 1, config)])
    np.testing.assert_array_equal(spec_codes(data), codes)
    r = QncReader(io.BytesIO(data))
    assert r.header.model_config == json.loads(config)
    np.testing.assert_array_equal(r.codes(), codes)


def test_every_source_dtype_is_recorded(tmp_path):
    """Section 4.1: each of the 12 source dtypes is written and reported the same by both
    readers (so a writer of decoded vectors can convert back), also given as a numpy dtype."""
    QncReader, QncWriter = _pkg()
    for code, name in DTYPES.items():
        for given in (name, np.dtype(name) if name != "bfloat16" else name):
            path = tmp_path / f"{name}.qnc"
            with QncWriter(path, n=1, dim=2, source_dtype=given, K=4, M=1,
                           model_sha256=bytes(32), model_config={}) as w:
                w.write_codes(np.array([[3]]))
            f = spec_open(path.read_bytes())
            assert (f.source_dtype_code, f.source_dtype) == (code, name)
            assert QncReader(path).header.source_dtype == name


def test_conversion_to_the_source_dtype_rounds_as_section_4_1_says():
    """Section 4.1's rule, exercised on its edge cases: ties to even, clamping, bfloat16 as
    the rounded upper half of the binary32."""
    x = np.array([2.5, 3.5, -2.5, 0.49999997, 126.5, 127.5, 300.0, -300.0, -0.0], np.float32)
    assert to_source_dtype(x, "int8").tolist() == [2, 4, -2, 0, 126, 127, 127, -128, 0]
    assert to_source_dtype(x, "uint8").tolist() == [2, 4, 0, 0, 126, 128, 255, 0, 0]
    assert to_source_dtype([1e10, -1e10], "int32").tolist() == [2 ** 31 - 1, -2 ** 31]
    half = np.float32(1 + 2 ** -11)  # exactly between two float16 values: rounds to even (1.0)
    assert to_source_dtype([half], "float16")[0] == np.float16(1.0)
    assert to_source_dtype([1 + 3 * 2 ** -11], "float16")[0] == np.float16(1 + 2 ** -9)
    # bfloat16: 1 + 2^-8 is a tie between 1.0 (0x3F80) and 1 + 2^-7 (0x3F81): even is 0x3F80
    assert to_source_dtype([1 + 2 ** -8, 1 + 3 * 2 ** -8, -2.0], "bfloat16").tolist() == \
        [0x3F80, 0x3F82, 0xC000]
    assert to_source_dtype([0.1], "float64")[0] == np.float64(np.float32(0.1))


# --- golden files rebuilt by the spec-only writer ------------------------------------------

@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_golden_rebuilt_from_spec_byte_identical(name):
    """Section 12 determinism: the spec plus the inputs reproduce each golden file exactly.

    Files with zstd planes are only comparable under the same zstd version (manifest) and the
    frame parameters of section 12 (level 3)."""
    data = _golden(name)
    f = spec_open(data)
    if MANIFEST["files"][name]["uses_zstd"]:
        if ".".join(map(str, zstandard.ZSTD_VERSION)) != MANIFEST["zstd_version"]:
            pytest.skip("different zstd library version")
    sections = []
    for s in f.sections:
        payload = data[s.offset + SECTION_HEADER_SIZE:s.offset + SECTION_HEADER_SIZE + s.length]
        if s.type in (SEC_MODEL_CONFIG, SEC_USER_METADATA):
            assert payload == canonical_json(json.loads(payload)), "JSON section is not canonical"
        sections.append((s.type, s.flags, payload))
    ext = data[84:f.header_size - 4]
    codes = spec_codes(data)
    built = spec_build(codes, K=f.K, chunk_rows=f.chunk_rows, dim=f.dim, source_dtype=f.source_dtype_code,
                       model_sha256=f.model_sha256, sections=sections, M=f.M, n=f.n,
                       version=(f.version_major, f.version_minor), header_ext=ext,
                       plane=default_plane(3 if MANIFEST["files"][name]["uses_zstd"] else None))
    assert built == data


# --- files written by the package writer ---------------------------------------------------

def _writer_cases():
    rng = np.random.default_rng(1234)
    cases = {}
    cases["k256_random"] = (256, 64, rng.integers(0, 256, (1000, 8)).astype(np.uint8))
    cases["k256_compressible"] = (256, 100, np.where(rng.random((950, 6)) < 0.97, 7,
                                                     rng.integers(0, 256, (950, 6))).astype(np.uint8))
    cases["k256_constant"] = (256, 128, np.full((513, 4), 255, dtype=np.uint8))
    mixed = rng.integers(0, 4, (600, 5)).astype(np.uint8)
    mixed[:, 0] = rng.integers(0, 256, 600)
    cases["k256_mixed"] = (256, 128, mixed)
    cases["k4096_random"] = (4096, 100, rng.integers(0, 4096, (777, 6)).astype(np.uint16))
    cases["k4096_compressible"] = (4096, 64, np.where(rng.random((500, 4)) < 0.95, 4095,
                                                      rng.integers(0, 4096, (500, 4))).astype(np.uint16))
    cases["k65536_random"] = (65536, 33, rng.integers(0, 65536, (100, 3)).astype(np.uint16))
    cases["k2_exact_chunks"] = (2, 16, rng.integers(0, 2, (64, 16)).astype(np.uint8))
    cases["chunk_rows_1"] = (16, 1, rng.integers(0, 16, (7, 2)).astype(np.uint8))
    cases["one_chunk"] = (512, 65536, rng.integers(0, 512, (300, 2)).astype(np.uint16))
    return cases


WRITER_CASES = _writer_cases()


def _write_pkg(path, codes, K, chunk_rows, dim=5, **kw):
    _, QncWriter = _pkg()
    n, M = codes.shape
    args = dict(n=n, dim=dim, source_dtype="float32", K=K, M=M, model_sha256=bytes(32),
                model_config={"preset": "x"}, metadata={"a": 1}, chunk_rows=chunk_rows, zstd_level=3)
    args.update(kw)
    with QncWriter(path, **args) as w:
        w.write_codes(codes)


def _check_writer_rules(data, f, level=3):
    """Section 12 / 5 / 6.2 writer rules, checked on package output."""
    assert (f.version_major, f.version_minor, f.header_size) == (1, 0, 88)
    assert f.header_flags == 0
    types = [s.type for s in f.sections]
    assert types == sorted(types)
    flags = {1: 1, 2: 0, 3: 0}
    for s in f.sections:
        assert s.flags == flags[s.type], f"section {s.type}: flags {s.flags}"
        if s.type in (1, 2):
            payload = data[s.offset + SECTION_HEADER_SIZE:s.offset + SECTION_HEADER_SIZE + s.length]
            assert payload == canonical_json(json.loads(payload))
    same_zstd = ".".join(map(str, zstandard.ZSTD_VERSION)) == MANIFEST["zstd_version"]
    idx = data[f.index_offset:f.index_offset + 8]
    assert idx[4:8] == b"\0\0\0\0"
    for c in range(f.C):
        off, _ = f.chunks[c]
        for s, e in enumerate(spec_chunk_header(f, c)):
            assert data[off + 16 + 16 * s + 13:off + 16 + 16 * s + 16] == b"\0\0\0"
            stored = data[e["offset"]:e["offset"] + e["stored_len"]]
            if e["encoding"] == 1:
                assert e["stored_len"] < e["raw_len"]
                # SHOULD carry Frame_Content_Size
                assert zstandard.get_frame_parameters(stored).content_size == e["raw_len"]
            if same_zstd and level is not None:
                # 'keeps the zstd frame only when it is strictly shorter' (section 6.2); the exact
                # frame bytes: section 12 parameters (level, content size, no checksum, no dict ID)
                raw = spec_read_chunk(f, c, s + 1)[:, s].astype(f.code_dtype).tobytes()
                z = spec_zstd(level).compress(raw)
                if e["encoding"] == 1:
                    assert stored == z
                else:
                    assert len(z) >= len(raw)


@pytest.mark.parametrize("case", sorted(WRITER_CASES))
def test_package_writer_output(case, tmp_path):
    QncReader, _ = _pkg()
    K, chunk_rows, codes = WRITER_CASES[case]
    p = tmp_path / f"{case}.qnc"
    _write_pkg(p, codes, K, chunk_rows)
    data = p.read_bytes()
    f = spec_open(data)
    assert (f.n, f.dim, f.K, f.M, f.chunk_rows) == (codes.shape[0], 5, K, codes.shape[1], chunk_rows)
    assert f.bytes_per_code == (1 if K <= 256 else 2) and f.source_dtype == "float32"
    assert f.model_sha256 == bytes(32) and f.model_config == {"preset": "x"} and f.user_metadata == {"a": 1}
    assert f.embedded_model is None
    stats = {}
    mine = spec_codes(data, stats=stats)
    assert mine.dtype == (np.uint8 if K <= 256 else np.uint16)
    np.testing.assert_array_equal(mine, codes)
    np.testing.assert_array_equal(QncReader(p).codes(), mine)
    h = QncReader(p).header
    assert (h.n, h.dim, h.K, h.M, h.bytes_per_code, bytes(h.model_sha256)) == \
        (f.n, f.dim, f.K, f.M, f.bytes_per_code, f.model_sha256)
    for b in sorted({1, max(1, f.M // 2), f.M}):
        mb = spec_codes(data, steps=b)
        np.testing.assert_array_equal(mb, codes[:, :b])
        np.testing.assert_array_equal(QncReader(p).codes(steps=b), mb)
    _check_writer_rules(data, f)
    if "compressible" in case or "constant" in case:
        assert stats.get(1), "expected zstd planes"
    if case == "k256_random":
        assert not stats.get(1), "uniform random bytes should stay raw"
    if case == "k256_mixed":
        encs = [[e["encoding"] for e in spec_chunk_header(f, c)] for c in range(f.C)]
        assert all(e[0] == 0 for e in encs) and sum(e.count(1) for e in encs) >= f.C * (f.M - 2)
    # determinism (section 12): same inputs, same bytes
    p2 = tmp_path / f"{case}_again.qnc"
    _write_pkg(p2, codes, K, chunk_rows)
    assert p2.read_bytes() == data
    # a flipped byte in the last plane of the last chunk is caught by both readers
    last = _plane_positions(data)[-1]
    bad = bytearray(data)
    bad[last[2]] ^= 0xFF
    with pytest.raises(SpecFormatError, match=rf"chunk {last[0]}, plane {last[1]}: checksum mismatch"):
        spec_codes(bytes(bad))
    p.write_bytes(bytes(bad))
    with pytest.raises(Exception):
        QncReader(p).codes()


def test_package_writer_embedded_model_and_empty(tmp_path):
    QncReader, _ = _pkg()
    model = _golden("embedded_model")  # any bytes; the container treats the model as opaque
    model = spec_open(model).embedded_model
    codes = np.random.default_rng(5).integers(0, 1024, (90, 3)).astype(np.uint16)
    p = tmp_path / "emb.qnc"
    _write_pkg(p, codes, 1024, 32, model_sha256=hashlib.sha256(model).digest(), model_bytes=model,
               source_dtype="bfloat16", metadata={"naïve": "ü✓"})
    data = p.read_bytes()
    f = spec_open(data)
    assert f.embedded_model == model and f.source_dtype == "bfloat16"
    assert f.user_metadata == {"naïve": "ü✓"}
    _check_writer_rules(data, f)
    np.testing.assert_array_equal(spec_codes(data), codes)
    np.testing.assert_array_equal(QncReader(p).codes(), codes)

    p0 = tmp_path / "empty.qnc"
    _write_pkg(p0, np.zeros((0, 4), dtype=np.uint8), 256, 10)
    data0 = p0.read_bytes()
    f0 = spec_open(data0)
    assert f0.n == 0 and f0.C == 0 and f0.index_offset == f0.data_start
    assert spec_codes(data0).shape == (0, 4)
    assert QncReader(p0).codes().shape == (0, 4)


@pytest.mark.parametrize("name", [n for n in GOLDEN_NAMES if spec_open(_golden(n)).ivf is not None])
def test_golden_ivf_section_matches_the_package(name):
    """Section 5.3: the inverted lists this reader parses from a golden 1.2 file are those
    QncReader.ivf() returns, and a reader that skips the section reads the same codes."""
    QncReader, _ = _pkg()
    data = _golden(name)
    f = spec_open(data)
    got = QncReader(io.BytesIO(data)).ivf()
    np.testing.assert_array_equal(got.centroids, f.ivf.centroids)
    np.testing.assert_array_equal(got.list_ids, f.ivf.list_ids)
    assert got.list_ids.dtype.itemsize == f.ivf.id_bytes
    assert (f.version_major, f.version_minor) == ((1, 3) if f.residual_codes else (1, 2))
    assert [s.flags for s in f.sections if s.type == SEC_IVF] == [0]  # REQUIRED clear
    np.testing.assert_array_equal(spec_codes(spec_open(data, verify_skipped=False)), spec_codes(f))


def test_golden_residual_file_adds_each_rows_centroid_and_older_readers_refuse_it(monkeypatch):
    """Sections 5.4 and 13: in the 1.3 golden file the codes are residuals, so a row's vector adds
    the centroid of its list; a 1.2 reader, which does not know type 6, must refuse the file
    (REQUIRED set), and a file of 1.2 holds no such section, so it still decodes unchanged."""
    import spec_reader

    data = _golden("ivf_residual")
    f = spec_open(data)
    assert f.residual_codes and [s.flags for s in f.sections if s.type == 6] == [REQUIRED]
    offsets = spec_reader.spec_vector_offsets(f, [0, 1, 2, 3, 7])
    np.testing.assert_array_equal(offsets, f.ivf.centroids[[0, 1, 2, 3, 3]])
    assert spec_reader.spec_vector_offsets(spec_open(_golden("ivf"))) is None
    with monkeypatch.context() as m:   # what a 1.2 reader is: type 6 unknown to it
        for table in (spec_reader.MAX_OCCURRENCES, spec_reader.EXACT_FLAGS):
            m.delitem(table, spec_reader.SEC_IVF_RESIDUAL)
        with pytest.raises(spec_reader.SpecFormatError, match="unknown and REQUIRED"):
            spec_open(data)
        assert spec_open(_golden("ivf")).ivf is not None
