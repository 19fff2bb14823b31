"""Deterministic generator of the golden .qnc test vectors in this directory.

    python qinco_codec/formats/golden/make_golden.py            # (re)write every NAME.qnc, NAME.npy, manifest
    python qinco_codec/formats/golden/make_golden.py --example  # print SPEC.md's annotated worked example

Each NAME.qnc decodes to the codes in NAME.npy. tests/test_qnc_format.py decodes every file and
checks that `build(NAME)` reproduces it byte for byte. zstd output depends on the zstd library
version, recorded in manifest.json; files without zstd planes are identical under any version.
"""
import argparse
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import zstandard

from qinco_codec.formats import QncReader, QncWriter
from qinco_codec.formats.annotate import annotated_hexdump
from qinco_codec.formats.index import encode_index, encode_trailer
from qinco_codec.formats.ivf import IvfSection
from qinco_codec.formats.layout import (ENCODING_ZSTD, HEADER_CRC, HEADER_FIELDS, HEADER_SIZE_V1_0,
                                        INDEX_ENTRY, INDEX_PREFIX, IVF_HEAD, SECTION_FIELDS,
                                        SECTION_HEADER_SIZE, SECTION_IVF, TRAILER_FIELDS, TRAILER_SIZE,
                                        bytes_per_code, crc32, native_code_dtype)
from qinco_codec.formats.sections import encode_section

GOLDEN_DIR = Path(__file__).resolve().parent
UNKNOWN_SECTION_TYPE = 0x1000
UNKNOWN_SECTION_PAYLOAD = b'{"added_in":"1.1"}'


def tiny_safetensors():
    """A minimal valid safetensors file: one float32 tensor "w" = [0.5, -1.0]."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
                        separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + np.array([0.5, -1.0], "<f4").tobytes()


MODEL = tiny_safetensors()
MODEL_SHA = hashlib.sha256(MODEL).digest()


def _codes(seed, n, M, K, skew):
    """Reproducible codes; skew > 0 concentrates steps 2..M on small values (zstd-friendly)."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, K, (n, M))
    if skew:
        codes[:, 1:] = np.minimum(rng.geometric(skew, (n, M - 1)) - 1, K - 1)
    return codes.astype(native_code_dtype(bytes_per_code(K)))


def _config(K, M, dim):
    return {"arch": "qinco2", "K": K, "M": M, "d": dim}


# name -> (description, QncWriter keyword arguments, codes)
CASES = {
    "tiny_example": (
        "SPEC.md worked example: n=3, d=2, K=4, M=2, chunk_rows=2, raw planes, external model",
        dict(n=3, dim=2, source_dtype="float32", K=4, M=2,
             model_sha256=hashlib.sha256(b"").digest(), model_config=_config(4, 2, 2),
             chunk_rows=2, zstd_level=None),
        np.array([[1, 3], [2, 0], [3, 3]], np.uint8)),
    "k256_raw": (
        "K=256 one-byte codes, every plane raw (zstd disabled), 3 chunks, last one short",
        dict(n=40, dim=16, source_dtype="float32", K=256, M=8, model_sha256=MODEL_SHA,
             model_config=_config(256, 8, 16), metadata={"source": "golden"}, chunk_rows=16,
             zstd_level=None),
        _codes(1, 40, 8, 256, 0)),
    "k256_zstd": (
        "K=256, zstd level 3: step 1 uniform (stays raw), steps 2..8 skewed (zstd), 3 chunks",
        dict(n=600, dim=32, source_dtype="float32", K=256, M=8, model_sha256=MODEL_SHA,
             model_config=_config(256, 8, 32), chunk_rows=256, zstd_level=3),
        _codes(2, 600, 8, 256, 0.3)),
    "k4096_u16": (
        "K=4096 two-byte little-endian codes, source float16, zstd level 3, 4 chunks",
        dict(n=100, dim=8, source_dtype="float16", K=4096, M=4, model_sha256=MODEL_SHA,
             model_config=_config(4096, 4, 8), chunk_rows=32, zstd_level=3),
        _codes(3, 100, 4, 4096, 0.05)),
    "embedded_model": (
        "embedded model section (a tiny safetensors file) and non-ASCII user metadata",
        dict(n=20, dim=2, source_dtype="bfloat16", K=16, M=4, model_sha256=MODEL_SHA,
             model_config=_config(16, 4, 2), metadata={"name": "démo", "tags": ["a", "b"]},
             model_bytes=MODEL, chunk_rows=8, zstd_level=3),
        _codes(4, 20, 4, 16, 0.5)),
    "external_model": (
        "model named only by its SHA-256, source int8, one chunk (default chunk_rows)",
        dict(n=10, dim=4, source_dtype="int8", K=64, M=3, model_sha256=MODEL_SHA,
             model_config=_config(64, 3, 4), zstd_level=3),
        _codes(5, 10, 3, 64, 0)),
    "empty": (
        "n=0: no chunks, an index with chunk_count 0",
        dict(n=0, dim=8, source_dtype="float32", K=256, M=4, model_sha256=MODEL_SHA,
             model_config=_config(256, 4, 8), zstd_level=3),
        np.zeros((0, 4), np.uint8)),
    "quality_report": (
        "version 1.1: a quality_report section (SPEC.md 5.2) after the user metadata, raw planes, 2 chunks",
        dict(n=24, dim=8, source_dtype="float32", K=256, M=4, model_sha256=MODEL_SHA,
             model_config=_config(256, 4, 8), metadata={"source": "golden"}, chunk_rows=16,
             zstd_level=None, quality_report={
                 "writer": "qinco-codec 0.1.0",
                 "model": {"weight_dtype": "float16", "trained": {"epochs": 3, "samples": 3072, "val_mse": 0.5}},
                 "sample": {"rows": 24, "held_out": None},
                 "rates": [{"steps": m, "bytes_per_vector": m, "mse": 1.0 / m, "rel_mse": 0.25 / m,
                            "cosine": 1.0 - 0.125 / m} for m in (1, 2, 4)]}),
        _codes(6, 24, 4, 256, 0)),
    "ivf": (
        "version 1.2: an ivf section (SPEC.md 5.3), nlist=5 with one empty list, raw u16 list ids, "
        "raw planes, 4 chunks",
        dict(n=50, dim=4, source_dtype="float32", K=16, M=3, model_sha256=MODEL_SHA,
             model_config=_config(16, 3, 4), chunk_rows=16, zstd_level=None,
             ivf=IvfSection(np.arange(20, dtype=np.float32).reshape(5, 4) * 0.25 - 2.0,
                            np.random.default_rng(7).choice([0, 1, 2, 4], 50).astype(np.uint16))),
        _codes(7, 50, 3, 16, 0)),
    "ivf_zstd": (
        "version 1.2: a quality_report and an ivf section whose list ids (rows in list order, "
        "nlist=3) are one zstd frame; zstd planes, 3 chunks",
        dict(n=600, dim=8, source_dtype="float16", K=256, M=4, model_sha256=MODEL_SHA,
             model_config=_config(256, 4, 8), chunk_rows=256, zstd_level=3,
             quality_report={"writer": "qinco-codec 0.1.0", "sample": {"rows": 600, "held_out": None}},
             ivf=IvfSection(np.linspace(-1.0, 1.0, 24, dtype=np.float32).reshape(3, 8),
                            np.repeat(np.arange(3, dtype=np.uint16), 200))),
        _codes(8, 600, 4, 256, 0.3)),
    "ivf_residual": (
        "version 1.3: an ivf section (nlist=4, raw u16 list ids) and an ivf_residual section "
        "(SPEC.md 5.4, REQUIRED): the codes are residuals to the list centroids; raw planes, 2 chunks",
        dict(n=20, dim=4, source_dtype="float32", K=16, M=2, model_sha256=MODEL_SHA,
             model_config=_config(16, 2, 4), chunk_rows=16, zstd_level=None,
             ivf=IvfSection(np.array([[1, 0, 0, 0], [0, 2, 0, 0], [0, 0, -3, 0], [0.5, 0.5, 0.5, 0.5]],
                                     np.float32), np.arange(20, dtype=np.uint16) % 4),
             ivf_residual=True),
        _codes(9, 20, 2, 16, 0)),
}
FUTURE_MINOR = ("minor_1_1_unknown_section",
                "version 1.1 variant of k256_raw: 8 extra fixed-header bytes and an unknown "
                "optional section (type 0x1000); a 1.0 reader must decode it", "k256_raw")


def build(name):
    """The golden file `name` as bytes, rebuilt from scratch."""
    if name == FUTURE_MINOR[0]:
        return future_minor_variant(build(FUTURE_MINOR[2]))
    _, kwargs, codes = CASES[name]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, name + ".qnc")
        with QncWriter(path, **kwargs) as writer:
            writer.write_codes(codes)
        return Path(path).read_bytes()


def expected_codes(name):
    """The codes file `name` decodes to."""
    return CASES[FUTURE_MINOR[2] if name == FUTURE_MINOR[0] else name][2]


def names():
    return [*CASES, FUTURE_MINOR[0]]


def future_minor_variant(data, *, minor=1, extension=bytes(8), unknown_section=True):
    """Rewrite a 1.0 file as a hypothetical later minor version: the fixed header grows by the
    `extension` bytes and (with `unknown_section`) an unknown optional section is appended; chunk
    offsets in the index move accordingly."""
    fields = list(HEADER_FIELDS.unpack_from(data))
    sections_length = fields[5]
    sections_end = HEADER_SIZE_V1_0 + sections_length
    sections = data[HEADER_SIZE_V1_0:sections_end]
    if unknown_section:
        sections += encode_section(UNKNOWN_SECTION_TYPE, 0, UNKNOWN_SECTION_PAYLOAD)
    fields[2], fields[3], fields[5] = minor, HEADER_SIZE_V1_0 + len(extension), len(sections)
    header = HEADER_FIELDS.pack(*fields) + extension
    header += HEADER_CRC.pack(crc32(header))
    shift = len(header) + len(sections) - sections_end
    index_offset, index_length, _ = TRAILER_FIELDS.unpack_from(data, len(data) - TRAILER_SIZE)
    entries = [INDEX_ENTRY.unpack_from(data, offset) for offset in range(
        index_offset + INDEX_PREFIX.size, index_offset + index_length - 4, INDEX_ENTRY.size)]
    index = encode_index([(offset + shift, length) for offset, length in entries])
    return (header + sections + data[sections_end:index_offset] + index
            + encode_trailer(index_offset + shift, len(index)))


def uses_zstd(data):
    """Whether any plane, or the ivf section's list ids, of the file is zstd-compressed (its
    bytes then depend on zstd)."""
    with QncReader(io.BytesIO(data)) as reader:
        return any(z for chunk in reader.plane_sizes() for _, _, z in chunk) or \
            ivf_ids_encoding(data) == ENCODING_ZSTD


def ivf_ids_encoding(data):
    """The ids_encoding byte of the file's ivf section (SPEC.md 5.3), None without one."""
    header_size = int.from_bytes(data[12:16], "little")
    at, end = header_size, header_size + HEADER_FIELDS.unpack_from(data)[5]
    while at < end:
        kind, _, length, _ = SECTION_FIELDS.unpack_from(data, at)
        if kind == SECTION_IVF:
            return IVF_HEAD.unpack_from(data, at + SECTION_HEADER_SIZE)[4]  # ids_encoding
        at += SECTION_HEADER_SIZE + length
    return None


def zstd_version():
    return ".".join(map(str, zstandard.ZSTD_VERSION))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", action="store_true",
                        help="print the annotated dump of tiny_example.qnc for SPEC.md")
    args = parser.parse_args(argv)
    if args.example:
        sys.stdout.write(annotated_hexdump(build("tiny_example")))
        return
    manifest = {"zstd_version": zstd_version(), "files": {}}
    for name in names():
        data = build(name)
        (GOLDEN_DIR / f"{name}.qnc").write_bytes(data)
        np.save(GOLDEN_DIR / f"{name}.npy", expected_codes(name))
        description = FUTURE_MINOR[1] if name == FUTURE_MINOR[0] else CASES[name][0]
        manifest["files"][name] = {"description": description, "bytes": len(data),
                                   "sha256": hashlib.sha256(data).hexdigest(),
                                   "uses_zstd": uses_zstd(data)}
    (GOLDEN_DIR / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
