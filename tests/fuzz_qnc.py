#!/usr/bin/env python
"""Fuzzing harness for the .qnc reader (qinco_codec.formats.QncReader).

The property checked for every input, read once through a seekable file object and once through a
non-seekable pipe that returns short reads:

    opening the file, reading a slice of rows at a prefix rate (seekable input), reading all codes,
    reading the embedded model bytes and reading the inverted lists (the ivf section, SPEC.md 5.3)
    either succeeds with the correct codes, model and lists, or
    raises QncFormatError; never any other exception (InputError included: no bad argument is
    ever passed), never a hang (a per-case timer, SIGALRM), and never a peak of traced memory
    (tracemalloc: numpy buffers and Python objects) above 64 * len(file) + 1 MiB.

Inputs are built from valid small files (written with QncWriter, plus the golden files of
qinco_codec/formats/golden) by a catalogue of mutations:

* byte level: random bytes, bit flips, byte insertions and deletions, truncation at every field
  boundary or anywhere, trailing bytes; optionally followed by recomputing every CRC-32 whose
  covered bytes changed, so that the damage reaches the checks behind the checksums;
* field level: any header, section, chunk-header, plane-table, index or trailer field set to an
  extreme value (0, 1, 2^31, 2^32-1, 2^63, 2^64-1, the file size, past the end of the file, ...),
  the file re-emitted with every other length and checksum consistent;
* structure level: sections replaced, added (unknown optional / required / private types),
  duplicated, removed, reordered, JSON payloads made hostile (deep nesting, NaN, duplicate keys,
  overflowing numbers, invalid UTF-8); zstd planes replaced by crafted frames (no content size,
  wrong content size, a frame whose content is far larger than its header says, concatenated or
  skippable frames, dictionary IDs, content checksums right and wrong, out-of-range codes);
  raw planes re-encoded as valid zstd and back; chunks swapped, duplicated, dropped;
* the ivf section (SPEC.md 5.3): each field of its head set to an extreme or inconsistent value
  (n, dim, nlist, id_bytes, ids_encoding, ids_stored_len), the payload truncated or extended,
  centroids made NaN or infinite, a list id >= nlist, list ids replaced by crafted zstd frames
  (wrong or missing content size, bombs, trailing bytes, checksums), valid re-encodings (raw and
  zstd ids, nonzero reserved bytes), the section added to files without one or removed.

Structure-level mutations re-emit the whole file with consistent lengths, offsets and CRCs (the
spec-only emitter of tests/spec_reader.py, which imports nothing of the package), so that only
the mutated property is wrong; a mutation that produces another valid file says which
codes and model it should then decode to.

Long run (also what RELIABILITY.md reports):

    python tests/fuzz_qnc.py --cases 100000            # exit status 1 when any case fails
    python tests/fuzz_qnc.py --cases 2000 --seed 7 --save-failures /tmp/fails

Case i of a run draws everything from random.Random(f"{seed}:{i}"), so a failure is replayed
with `--replay i` (same seed). The test suite (tests/test_reliability_fuzz.py) runs the same
mutations under hypothesis with a fixed seed.
"""
import argparse
import collections
import hashlib
import io
import json
import os
import random
import re
import signal
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import zstandard

from qinco_codec.errors import QncFormatError
from qinco_codec.formats import QncReader, QncWriter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from spec_reader import (MAGIC, SEC_IVF, U32, Emitted, Plane, QncParts, Section,  # noqa: E402,F401
                         SpecFormatError, emit, ivf_payload, numeric_fields, repair_crcs,
                         spec_codes, spec_open, to_parts)

GOLDEN = Path(__file__).resolve().parents[1] / "qinco_codec" / "formats" / "golden"

MEMORY_FACTOR = 64
MEMORY_SLACK = 1 << 20
DEFAULT_TIMEOUT = 10.0

def extreme_values(width, current, file_size):
    """The values a field of `width` bytes is set to by the field-level mutations."""
    top = 1 << (8 * width)
    values = {0, 1, 2, top - 1, top >> 1, (top >> 1) - 1, current + 1, current - 1, current * 2,
              2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 63, 2 ** 64 - 1, 2 ** 62, 2 ** 24, 2 ** 24 + 1,
              65535, 65536, file_size, file_size + 1, file_size - 1, file_size * 64,
              file_size * 100_000, 88, 96, 4096, 4097}
    return sorted(v for v in values if 0 <= v < top and v != current)


# ---------------------------------------------------------------------------------------------
# Base files

@dataclass
class Base:
    name: str
    data: bytes
    codes: np.ndarray
    model: Optional[bytes]
    parts: QncParts = None
    emitted: Emitted = None
    K: int = 0
    M: int = 0
    ivf: object = None  # (centroids, list_ids) of its ivf section, or None

    def __post_init__(self):
        self.parts = to_parts(self.data)
        self.emitted = emit(self.parts)
        assert bytes(self.emitted.buf) == self.data, f"{self.name}: re-emission differs"
        self.K, self.M = self.parts.header["K"], self.parts.header["M"]
        f = spec_open(self.data)
        self.ivf = None if f.ivf is None else (f.ivf.centroids, f.ivf.list_ids)


def _codes(rng, n, M, K):
    codes = rng.integers(0, K, (n, M))
    if M > 1:  # skewed later steps, so that zstd planes appear
        codes[:, 1:] = np.minimum(rng.geometric(0.4, (n, M - 1)) - 1, K - 1)
    return codes.astype(np.uint8 if K <= 256 else np.uint16)


# (K, M, n, chunk_rows, zstd_level, model bytes length or None, metadata, ivf nlist or None)
BASE_SPECS = [
    (256, 4, 40, 16, 3, 120, {"source": "fuzz"}, 3),
    (256, 3, 50, 7, None, None, None, None),
    (16, 5, 33, 8, 3, None, {"é": [1, 2.5, None, True]}, 40),   # more lists than rows
    (4096, 3, 30, 11, 3, 40, None, None),
    (65536, 2, 20, 20, 1, None, None, None),
    (2, 6, 150, 64, 19, 8, None, 7),                            # sorted ids: a zstd frame
    (256, 1, 1, 1, None, 1, {}, 1),
    (256, 2, 0, 5, 3, 50, None, 2),                             # n = 0
    (4, 2, 3, 2, None, None, None, None),
    (256, 8, 120, 40, 3, 300, {"k": "v" * 40}, None),
]


def _base_ivf(rng, i, n, dim, nlist):
    """The ivf section of base i: random centroids, list ids random or (base 5) sorted."""
    from qinco_codec.formats.ivf import IvfSection
    ids = np.sort(rng.integers(0, nlist, n)) if i == 5 else rng.integers(0, nlist, n)
    return IvfSection(rng.standard_normal((nlist, dim)).astype(np.float32), ids)


def make_bases(directory=None):
    """The valid files mutations start from: written by QncWriter, plus the golden files."""
    bases = []
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        for i, (K, M, n, chunk_rows, zstd, model_len, meta, nlist) in enumerate(BASE_SPECS):
            rng = np.random.default_rng(1000 + i)
            codes = _codes(rng, n, M, K)
            ivf = None if nlist is None else _base_ivf(rng, i, n, 3 + i, nlist)
            model = rng.integers(0, 256, model_len).astype(np.uint8).tobytes() if model_len else None
            sha = hashlib.sha256(model if model is not None else b"external %d" % i).digest()
            path = os.path.join(tmp, f"base{i}.qnc")
            with QncWriter(path, n=n, dim=3 + i, source_dtype="float16" if i % 3 else "float32",
                           K=K, M=M, model_sha256=sha, model_config={"K": K, "M": M, "i": i},
                           metadata=meta, model_bytes=model, chunk_rows=chunk_rows,
                           zstd_level=zstd, ivf=ivf) as w:
                w.write_codes(codes[: n // 3])
                w.write_codes(codes[n // 3:])
            bases.append(Base(f"writer{i}", Path(path).read_bytes(), codes, model))
    for qnc in sorted(GOLDEN.glob("*.qnc")):
        data = qnc.read_bytes()
        with QncReader(io.BytesIO(data)) as r:
            model = r.model_bytes()
        bases.append(Base(f"golden:{qnc.stem}", data, np.load(qnc.with_suffix(".npy")), model))
    _warm_up(bases)
    return bases


def _warm_up(bases):
    """Read every base file once in both modes, and a few broken ones, before any memory is
    measured: the first reads import modules lazily (numpy.ma, ...), which is not the reader's
    memory use."""
    rng = random.Random(0)
    for b in bases:
        for data in (b.data, b.data[:-1], m_plane(rng, b).data, m_field(rng, b).data,
                     m_ivf(rng, b).data):
            for mode in ("seek", "pipe"):
                try:
                    _read(data, mode, lambda n: (n // 3, n // 3 + max(1, n // 2)))
                except QncFormatError:
                    pass


# ---------------------------------------------------------------------------------------------
# Cases and mutations

UNCHANGED = object()
ANY_IVF = object()


@dataclass
class Case:
    data: bytes
    desc: str
    exact: bool = True               # success must give exactly the expected codes and model
    codes: object = UNCHANGED        # expected codes when not the base's
    model: object = UNCHANGED        # expected model bytes when not the base's
    expect: Optional[str] = None     # "accept" or "reject" where SPEC.md decides; None: either
    model_may_vanish: bool = False   # the embedded model section may have become another type
    ivf: object = UNCHANGED          # expected (centroids, list_ids) or None when not the base's;
                                     # ANY_IVF: whatever a valid ivf section holds


def _rand_bytes(rng, n):
    return rng.randbytes(n) if n else b""


def m_random_bytes(rng, base):
    n = rng.choice([0, 1, 7, 15, 16, 87, 88, 89, 150, 400, 1500, 5000, rng.randrange(0, 3000)])
    prefix = rng.choice([b"", MAGIC, MAGIC + b"\x01\x00\x00\x00", base.data[:88],
                         base.data[:rng.randrange(len(base.data) + 1)]])
    return Case(prefix + _rand_bytes(rng, n), f"random bytes ({len(prefix)}-byte prefix + {n})",
                exact=False)


def _pick_offset(rng, base, data):
    """A random offset, biased towards field boundaries and the non-plane structures."""
    if rng.random() < 0.5 and base.emitted.fields:
        off, size, _ = rng.choice(base.emitted.fields)
        return min(off + rng.randrange(max(size, 1)), max(len(data) - 1, 0))
    return rng.randrange(max(len(data), 1))


def m_bit_flips(rng, base):
    buf = bytearray(base.data)
    k = rng.choice([1, 1, 1, 2, 3, 8, 32])
    spots = []
    for _ in range(k):
        at = _pick_offset(rng, base, buf)
        buf[at] ^= 1 << rng.randrange(8)
        spots.append(at)
    fix = rng.random() < 0.5
    if fix:
        repair_crcs(buf, base.emitted.groups, [(a, a + 1) for a in spots])
    # with the CRCs repaired, flipped plane bytes may make another valid file, and a flipped
    # section type may turn the embedded model into an unknown (skipped) section
    hit = [_field_at(base, a) for a in spots]
    exact = not fix or not any(k and k[0] == "plane" and k[2] == "data" for k in hit)
    # with the CRCs repaired, a flipped centroid bit leaves a valid ivf section with other values
    ivf = ANY_IVF if fix and any(_in_ivf_section(base, k) for k in hit) else UNCHANGED
    return Case(bytes(buf), f"{k} bit flip(s) at {spots[:4]}{' + CRC repair' if fix else ''}",
                exact=exact, model_may_vanish=fix and any(_is_model_type(base, k) for k in hit),
                ivf=ivf)


def _field_at(base, at):
    for off, size, key in base.emitted.fields:
        if off <= at < off + size:
            return key
    return None


def _in_ivf_section(base, key):
    """Whether `key` is a field (header or payload) of the base's ivf section."""
    return (key is not None and key[0] == "section"
            and base.parts.sections[key[1]].type == SEC_IVF)


def _is_model_type(base, key):
    """Whether `key` is the type field of the embedded model's section."""
    return (key is not None and key[0] == "section" and key[2] == "type"
            and base.parts.sections[key[1]].type == 3)


def m_insert(rng, base):
    at = rng.choice([_pick_offset(rng, base, base.data), len(base.data)])
    k = rng.choice([1, 2, 4, 8, 16, 100])
    junk = rng.choice([_rand_bytes(rng, k), bytes(k), base.data[at:at + k]])
    return Case(base.data[:at] + junk + base.data[at:], f"insert {len(junk)} bytes at {at}")


def m_delete(rng, base):
    at = _pick_offset(rng, base, base.data)
    k = rng.choice([1, 2, 4, 8, 16, 100])
    return Case(base.data[:at] + base.data[at + k:], f"delete {k} bytes at {at}")


def m_truncate(rng, base):
    if rng.random() < 0.7:
        at = rng.choice(base.emitted.fields)[0] + rng.choice([0, 0, 0, 1, -1])
    else:
        at = rng.randrange(len(base.data) + 1)
    at = max(0, min(at, len(base.data)))
    return Case(base.data[:at], f"truncate at {at} of {len(base.data)}")


def m_extend(rng, base):
    tail = rng.choice([b"\0", _rand_bytes(rng, rng.randrange(1, 64)), base.data[-28:],
                       base.data])
    return Case(base.data + tail, f"append {len(tail)} bytes")


def m_field(rng, base):
    key, width = rng.choice(numeric_fields(base.emitted))
    current = _field_value(base, key)
    value = rng.choice(extreme_values(width, current, len(base.data)) + [rng.getrandbits(8 * width)])
    data = bytes(emit(base.parts, {key: value}).buf)
    if rng.random() < 0.15:  # the same value without the CRC repair
        off = next(o for o, s, k in base.emitted.fields if k == key)
        buf = bytearray(base.data)
        buf[off:off + width] = value.to_bytes(width, "little")
        data = bytes(buf)
    return Case(data, f"field {key} = {value} (was {current})",
                model_may_vanish=_is_model_type(base, key),
                ivf=ANY_IVF if _in_ivf_section(base, key) else UNCHANGED)


def m_bytes_field(rng, base):
    choices = [(o, s, k) for o, s, k in base.emitted.fields
               if k[2] in ("magic", "model_sha256", "tag", "reserved", "extension") and s]
    off, size, key = rng.choice(choices)
    buf = bytearray(base.data)
    buf[off:off + size] = rng.choice([_rand_bytes(rng, size), bytes(size), b"\xff" * size])
    changed = bytes(buf[off:off + size]) != base.data[off:off + size]
    repair_crcs(buf, base.emitted.groups, [(off, off + size)])
    # a changed magic or tag must be refused, and so must an embedded model under another hash;
    # reserved and extension bytes are ignored (but checksummed)
    must_reject = changed and (key[2] in ("magic", "tag") or
                               (key[2] == "model_sha256" and base.model is not None))
    return Case(bytes(buf), f"bytes field {key} replaced{'' if changed else ' (same bytes)'}",
                expect="reject" if must_reject else "accept" if key[2] in ("reserved", "extension")
                else None)


def _field_value(base, key):
    off, size, _ = next(f for f in base.emitted.fields if f[2] == key)
    return int.from_bytes(base.data[off:off + size], "little")


HOSTILE_JSON = [
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' + b"[" * 100_000,
    b'{"a":' + b"{\"b\":" * 3000 + b"1" + b"}" * 3001,
    b'{"a":NaN}', b'{"a":Infinity}', b'{"a":-Infinity}', b'{"a":1e999}', b'{"a":-1e400}',
    b'{"a":1,"a":2}', b'{"x":{"a":1,"a":2}}', b"\xff\xfe{}", b'{"a":"\xed\xa0\x80"}',
    b"\xef\xbb\xbf{}", b"{}", b"[]", b"null", b"1", b'"s"', b"", b"{", b'{"a":1}x',
    b'{"K":' + b"9" * 5000 + b"}", b'{"a":"' + b"x" * 100_000 + b'"}',
    b'{"a":"\\ud800"}', b" {} ", b'{"\\u0000":0}',
]


def m_section(rng, base):
    parts = base.parts.copy()
    secs = parts.sections
    op = rng.choice(["payload", "payload", "add", "duplicate", "remove", "reorder", "flags"])
    model, expect, ivf = UNCHANGED, None, UNCHANGED
    if op == "payload":
        i = rng.randrange(len(secs))
        if secs[i].type == SEC_IVF:
            ivf = ANY_IVF
        if secs[i].type in (1, 2):
            secs[i].payload = rng.choice(HOSTILE_JSON + [_rand_bytes(rng, rng.randrange(200))])
        else:
            secs[i].payload = rng.choice([b"", _rand_bytes(rng, rng.randrange(1, 500)),
                                          secs[i].payload[:-1], secs[i].payload + b"\0"])
            if secs[i].type == 3:
                expect = "reject"  # the model no longer hashes to model_sha256
        desc = f"section {i} (type {secs[i].type}) payload of {len(secs[i].payload)} bytes"
    elif op == "add":
        kind = rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 0x1000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF])
        flags = rng.choice([0, 1, 2, 0x80000000, 0xFFFFFFFF])
        payload = rng.choice([b"", b"{}", _rand_bytes(rng, rng.randrange(1, 300))])
        secs.insert(rng.randrange(len(secs) + 1), Section(kind, flags, payload))
        desc = f"added section type {kind:#x} flags {flags:#x}"
        if kind == 3 and flags == 0 and base.model is None and \
                hashlib.sha256(payload).digest() == parts.header["model_sha256"]:
            model, expect = payload, "accept"  # (the golden tiny_example names the empty model)
        elif kind in (0, 3, 5, 6) or (kind == 1 and flags == 1) or (kind == 4 and flags != 0):
            # type 0, a second model_config, a model of another hash, quality_report (type 4
            # since 1.1) with flags other than its exact 0, an ivf section (type 5 since 1.2)
            # whose payload is not a valid one (none of those drawn here is), an ivf_residual
            # section (type 6 since 1.3: REQUIRED, exactly 8 bytes, and it needs an ivf section)
            expect = "reject"
        elif kind >= 7 and flags & 1:
            expect = "reject"  # an unknown section marked REQUIRED
        elif kind >= 7:
            expect = "accept"  # an unknown optional section is skipped
    elif op == "duplicate":
        i = rng.randrange(len(secs))
        secs.insert(rng.randrange(len(secs) + 1), replace(secs[i]))
        desc = f"duplicated section {i} (type {secs[i].type})"
    elif op == "remove":
        i = rng.randrange(len(secs))
        removed = secs.pop(i)
        desc = f"removed section {i} (type {removed.type})"
        if removed.type == 3:
            model = None  # a valid file with an external model
        if removed.type == SEC_IVF:
            ivf = None  # a valid file without inverted lists
        # model_config is required; an ivf section is required by an ivf_residual one (5.4)
        residual_left = removed.type == SEC_IVF and any(s.type == 6 for s in secs)
        expect = "reject" if removed.type == 1 or residual_left else "accept"
    elif op == "reorder":
        rng.shuffle(secs)
        desc = f"sections reordered to {[s.type for s in secs]}"
        expect = "accept"
    else:
        i = rng.randrange(len(secs))
        secs[i].flags = rng.choice([0, 1, 2, 3, 0x80000000])
        desc = f"section {i} (type {secs[i].type}) flags {secs[i].flags:#x}"
    return Case(bytes(emit(parts).buf), desc, model=model, expect=expect, ivf=ivf)


def _rle_frame(content_size, total, block=1 << 17, byte=0, window_log=17):
    """A zstd frame of RLE blocks producing `total` bytes of `byte`; its header declares
    `content_size` (None: no Frame_Content_Size field). 4 bytes per 128 KiB of output."""
    if content_size is None:
        head = bytes([0x00, (window_log - 10) << 3])
    else:
        head = bytes([0x80, (window_log - 10) << 3]) + content_size.to_bytes(4, "little")
    blocks, left = [], total
    while left > 0 or not blocks:
        size = min(block, left)
        left -= size
        last = 1 if left <= 0 else 0
        blocks.append((last | (1 << 1) | (size << 3)).to_bytes(3, "little") + bytes([byte]))
    return b"\x28\xb5\x2f\xfd" + head + b"".join(blocks)


def _plane_raw(base, c, j):
    """The raw bytes of plane j of chunk c, from the base's expected codes."""
    rows = base.parts.chunks[c].rows
    start = sum(ch.rows for ch in base.parts.chunks[:c])
    dtype = "<u1" if base.K <= 256 else "<u2"
    return np.ascontiguousarray(base.codes[start:start + rows, j], dtype=dtype).tobytes()


def m_plane(rng, base):
    if not base.parts.chunks:
        return m_section(rng, base)
    parts = base.parts.copy()
    c = rng.randrange(len(parts.chunks))
    j = rng.randrange(len(parts.chunks[c].planes))
    plane = parts.chunks[c].planes[j]
    raw = _plane_raw(base, c, j)
    n = len(raw)
    cctx = lambda **kw: zstandard.ZstdCompressor(**kw)  # noqa: E731
    frame = cctx().compress(raw)
    valid_zstd = lambda frame: "accept" if len(frame) < n else "reject"  # noqa: E731
    # name: (stored bytes, encoding, whether acceptance must give the original codes, expect)
    options = {
        "zstd level 22": (cctx(level=22).compress(raw), 1, True, None),
        "zstd with checksum": (cctx(write_checksum=True).compress(raw), 1, True, None),
        "zstd checksum corrupted": (_corrupt_checksum(cctx(write_checksum=True).compress(raw)), 1,
                                    True, "reject"),
        "zstd without content size": (cctx(write_content_size=False).compress(raw), 1, True,
                                      "reject"),
        "zstd of raw + 1 byte": (cctx().compress(raw + b"\0"), 1, True, "reject"),
        "zstd of raw - 1 byte": (cctx().compress(raw[:-1]), 1, True, "reject"),
        "zstd of 100x content": (cctx().compress(raw * 100), 1, True, "reject"),
        "two frames": (frame + frame, 1, True, "reject"),
        "frame + garbage": (frame + b"\0", 1, True, "reject"),
        "skippable frame first": (b"\x50\x2a\x4d\x18" + U32.pack(4) + b"skip" + frame, 1, True,
                                  "reject"),
        "empty frame": (cctx().compress(b""), 1, True, "reject"),
        "RLE bomb declaring raw_len": (_rle_frame(n, 64 << 20), 1, True, "reject"),
        "RLE bomb without content size": (_rle_frame(None, 64 << 20), 1, True, "reject"),
        "RLE frame of raw_len bytes of value min(K, 255)": (_rle_frame(n, n, byte=min(base.K, 255)),
                                                            1, False, None),
        "frame with dictionary id": (_with_dict_id(raw), 1, True, "reject"),
        "raw plane": (raw, 0, True, "accept"),
        "raw plane, one code = K-1": (_set_code(raw, base.K - 1, base.K), 0, False, "accept"),
        "raw plane, first code = K": (_set_code(raw, base.K, base.K), 0, True, None),
        "truncated frame": (frame[:-1], 1, True, "reject"),
        "random stored bytes": (_rand_bytes(rng, max(1, rng.randrange(n + 2))), rng.choice([0, 1]),
                                False, None),
        "stored bytes bit-flipped": (_flip(rng, plane.stored), plane.encoding, False, None),
    }
    name = rng.choice(sorted(options))
    stored, encoding, exact, expect = options[name]
    if name in ("zstd level 22", "zstd with checksum"):
        expect = valid_zstd(stored)  # valid frames, kept only when shorter than the raw plane
    if name == "raw plane, first code = K" and base.K < 1 << (8 * (1 if base.K <= 256 else 2)):
        expect = "reject"
    plane.stored, plane.encoding = stored, encoding
    return Case(bytes(emit(parts).buf), f"chunk {c} plane {j + 1}: {name} ({len(stored)} bytes)",
                exact=exact, expect=expect)


def _corrupt_checksum(frame):
    return frame[:-1] + bytes([frame[-1] ^ 0x55])


def _with_dict_id(raw):
    """A frame of `raw` whose header names dictionary 42 (a 1-byte Dictionary_ID field inserted
    after the window descriptor), which a plane must never need."""
    frame = zstandard.ZstdCompressor().compress(raw)
    fhd = frame[4]
    at = 5 if fhd & 0x20 else 6  # Single_Segment_flag: no Window_Descriptor
    return frame[:4] + bytes([fhd | 0x01]) + frame[5:at] + bytes([42]) + frame[at:]


def _set_code(raw, value, K):
    width = 1 if K <= 256 else 2
    if value >= 1 << (8 * width):
        return raw
    return value.to_bytes(width, "little") + raw[width:]


def _flip(rng, data):
    if not data:
        return b"\x01"
    buf = bytearray(data)
    buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    return bytes(buf)


def m_chunks(rng, base):
    parts = base.parts.copy()
    chunks = parts.chunks
    if len(chunks) < 2:
        return m_plane(rng, base)
    op = rng.choice(["swap", "duplicate", "drop_last", "drop_last_fix_n", "drop_first",
                     "renumber", "rows"])
    codes, expect = UNCHANGED, "reject"
    if op == "swap":
        a, b = rng.sample(range(len(chunks)), 2)
        chunks[a], chunks[b] = chunks[b], chunks[a]
    elif op == "duplicate":
        chunks.insert(rng.randrange(len(chunks) + 1), replace(rng.choice(chunks)))
    elif op == "drop_last":
        chunks.pop()
    elif op == "drop_last_fix_n":  # a valid file holding fewer rows, unless its ivf section
        dropped = chunks.pop()       # still lists the dropped rows (SPEC.md 5.3: n must match)
        parts.header["n"] -= dropped.rows
        codes = base.codes[:parts.header["n"]]
        expect = "accept" if base.ivf is None else "reject"
    elif op == "drop_first":
        chunks.pop(0)
    elif op == "renumber":
        for i, ch in enumerate(chunks):
            ch.index = len(chunks) - 1 - i
    else:
        ch = rng.choice(chunks)
        ch.rows = rng.choice([0, ch.rows - 1, ch.rows + 1, 2 ** 32 - 1])
    return Case(bytes(emit(parts).buf), f"chunks: {op}", codes=codes, expect=expect)


def spec_reader_ivf_head(payload):
    """The 7 head fields of an ivf payload (SPEC.md 5.3), as the spec-only reader lays them out."""
    from spec_reader import IVF_HEAD
    return IVF_HEAD.unpack_from(payload)


def _ivf_index(parts):
    return next((i for i, sec in enumerate(parts.sections) if sec.type == SEC_IVF), None)


def m_ivf(rng, base):
    """The ivf section (SPEC.md 5.3): added to a file without one (valid, or not), or its
    payload rebuilt with one field, the centroids, the list ids or their zstd frame changed, all
    CRCs consistent (the section is re-emitted), so that only the ivf rules are broken."""
    parts = base.parts.copy()
    n, dim = parts.header["n"], parts.header["dim"]
    nrng = np.random.default_rng(rng.getrandbits(32))
    i = _ivf_index(parts)
    if i is None:
        nlist = rng.choice([1, 2, 5, 300])
        centroids = nrng.standard_normal((nlist, dim)).astype(np.float32)
        ids = nrng.integers(0, nlist, n)
        valid = rng.random() < 0.5
        payload = ivf_payload(centroids, ids, level=rng.choice([None, 3]),
                              **({} if valid else {"nlist": nlist + 1}))
        parts.sections.insert(rng.randrange(len(parts.sections) + 1), Section(SEC_IVF, 0, payload))
        return Case(bytes(emit(parts).buf), f"ivf section added (nlist {nlist}, "
                    f"{'valid' if valid else 'nlist off by one'})",
                    expect="accept" if valid else "reject",
                    ivf=(centroids, ids.astype(np.uint16)) if valid else UNCHANGED)
    centroids, ids = (np.array(a) for a in base.ivf)
    nlist, raw = len(centroids), np.ascontiguousarray(ids, "<u2").tobytes()
    frame = zstandard.ZstdCompressor().compress(raw)
    zstd_or_reject = lambda z: "accept" if 0 < len(z) < len(raw) else "reject"  # noqa: E731
    stored_now = parts.sections[i].payload[32 + 4 * nlist * dim:]
    # name: (ivf_payload keyword arguments, expect, expected lists when accepted)
    options = {
        "n + 1": (dict(n=n + 1), "reject"), "n = 2^64-1": (dict(n=2 ** 64 - 1), "reject"),
        "dim + 1": (dict(dim=dim + 1), "reject"), "dim = 0": (dict(dim=0), "reject"),
        "nlist = 0": (dict(nlist=0), "reject"), "nlist + 1": (dict(nlist=nlist + 1), "reject"),
        "nlist = 2^24 + 1": (dict(nlist=2 ** 24 + 1), "reject"),
        "nlist = 2^32 - 1": (dict(nlist=2 ** 32 - 1), "reject"),
        "id_bytes = 4": (dict(id_bytes=4), "reject"), "id_bytes = 0": (dict(id_bytes=0), "reject"),
        "id_bytes = 1": (dict(id_bytes=1), "reject"),
        "ids_encoding = 2": (dict(ids_encoding=2), "reject"),
        "ids_encoding = 255": (dict(ids_encoding=255), "reject"),
        "ids_encoding flipped": (dict(stored=stored_now, ids_encoding=int(stored_now != raw) ^ 1),
                                 "reject"),
        "ids_stored_len + 1": (dict(stored=stored_now, ids_stored_len=len(stored_now) + 1), "reject"),
        "ids_stored_len = 2^64-1": (dict(stored=stored_now, ids_stored_len=2 ** 64 - 1), "reject"),
        "a byte after the ids": (dict(stored=stored_now, tail=b"\0"), "reject"),
        "reserved bytes set": (dict(stored=stored_now, reserved=b"\xff" * 6), "accept"),
        "ids raw": (dict(level=None), "accept"),
        "ids zstd level 19": (dict(stored=zstandard.ZstdCompressor(level=19).compress(raw)),
                              zstd_or_reject(zstandard.ZstdCompressor(level=19).compress(raw))),
        "ids zstd with checksum": (dict(stored=zstandard.ZstdCompressor(write_checksum=True).compress(raw)),
                                   zstd_or_reject(zstandard.ZstdCompressor(write_checksum=True).compress(raw))),
        "ids zstd checksum corrupted": (
            dict(stored=_corrupt_checksum(zstandard.ZstdCompressor(write_checksum=True).compress(raw)),
                 ids_encoding=1), "reject"),
        "ids zstd without content size": (dict(stored=zstandard.ZstdCompressor(
            write_content_size=False).compress(raw), ids_encoding=1), "reject"),
        "ids zstd of raw + 2 bytes": (dict(stored=zstandard.ZstdCompressor().compress(raw + b"\0\0"),
                                           ids_encoding=1), "reject"),
        "ids zstd of raw - 2 bytes": (dict(stored=zstandard.ZstdCompressor().compress(raw[:-2]),
                                           ids_encoding=1), "reject"),
        "ids two frames": (dict(stored=frame + frame, ids_encoding=1), "reject"),
        "ids frame + garbage": (dict(stored=frame + b"\0", ids_encoding=1), "reject"),
        "ids RLE bomb declaring raw_len": (dict(stored=_rle_frame(len(raw), 64 << 20), ids_encoding=1),
                                           "reject"),
        "ids frame with dictionary id": (dict(stored=_with_dict_id(raw), ids_encoding=1), "reject"),
        "ids random bytes": (dict(stored=_rand_bytes(rng, max(1, rng.randrange(len(raw) + 2))),
                                  ids_encoding=rng.choice([0, 1])), None),
    }
    if n:
        over = ids.copy()
        over[rng.randrange(n)] = nlist
        last = ids.copy()
        last[rng.randrange(n)] = nlist - 1
        options["a list id = nlist"] = (dict(list_ids=over, level=None), "reject")
        options["a list id = nlist - 1"] = (dict(list_ids=last), "accept", (centroids, last))
    bad = centroids.copy()
    bad.flat[rng.randrange(bad.size)] = rng.choice([np.nan, np.inf, -np.inf])
    options["a centroid not finite"] = (dict(centroids=bad), "reject")
    other = nrng.standard_normal(centroids.shape).astype(np.float32)
    options["other centroids"] = (dict(centroids=other), "accept", (other, ids))
    options["payload truncated"] = (dict(cut=rng.choice([1, 8, 31])), "reject")
    name = rng.choice(sorted(options))
    kwargs, expect, *lists = options[name]
    kwargs = dict(kwargs)
    cut = kwargs.pop("cut", 0)
    payload = ivf_payload(kwargs.pop("centroids", centroids), kwargs.pop("list_ids", ids), **kwargs)
    parts.sections[i].payload = payload[:len(payload) - cut] if cut else payload
    return Case(bytes(emit(parts).buf), f"ivf: {name}", expect=expect,
                ivf=lists[0] if lists else UNCHANGED if expect == "accept" else ANY_IVF)


def m_header_valid_variants(rng, base):
    """Changes a reader must accept: a later minor version, a longer header with extension
    bytes, reserved header_flags, another source_dtype, unknown optional sections."""
    parts = base.parts.copy()
    op = rng.choice(["minor", "extension", "flags", "dtype", "unknown_section"])
    if op == "minor":
        parts.header["version_minor"] = rng.choice([1, 7, 65535])
    elif op == "extension":
        extra = rng.choice([8, 12, 4096 - 88 - len(parts.extension)])
        parts.extension += _rand_bytes(rng, extra)
        parts.header["header_size"] += extra
    elif op == "flags":
        parts.header["header_flags"] = rng.choice([1, 0x8000, 0xFFFF])
    elif op == "dtype":
        parts.header["source_dtype"] = rng.randrange(1, 13)
    else:
        parts.sections.insert(rng.randrange(len(parts.sections) + 1),
                              Section(rng.choice([7, 0x1000, 0x80000000]), 0,
                                      _rand_bytes(rng, rng.randrange(300))))
    return Case(bytes(emit(parts).buf), f"valid variant: {op}", expect="accept")


def m_combo(rng, base):
    first = rng.choice([m_field, m_section, m_plane, m_chunks, m_bytes_field, m_ivf])(rng, base)
    second = rng.choice([m_bit_flips, m_truncate, m_insert, m_delete])(rng, replace_data(base, first))
    return Case(second.data, f"{first.desc}; then {second.desc}",
                exact=first.exact and second.exact, codes=first.codes, model=first.model,
                model_may_vanish=first.model_may_vanish or second.model_may_vanish,
                ivf=ANY_IVF if ANY_IVF in (first.ivf, second.ivf) else
                second.ivf if second.ivf is not UNCHANGED else first.ivf)


def replace_data(base, case):
    """A pseudo-base whose bytes are a mutated file (field tables still of the original)."""
    clone = object.__new__(Base)
    clone.__dict__.update(base.__dict__)
    clone.data = case.data
    return clone


MUTATIONS = {
    "random_bytes": m_random_bytes,
    "bit_flips": m_bit_flips,
    "insert": m_insert,
    "delete": m_delete,
    "truncate": m_truncate,
    "extend": m_extend,
    "field": m_field,
    "bytes_field": m_bytes_field,
    "section": m_section,
    "plane": m_plane,
    "chunks": m_chunks,
    "valid_variant": m_header_valid_variants,
    "combo": m_combo,
    "ivf": m_ivf,
}
# relative frequency in the long run
WEIGHTS = {"random_bytes": 1, "bit_flips": 3, "insert": 1, "delete": 1, "truncate": 1,
           "extend": 0.5, "field": 4, "bytes_field": 1, "section": 2, "plane": 3, "chunks": 1,
           "valid_variant": 1, "combo": 2, "ivf": 2}


# ---------------------------------------------------------------------------------------------
# The property

class CaseTimeout(BaseException):
    """Raised by SIGALRM inside a case that ran past its time limit."""


def _on_alarm(signum, frame):
    raise CaseTimeout()


class Pipe(io.RawIOBase):
    """A non-seekable stream returning short reads of varying size, which (unlike
    BufferedReader.read(n)) never allocates more than the bytes it returns."""

    def __init__(self, data):
        self._data = memoryview(bytes(data))
        self._pos = 0
        self._calls = 0

    def readable(self):
        return True

    def seekable(self):
        return False

    def read(self, size=-1):
        left = len(self._data) - self._pos
        if size is None or size < 0:
            size = left
        self._calls += 1
        take = min(size, left, 1 + (self._calls * 7919) % 5000)
        piece = bytes(self._data[self._pos:self._pos + take])
        self._pos += take
        return piece

    def readinto(self, buffer):
        piece = self.read(len(buffer))
        buffer[:len(piece)] = piece
        return len(piece)


@dataclass
class Outcome:
    ok: bool                  # the property held
    accepted: bool = False    # the reader returned codes (False: it raised QncFormatError)
    message: str = ""         # the QncFormatError's message, or the violation
    peak: int = 0
    seconds: float = 0.0
    codes: object = None      # what an accepting reader returned
    model: object = None
    ivf: object = None        # (centroids, list_ids) or None


def _ivf_arrays(ivf):
    """(centroids, list_ids) of an IvfSection or SpecIvf, None for None."""
    return None if ivf is None else (ivf.centroids, ivf.list_ids)


def _same_ivf(a, b):
    if a is None or b is None:
        return a is None and b is None
    return all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b))


def _read(data, mode, rows_probe):
    """What the property exercises: open, a partial read (seekable), all codes, the model, the
    inverted lists."""
    src = io.BytesIO(data) if mode == "seek" else Pipe(data)
    with QncReader(src) as reader:
        h = reader.header
        partial = None
        if mode == "seek" and h.n and h.M:
            a, b = rows_probe(h.n)
            partial = (a, b, reader.codes(steps=1, rows=slice(a, b)),
                       reader.codes(rows=np.array([h.n - 1, 0, h.n // 2])))
        codes = reader.codes()
        model = reader.model_bytes()
        ivf = _ivf_arrays(reader.ivf())
        if (ivf is not None) != h.has_ivf:
            raise AssertionError("QncReader.ivf() disagrees with header.has_ivf")
        return h, partial, codes, model, ivf


def check(data, expected_codes, expected_model, *, exact, mode, expect=None,
          model_may_vanish=False, timeout=DEFAULT_TIMEOUT, expected_ivf=ANY_IVF):
    """Run the property on `data` through `mode` ('seek' or 'pipe'); return an Outcome.

    `expect`: "accept" or "reject" when SPEC.md decides whether the file is valid."""
    if not tracemalloc.is_tracing():
        tracemalloc.start()
    tracemalloc.reset_peak()
    baseline = tracemalloc.get_traced_memory()[0]
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    t0 = time.perf_counter()
    result = error = None
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            result = _read(data, mode, lambda n: (n // 3, n // 3 + max(1, n // 2)))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except QncFormatError as exc:
        error = str(exc)
    except CaseTimeout:
        return Outcome(False, message=f"hang: no result after {timeout} s ({mode})",
                       seconds=time.perf_counter() - t0)
    except RecursionError as exc:
        return Outcome(False, message=f"{mode}: unexpected RecursionError: {exc}")
    except Exception as exc:  # noqa: BLE001 - any other exception is what we look for
        return Outcome(False, message=f"{mode}: unexpected {type(exc).__name__}: {exc}")
    finally:
        signal.signal(signal.SIGALRM, previous)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] - baseline
    limit = MEMORY_FACTOR * len(data) + MEMORY_SLACK
    if peak > limit:
        return Outcome(False, result is not None, f"{mode}: traced memory peak {peak} bytes > "
                       f"{MEMORY_FACTOR} * {len(data)} + {MEMORY_SLACK}", peak, seconds)
    if result is None:
        if expect == "accept":
            return Outcome(False, False, f"{mode}: a valid file was rejected: {error}", peak,
                           seconds)
        return Outcome(True, False, error, peak, seconds)
    if expect == "reject":
        return Outcome(False, True, f"{mode}: an invalid file was accepted", peak, seconds)
    h, partial, codes, model, ivf = result
    problem = _judge(h, partial, codes, model, expected_codes, expected_model, exact,
                     model_may_vanish)
    if not problem and exact and expected_ivf is not ANY_IVF and not _same_ivf(ivf, expected_ivf):
        problem = (f"accepted, but ivf() returned {'no' if ivf is None else 'other'} inverted "
                   f"lists than expected")
    if problem:
        return Outcome(False, True, f"{mode}: {problem}", peak, seconds)
    return Outcome(True, True, "", peak, seconds, codes, model, ivf)


def spec_verdict(data, timeout=DEFAULT_TIMEOUT):
    """The spec-only reader's (tests/spec_reader.py) reading of `data`, as an Outcome: accepted
    with its codes and embedded model, or rejected with the SpecFormatError's message. Like the
    package it leaves the payload CRC of unknown sections unverified (SPEC.md 5: MAY), so that
    the two readers must agree on every file."""
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            f = spec_open(data, verify_skipped=False)
            return Outcome(True, True, codes=spec_codes(f), model=f.embedded_model,
                           ivf=_ivf_arrays(f.ivf))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except SpecFormatError as exc:
        return Outcome(True, False, str(exc))
    except CaseTimeout:
        return Outcome(False, message=f"spec-only reader: no result after {timeout} s")
    except Exception as exc:  # noqa: BLE001 - a bug of the spec-only reader
        return Outcome(False, message=f"spec-only reader: unexpected {type(exc).__name__}: {exc}")
    finally:
        signal.signal(signal.SIGALRM, previous)


def disagreement(mode, out, spec):
    """Why the package's Outcome `out` and the spec-only reader's differ, or None."""
    if not spec.ok:
        return spec.message
    if out.accepted != spec.accepted:
        if out.accepted:
            return f"{mode}: the package accepted a file the spec-only reader rejects: {spec.message}"
        return f"{mode}: the package rejected a file the spec-only reader accepts: {out.message}"
    if out.accepted and not (np.array_equal(out.codes, spec.codes) and out.model == spec.model):
        return f"{mode}: the package and the spec-only reader return different codes or model"
    if out.accepted and not _same_ivf(out.ivf, spec.ivf):
        return f"{mode}: the package and the spec-only reader return different inverted lists"
    return None


def _judge(h, partial, codes, model, expected_codes, expected_model, exact,
           model_may_vanish=False):
    dtype = np.uint8 if h.K <= 256 else np.uint16
    if codes.shape != (h.n, h.M) or codes.dtype != dtype:
        return f"codes of shape {codes.shape} {codes.dtype}, header says ({h.n}, {h.M}) {np.dtype(dtype)}"
    if codes.size and int(codes.max()) >= h.K:
        return f"code {int(codes.max())} >= K={h.K} was returned"
    if partial is not None:
        a, b, part, picked = partial
        if not np.array_equal(part, codes[a:b, :1]):
            return f"codes(steps=1, rows={a}:{b}) differ from the same rows of codes()"
        if not np.array_equal(picked, codes[[h.n - 1, 0, h.n // 2]]):
            return "codes(rows=[...]) differ from the same rows of codes()"
    if exact:
        same = (codes.size == 0 and expected_codes.size == 0) or (
            codes.shape == expected_codes.shape and np.array_equal(codes, expected_codes))
        if not same:  # (with n = 0, M and K may change: no code depends on them)
            return (f"accepted, but decoded codes differ from the original "
                    f"({codes.shape} vs {expected_codes.shape})")
        if model != expected_model and not (model is None and model_may_vanish):
            return (f"accepted, but model_bytes() returned {None if model is None else len(model)} "
                    f"bytes, expected {None if expected_model is None else len(expected_model)}")
    elif model is not None and hashlib.sha256(model).digest() != h.model_sha256:
        return "model_bytes() returned bytes that do not hash to model_sha256"
    return None


def check_case(base, case, modes=("seek", "pipe"), timeout=DEFAULT_TIMEOUT):
    """Check one mutated case in every mode, and that the spec-only reader reads it the same
    way (accepts it with the same codes and model, or rejects it); return [(mode, Outcome)]."""
    codes = base.codes if case.codes is UNCHANGED else case.codes
    model = base.model if case.model is UNCHANGED else case.model
    ivf = base.ivf if case.ivf is UNCHANGED else case.ivf
    spec = spec_verdict(case.data, timeout)
    outcomes = []
    for mode in modes:
        out = check(case.data, codes, model, exact=case.exact, mode=mode, expect=case.expect,
                    model_may_vanish=case.model_may_vanish, timeout=timeout, expected_ivf=ivf)
        problem = disagreement(mode, out, spec) if out.ok else None
        if problem:
            out = replace(out, ok=False, message=problem)
        outcomes.append((mode, out))
    return outcomes


def draw_case(rng, bases, kind=None):
    base = rng.choice(bases)
    if kind is None:
        names = sorted(WEIGHTS)
        kind = rng.choices(names, weights=[WEIGHTS[k] for k in names])[0]
    return kind, base, MUTATIONS[kind](rng, base)


def message_bucket(message):
    """A QncFormatError message with numbers and quoted values removed: which check fired."""
    text = re.sub(r"b'[^']*'|0x[0-9a-f]+|\d+", "#", message)
    text = re.sub(r"chunk #, plane #: |chunk #: |section header at offset #: ", "", text)
    return text[:70]


# ---------------------------------------------------------------------------------------------
# Long-run entry point

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=10_000, help="number of cases (each read twice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per read")
    ap.add_argument("--kind", choices=sorted(MUTATIONS), default=None, help="only this mutation")
    ap.add_argument("--replay", type=int, default=None, help="run only case number REPLAY")
    ap.add_argument("--save-failures", metavar="DIR", default=None,
                    help="write each failing input to DIR/case-<i>.qnc")
    ap.add_argument("--progress", type=int, default=10_000, help="print a line every N cases")
    ap.add_argument("--json", metavar="PATH", default=None, help="write the summary as JSON")
    args = ap.parse_args(argv)

    bases = make_bases()
    for b in bases:  # the oracle itself: every base file reads back exactly
        for mode, out in check_case(b, Case(b.data, "unmodified")):
            if not (out.ok and out.accepted):
                print(f"base {b.name} does not read back ({mode}): {out.message}", file=sys.stderr)
                return 2
    tracemalloc.start()
    cases = range(args.cases) if args.replay is None else [args.replay]
    stats = collections.Counter()
    buckets = collections.Counter()
    failures = []
    max_peak, slowest = (0, 0), (0.0, None)
    t0 = time.time()
    for i in cases:
        rng = random.Random(f"{args.seed}:{i}")
        kind, base, case = draw_case(rng, bases, args.kind)
        for mode, out in check_case(base, case, timeout=args.timeout):
            stats[(kind, "accepted" if out.accepted else "rejected")] += 1
            if out.ok and not out.accepted:
                buckets[message_bucket(out.message)] += 1
            max_peak = max(max_peak, (out.peak, len(case.data)))
            if out.seconds > slowest[0]:
                slowest = (out.seconds, i)
            if not out.ok:
                failures.append({"case": i, "kind": kind, "base": base.name, "mode": mode,
                                 "desc": case.desc, "problem": out.message})
                print(f"FAIL case {i} [{kind}, {base.name}, {mode}] {case.desc}: {out.message}",
                      file=sys.stderr, flush=True)
                if args.save_failures:
                    os.makedirs(args.save_failures, exist_ok=True)
                    Path(args.save_failures, f"case-{i}.qnc").write_bytes(case.data)
        done = i + 1
        if args.progress and done % args.progress == 0:
            print(f"{done} cases, {len(failures)} failures, {time.time() - t0:.0f} s", flush=True)
    elapsed = time.time() - t0
    summary = {
        "cases": len(cases), "reads": sum(stats.values()), "seed": args.seed,
        "failures": len(failures), "seconds": round(elapsed, 1),
        "max_traced_peak_bytes": max_peak[0], "file_size_at_max_peak": max_peak[1],
        "slowest_read_seconds": round(slowest[0], 3), "slowest_case": slowest[1],
        "by_kind": {k: {"accepted": stats[(k, "accepted")], "rejected": stats[(k, "rejected")]}
                    for k in sorted(MUTATIONS) if stats[(k, "accepted")] + stats[(k, "rejected")]},
        "top_rejections": buckets.most_common(25),
        "failure_list": failures[:50],
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "failure_list"}, indent=1))
    print(f"{len(cases)} cases ({summary['reads']} reads) in {elapsed:.0f} s: "
          f"{len(failures)} failure(s)")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
