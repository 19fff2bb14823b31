"""Merging .qnc shards into one file without re-encoding (`qinco_codec.merge`, `qinco-merge`).

Shards written with the same model and parameters (model SHA-256, dim, K, M, chunk_rows,
source dtype: checked for every shard before anything is written) are concatenated in the order
given. Each chunk is copied byte for byte (`QncReader.raw_chunks`, CRCs verified on the way;
`QncWriter.write_raw_chunk` renumbers its header) and a new index and trailer are written. So
the merged file of shards cut on multiples of chunk_rows (what `compress_sharded` writes) holds
exactly the chunks one `compress` of all the rows would have written.

Where a shard that is not the last holds a number of rows that is not a multiple of chunk_rows,
the chunks after it no longer fall on the merged file's chunk boundaries: those chunks are
*repacked* (their planes decoded and the codes re-chunked, each plane tried with zstd and kept
raw unless zstd is shorter, SPEC.md 12), which still involves no model. The zstd level of the
repacked planes is the shards' own, found by recompressing one of their zstd planes at each
level until the frame is reproduced (else `zstd_level`, default 3); the summary says how many
chunks were copied and how many repacked.

The sections of the merged file:

* `model_config`: the first shard's.
* `embedded_model`: once, when any shard embeds the model (its SHA-256 checked against the
  header's by the reader).
* `user_metadata`: kept when every shard has the same (or none); shards that differ are refused,
  naming the first that differs, unless the caller sets the metadata (`metadata=`, qinco-merge
  --metadata) or drops it (`metadata=None`, --no-metadata).
* `quality_report`: kept when every shard has the same one (compress_sharded writes the
  collection's report, measured once, into every shard), else dropped, and the summary says so:
  per-shard reports measure different samples (rel_mse is relative to each sample's own
  spread), so they do not combine into the report of the whole file.
* `ivf` (inverted lists, SPEC.md 5.3): merged when every shard has lists over the same
  centroids (the same coarse quantizer: each row keeps its list, the list ids are concatenated);
  otherwise (some shards without lists, or other centroids) dropped, and the summary says so and
  why: rebuild the lists on the merged file (qinco-index).
* `ivf_residual` (SPEC.md 5.4: codes of residuals to the lists' centroids): kept when every
  shard has it and the lists merge; refused otherwise (such codes do not decode without their
  lists).
* any other section (of a later version, or private): dropped, and the summary names each.

This module is part of the byte layer's world: it imports no torch (nor any model code).
"""
import os
import time

import numpy as np

from .errors import InputError, QncFormatError
from .formats import QncReader, QncWriter
from .formats.chunks import decode_plane, zstd_compressor
from .formats.header import decode_fixed_header, decode_header_prefix
from .formats.ivf import IvfSection
from .formats.layout import (ENCODING_ZSTD, HEADER_PREFIX, SECTION_EMBEDDED_MODEL,
                             SECTION_HEADER_SIZE, SECTION_IVF, SECTION_IVF_RESIDUAL,
                             SECTION_MODEL_CONFIG,
                             SECTION_QUALITY_REPORT, SECTION_USER_METADATA, ZSTD_DEFAULT_LEVEL,
                             code_dtype, ivf_id_dtype, ivf_id_bytes)
from .formats.sections import decode_section_header
from .progress import bar, note

KNOWN_SECTIONS = (SECTION_MODEL_CONFIG, SECTION_USER_METADATA, SECTION_EMBEDDED_MODEL,
                  SECTION_QUALITY_REPORT, SECTION_IVF, SECTION_IVF_RESIDUAL)
# The header fields every shard must share with the first, in the order they are checked.
MATCHED_FIELDS = ("model_sha256", "dim", "K", "M", "chunk_rows", "source_dtype")
PROBE_CHUNKS = 4  # chunks of each shard searched for a zstd plane that tells the zstd level
KEEP = object()   # metadata=KEEP: the shards' own metadata (refused when they differ)


def _shown(field, value):
    return value.hex() if field == "model_sha256" else value


def section_headers(path):
    """The section headers (type, flags, length, crc32) of the .qnc file `path`, in file order
    (each header's CRC checked; payloads not read). The reader skips sections it does not know;
    merge lists them to say which it drops."""
    with open(path, "rb") as f:
        prefix = f.read(HEADER_PREFIX.size)
        header_size = decode_header_prefix(prefix)
        fixed = decode_fixed_header(prefix + f.read(header_size - len(prefix)))
        at, end, found = header_size, header_size + fixed.sections_length, []
        while at < end:
            f.seek(at)
            section = decode_section_header(f.read(SECTION_HEADER_SIZE), at)
            found.append(section)
            at += SECTION_HEADER_SIZE + section.length
    return found


def check_compatible(paths, headers):
    """Refuse (InputError, one line naming the shard and the field) the first shard whose
    model or parameters differ from the first shard's."""
    first, reference = os.fspath(paths[0]), headers[0]
    for path, header in zip(paths[1:], headers[1:]):
        for field in MATCHED_FIELDS:
            got, want = getattr(header, field), getattr(reference, field)
            if got != want:
                raise InputError(f"{os.fspath(path)}: {field} is {_shown(field, got)}, the first "
                                 f"shard {first} has {_shown(field, want)}; shards merge only "
                                 f"when written with the same model and parameters")


def _merged_metadata(paths, headers, metadata):
    """The metadata of the merged file and what happened to it ('kept', 'none', 'set',
    'dropped')."""
    if metadata is not KEEP:
        return metadata, "dropped" if metadata is None else "set"
    first = headers[0].metadata
    for path, header in zip(paths[1:], headers[1:]):
        if header.metadata != first:
            raise InputError(f"{os.fspath(path)}: its user metadata differs from the first "
                             f"shard's {os.fspath(paths[0])}; set the merged file's metadata "
                             f"(--metadata JSON) or drop it (--no-metadata)")
    return first, "kept" if first is not None else "none"


def _merged_report(headers):
    """(quality report, what happened to it): kept when every shard holds the same report."""
    reports = [h.quality_report for h in headers]
    if all(r is None for r in reports):
        return None, "none"
    if all(r == reports[0] for r in reports):
        return reports[0], "kept"
    return None, "dropped"


def _merged_ivf(paths, readers):
    """(IvfSection or None, what happened: 'none', 'merged', or why the lists were dropped).
    Lists merge when every shard has them over the same centroids (equal values and nlist)."""
    has = [r.header.has_ivf for r in readers]
    if not any(has):
        return None, "none"
    if not all(has):
        missing = paths[has.index(False)]
        return None, f"dropped: {missing} has no inverted lists"
    sections = []
    for path, reader in zip(paths, readers):
        try:
            sections.append(reader.ivf())
        except QncFormatError as exc:
            raise QncFormatError(f"{path}: {exc}") from None
    first = sections[0]
    for path, section in zip(paths[1:], sections[1:]):
        if section.centroids.shape != first.centroids.shape or \
                not np.array_equal(section.centroids, first.centroids):
            return None, (f"dropped: {path} has other centroids than {paths[0]} (another coarse "
                          f"quantizer)")
    dtype = ivf_id_dtype(ivf_id_bytes(first.nlist))
    ids = np.concatenate([s.list_ids.astype(dtype, copy=False) for s in sections])
    return IvfSection(first.centroids, ids), "merged"


def _merged_residual(paths, headers, ivf, ivf_fate):
    """Whether the merged file's codes are residuals to its lists (SPEC.md 5.4): when every
    shard's are and their lists merge. InputError when some shards' are and others' are not, or
    when residual lists would be dropped: those codes do not decode without them."""
    residual = [h.residual_codes for h in headers]
    if not any(residual):
        return False
    if not all(residual):
        plain, other = paths[residual.index(False)], paths[residual.index(True)]
        raise InputError(f"merge: the codes of {other} are residuals to its inverted lists "
                         f"(IVF-QINCo) and those of {plain} are not; they cannot share one file")
    if ivf is None:
        raise InputError(f"merge: the shards' codes are residuals to their inverted lists, which "
                         f"do not merge ({ivf_fate.removeprefix('dropped: ')}); shards of one "
                         f"collection must share the coarse centroids")
    return True


def _split_planes(raw):
    """The stored bytes of each plane of a RawChunk."""
    view, position, out = memoryview(raw.planes), 0, []
    for entry in raw.header.planes:
        out.append(view[position:position + entry.stored_len])
        position += entry.stored_len
    return out


def chunk_codes(raw, header):
    """(rows, M) codes of a RawChunk (planes verified and decoded; no model)."""
    planes = [decode_plane(stored, entry, where=f"chunk {raw.header.index}, plane {s}",
                           bpc=header.bytes_per_code, K=header.K)
              for s, (stored, entry) in enumerate(zip(_split_planes(raw), raw.header.planes), 1)]
    return np.stack(planes, axis=1)


def detect_zstd_level(readers):
    """The zstd level the shards' planes were written at: the lowest level whose frames of the
    decoded planes equal the stored frames (SPEC.md 12 makes a frame a function of the plane and
    the level) for every zstd plane of the first PROBE_CHUNKS chunks of each shard (several
    levels can give the same frame for one plane; fewer do for many). None when no zstd plane
    was found or no level reproduces them all (another zstd version or writer)."""
    candidates, probed = set(range(1, 23)), 0
    for reader in readers:
        chunks = reader.raw_chunks()
        try:
            for _, raw in zip(range(PROBE_CHUNKS), chunks):
                for stored, entry in zip(_split_planes(raw), raw.header.planes):
                    if entry.encoding != ENCODING_ZSTD:
                        continue
                    plane = decode_plane(stored, entry, where=f"chunk {raw.header.index}",
                                         bpc=reader.header.bytes_per_code, K=reader.header.K)
                    data = plane.astype(code_dtype(reader.header.bytes_per_code)).tobytes()
                    candidates = {level for level in candidates
                                  if zstd_compressor(level).compress(data) == bytes(stored)}
                    probed += 1
                    if not candidates:
                        return None
        finally:
            chunks.close()
    return min(candidates) if probed else None


def _check_output(out, paths):
    """The output must not be one of the shards (it would be replaced while read)."""
    if not os.path.exists(out):
        return
    for path in paths:
        if os.path.samefile(out, path):
            raise InputError(f"the output {os.fspath(out)} is also the shard {os.fspath(path)}; "
                             f"give another output path")


def merge(paths, out, *, metadata=KEEP, zstd_level=None, quiet=True):
    """Concatenate the .qnc shards `paths` (in order) into one .qnc file `out`; returns a
    summary dict (see `summary_lines`). Every shard is checked against the first (model SHA-256,
    dim, K, M, chunk_rows, source dtype) before anything is written; see the module docstring
    for the sections and the repacking of misaligned shards. `metadata`: the shards' own
    (default; refused when they differ), a dict to set, or None to drop it. `zstd_level`: for
    repacked chunks when the shards' level cannot be found (default 3; 0 stores them raw)."""
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise InputError("merge: no shards given")
    _check_output(out, paths)
    start_time = time.monotonic()
    readers = []
    try:
        for path in paths:
            try:
                readers.append(QncReader(path))
            except QncFormatError as exc:
                raise QncFormatError(f"{path}: {exc}") from None
        headers = [r.header for r in readers]
        check_compatible(paths, headers)
        dropped = [(path, s.type, s.name) for path in paths for s in section_headers(path)
                   if s.type not in KNOWN_SECTIONS]
        meta, meta_fate = _merged_metadata(paths, headers, metadata)
        report, report_fate = _merged_report(headers)
        ivf, ivf_fate = _merged_ivf(paths, readers)
        residual = _merged_residual(paths, headers, ivf, ivf_fate)
        first, chunk_rows = headers[0], headers[0].chunk_rows
        n = sum(h.n for h in headers)
        aligned = all(h.n % chunk_rows == 0 for h in headers[:-1])
        level, level_source = zstd_level, "given"
        if not aligned or ivf is not None:  # repacked planes and the lists' ids are zstd'd
            level = detect_zstd_level(readers)
            level_source = "found in the shards"
            if level is None:
                level = ZSTD_DEFAULT_LEVEL if zstd_level is None else zstd_level
                level_source = "default" if zstd_level is None else "given"
        embedding = next((r for r in readers if r.header.has_embedded_model), None)
        model_bytes = None
        if embedding is not None:
            try:
                model_bytes = embedding.model_bytes()
            except QncFormatError as exc:
                raise QncFormatError(f"{paths[readers.index(embedding)]}: {exc}") from None
        copied = repacked = 0
        with QncWriter(out, n=n, dim=first.dim, source_dtype=first.source_dtype, K=first.K,
                       M=first.M, model_sha256=first.model_sha256,
                       model_config=first.model_config, metadata=meta, model_bytes=model_bytes,
                       chunk_rows=chunk_rows, zstd_level=level or None,
                       quality_report=report, ivf=ivf, ivf_residual=residual) as writer, \
                bar(total=n, desc="merge", unit="vec", quiet=quiet) as pbar:
            written = 0
            for path, reader in zip(paths, readers):
                try:
                    for raw in reader.raw_chunks():
                        rows = raw.header.rows
                        if written % chunk_rows == 0 and rows == min(chunk_rows, n - written):
                            writer.write_raw_chunk(raw)
                            copied += 1
                        else:
                            writer.write_codes(chunk_codes(raw, reader.header))
                            repacked += 1
                        written += rows
                        pbar.update(rows)
                except QncFormatError as exc:
                    raise QncFormatError(f"{path}: {exc}") from None
    finally:
        for reader in readers:
            reader.close()
    seconds = time.monotonic() - start_time
    in_bytes = sum(os.path.getsize(p) for p in paths)
    summary = {"path": os.fspath(out), "shards": len(paths), "n": n, "chunks_copied": copied,
               "chunks_repacked": repacked, "zstd_level": level if repacked else None,
               "zstd_level_source": level_source if repacked else None,
               "model_embedded": model_bytes is not None, "metadata": meta_fate,
               "quality_report": report_fate, "ivf": ivf_fate, "dropped_sections": dropped,
               "input_bytes": in_bytes, "file_size": os.path.getsize(out), "seconds": seconds}
    for line in summary_lines(summary):
        note(line, quiet)
    return summary


def summary_lines(s):
    """The merge summary for people: the first line what was written and how fast, then one line
    per section or chunk that was not simply copied."""
    rate = s["input_bytes"] / 1e6 / max(s["seconds"], 1e-9)
    lines = [f"merged {_count(s['shards'], 'shard')} into {s['path']}: {s['n']:,} vectors, "
             f"{_count(s['chunks_copied'], 'chunk')} copied byte for byte, "
             f"{s['chunks_repacked']:,} repacked, {s['file_size'] / 1e6:,.1f} MB in "
             f"{s['seconds']:.2f} s "
             f"({rate:,.0f} MB/s read)"]
    if s["chunks_repacked"]:
        lines.append(f"repacked: shards whose rows are not a multiple of chunk_rows shift the "
                     f"chunks after them; {s['chunks_repacked']:,} chunks were decoded and "
                     f"re-chunked (zstd level {s['zstd_level']}, {s['zstd_level_source']}; no "
                     f"model involved)")
    if s["quality_report"] == "dropped":
        lines.append("quality report: dropped (the shards' reports differ: each measured its own "
                     "sample); qinco-eval measures the merged file")
    if s["ivf"] == "merged":
        lines.append("inverted lists: merged (every shard's lists share the same centroids)")
    elif s["ivf"].startswith("dropped"):
        lines.append(f"inverted lists: {s['ivf']}; rebuild them on the merged file with "
                     f"qinco-index")
    for path, kind, name in s["dropped_sections"]:
        lines.append(f"dropped: {name} (section type {kind}) of {path}: merge does not combine "
                     f"per-shard sections; rebuild it on the merged file (inverted lists: "
                     f"qinco-index)")
    return lines


def _count(k, what):
    return f"{k:,} {what}{'' if k == 1 else 's'}"
