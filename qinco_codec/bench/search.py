"""Search benchmark (`qinco-bench search`): recall against queries per second, our codes searched
by `qinco_codec.search` beside faiss's compressed indexes at the same bytes per vector, measured
in one process on the same vectors.

What is measured, per method and setting (a "point"): R@1, R@10 and R@100 (share of the queries
whose true nearest neighbour, found by exact brute force over the original vectors, is among the
1, 10 or 100 results) and queries per second at each thread count (all queries in one batch,
best of `repeats` runs). Recall does not depend on the thread count or the machine's load; QPS
does.

Methods (every one at B bytes of codes per vector; the ids an inverted list stores and the links
of an HNSW graph are extra, for faiss as for us, and are reported apart as `extra_bytes`):
- ours: a QINCo model's codes through `qinco_codec.search.engine.search`: exhaustive (additive
  shortlist over every row, QINCo re-ranking of the shortlist) and with an inverted file (nprobe
  lists, then the same shortlist and re-ranking); its ceiling is the shortlist of every row,
  i.e. exact ranking by the fully decoded vectors.
- faiss: IVF-PQ (8-bit, ADC), IVF-PQ fast scan (4-bit PQ, 2B sub-quantizers), IVF-RQ
  (IndexIVFResidualQuantizer, faiss's default beam), HNSW over PQ codes (IndexHNSWPQ), each over
  a sweep of nprobe / efSearch; ceilings: IndexPQ, IndexPQFastScan and IndexResidualQuantizer
  searched exhaustively.
"""
import dataclasses
import datetime
import hashlib
import os
import platform
import time

import numpy as np

from ..errors import InputError
from ..progress import note
from .baselines import captured_native_stderr, summarize_warnings
from .common import (Inputs, best_of, check_training_size, format_table, notes_and_figure,
                     require_faiss, sample_training, training_vectors, write_json_and_markdown)
from .common import write_partial as common_write_partial

RECALL_AT = (1, 10, 100)          # the R@k reported
METHODS = ("qinco", "ivfpq", "ivfpqfs", "ivfrq", "hnswpq")
CEILING_OF = {"ivfpq": "pq", "ivfpqfs": "pqfs", "ivfrq": "rq", "hnswpq": "pq"}
METRICS = ("l2", "ip")
HNSW_M = 32                       # graph degree of IndexHNSWPQ (faiss's usual setting)
ID_BYTES = 8                      # an inverted list stores an int64 id per vector

DEFAULT_NPROBE = (1, 2, 4, 8, 16, 32, 64, 128)
DEFAULT_SHORTLIST = (10, 30, 100, 300, 1000)
DEFAULT_EF = (16, 32, 64, 128, 256, 512)
DEFAULT_OUR_NPROBE = (4, 16, 64)
# our IVF: the lists filter rows of the plain codes; or IVF-QINCo, codes of the residual to the
# row's centroid by a model trained on the training set's residuals
IVF_VARIANTS = ("filter", "residual")


# ---------------------------------------------------------------- inputs
def exact_neighbours(base, queries, k, metric="l2"):
    """Row numbers (nq, k) of the k nearest base rows of each query by brute force: L2 with
    `evaluation.knn` (float64, ties to the smaller row), or largest inner product ('ip')."""
    if metric == "l2":
        from ..evaluation import knn
        return knn(base, queries, k)
    b = np.asarray(base, dtype=np.float64)
    ids = np.empty((len(queries), k), dtype=np.int64)
    for i in range(0, len(queries), 256):
        s = np.asarray(queries[i:i + 256], dtype=np.float64) @ b.T         # (nq_block, n)
        ids[i:i + 256] = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return ids


def prepare(name, base, queries, train=None, metric="l2", train_size=None, seed=0,
            description=""):
    """Inputs for one run: base and queries checked, the ground truth (exact nearest neighbour of
    each query among base, by `metric`), training vectors (a sample of `train_size` when given;
    base itself when no training vectors are, with a note)."""
    from ..validation import as_float_matrix

    base = as_float_matrix(base, name="DATA", allow_empty=False)
    queries = as_float_matrix(queries, name="--queries", allow_empty=False)
    if queries.shape[1] != base.shape[1]:
        raise InputError(f"--queries: dimension {queries.shape[1]} differs from DATA's "
                         f"{base.shape[1]}")
    if not np.isfinite(base).all() or not np.isfinite(queries).all():
        raise InputError("DATA or --queries holds NaN or infinite values")
    notes = []
    if train is None:
        train = base
        notes.append(f"no separate training vectors: every method trains on DATA itself "
                     f"({len(base):,} vectors)")
    else:
        train = training_vectors(train, base, "--train")
    train = sample_training(train, train_size, seed)
    check_training_size(train)
    gt = exact_neighbours(base, queries, 1, metric)
    return Inputs(name, np.ascontiguousarray(train), np.ascontiguousarray(base),
                  np.ascontiguousarray(queries), gt, description=description, notes=notes)


def glove50_inputs(metric="l2", train_size=None, n_base=None, n_queries=None, seed=0):
    """GloVe-50: the train split for training, base (its first n_base rows) searched with the
    query split (its first n_queries)."""
    from .. import datasets

    base, queries = datasets.glove50("base"), datasets.glove50("query")
    return prepare("glove50", base[:n_base], queries[:n_queries], datasets.glove50("train"),
                   metric, train_size, seed,
                   "GloVe-6B-50d: train split for training, base searched with the query split")


def directory_inputs(name, directory, metric="l2", train_size=None, n_base=None, n_queries=None,
                     seed=0):
    """A data set stored as train.npy, base.npy and query.npy in one directory (the 384-d MiniLM
    set of scripts/examples/README-sentence-embeddings.md lives in out/minilm384/)."""
    from ..readers import read_vectors

    paths = {k: os.path.join(directory, f"{k}.npy") for k in ("train", "base", "query")}
    missing = [p for p in paths.values() if not os.path.isfile(p)]
    if missing:
        raise InputError(f"--dataset {name}: {missing[0]} does not exist (expected train.npy, "
                         f"base.npy and query.npy in {directory}; see "
                         f"scripts/examples/README-sentence-embeddings.md)")
    x = {k: read_vectors(p) for k, p in paths.items()}
    return prepare(name, x["base"][:n_base], x["query"][:n_queries], x["train"], metric,
                   train_size, seed, f"{name}: train.npy for training, base.npy searched with "
                   f"query.npy ({directory})")


# ---------------------------------------------------------------- measuring
def recalls(ids, gt, ks=RECALL_AT, n=None):
    """{'R@k': share of queries whose true nearest neighbour gt[:, 0] is among the first k ids}
    for every k in ks. A search that returned fewer than k results per query (a shortlist
    shorter than k) has no R@k (None), unless the base itself has fewer than k rows (n)."""
    ids, truth = np.asarray(ids), np.asarray(gt)[:, :1]
    out = {}
    for k in ks:
        short = k > ids.shape[1] and (n is None or ids.shape[1] < n)
        out[f"R@{k}"] = None if short else float((ids[:, :k] == truth).any(1).mean())
    return out


def set_threads(n, faiss):
    """n threads for torch and faiss (both run OpenMP pools)."""
    import torch
    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)


def timed(search, threads, faiss, repeats):
    """Run search() (all queries, returns (D, I)) at each thread count, best of `repeats`:
    ({'T': seconds}, the ids of the last run)."""
    seconds, ids = {}, None
    for t in threads:
        set_threads(t, faiss)
        seconds[str(t)], (_, ids) = best_of(search, repeats)
    return seconds, ids


def point(method, line, family, nbytes, params, ids, seconds, nq, gt, n, ceiling=False,
          extra=0, curve=None):
    """One result row: recall of `ids` (searched among n rows) and queries per second per
    thread count. `line`: the method and setting family at this rate; `curve`: the same without
    the rate (the figure's legend)."""
    row = {"method": method, "line": line, "curve": curve or line, "family": family,
           "bytes": nbytes, "params": params,
           "ceiling": ceiling, "extra_bytes": extra, **recalls(ids, gt, n=n),
           "qps": {t: nq / s if s > 0 else None for t, s in seconds.items()},
           "seconds": dict(seconds)}
    return row


# ---------------------------------------------------------------- faiss methods
def _padded(d, m):
    """Smallest multiple of m that is >= d (PQ splits the dimension into m equal parts)."""
    return -(-d // m) * m


def _remapped(faiss, d, m, index_of):
    """index_of(d2) behind a zero-padding of d to a multiple of m when d is not one."""
    d2 = _padded(d, m)
    inner = index_of(d2)
    if d2 == d:
        return inner, d2
    return faiss.IndexPreTransform(faiss.RemapDimensionsTransform(d, d2, True), inner), d2


def faiss_metric(faiss, metric):
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def faiss_builders(faiss, d, nbytes, nlist, metric):
    """{key: (name, build() -> (index, {params}), sweep parameter, extra bytes per vector)} for
    the faiss methods and ceilings at `nbytes` bytes of codes per vector."""
    fm = faiss_metric(faiss, metric)

    def coarse(d2):
        return faiss.IndexFlatL2(d2) if metric == "l2" else faiss.IndexFlatIP(d2)

    def ivfpq():
        def make(d2):
            q = coarse(d2)
            ix = faiss.IndexIVFPQ(q, d2, nlist, nbytes, 8, fm)
            ix.own_fields = True
            q.this.disown()
            return ix
        ix, d2 = _remapped(faiss, d, nbytes, make)
        return ix, {"nlist": nlist, "M": nbytes, "nbits": 8, "padded_dim": d2}

    def ivfpqfs():
        m = 2 * nbytes
        def make(d2):
            q = coarse(d2)
            ix = faiss.IndexIVFPQFastScan(q, d2, nlist, m, 4, fm)
            ix.own_fields = True
            q.this.disown()
            return ix
        ix, d2 = _remapped(faiss, d, m, make)
        return ix, {"nlist": nlist, "M": m, "nbits": 4, "padded_dim": d2}

    def ivfrq():
        q = coarse(d)
        ix = faiss.IndexIVFResidualQuantizer(q, d, nlist, nbytes, 8, fm)
        ix.own_fields = True
        q.this.disown()
        return ix, {"nlist": nlist, "M": nbytes, "nbits": 8, "max_beam_size": ix.rq.max_beam_size}

    def hnswpq():
        ix, d2 = _remapped(faiss, d, nbytes,
                           lambda d2: faiss.IndexHNSWPQ(d2, nbytes, HNSW_M, 8, fm))
        return ix, {"M_hnsw": HNSW_M, "M": nbytes, "nbits": 8, "padded_dim": d2}

    def pq():
        ix, d2 = _remapped(faiss, d, nbytes, lambda d2: faiss.IndexPQ(d2, nbytes, 8, fm))
        return ix, {"M": nbytes, "nbits": 8, "padded_dim": d2}

    def pqfs():
        m = 2 * nbytes
        ix, d2 = _remapped(faiss, d, m, lambda d2: faiss.IndexPQFastScan(d2, m, 4, fm))
        return ix, {"M": m, "nbits": 4, "padded_dim": d2}

    def rq():
        ix = faiss.IndexResidualQuantizer(d, nbytes, 8, fm)
        return ix, {"M": nbytes, "nbits": 8, "max_beam_size": ix.rq.max_beam_size}

    return {
        "ivfpq": (f"IVF-PQ (faiss IVF{nlist},PQ{nbytes})", ivfpq, "nprobe", ID_BYTES),
        "ivfpqfs": (f"IVF-PQ fast scan (faiss IVF{nlist},PQ{2 * nbytes}x4fs)", ivfpqfs, "nprobe",
                    ID_BYTES),
        "ivfrq": (f"IVF-RQ (faiss IVF{nlist},RQ{nbytes})", ivfrq, "nprobe", ID_BYTES),
        "hnswpq": (f"HNSW-PQ (faiss HNSW{HNSW_M},PQ{nbytes})", hnswpq, "efSearch", 2 * HNSW_M * 4),
        "pq": (f"PQ{nbytes} exhaustive (faiss IndexPQ)", pq, None, 0),
        "pqfs": (f"PQ{2 * nbytes}x4fs exhaustive (faiss IndexPQFastScan)", pqfs, None, 0),
        "rq": (f"RQ{nbytes} exhaustive (faiss IndexResidualQuantizer, every row decoded)", rq,
               None, 0),
    }


# Ceilings searched as ours is: every row decoded once for all the queries, then an exact flat
# search (IndexResidualQuantizer's own search decodes every row for every query: the same
# ranking, 1,000 times the decoding).
DECODE_ALL = {"rq"}


def decoded_flat_search(index, queries, k, metric, faiss):
    """Decode every stored row of `index` once (reconstruct_n) and search them exactly."""
    decoded = index.reconstruct_n(0, index.ntotal)
    flat = (faiss.IndexFlatL2 if metric == "l2" else faiss.IndexFlatIP)(decoded.shape[1])
    flat.add(decoded)
    return flat.search(queries, k)


# Rate-independent curve names (the figure's legend; one colour per curve at every rate).
CURVES = {"ivfpq": "faiss IVF-PQ", "ivfpqfs": "faiss IVF-PQ fast scan (4-bit)",
          "ivfrq": "faiss IVF-RQ", "hnswpq": "faiss HNSW-PQ", "pq": "faiss PQ, exhaustive",
          "pqfs": "faiss PQ fast scan, exhaustive", "rq": "faiss RQ, exhaustive"}


def run_faiss(key, builders, inputs, nbytes, sweep, opts, step, warnings):
    """Train and fill one faiss index, then search it at every value of its sweep parameter (one
    point each; the ceilings have no parameter): (rows, build info)."""
    faiss = opts["faiss"]
    name, build, param, extra = builders[key]
    nq, k = len(inputs.queries), min(max(RECALL_AT), len(inputs.base))
    set_threads(max(opts["threads"]), faiss)
    with captured_native_stderr() as captured:
        index, params = build()
        t0 = time.perf_counter()
        index.train(inputs.train)
        t1 = time.perf_counter()
        index.add(inputs.base)
        t2 = time.perf_counter()
    for line in summarize_warnings(captured[0]):
        warnings.append(f"faiss, {name} {nbytes} B: {line}")
    info = {"method": name, "bytes": nbytes, "train_s": t1 - t0, "add_s": t2 - t1,
            "threads": max(opts["threads"]), "params": params}
    step(f"{name}: trained in {t1 - t0:.1f} s, {len(inputs.base):,} added in {t2 - t1:.1f} s")
    space = faiss.ParameterSpace()
    values = ([None] if param is None
              else [v for v in sweep if param != "nprobe" or v <= opts["nlist"]])
    rows = []
    if key in DECODE_ALL:
        def search():
            return decoded_flat_search(index, inputs.queries, k, opts["metric"], faiss)
    else:
        def search():
            return index.search(inputs.queries, k)
    for v in values:
        if v is not None:
            space.set_index_parameter(index, param, v)
        seconds, ids = timed(search, opts["threads"], faiss, opts["repeats"])
        p = dict(params, **({} if v is None else {param: v}))
        rows.append(point(name, name, "faiss", nbytes, p, ids, seconds, nq, inputs.gt,
                          len(inputs.base), ceiling=param is None, extra=extra,
                          curve=CURVES[key]))
        step(f"  {name}, {param_text(rows[-1])}: " + progress_text(rows[-1]))
    return rows, info


def progress_text(row):
    """'R@1 0.301, R@10 0.812, ..., 1,234 q/s at 1t, ...' for a progress line."""
    return (", ".join(f"R@{k} {row[f'R@{k}']:.3f}" for k in RECALL_AT if row[f"R@{k}"] is not None)
            + ", " + ", ".join(f"{q:,.0f} q/s at {t}t" for t, q in row["qps"].items() if q))


# ---------------------------------------------------------------- ours
def _digest(array):
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def encode_cached(model, x, cache_dir, A=None, B=None, device="auto"):
    """model.encode(x), kept as an .npy under cache_dir keyed by the model's bytes, the vectors and
    the encoder settings, so that a rerun of the benchmark does not encode the base again.
    Returns (codes, seconds spent encoding, whether they came from the cache)."""
    from ..serialize import model_to_bytes

    path = None
    if cache_dir:
        key = hashlib.sha256(model_to_bytes(model)).hexdigest()[:16]
        path = os.path.join(cache_dir, f"codes-{key}-{_digest(x)}-A{A}-B{B}.npy")
        if os.path.isfile(path):
            codes = np.load(path, allow_pickle=False)
            if codes.shape == (len(x), model.M):
                return codes, None, True
    t0 = time.perf_counter()
    codes = model.encode(x, A=A, B=B, device=device)
    seconds = time.perf_counter() - t0
    if path:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp.npy"
        np.save(tmp, codes)
        os.replace(tmp, path)
    return codes, seconds, False


def model_for(models, nbytes):
    """The model to search at nbytes per vector: one whose codes are exactly nbytes, else the
    smallest larger one, searched at its nbytes prefix (None when no model reaches nbytes)."""
    fits = sorted((m for m in models if m.bytes_per_vector >= nbytes
                   and nbytes % m.bytes_per_code == 0), key=lambda m: m.bytes_per_vector)
    return fits[0] if fits else None


def train_model(inputs, nbytes, opts, quiet):
    """One of our models at nbytes, trained within the budget (qinco_codec.train)."""
    from .. import train
    from ..rates import steps_for_bytes

    steps = steps_for_bytes(nbytes, 256, None, "the rate", name="--bytes")
    return train(inputs.train, preset=opts["preset"], steps=steps,
                 max_minutes=opts["train_minutes"], epochs=opts["epochs"],
                 samples_per_epoch=opts["samples_per_epoch"], seed=opts["seed"], quiet=quiet)


def full_decode_search(model, codes, queries, k, metric, device, faiss, offsets=None):
    """The ceiling of our codes: every row decoded once (for all the queries) and searched
    exactly (faiss's flat index over the decoded vectors; `offsets` (n, d), the centroids of
    residual codes, added first). Returns (D, I)."""
    decoded = model.decode(codes, device=device)
    if offsets is not None:
        decoded += offsets
    decoded = np.ascontiguousarray(decoded, dtype=np.float32)
    flat = (faiss.IndexFlatL2 if metric == "l2" else faiss.IndexFlatIP)(decoded.shape[1])
    flat.add(decoded)
    return flat.search(queries, k)


def _our_method(label, model, nbytes, opts):
    """(steps, method name, the parameters every point of it records) of our model searched at
    nbytes per vector (a prefix of its codes when it has more)."""
    steps = nbytes // model.bytes_per_code
    name = f"{label} ({model.config.preset}, {nbytes} B" + (
        f" prefix of {model.bytes_per_vector} B" if steps < model.M else "") + ")"
    common = {"preset": model.config.preset, "M": model.M, "K": model.K, "steps": steps,
              "model_bytes_per_vector": model.bytes_per_vector,
              "A": model.config.A if opts["A"] is None else opts["A"],
              "B": model.config.B if opts["B"] is None else opts["B"]}
    return steps, name, common


def run_ours(inputs, model, nbytes, opts, step, cache_dir):
    """Our model's codes searched through `search.engine.SearchIndex` (built once per variant,
    as `QncFile.search` keeps one): exhaustive over every --shortlist, then the full decode (the
    ceiling), and through an inverted file (--our-nprobe x --shortlist; 'filter': the lists only
    choose the rows; 'residual': IVF-QINCo codes of a second model, run_residual).
    Returns (rows, build info)."""
    from ..search import engine
    from ..search.ivf import IVF, assign, train_coarse

    faiss = opts["faiss"]
    base, queries, nq = inputs.base, inputs.queries, len(inputs.queries)
    n, k = len(base), min(max(RECALL_AT), len(base))
    steps, name, common = _our_method("ours", model, nbytes, opts)
    prefix = steps < model.M
    set_threads(max(opts["threads"]), faiss)
    codes, enc_s, cached = encode_cached(model, base, cache_dir, opts["A"], opts["B"],
                                         opts["device"])
    step(f"ours {nbytes} B: {n:,} codes " + ("from the cache" if cached else
                                               f"encoded in {enc_s:.1f} s"))
    codes = np.ascontiguousarray(codes[:, :steps])
    trained = model.config.trained or {}
    info = {"method": name, "bytes": nbytes, "encode_s": enc_s, "codes_cached": cached,
            "epochs": trained.get("epochs"), "val_mse": trained.get("val_mse"),
            "training_samples": trained.get("samples"), "params": common,
            "additive_sample": min(n, engine.FIT_SAMPLE)}
    rows = []

    def measure(line, params, search, ceiling=False, extra=0):
        seconds, ids = timed(search, opts["threads"], faiss, opts["repeats"])
        curve = "ours" + line[len(name):] + (f" ({nbytes} B prefix of {model.bytes_per_vector} B)"
                                              if prefix else "")
        row = point(name, line, "qinco", nbytes, dict(common, **params), ids, seconds, nq,
                    inputs.gt, n, ceiling=ceiling, extra=extra, curve=curve)
        rows.append(row)
        step(f"  {line}, {param_text(row)}: " + progress_text(row))

    def index_of(key, **kw):
        set_threads(max(opts["threads"]), faiss)
        t0 = time.perf_counter()
        index = engine.SearchIndex(codes, model, device=opts["device"], **kw)
        info[f"{key}_build_s"] = time.perf_counter() - t0
        step(f"ours {nbytes} B: {key} index built in {info[key + '_build_s']:.1f} s (additive "
             f"codebooks fitted on {info['additive_sample']:,} decoded rows)")
        return index

    def sweep(index, line, extra=0, **params):
        for s in sorted(v for v in opts["shortlist"] if v <= n):
            # a shortlist returns at most its own size: k = min(100, s)
            measure(line, dict(params, shortlist=s),
                    lambda: index.search(queries, min(k, s), shortlist=s, metric=opts["metric"],
                                         device=opts["device"], **params), extra=extra)

    exhaustive = index_of("exhaustive")
    sweep(exhaustive, f"{name}, exhaustive")
    del exhaustive
    measure(f"{name}, full decode", {"shortlist": n},
            lambda: full_decode_search(model, codes, queries, k, opts["metric"], opts["device"],
                                       faiss), ceiling=True)
    if opts["nlist"] and opts["our_nprobe"] and opts["ivf_variants"]:
        set_threads(max(opts["threads"]), faiss)
        t0 = time.perf_counter()
        centroids = opts["ivf_centroids"]
        if centroids is None:
            centroids = train_coarse(inputs.train, opts["nlist"], seed=opts["seed"])
        ivf = IVF(centroids, assign(base, centroids))
        info["ivf_train_s"] = time.perf_counter() - t0
        nprobes = sorted(v for v in opts["our_nprobe"] if v <= ivf.nlist)
        if "filter" in opts["ivf_variants"]:
            index = index_of("ivf_filter", ivf=ivf)
            for p in nprobes:
                sweep(index, f"{name}, IVF{ivf.nlist}", extra=ID_BYTES, nprobe=p)
            del index
        if "residual" in opts["ivf_variants"]:
            rows += run_residual(inputs, ivf, nbytes, opts, step, cache_dir, info, nprobes)
    return rows, info


def residual_model(inputs, ivf, nbytes, opts, step, quiet=True):
    """Our IVF-QINCo model at nbytes: one of opts['residual_models'] (trained on the training
    set's residuals to these centroids: scripts/experiments/train_ivf_models.py), else one
    trained here on them within the budget."""
    from ..search.ivf import assign

    model = model_for(opts["residual_models"], nbytes)
    if model is not None:
        return model, "given"
    step(f"ours {nbytes} B, IVF-QINCo: train {opts['preset']} on the residuals of "
         f"{len(inputs.train):,} training vectors to their centroids")
    residuals = inputs.train - ivf.centroids[assign(inputs.train, ivf.centroids)]
    return train_model(dataclasses.replace(inputs, train=np.ascontiguousarray(residuals)), nbytes,
                       opts, quiet), "trained here"


def run_residual(inputs, ivf, nbytes, opts, step, cache_dir, info, nprobes):
    """The IVF-QINCo points: base rows encoded as residuals to their list's centroid by the
    residual model, searched through SearchIndex(residual=True) over --our-nprobe x --shortlist,
    and their ceiling (every row decoded, centroid added, exact search)."""
    from ..search import engine

    faiss = opts["faiss"]
    base, queries, nq = inputs.base, inputs.queries, len(inputs.queries)
    n, k = len(base), min(max(RECALL_AT), len(base))
    model, origin = residual_model(inputs, ivf, nbytes, opts, step)
    steps, name, common = _our_method("ours IVF-QINCo", model, nbytes, opts)
    common["residual"] = True
    offsets = ivf.centroids[ivf.lists.list_ids]                          # (n, d)
    codes, enc_s, cached = encode_cached(model, np.ascontiguousarray(base - offsets), cache_dir,
                                         opts["A"], opts["B"], opts["device"])
    codes = np.ascontiguousarray(codes[:, :steps])
    trained = model.config.trained or {}
    info["residual"] = {"model": origin, "encode_s": enc_s, "codes_cached": cached,
                        "epochs": trained.get("epochs"), "val_mse": trained.get("val_mse"),
                        "training_samples": trained.get("samples")}
    rows = []

    def measure(line, params, search, ceiling=False):
        seconds, ids = timed(search, opts["threads"], faiss, opts["repeats"])
        row = point(name, line, "qinco", nbytes, dict(common, **params), ids, seconds, nq,
                    inputs.gt, n, ceiling=ceiling, extra=ID_BYTES,
                    curve="ours IVF-QINCo" + line[len(name):])
        rows.append(row)
        step(f"  {line}, {param_text(row)}: " + progress_text(row))

    measure(f"{name}, full decode", {"shortlist": n},
            lambda: full_decode_search(model, codes, queries, k, opts["metric"], opts["device"],
                                       faiss, offsets), ceiling=True)
    set_threads(max(opts["threads"]), faiss)
    t0 = time.perf_counter()
    index = engine.SearchIndex(codes, model, ivf=ivf, residual=True, device=opts["device"])
    info["ivf_residual_build_s"] = time.perf_counter() - t0
    for p in nprobes:
        for s in sorted(v for v in opts["shortlist"] if v <= n):
            measure(f"{name}, IVF{ivf.nlist}", {"nprobe": p, "shortlist": s},
                    lambda: index.search(queries, min(k, s), shortlist=s, nprobe=p,
                                         metric=opts["metric"], device=opts["device"]))
    return rows


# ---------------------------------------------------------------- the run
def _environment(faiss):
    import torch

    from .._version import __version__
    try:
        load = open("/proc/loadavg").read().split()[:3]
    except OSError:
        load = None
    return {"qinco_codec": __version__, "torch": torch.__version__,
            "faiss": getattr(faiss, "__version__", "unknown"), "numpy": np.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "loadavg_start": load,
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


def default_nlist(n):
    """A power of two near 4·sqrt(n) (faiss's rule of thumb), at most n / 39 (faiss warns below
    39 training points per centroid) and at least 1."""
    target = max(1, min(4 * n ** 0.5, n / 39))
    return 1 << max(0, int(round(np.log2(target))))


def run(inputs, bytes_list=(8, 16), methods=METHODS, models=(), preset="qinco2-XS",
        train_minutes=5.0, epochs=None, samples_per_epoch=32768, nlist=None, nprobe=DEFAULT_NPROBE,
        our_nprobe=DEFAULT_OUR_NPROBE, shortlist=DEFAULT_SHORTLIST, ef_search=DEFAULT_EF,
        threads=(1, 2), repeats=1, metric="l2", ivf_variants=IVF_VARIANTS, A=None, B=None,
        device="auto", seed=0, residual_models=(), ivf_centroids=None,
        cache_dir=None, quiet=False, on_rows=None, baseline_run=None):
    """Every method at every rate on `inputs`; returns {'settings', 'environment', 'notes',
    'warnings', 'builds', 'rows', 'complete'}. `models`: our trained models (one is trained per
    rate within `train_minutes` where none fits). `on_rows(result)` is called after each method
    with the partial result (complete=False). `baseline_run`: an earlier result on the same
    vectors and settings whose faiss rows are kept instead of measured again (a note says so:
    their QPS were measured then, under that run's load)."""
    faiss = require_faiss()
    if metric not in METRICS:
        raise InputError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    bytes_list = sorted(set(int(b) for b in bytes_list))
    n, d = inputs.base.shape
    nlist = nlist or default_nlist(len(inputs.train))
    if nlist > len(inputs.train):
        raise InputError(f"--nlist {nlist}: more lists than the {len(inputs.train):,} training "
                         f"vectors")
    threads = tuple(dict.fromkeys(int(t) for t in threads))
    t0 = time.perf_counter()
    result = {"settings": {
        "data": inputs.name, "description": inputs.description, "n_train": len(inputs.train),
        "n_base": n, "dim": d, "n_queries": len(inputs.queries), "metric": metric,
        "bytes": bytes_list, "methods": list(methods), "nlist": nlist, "nprobe": list(nprobe),
        "our_nprobe": list(our_nprobe), "shortlist": list(shortlist), "ef_search": list(ef_search),
        "threads": list(threads), "repeats": repeats, "ivf_variants": list(ivf_variants),
        "preset": preset,
        "train_minutes": train_minutes, "epochs": epochs, "A": A, "B": B, "seed": seed,
        "recall": "R@k: share of queries whose exact nearest neighbour (brute force over the "
                  "original vectors) is among the first k results",
        "bytes_counted": "codes only; inverted-list ids and graph links are extra_bytes",
        "total_seconds": 0.0},
        "environment": _environment(faiss), "notes": list(inputs.notes), "warnings": [],
        "builds": [], "rows": [], "complete": False}
    opts = {"faiss": faiss, "threads": threads, "repeats": repeats, "nlist": nlist,
            "metric": metric, "shortlist": tuple(shortlist), "our_nprobe": tuple(our_nprobe),
            "ivf_variants": tuple(ivf_variants), "A": A, "B": B, "device": device, "seed": seed,
            "preset": preset,
            "train_minutes": train_minutes, "epochs": epochs,
            "samples_per_epoch": samples_per_epoch, "residual_models": list(residual_models),
            "ivf_centroids": None if ivf_centroids is None else
            np.ascontiguousarray(ivf_centroids, dtype=np.float32)}
    if ivf_centroids is not None and opts["ivf_centroids"].shape != (nlist, d):
        raise InputError(f"--ivf-centroids: shape {opts['ivf_centroids'].shape}, expected "
                         f"({nlist}, {d}) (--nlist, the dimension)")

    def step(desc):
        note(f"search [{time.perf_counter() - t0:7.1f} s] {desc}", quiet)

    def done(rows, info):
        result["rows"].extend(rows)
        result["builds"].append(info)
        result["settings"]["total_seconds"] = time.perf_counter() - t0
        if on_rows:
            on_rows(result)

    models = list(models)
    reused = _baseline_rows(baseline_run, result)
    try:
        for b in bytes_list:
            builders = faiss_builders(faiss, d, b, nlist, metric)
            faiss_keys = [m for m in methods if m != "qinco"]
            ceilings = list(dict.fromkeys(CEILING_OF[m] for m in faiss_keys))
            for key in faiss_keys + ceilings:
                kept = [r for r in reused if r["bytes"] == b and r["curve"] == CURVES[key]]
                if kept:
                    step(f"{builders[key][0]} at {b} B: kept from the earlier run")
                    done(kept, {"method": builders[key][0], "bytes": b, "reused": True})
                    continue
                sweep = ef_search if builders[key][2] == "efSearch" else nprobe
                step(f"{builders[key][0]} at {b} B: train, add {n:,}, search")
                done(*run_faiss(key, builders, inputs, b, sweep, opts, step, result["warnings"]))
            if "qinco" in methods:
                model = model_for(models, b)
                if model is None:
                    step(f"ours {b} B: train {preset} ({train_minutes:g} min budget) on "
                         f"{len(inputs.train):,}")
                    t_train = time.perf_counter()
                    model = train_model(inputs, b, opts, quiet)
                    models.append(model)
                    result["notes"].append(
                        f"our {b}-byte model: {preset} trained here on the {len(inputs.train):,} "
                        f"training vectors for {time.perf_counter() - t_train:.0f} s "
                        f"(--train-minutes {train_minutes:g})")
                if model.config.dim != d:
                    raise InputError(f"--model: a model of dimension {model.config.dim}, but the "
                                     f"vectors have {d}")
                step(f"ours {b} B: encode {n:,}, fit the additive decoder, search")
                done(*run_ours(inputs, model, b, opts, step, cache_dir))
    finally:
        set_threads(max(threads), faiss)
    step("done")
    result["settings"]["total_seconds"] = time.perf_counter() - t0
    try:
        result["environment"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    except OSError:
        pass
    result["complete"] = True
    return result


# Settings that decide what a faiss row measures (for --baselines-from).
BASELINE_KEYS = ("data", "n_train", "n_base", "dim", "n_queries", "metric", "nlist", "nprobe",
                 "ef_search", "threads", "repeats", "seed")


def _baseline_rows(earlier, result):
    """The faiss rows of an earlier run on the same vectors and faiss settings, with a note; an
    InputError names each setting that differs."""
    if not earlier:
        return []
    old, new = earlier.get("settings", {}), result["settings"]
    differ = [k for k in BASELINE_KEYS if old.get(k) != new[k]]
    if differ:
        raise InputError("--baselines-from: the earlier run differs in " + ", ".join(
            f"{k} ({old.get(k)!r} there, {new[k]!r} here)" for k in differ))
    env = earlier.get("environment", {})
    rows = [dict(r, reused_from=env.get("date")) for r in earlier.get("rows", [])
            if r.get("family") == "faiss"]
    result["notes"].append(
        f"faiss rows reused from an earlier run on the same vectors ({env.get('date', '?')}, "
        f"load average {' '.join(env.get('loadavg_start') or ['?'])} at its start); their QPS "
        f"were measured then")
    result["settings"]["baselines_from"] = env.get("date")
    result["warnings"].extend(earlier.get("warnings", []))
    return rows


# ---------------------------------------------------------------- summaries
def qps_at(row, t):
    return (row.get("qps") or {}).get(str(t))


def frontier(rows, t, key="R@10"):
    """The points of rows that no other point beats in both recall and QPS at t threads, by
    increasing QPS (ann-benchmarks' Pareto curve)."""
    pts = sorted((r for r in rows if qps_at(r, t) and r.get(key) is not None),
                 key=lambda r: -qps_at(r, t))
    out, best = [], -1.0
    for r in pts:
        if r[key] > best:
            out.append(r)
            best = r[key]
    return out[::-1]


def targets(result, t=None):
    """Per rate, the issue's comparisons (R@10): the high end of our curve (exhaustive shortlist
    and IVF points, not the full decode) against the best faiss ceiling (and the best faiss point
    of any kind); our QPS at the R@10 of the best faiss curve point against its QPS; our QPS at
    0.9 of our (highest) full-decode ceiling. QPS at t threads (default: the most measured)."""
    t = t or max(result["settings"]["threads"])
    out = []
    for b in result["settings"]["bytes"]:
        rows = [r for r in result["rows"] if r["bytes"] == b and r["R@10"] is not None]
        ours = [r for r in rows if r["family"] == "qinco" and not r["ceiling"]]
        our_ceiling = [r for r in rows if r["family"] == "qinco" and r["ceiling"]]
        f_ceil = [r for r in rows if r["family"] == "faiss" and r["ceiling"]]
        f_curve = [r for r in rows if r["family"] == "faiss" and not r["ceiling"]]
        if not ours or not (f_ceil or f_curve):
            continue
        top = max(ours, key=lambda r: (r["R@10"], qps_at(r, t) or 0))
        entry = {"bytes": b, "threads": t, "ours_top": _brief(top, t)}
        if our_ceiling:   # the highest of our ceilings (plain codes, IVF-QINCo): the stricter goal
            best_ceiling = max(our_ceiling, key=lambda r: r["R@10"])
            entry["ours_ceiling"] = _brief(best_ceiling, t)
        if f_ceil:
            fc = max(f_ceil, key=lambda r: r["R@10"])
            entry["faiss_best_ceiling"] = _brief(fc, t)
            entry["gap_vs_faiss_ceiling"] = top["R@10"] - fc["R@10"]
            entry["met"] = top["R@10"] > fc["R@10"]
        if f_curve:
            fb = max(f_curve, key=lambda r: (r["R@10"], qps_at(r, t) or 0))
            entry["faiss_best_point"] = _brief(fb, t)
            fast = [r for r in ours if r["R@10"] >= fb["R@10"] and qps_at(r, t)]
            if fast and qps_at(fb, t):
                mine = max(fast, key=lambda r: qps_at(r, t))
                entry["ours_at_faiss_best_R10"] = _brief(mine, t)
                entry["qps_ratio_at_faiss_best_R10"] = qps_at(mine, t) / qps_at(fb, t)
        if our_ceiling:
            goal = 0.9 * best_ceiling["R@10"]
            fast = [r for r in ours if r["R@10"] >= goal and qps_at(r, t)]
            if fast:
                entry["ours_at_0.9_ceiling"] = _brief(max(fast, key=lambda r: qps_at(r, t)), t)
        out.append(entry)
    return out


def _brief(r, t):
    return {"method": r["line"], "params": param_text(r), "R@10": r["R@10"], "qps": qps_at(r, t)}


SWEEP_KEYS = ("nprobe", "efSearch", "shortlist")


def param_text(row):
    p = row.get("params") or {}
    return " ".join(f"{k}={p[k]}" for k in SWEEP_KEYS if k in p) or "-"


def table_rows(result):
    """Flat rows for the tables: per rate, ours first, by method, in the order measured."""
    threads = result["settings"]["threads"]
    out = []
    for r in sorted(result["rows"], key=lambda r: (r["bytes"], r["family"] != "qinco", r["line"])):
        row = {"line": r["line"] + (" (ceiling)" if r["ceiling"] else ""), "bytes": r["bytes"],
               "params": param_text(r), "R@1": r["R@1"], "R@10": r["R@10"],
               "R@100": r["R@100"], "extra": r.get("extra_bytes")}
        for t in threads:
            row[f"qps{t}"] = qps_at(r, t)
        out.append(row)
    return out


def columns(result):
    return ([("line", "method", ""), ("bytes", "B/vec", "d"), ("params", "setting", ""),
             ("R@1", "R@1", ".3f"), ("R@10", "R@10", ".3f"), ("R@100", "R@100", ".3f")]
            + [(f"qps{t}", f"QPS {t}t", ",.0f") for t in result["settings"]["threads"]]
            + [("extra", "extra B/vec", "d")])


def frontier_rows(result, t=None):
    """The table rows of each curve's Pareto frontier at t threads (default: the most measured)
    and of every ceiling: the points worth reading, per rate, ours first."""
    t = t or max(result["settings"]["threads"])
    keep = set()
    for b in result["settings"]["bytes"]:
        at = [r for r in result["rows"] if r["bytes"] == b]
        for curve in dict.fromkeys(r["curve"] for r in at):
            keep.update(id(r) for r in frontier([r for r in at if r["curve"] == curve], t))
    kept = [r for r in result["rows"] if id(r) in keep or r["ceiling"]]
    return table_rows(dict(result, rows=kept))


def top_rows(result):
    """The table rows of each curve's highest-R@10 point (the faster one on a tie), per rate:
    how far each method goes, whatever the speed."""
    tops = []
    for b in result["settings"]["bytes"]:
        at = [r for r in result["rows"] if r["bytes"] == b and r["R@10"] is not None]
        for curve in dict.fromkeys(r["curve"] for r in at):
            pts = [r for r in at if r["curve"] == curve]
            tops.append(max(pts, key=lambda r: (r["R@10"], max(r["qps"].values(), default=0)
                                                or 0)))
    return table_rows(dict(result, rows=tops))


def text_table(result):
    return format_table(table_rows(result), columns(result))


def target_lines(result):
    """One sentence per rate on the R@10 target (and the QPS comparisons)."""
    lines = []
    for e in targets(result):
        t = e["threads"]
        top = e["ours_top"]
        text = (f"{e['bytes']} B: our curve tops at R@10 {top['R@10']:.3f} ({top['method']}, "
                f"{top['params']}, {top['qps'] or 0:,.0f} q/s at {t}t)")
        if "faiss_best_ceiling" in e:
            fc = e["faiss_best_ceiling"]
            text += (f"; best faiss ceiling {fc['R@10']:.3f} ({fc['method']}): target "
                     f"{'met' if e['met'] else 'NOT met'} by {e['gap_vs_faiss_ceiling']:+.3f}")
        if "faiss_best_point" in e:
            fb = e["faiss_best_point"]
            text += f"; best faiss curve point {fb['R@10']:.3f} ({fb['method']}, {fb['params']}"
            text += f", {fb['qps'] or 0:,.0f} q/s)"
            if "qps_ratio_at_faiss_best_R10" in e:
                text += (f", ours at that R@10: {e['ours_at_faiss_best_R10']['qps']:,.0f} q/s "
                         f"({e['qps_ratio_at_faiss_best_R10']:.2f}x)")
            else:
                text += ", ours never reaches that R@10"
        if "ours_ceiling" in e:
            oc = e["ours_ceiling"]
            text += f"; our full-decode ceiling {oc['R@10']:.3f}"
            if "ours_at_0.9_ceiling" in e:
                o9 = e["ours_at_0.9_ceiling"]
                text += (f", 0.9 of it reached at {o9['qps']:,.0f} q/s ({o9['method']}, "
                         f"{o9['params']})")
        lines.append(text)
    return lines


def markdown(result, png_name="search.png"):
    s, env = result["settings"], result["environment"]
    load = lambda k: " ".join(env.get(k) or ["?"])
    lines = [
        f"# Search: {s['data']} ({s['metric']})", "",
        f"`qinco-bench search`, {env['date']}: {s['n_base']:,} base vectors of dimension "
        f"{s['dim']}, {s['n_queries']:,} queries, trained on {s['n_train']:,} vectors; "
        f"{s['total_seconds']:.0f} s in all. {s['description']}", "",
        f"Load average (1, 5, 15 min) at the start {load('loadavg_start')}, at the end "
        f"{load('loadavg_end')} on {env['cpus']} CPUs: QPS is measured under that load; recall "
        f"does not depend on it. Software: qinco-codec {env['qinco_codec']}, torch "
        f"{env['torch']}, faiss {env['faiss']}, numpy {env['numpy']}, Python {env['python']}.", "",
        f"{s['recall']}. Bytes per vector: {s['bytes_counted']}. QPS: all queries in one batch, "
        f"best of {s['repeats']}, at {', '.join(map(str, s['threads']))} thread(s). nlist "
        f"{s['nlist']}.", "",
        "Each curve's highest R@10 (the faster point on a tie):", "",
        format_table(top_rows(result), columns(result), markdown=True), "",
        f"Each curve's Pareto frontier at {max(s['threads'])} threads (no other point of the "
        f"curve has both a higher R@10 and more queries per second) and every ceiling:", "",
        format_table(frontier_rows(result), columns(result), markdown=True), "",
        "Every point measured:", "",
        format_table(table_rows(result), columns(result), markdown=True), "",
    ]
    tl = target_lines(result)
    if tl:
        lines += ["Target (R@10 at the high end of our curve above the best faiss ceiling at the "
                  "same bytes):", ""] + [f"- {t}" for t in tl] + [""]
    lines += notes_and_figure(result, "recall@10 against queries per second", png_name)
    return "\n".join(lines)


def write_partial(result, out_dir):
    """search.json alone, with "complete": false, while a run is going on."""
    common_write_partial(result, out_dir, "search")


def write_outputs(result, out_dir):
    """search.json, search.md and search.png under out_dir; returns their paths."""
    from .search_plot import plot_search

    result["targets"] = targets(result)
    paths = write_json_and_markdown(result, out_dir, "search", markdown(result))
    s = result["settings"]
    plot_search(result["rows"], paths["png"], s["threads"],
                title=f"{s['data']}, n={s['n_base']:,}, {s['n_queries']:,} queries ({s['metric']})")
    return paths
