"""What a .qnc file holds and what it costs: the report behind `QncFile.describe()`, which
`qinco-info` (text and --json) and `qinco-compress`'s end-of-run summary both render.

Everything here comes from the header, the sections, the index and the chunk headers (never the
codes) and the size of the model file; no torch. The quality report (MSE, relative MSE and cosine
per rate, with the model's weight precision, training record and the writer) is the file's own
quality_report section, measured when it was written. The inverted lists (the ivf section,
SPEC.md 5.3) are summarised by their number, the rows per list and the section's size.
"""
import os

import numpy as np

FLOAT32_BYTES = 4


def source_itemsize(dtype_name):
    """Bytes per value of a source dtype named in the header (bfloat16 is not a NumPy dtype)."""
    return 2 if dtype_name == "bfloat16" else np.dtype(dtype_name).itemsize


def _ratio(numerator, denominator):
    return numerator / denominator if numerator is not None and denominator else None


def size_accounting(n, dim, source_dtype, file_size, model_bytes, embedded):
    """The sizes a user weighs: the vectors as float32 and in their source dtype, the file with
    and without its model (an external model counts when its size is known), the compression
    ratios against both, and the model's share of the file. Unknown sizes are None."""
    float32_bytes = n * dim * FLOAT32_BYTES
    source_bytes = n * dim * source_itemsize(source_dtype)
    if embedded:
        without = None if file_size is None else file_size - (model_bytes or 0)
        with_model = file_size
    else:
        without = file_size
        with_model = file_size + model_bytes if None not in (file_size, model_bytes) else None
    return {"float32_bytes": float32_bytes, "source_bytes": source_bytes, "file_size": file_size,
            "model_bytes": model_bytes, "model_embedded": bool(embedded),
            "model_share_of_file": _ratio(model_bytes, file_size) if embedded else 0.0,
            "bytes_without_model": without, "bytes_with_model": with_model,
            "ratio_without_model": _ratio(float32_bytes, without),
            "ratio_with_model": _ratio(float32_bytes, with_model),
            "source_ratio_without_model": _ratio(source_bytes, without),
            "source_ratio_with_model": _ratio(source_bytes, with_model)}


def chunk_cost(steps):
    """Bytes each chunk of a file with `steps` planes adds outside its codes: its header and its
    index entry (formats/layout.py)."""
    from .formats.layout import INDEX_ENTRY, chunk_header_size

    return chunk_header_size(steps) + INDEX_ENTRY.size


def chunking_warning(n, dim, steps, bytes_per_code, chunk_rows):
    """A warning (or None) when the chunks' headers and index entries make a file of raw codes
    larger than the vectors stored as float32, although the codes alone are not."""
    from .formats.layout import chunk_count

    codes = n * steps * bytes_per_code
    per_chunk = chunk_cost(steps)
    overhead = chunk_count(n, chunk_rows) * per_chunk
    float32_bytes = n * dim * FLOAT32_BYTES
    if not codes <= float32_bytes < codes + overhead:
        return None
    return (f"warning: --chunk-rows {chunk_rows}: each chunk adds {per_chunk} bytes (its header "
            f"and index entry), {overhead:,} bytes in all, so the file ({codes + overhead:,} bytes "
            f"before the model) will be larger than the vectors as float32 ({float32_bytes:,} "
            f"bytes); a larger --chunk-rows keeps random access (a read decodes whole chunks)")


def plane_summary(sizes, M):
    """Per step, from QncReader.plane_sizes(): stored and raw bytes summed over chunks, the
    number of zstd-coded chunks and the zstd saving."""
    out = []
    for s in range(M):
        stored = sum(chunk[s][0] for chunk in sizes)
        raw = sum(chunk[s][1] for chunk in sizes)
        out.append({"step": s + 1, "stored_bytes": stored, "raw_bytes": raw,
                    "zstd_chunks": sum(1 for chunk in sizes if chunk[s][2]),
                    "zstd_saving": 1.0 - stored / raw if raw else 0.0})
    return out


def prefix_rates(planes, bytes_per_code, n):
    """Per prefix of 1..M steps: bytes per vector decoded and stored bytes per vector read."""
    rates, stored = [], 0
    for p in planes:
        stored += p["stored_bytes"]
        rates.append({"steps": p["step"], "bytes_per_vector": p["step"] * bytes_per_code,
                      "stored_bytes_per_vector": stored / n if n else 0.0})
    return rates


def external_model_size(model_arg, sha256_hex):
    """(size in bytes or None, model store path or None) of the model a file does not embed:
    the model file given as a path (or the model a .qnc given as the model embeds), else the
    model store's copy."""
    from . import model_store
    from .model_resolution import model_file_size

    store = model_store.find(sha256_hex)
    if isinstance(model_arg, (str, os.PathLike)) and os.path.isfile(model_arg):
        return model_file_size(model_arg), store
    return (os.path.getsize(store) if store else None), store


def ivf_summary(ivf, stored_bytes, residual_codes=False):
    """The `ivf` entry of the report: for a formats.ivf.IvfSection, nlist, the rows per list
    (min, median, max; lists may be empty), the number of empty lists, the section's payload
    bytes (`stored_bytes`) and whether the codes are residuals to its centroids (SPEC.md 5.4);
    None for a file without inverted lists."""
    if ivf is None:
        return None
    sizes = ivf.list_sizes()
    return {"nlist": ivf.nlist, "list_size_min": int(sizes.min()),
            "list_size_median": float(np.median(sizes)), "list_size_max": int(sizes.max()),
            "empty_lists": int((sizes == 0).sum()), "bytes": stored_bytes,
            "residual_codes": bool(residual_codes)}


def ivf_lines(info):
    """qinco-info's line for the inverted lists of a QncFile.describe() dict."""
    ivf = info.get("ivf")
    if not ivf:
        return ["ivf:         none (qinco-index FILE --ivf NLIST adds inverted lists for search)"]
    empty = f", {ivf['empty_lists']:,} empty" if ivf["empty_lists"] else ""
    return [f"ivf:         {ivf['nlist']:,} inverted lists, rows per list min {ivf['list_size_min']:,} "
            f"median {ivf['list_size_median']:,.0f} max {ivf['list_size_max']:,}{empty}; "
            f"{ivf['bytes']:,} bytes"] + (
        ["             codes are residuals to the list centroids (IVF-QINCo): decoding needs them"]
        if ivf.get("residual_codes") else [])


def describe(header, plane_sizes, file_size, model_bytes, model_in_store, path=None, ivf=None):
    """The report as a JSON-ready dict (see QncFile.describe); `ivf`: ivf_summary's entry."""
    planes = plane_summary(plane_sizes, header.M)
    info = {
        "path": path,
        "version": ".".join(str(v) for v in header.version),
        "n": header.n, "dim": header.dim, "source_dtype": header.source_dtype,
        "K": header.K, "bytes_per_code": header.bytes_per_code, "M": header.M,
        "bytes_per_vector": header.M * header.bytes_per_code,
        "chunk_rows": header.chunk_rows, "chunks": header.num_chunks,
        "rates": prefix_rates(planes, header.bytes_per_code, header.n),
        "model_sha256": header.model_sha256.hex(),
        "model_embedded": header.has_embedded_model,
        "model_in_store": model_in_store,
        "model_config": header.model_config,
        "metadata": header.metadata,
        "quality_report": header.quality_report,  # SPEC.md 5.2; None when the file has none
        "ivf": ivf,  # SPEC.md 5.3 (ivf_summary); None when the file has no inverted lists
        "planes": planes,
        "codes_stored_bytes": sum(p["stored_bytes"] for p in planes),
        "codes_raw_bytes": sum(p["raw_bytes"] for p in planes),
    }
    info.update(size_accounting(header.n, header.dim, header.source_dtype, file_size, model_bytes,
                                header.has_embedded_model))
    return info


def file_size_of(source):
    """Size in bytes of what a QncFile was opened on (a path, a regular file object, an
    in-memory buffer); None for a pipe."""
    import stat

    if isinstance(source, (str, os.PathLike)):
        return os.path.getsize(source)
    try:
        st = os.fstat(source.fileno())
        if stat.S_ISREG(st.st_mode):
            return st.st_size
    except (AttributeError, OSError, ValueError):
        pass
    if hasattr(source, "getbuffer"):
        return source.getbuffer().nbytes
    return None
