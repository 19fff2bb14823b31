"""qinco_codec.merge and qinco-merge: shards concatenated chunk by chunk without a model. The
merged file must equal, byte for byte, the file written from the concatenated codes at once
(aligned shards copied, misaligned ones repacked at the shards' zstd level); every mismatch is
refused before anything is written; sections the merge cannot combine are dropped and said."""
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

import qinco_codec
from qinco_codec.cli.merge import main as merge_main
from qinco_codec.errors import InputError, QncFormatError
from qinco_codec.formats import QncReader, QncWriter
from qinco_codec.formats.chunks import PlaneEncoder
from qinco_codec.formats.header import encode_fixed_header
from qinco_codec.formats.ivf import IvfSection
from qinco_codec.formats.index import encode_index, encode_trailer
from qinco_codec.formats.layout import SECTION_MODEL_CONFIG, TRAILER_SIZE, index_size
from qinco_codec.formats.sections import encode_json, encode_section

from cli_util import cli_runner

MODEL = b"not really a safetensors file, but opaque to the container"
SHA = hashlib.sha256(MODEL).digest()
REPORT = {"rates": [{"steps": 5, "mse": 0.25}], "sample": {"rows": 9}}


def _codes(n, M=5, K=256, seed=0):
    codes = np.random.default_rng(seed).integers(0, K, (n, M))
    codes[:, 2:] %= 4  # low-entropy planes: stored as zstd frames
    return codes.astype(np.uint8 if K <= 256 else np.uint16)


def _write(path, codes, *, K=256, dim=4, dtype="float32", sha=SHA, chunk_rows=64, zstd_level=3,
           metadata=None, embed=False, report=None, ivf=None):
    with QncWriter(path, n=len(codes), dim=dim, source_dtype=dtype, K=K, M=codes.shape[1],
                   model_sha256=sha, model_config={"K": K, "arch": "test"}, metadata=metadata,
                   model_bytes=MODEL if embed else None, chunk_rows=chunk_rows,
                   zstd_level=zstd_level, quality_report=report, ivf=ivf) as w:
        w.write_codes(codes)
    return path


def _shards(tmp_path, codes, cuts, **kwargs):
    bounds = [0, *cuts, len(codes)]
    return [_write(tmp_path / f"s{i}.qnc", codes[a:b], **kwargs)
            for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]


def test_aligned_shards_merge_into_the_file_written_at_once(tmp_path):
    codes = _codes(64 * 7 + 5)
    kwargs = {"metadata": {"set": "a"}, "report": REPORT}
    shards = _shards(tmp_path, codes, [128, 128 + 192, 64 * 7], **kwargs)
    whole = _write(tmp_path / "whole.qnc", codes, embed=True, **kwargs)
    _write(shards[2], codes[320:448], embed=True, **kwargs)  # one shard embeds the model
    s = qinco_codec.merge(shards, tmp_path / "m.qnc")
    assert (tmp_path / "m.qnc").read_bytes() == whole.read_bytes()
    assert (s["chunks_copied"], s["chunks_repacked"]) == (8, 0)
    assert (s["metadata"], s["quality_report"], s["model_embedded"]) == ("kept", "kept", True)


@pytest.mark.parametrize("level", [1, 7])
def test_misaligned_shards_are_repacked_at_their_zstd_level(tmp_path, level):
    """Shards of 100, 600 and 300 rows with chunk_rows=256: every chunk is off the merged
    file's boundaries, so every one is repacked, and the result is the file written at once."""
    codes = _codes(1000)
    shards = _shards(tmp_path, codes, [100, 700], chunk_rows=256, zstd_level=level)
    s = qinco_codec.merge(shards, tmp_path / "m.qnc")
    with QncReader(tmp_path / "m.qnc") as r:
        assert np.array_equal(r.codes(), codes)
    whole = _write(tmp_path / "whole.qnc", codes, chunk_rows=256, zstd_level=level)
    assert (tmp_path / "m.qnc").read_bytes() == whole.read_bytes()
    assert (s["chunks_copied"], s["chunks_repacked"]) == (0, 6)
    # the lowest level giving the shards' frames: `level` or one that writes the same frames
    # (the bytes above are equal)
    assert s["zstd_level"] <= level and s["zstd_level_source"] == "found in the shards"


def test_only_chunks_after_a_misaligned_shard_are_repacked(tmp_path):
    codes = _codes(64 * 5 + 10)
    shards = _shards(tmp_path, codes, [128, 128 + 70], chunk_rows=64)
    s = qinco_codec.merge(shards, tmp_path / "m.qnc", quiet=True)
    # shard 0's two chunks and shard 1's first are copied; its 6-row tail shifts the rest
    assert (s["chunks_copied"], s["chunks_repacked"]) == (3, 4)
    assert (tmp_path / "m.qnc").read_bytes() == _write(tmp_path / "w.qnc", codes).read_bytes()


def test_raw_shards_repack_at_the_given_level_else_the_default(tmp_path):
    """Shards whose planes are all raw do not tell their zstd level: the repacked chunks use
    zstd_level (0: raw, the same file as written at once), else level 3 (same codes)."""
    codes = _codes(300, K=4096)
    shards = _shards(tmp_path, codes, [70, 200], K=4096, zstd_level=0)
    whole = _write(tmp_path / "whole.qnc", codes, K=4096, zstd_level=0)
    s = qinco_codec.merge(shards, tmp_path / "given.qnc", zstd_level=0)
    assert (tmp_path / "given.qnc").read_bytes() == whole.read_bytes()
    assert s["zstd_level_source"] == "given"
    s = qinco_codec.merge(shards, tmp_path / "default.qnc")
    assert (s["zstd_level"], s["zstd_level_source"]) == (3, "default")
    with QncReader(tmp_path / "default.qnc") as r:
        assert np.array_equal(r.codes(), codes)
        assert any(p[2] for chunk in r.plane_sizes() for p in chunk)  # zstd planes now


@pytest.mark.parametrize("field, change", [
    ("model_sha256", {"sha": hashlib.sha256(b"other").digest()}), ("dim", {"dim": 8}),
    ("K", {"K": 512}), ("M", {"M": 4}), ("chunk_rows", {"chunk_rows": 32}),
    ("source_dtype", {"dtype": "float16"})])
def test_a_mismatched_shard_is_refused_before_anything_is_written(tmp_path, field, change):
    change = dict(change)
    M = change.pop("M", 5)
    codes = _codes(128, M=5)
    first = _write(tmp_path / "s0.qnc", codes)
    second = _write(tmp_path / "s1.qnc", _codes(64, M=M), **change)
    with pytest.raises(InputError) as info:
        qinco_codec.merge([first, first, second], tmp_path / "m.qnc")
    message = str(info.value)
    assert message.startswith(f"{second}: {field} is ") and "\n" not in message
    assert sorted(os.listdir(tmp_path)) == ["s0.qnc", "s1.qnc"]  # no output, no temporary file


def test_metadata_kept_when_identical_else_refused_unless_set_or_dropped(tmp_path):
    codes = _codes(128)
    a = _write(tmp_path / "a.qnc", codes[:64], metadata={"x": 1})
    b = _write(tmp_path / "b.qnc", codes[64:], metadata={"x": 2})
    with pytest.raises(InputError, match=r"b.qnc: its user metadata differs"):
        qinco_codec.merge([a, b], tmp_path / "m.qnc")
    assert not (tmp_path / "m.qnc").exists()
    assert qinco_codec.merge([a, b], tmp_path / "m.qnc", metadata=None)["metadata"] == "dropped"
    with QncReader(tmp_path / "m.qnc") as r:
        assert r.header.metadata is None
    s = qinco_codec.merge([a, b], tmp_path / "n.qnc", metadata={"y": 3})
    with QncReader(tmp_path / "n.qnc") as r:
        assert (s["metadata"], r.header.metadata) == ("set", {"y": 3})


def test_differing_quality_reports_are_dropped_and_said(tmp_path, capsys):
    codes = _codes(128)
    a = _write(tmp_path / "a.qnc", codes[:64], report=REPORT)
    b = _write(tmp_path / "b.qnc", codes[64:], report=dict(REPORT, sample={"rows": 8}))
    s = qinco_codec.merge([a, b], tmp_path / "m.qnc", quiet=False)
    assert s["quality_report"] == "dropped"
    assert "quality report: dropped" in capsys.readouterr().err
    with QncReader(tmp_path / "m.qnc") as r:
        assert r.header.quality_report is None and r.header.version == (1, 0)


CENTROIDS = np.arange(12, dtype=np.float32).reshape(3, 4)


def test_inverted_lists_over_the_same_centroids_are_merged(tmp_path):
    codes = _codes(200)
    ids = np.random.default_rng(1).integers(0, 3, 200).astype(np.uint16)
    shards = [_write(tmp_path / f"s{i}.qnc", codes[a:b], ivf=IvfSection(CENTROIDS, ids[a:b]))
              for i, (a, b) in enumerate([(0, 128), (128, 200)])]
    s = qinco_codec.merge(shards, tmp_path / "m.qnc")
    assert s["ivf"] == "merged"
    with QncReader(tmp_path / "m.qnc") as r:
        assert np.array_equal(r.ivf().list_ids, ids)
        assert np.array_equal(r.ivf().centroids, CENTROIDS)
    whole = _write(tmp_path / "whole.qnc", codes, ivf=IvfSection(CENTROIDS, ids))
    assert (tmp_path / "m.qnc").read_bytes() == whole.read_bytes()


@pytest.mark.parametrize("second", ["no lists", "other centroids"])
def test_inverted_lists_that_do_not_combine_are_dropped_and_said(tmp_path, capsys, second):
    codes, ids = _codes(128), np.zeros(128, np.uint16)
    a = _write(tmp_path / "a.qnc", codes[:64], ivf=IvfSection(CENTROIDS, ids[:64]))
    b = _write(tmp_path / "b.qnc", codes[64:], ivf=None if second == "no lists" else
               IvfSection(CENTROIDS + 1, ids[64:]))
    s = qinco_codec.merge([a, b], tmp_path / "m.qnc", quiet=False)
    why = "has no inverted lists" if second == "no lists" else "has other centroids"
    assert s["ivf"] == f"dropped: {b} {why}" + ("" if second == "no lists" else
                                                f" than {a} (another coarse quantizer)")
    assert f"inverted lists: dropped: {b} {why}" in capsys.readouterr().err
    with QncReader(tmp_path / "m.qnc") as r:
        assert not r.header.has_ivf and np.array_equal(r.codes(), codes)


def _with_private_section(path, codes, chunk_rows=64):
    """A .qnc with an optional section of a private-use type (what readers skip, like sections
    of later versions, inverted lists for instance), built structure by structure."""
    sections = encode_section(SECTION_MODEL_CONFIG, 1, encode_json({"K": 256}, "config")) + \
        encode_section(0x80000001, 0, b"per-shard lists")
    header = encode_fixed_header(n=len(codes), sections_length=len(sections), dim=4, K=256,
                                 M=codes.shape[1], chunk_rows=chunk_rows, source_dtype="float32",
                                 model_sha256=SHA)
    encoder, offset, body, entries = PlaneEncoder(1, 3), len(header) + len(sections), b"", []
    for c, lo in enumerate(range(0, len(codes), chunk_rows)):
        data = encoder.encode_chunk(c, codes[lo:lo + chunk_rows])
        entries.append((offset, len(data)))
        offset, body = offset + len(data), body + data
    index = encode_index(entries)
    path.write_bytes(header + sections + body + index + encode_trailer(offset, len(index)))
    return path


def test_sections_merge_cannot_combine_are_dropped_and_named(tmp_path, capsys):
    codes = _codes(192)
    a = _write(tmp_path / "a.qnc", codes[:128])
    b = _with_private_section(tmp_path / "b.qnc", codes[128:])
    s = qinco_codec.merge([a, b], tmp_path / "m.qnc", quiet=False)
    assert [(path, kind) for path, kind, _ in s["dropped_sections"]] == [(str(b), 0x80000001)]
    err = capsys.readouterr().err
    assert f"dropped: unknown section type {0x80000001} (section type {0x80000001}) of {b}" in err
    assert (tmp_path / "m.qnc").read_bytes() == _write(tmp_path / "w.qnc", codes).read_bytes()


def test_a_corrupted_shard_stops_the_merge_and_leaves_no_output(tmp_path):
    codes = _codes(256)
    a, b = _shards(tmp_path, codes, [128], zstd_level=0)
    data = bytearray(b.read_bytes())
    data[-(TRAILER_SIZE + index_size(2)) - 1] ^= 0xFF  # the last plane byte of b's last chunk
    b.write_bytes(bytes(data))
    with pytest.raises(QncFormatError, match=r"s1.qnc: chunk 1, plane 5: checksum mismatch"):
        qinco_codec.merge([a, b], tmp_path / "m.qnc")
    assert sorted(os.listdir(tmp_path)) == ["s0.qnc", "s1.qnc"]


def test_the_output_cannot_be_a_shard(tmp_path):
    a, b = _shards(tmp_path, _codes(128), [64])
    with pytest.raises(InputError, match=r"is also the shard"):
        qinco_codec.merge([a, b], a)


def test_merge_imports_no_torch(tmp_path):
    a, b = _shards(tmp_path, _codes(128), [64], embed=True)
    code = ("import sys, qinco_codec\n"
            f"s = qinco_codec.merge([{str(a)!r}, {str(b)!r}], {str(tmp_path / 'm.qnc')!r})\n"
            "assert s['chunks_copied'] == 2, s\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_qinco_merge_end_to_end(tmp_path):
    codes = _codes(200)
    shards = [str(p) for p in _shards(tmp_path, codes, [64, 100])]
    out = str(tmp_path / "m.qnc")
    result = cli_runner().invoke(merge_main, [out, *shards])
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line and not line.startswith("merge:")]
    assert lines[0].startswith(f"merged 3 shards into {out}: 200 vectors, 1 chunk copied byte "
                               f"for byte, 3 repacked")
    assert lines[1].startswith("repacked: ")
    with QncReader(out) as r:
        assert np.array_equal(r.codes(), codes)
    again = cli_runner().invoke(merge_main, [out, *shards])
    assert again.exit_code == 1 and "already exists" in again.stderr
    _write(tmp_path / "k.qnc", codes[:64], K=512)
    refused = cli_runner().invoke(merge_main, ["-f", out, shards[0], str(tmp_path / "k.qnc")])
    assert refused.exit_code == 1
    assert refused.stderr.startswith("qinco-merge: error: ") and "K is 512" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    quiet = cli_runner().invoke(merge_main, ["-q", "-f", out, *shards])
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_qinco_merge_help_and_version():
    runner = cli_runner()
    result = runner.invoke(merge_main, ["--help"])
    assert result.exit_code == 0 and result.stdout.startswith("Usage: qinco-merge")
    assert "qinco-merge" in result.stdout.split("Examples:")[1]
    assert "inverted lists" in result.stdout.lower()  # what happens to them is said
    assert runner.invoke(merge_main, ["-h"]).stdout == result.stdout
    version = runner.invoke(merge_main, ["--version"])
    assert version.exit_code == 0 and version.stdout.startswith("qinco-merge ")
