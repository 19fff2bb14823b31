"""qinco-search: the k nearest rows of a .qnc file for each query, without decompressing it."""
import os
import time

import click
import numpy as np

from ..errors import InputError
from .commands import command
from .common import device_option, force_option, quiet_option, threads_option
from .paths import check_distinct, check_output, existing_input

EXAMPLE = """
qinco-search base.qnc queries.npy -k 10 -o ids.npy
qinco-search base.qnc queries.fvecs -k 100 -o ids.ivecs --distances dist.fvecs
qinco-search base.qnc queries.npy -o ids.npy --shortlist 300 --nprobe 32   # file with an IVF
qinco-search base.qnc queries.npy -o ids.npy --bytes 8        # search the 8-byte prefix only
qinco-search embeddings.qnc queries.npy -o ids.npy --metric ip   # normalised embeddings
"""
ID_EXTENSIONS = (".npy", ".ivecs")
DISTANCE_EXTENSIONS = (".npy", ".fvecs")
# Queries per search call: the progress bar's step (the index is built once, before the first).
QUERY_BATCH = 1024


def _extension(path, allowed, option):
    ext = os.path.splitext(path)[1].lower()
    if ext not in allowed:
        raise InputError(f"{option} {path}: cannot write {ext or 'extension-less'!r} files; "
                         f"formats: {', '.join(allowed)}")
    return ext


def read_queries(path, dim):
    """The query file (any vector format the other commands read) as float32 (nq, dim), or one
    clear InputError: unreadable, empty, wrong dimension, or a non-finite value."""
    from ..readers import read_vectors
    from ..validation import as_float_matrix

    q = read_vectors(path)
    if len(q) == 0:
        raise InputError(f"QUERIES {path}: no vectors (0 rows)")
    if q.shape[1] != dim:
        raise InputError(f"QUERIES {path}: vectors of dimension {q.shape[1]}, expected {dim} "
                         f"(the dimension of INPUT.qnc's vectors)")
    return as_float_matrix(q, dim=dim, name=f"QUERIES {path}")


def write_ids(path, ids):
    """Row ids (nq, k): .npy as int64, .ivecs as int32 TEXMEX rows (k, then the k ids)."""
    from ..formats.atomic import atomic_output

    with atomic_output(path) as f:
        if path.lower().endswith(".npy"):
            np.lib.format.write_array(f, np.ascontiguousarray(ids, dtype="<i8"))
        else:
            table = np.empty((len(ids), ids.shape[1] + 1), "<i4")
            table[:, 0] = ids.shape[1]
            table[:, 1:] = ids
            f.write(table.data)


def write_distances(path, dist):
    """Distances (nq, k) float32: .npy, or .fvecs rows (k, then the k values)."""
    from ..formats.atomic import atomic_output

    with atomic_output(path) as f:
        if path.lower().endswith(".npy"):
            np.lib.format.write_array(f, np.ascontiguousarray(dist, dtype="<f4"))
        else:
            table = np.empty(len(dist), [("dim", "<i4"), ("vec", "<f4", (dist.shape[1],))])
            table["dim"] = dist.shape[1]
            table["vec"] = dist
            f.write(table.data)


@command("qinco-search", EXAMPLE)
@click.argument("input_path", metavar="INPUT.qnc", is_eager=True,
                callback=existing_input("INPUT.qnc"))
@click.argument("queries_path", metavar="QUERIES", is_eager=True,
                callback=existing_input("QUERIES"))
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True,
              help="Neighbours per query. More than the file's rows is fine: the missing ones are "
                   "id -1 with distance inf (-inf for --metric ip), as faiss returns them.")
@click.option("-o", "--output", metavar="IDS", required=True,
              help="Where to write the neighbours' row ids, (queries, k): .npy (int64) or .ivecs "
                   "(int32), nearest first.")
@click.option("--distances", metavar="PATH", default=None,
              help="Also write their distances, (queries, k) float32: .npy or .fvecs (squared L2 "
                   "to the decoded vectors; inner products with --metric ip).")
@click.option("--shortlist", type=click.IntRange(min=1), default=None,
              help="Rows per query re-ranked by decoding them with the model, picked by the "
                   "additive lookup tables (more: closer to exhaustive, slower). "
                   "[default: max(k, 100)]")
@click.option("--nprobe", type=click.IntRange(min=1), default=None,
              help="Inverted lists scanned per query, for a file with an IVF section (see "
                   "qinco-info). [default: 1/32 of the lists, at least 1]")
@click.option("--bytes", "nbytes", type=click.IntRange(min=1), default=None,
              help="Search a prefix of each code: this many bytes per vector (a multiple of the "
                   "code size, at most the file's rate); only those planes are read. "
                   "[default: the file's rate]")
@click.option("--metric", type=click.Choice(["l2", "ip"]), default="l2", show_default=True,
              help="l2: squared Euclidean distance; ip: inner product (for normalised "
                   "embeddings; larger is nearer).")
@click.option("--model", "model_path", metavar="PATH", default=None,
              help="The model file (or a .qnc embedding it), for a file written with "
                   "--no-embed-model whose model is not in the model store. It must be the file's "
                   "model (same SHA-256).")
@force_option("IDS and --distances")
@device_option("re-ranking (decoding the shortlists)")
@threads_option
@quiet_option("the progress bar and the summary on stderr")
def main(input_path, queries_path, k, output, distances, shortlist, nprobe, nbytes, metric,
         model_path, force, device, quiet):
    """Find the k nearest vectors of INPUT.qnc for each vector of QUERIES (.npy, .fvecs, .bvecs,
    .fbin, ...) and write their row ids to IDS (and their distances to --distances).

    The file is not decompressed: per query, an additive shortlist is scored from the code
    planes with lookup tables (only the probed inverted lists when the file has an IVF
    section), then re-ranked by decoding the shortlist with the file's model. The additive
    codebooks are fitted first, on a sample of the file's decoded rows (a second or so).
    """
    from .. import open as qnc_open
    from ..progress import bar, note
    from ..rates import steps_for_bytes

    check_distinct(inputs=[("INPUT.qnc", input_path), ("QUERIES", queries_path),
                           ("--model", model_path)],
                   outputs=[("-o/--output", output), ("--distances", distances)])
    _extension(output, ID_EXTENSIONS, "-o/--output")
    if distances is not None:
        _extension(distances, DISTANCE_EXTENSIONS, "--distances")
    check_output(output, "-o/--output", force)
    check_output(distances, "--distances", force)
    with qnc_open(input_path, model=model_path) as f:
        steps = steps_for_bytes(nbytes, f.K, f.M, "the file's rate", name="--bytes")
        q = read_queries(queries_path, f.dim)
        t0 = time.perf_counter()
        index = f.search_index(steps, device=device) if f.n else None
        if index is not None and nprobe is not None and index.ivf is None:
            raise InputError(f"--nprobe: {input_path} has no IVF section (every row is scanned); "
                             f"add one with qinco-index or leave --nprobe out")
        t_index = time.perf_counter() - t0
        Ds, Is = [], []
        t1 = time.perf_counter()
        with bar(total=len(q), desc="search", unit="query", quiet=quiet) as pbar:
            for s in range(0, len(q), QUERY_BATCH):
                D, I = f.search(q[s:s + QUERY_BATCH], k, shortlist=shortlist, nprobe=nprobe,
                                steps=steps, metric=metric, device=device)
                Ds.append(D)
                Is.append(I)
                pbar.update(len(D))
        t_search = time.perf_counter() - t1
        D, I = np.concatenate(Ds), np.concatenate(Is)
        write_ids(output, I)
        if distances is not None:
            write_distances(distances, D)
        note(summary(len(q), k, t_search, t_index, index, shortlist, nprobe,
                     steps * f.bytes_per_code), quiet)


def summary(nq, k, seconds, index_seconds, index, shortlist, nprobe, nbytes):
    """One line: queries/s and the settings that made them."""
    from ..search.engine import shortlist_size

    rate = nq / seconds if seconds > 0 else float("inf")
    if index is None:
        where = "an empty file"
    elif index.ivf is None:
        where = f"all {index.n:,} rows"
    else:
        p = index.default_nprobe() if nprobe is None else min(nprobe, index.ivf.nlist)
        where = f"{p} of {index.ivf.nlist:,} lists"
    return (f"searched {nq:,} queries in {seconds:.2f} s ({rate:,.0f} queries/s): k={k}, "
            f"shortlist {shortlist_size(k, shortlist)}, {where}, {nbytes} B/vector; "
            f"index ready in {index_seconds:.2f} s (codes read, additive codebooks fitted)")


if __name__ == "__main__":
    main()
