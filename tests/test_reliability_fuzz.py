"""Reliability: fuzzing of the .qnc reader, and zstd decompression bombs.

The property (see tests/fuzz_qnc.py): for any input, opening it, reading a row slice at a prefix
rate, reading all codes, the embedded model and the inverted lists (the ivf section) either
succeeds with the right codes, model and lists or
raises QncFormatError; never another exception, never a hang, never a traced-memory peak above
64 * len(file) + 1 MiB. Seekable files and pipes (short reads) alike. And the spec-only reader
of tests/spec_reader.py reads every input the same way: it accepts exactly the files the
package accepts, with the same codes and model.

Bounded here with fixed seeds; `python tests/fuzz_qnc.py --cases 100000` is the long run.
"""
import functools
import io
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qinco_codec
from qinco_codec.errors import QncFormatError
from qinco_codec.formats import QncReader

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_qnc as F  # noqa: E402
from reliability_util import rss_growth_when_refused  # noqa: E402

MODES = ("seek", "pipe")
# examples per mutation kind in the suite (the long run does 100,000 cases)
EXAMPLES = {"random_bytes": 60, "bit_flips": 150, "insert": 60, "delete": 60, "truncate": 40,
            "extend": 30, "field": 150, "bytes_field": 60, "section": 150, "plane": 150,
            "chunks": 80, "valid_variant": 60, "combo": 100, "ivf": 80}


@functools.lru_cache(maxsize=None)
def bases():
    return tuple(F.make_bases())


def base_named(name):
    return next(b for b in bases() if b.name == name)


def assert_property(base, case, modes=MODES):
    for mode, out in F.check_case(base, case, modes):
        assert out.ok, f"[{base.name}, {mode}] {case.desc}: {out.message}"


@pytest.fixture(scope="module", autouse=True)
def tracing():
    bases()  # built (and warmed up) before memory is traced
    tracemalloc.start()
    yield
    tracemalloc.stop()


def test_every_base_file_reads_back_exactly():
    """The oracle itself: each unmodified base file (QncWriter output with and without embedded
    models, raw and zstd planes, several chunks, n = 0; the golden files) reads back exactly."""
    assert len(bases()) >= 15
    for b in bases():
        for mode, out in F.check_case(b, F.Case(b.data, "unmodified", expect="accept")):
            assert out.ok and out.accepted, (b.name, mode, out.message)


def test_truncation_at_every_field_boundary():
    """Every base file cut at the start of every field is rejected (and, for the files written
    by QncWriter, one byte into every field)."""
    count = 0
    for b in bases():
        steps = (0, 1) if b.name.startswith("writer") else (0,)
        cuts = sorted({off + d for off, _, _ in b.emitted.fields for d in steps} - {len(b.data)})
        for at in cuts:
            assert_property(b, F.Case(b.data[:at], f"truncated at {at}", expect="reject"))
            count += 1
    assert count > 1000


@pytest.mark.parametrize("name", ["writer0", "writer7", "golden:minor_1_1_unknown_section"])
def test_every_numeric_field_set_to_extreme_values_with_crcs_recomputed(name):
    """Each integer field of the header, sections, chunk headers, plane tables, index and
    trailer set to 0, 1, 2^31, 2^32-1, 2^63, 2^64-1, the file size, past the end of the file,
    ... with every checksum recomputed so that the value itself reaches the reader's checks.
    writer0: embedded model, zstd planes, 3 chunks; writer7: n = 0 with an embedded model; the
    golden 1.1 file: a 96-byte header, an unknown section, 3 chunks of 8 raw planes."""
    b = base_named(name)
    count = 0
    for key, width in F.numeric_fields(b.emitted):
        current = F._field_value(b, key)
        values = {0, 1, 2 ** 31, 2 ** 32 - 1, 2 ** 63, 2 ** 64 - 1, current + 1, current - 1,
                  len(b.data), len(b.data) + 1, len(b.data) * 1000, (1 << 8 * width) - 1}
        for value in sorted(v for v in values if 0 <= v < 1 << 8 * width and v != current):
            data = bytes(F.emit(b.parts, {key: value}).buf)
            assert_property(b, F.Case(data, f"{key} = {value} (was {current})",
                                      model_may_vanish=F._is_model_type(b, key),
                                      ivf=F.ANY_IVF if F._in_ivf_section(b, key) else F.UNCHANGED))
            count += 1
    assert count > 100


IVF_HEAD_FIELDS = ("n", "dim", "nlist", "id_bytes", "ids_encoding", "ids_stored_len")


@pytest.mark.parametrize("name", ["writer0", "writer7", "golden:ivf", "golden:ivf_zstd"])
def test_every_ivf_head_field_set_to_extreme_values_is_refused(name):
    """Each field of the ivf section's head (SPEC.md 5.3) set to 0, 1, 2^31, 2^32-1, 2^63,
    2^64-1, off by one, ... with the payload and section CRCs recomputed: every value other than
    the right one is refused with QncFormatError by both readers, through a file and a pipe.
    writer0: zstd list ids of 40 rows; writer7: n = 0; the golden files: raw and zstd ids."""
    b = base_named(name)
    i = F._ivf_index(b.parts)
    payload = b.parts.sections[i].payload
    head = dict(zip(("n", "dim", "nlist", "id_bytes", "ids_encoding", "reserved", "ids_stored_len"),
                    F.spec_reader_ivf_head(payload)))
    centroids, ids = b.ivf
    stored = payload[32 + 4 * centroids.size:]
    count = 0
    for field in IVF_HEAD_FIELDS:
        width = {"n": 8, "ids_stored_len": 8, "id_bytes": 1, "ids_encoding": 1}.get(field, 4)
        current = head[field]
        values = {0, 1, 2, 4, 2 ** 31, 2 ** 32 - 1, 2 ** 63, 2 ** 64 - 1, current + 1, current - 1,
                  len(b.data), (1 << 8 * width) - 1}
        for value in sorted(v for v in values if 0 <= v < 1 << 8 * width and v != current):
            parts = b.parts.copy()
            fields = {"ids_encoding": head["ids_encoding"], field: value}
            parts.sections[i].payload = F.ivf_payload(centroids, ids, stored=stored, **fields)
            data = bytes(F.emit(parts).buf)
            assert_property(b, F.Case(data, f"ivf {field} = {value} (was {current})",
                                      expect="reject"))
            count += 1
    assert count > 40


@pytest.mark.parametrize("kind", sorted(F.MUTATIONS))
def test_fuzz(kind):
    """Hypothesis-driven mutations of the base files (fixed seed: derandomize=True)."""

    @settings(derandomize=True, database=None, deadline=None, max_examples=EXAMPLES[kind],
              suppress_health_check=list(HealthCheck))
    @given(index=st.integers(0, len(bases()) - 1), rng=st.randoms(use_true_random=False))
    def run(index, rng):
        base = bases()[index]
        assert_property(base, F.MUTATIONS[kind](rng, base))

    run()


def test_the_spec_only_reader_is_a_second_oracle():
    """check_case fails a case where the package and the spec-only reader disagree, in either
    direction; both skip the payload CRC of unknown sections (SPEC.md 5: MAY)."""
    b = base_named("writer0")
    codes = F.spec_verdict(b.data).codes
    np.testing.assert_array_equal(codes, b.codes)
    accepted = F.Outcome(True, True, codes=codes, model=b.model)
    rejected = F.Outcome(True, False, "index: bad tag")
    assert "the package accepted a file the spec-only reader rejects: index: bad tag" in \
        F.disagreement("seek", accepted, rejected)
    assert "the package rejected" in F.disagreement("pipe", F.Outcome(True, False, "x"), accepted)
    other = F.Outcome(True, True, codes=codes[:, :1], model=b.model)
    assert "different codes" in F.disagreement("seek", accepted, other)
    assert F.disagreement("seek", accepted, accepted) is None
    # an unknown optional section whose payload CRC is wrong: a reader MAY skip verifying it
    parts = b.parts.copy()
    parts.sections.append(F.Section(0x1000, 0, b"payload"))
    key = ("section", len(parts.sections) - 1, "payload_crc32")
    data = bytes(F.emit(parts, {key: 12345}).buf)
    with pytest.raises(F.SpecFormatError, match="payload checksum mismatch"):
        F.spec_open(data)
    assert_property(b, F.Case(data, "unknown section, wrong payload CRC", expect="accept"))


def test_long_run_entry_point_smoke(tmp_path):
    """`python tests/fuzz_qnc.py` runs, reports, and exits 0 when nothing fails."""
    summary = tmp_path / "s.json"
    r = subprocess.run([sys.executable, str(Path(F.__file__)), "--cases", "150", "--seed", "3",
                        "--json", str(summary)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "150 cases (300 reads)" in r.stdout and "0 failure(s)" in r.stdout
    assert summary.exists()


# -- decompression bombs -----------------------------------------------------------------------

BOMB_ROWS = 1000
BOMB_BYTES = 1 << 30


def bomb_file():
    """One chunk of BOMB_ROWS rows whose single zstd plane is a 32 KiB frame of RLE blocks that
    produces 1 GiB of zeros while its header declares Frame_Content_Size = raw_len = 1000.
    Every CRC and length of the file is right: only the frame lies."""
    frame = F._rle_frame(BOMB_ROWS, BOMB_BYTES)
    base = base_named("golden:external_model")  # one chunk, K = 256, M = 4
    parts = base.parts.copy()
    parts.header.update(n=BOMB_ROWS, chunk_rows=BOMB_ROWS, M=1)
    chunk = parts.chunks[0]
    chunk.rows = BOMB_ROWS
    chunk.planes = [F.Plane(1, bytes(3), BOMB_ROWS, frame)]
    return bytes(F.emit(parts).buf), frame


def test_the_bomb_frame_really_expands_to_1_gib():
    """The frame is valid zstd: streamed without a size limit it yields 1 GiB (read in pieces,
    never held)."""
    import zstandard
    _, frame = bomb_file()
    assert len(frame) < 40_000
    assert zstandard.get_frame_parameters(frame).content_size == BOMB_ROWS
    # the same blocks without Frame_Content_Size, so that the streaming decoder does not stop
    unbounded = F._rle_frame(None, BOMB_BYTES)
    d = zstandard.ZstdDecompressor().decompressobj()
    total = sum(len(d.decompress(unbounded[i:i + 4096])) for i in range(0, len(unbounded), 4096))
    assert total == BOMB_BYTES


@pytest.mark.parametrize("mode", MODES)
def test_zstd_bomb_is_refused_while_decompressing_with_small_memory(mode):
    data, _ = bomb_file()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    with pytest.raises(QncFormatError, match=r"chunk 0, plane 1: .*(raw_len=1000|zstd)"):
        with QncReader(io.BytesIO(data) if mode == "seek" else F.Pipe(data)) as r:
            r.codes()
    peak = tracemalloc.get_traced_memory()[1] - before
    assert time.perf_counter() - t0 < 5
    assert peak < 1 << 20, peak  # not 1 GiB, not even 1 MiB


def test_zstd_bomb_through_the_python_api_and_the_process_rss(tmp_path):
    """qinco_codec.open(...).codes() and qinco-info-like use in a fresh process: the maximum
    resident set grows by far less than the 1 GiB the frame would produce."""
    path = tmp_path / "bomb.qnc"
    path.write_bytes(bomb_file()[0])
    with pytest.raises(QncFormatError):
        with qinco_codec.open(path) as f:
            f.codes()
    verdict, grew_mib = rss_growth_when_refused("qinco_codec.open(sys.argv[1]).verify()",
                                                "QncFormatError", path, timeout=120)
    assert verdict == "refused" and grew_mib < 64, (verdict, grew_mib)


def test_concatenated_and_skippable_frames_are_refused():
    """Two valid frames of raw_len bytes each (2 x raw_len in total), or a skippable frame
    before the real one: a plane is exactly one frame."""
    import zstandard
    b = base_named("writer0")
    raw = F._plane_raw(b, 0, 1)
    frame = zstandard.ZstdCompressor().compress(raw)
    for stored in (frame + frame, b"\x50\x2a\x4d\x18" + F.U32.pack(4) + b"skip" + frame):
        parts = b.parts.copy()
        parts.chunks[0].planes[1] = F.Plane(1, bytes(3), len(raw), stored)
        data = bytes(F.emit(parts).buf)
        for mode in MODES:
            with pytest.raises(QncFormatError, match="chunk 0, plane 2"):
                F._read(data, mode, lambda n: (0, n))


def test_decompression_output_is_bounded_by_raw_len_not_by_the_frame():
    """raw_len can be at most 32768 x stored_len (SPEC 11.2): the largest output a plane may
    legitimately claim. A frame at that ratio that lies about its content is refused after at
    most raw_len bytes."""
    rows = 1 << 20
    frame = F._rle_frame(rows, 8 * rows)
    assert rows <= 32768 * len(frame)
    b = base_named("golden:external_model")
    parts = b.parts.copy()
    parts.header.update(n=rows, chunk_rows=rows, M=1)
    parts.chunks[0].rows = rows
    parts.chunks[0].planes = [F.Plane(1, bytes(3), rows, frame)]
    data = bytes(F.emit(parts).buf)
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    with pytest.raises(QncFormatError, match="chunk 0, plane 1"):
        QncReader(io.BytesIO(data)).codes()
    assert tracemalloc.get_traced_memory()[1] - before < 3 * rows  # ~raw_len, not 8 x raw_len

