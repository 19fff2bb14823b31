"""Nearest-neighbour search over QINCo codes without decoding the database.

The pipeline (QINCo paper §4.3, QINCo2 §5), per block of queries:

1. IVF probe (when an IVF is given): the `nprobe` nearest coarse centroids; only the rows of
   those lists are scored. Without one every row is. For codes of residuals to the centroids
   (IVF-QINCo, `residual=True`) the centroid enters both later stages.
2. Additive shortlist: each candidate row is scored with per-query lookup tables over the
   additive codebooks (additive.py, lut.py) and the best `shortlist` rows are kept.
3. Re-rank: the shortlist rows are decoded with the QINCo model (batched, once per distinct row
   of the block, on the CPU or CUDA, at the codes' prefix) and ranked by their exact distance
   to the query; the best k are returned.

When the shortlist covers every candidate row the result is exactly a brute-force search over
the decoded vectors (of the probed lists): the additive stage only decides which rows reach the
exact one.

Results follow faiss's convention: D (nq, k) float32, I (nq, k) int64, nearest first; rows that
do not exist (k larger than the candidates) are I = -1 with D = +inf for "l2" (squared L2
distances) and -inf for "ip" (inner products, larger is nearer).
"""
import numpy as np
import torch

from ..codec import each_chunk
from ..errors import InputError
from ..validation import as_float_matrix
from .additive import fit_additive
from .ivf import IVF, probe
from .lut import METRICS, flat_indices, lookup_tables, row_sqnorms, scan_all

# Shortlist size when none is given: max(k, DEFAULT_SHORTLIST). On GloVe-50 (qinco2-XS trained
# 20 min, 16 B, 100k rows) the additive decoder ranks almost as the model does and a shortlist
# of 10 already reaches the exhaustive R@10 (0.988); 100 leaves room for models whose networks
# matter more (the QINCo paper re-ranks 100 to 1,000 at 8 B on BigANN), at 0.65x the queries/s
# of 30 with an IVF (nprobe 32 of 1024) and 0.83x exhaustively.
DEFAULT_SHORTLIST = 100
# Lists probed when none is given: 1/32 of them, at least 1. GloVe-50, 16 B, 1024 lists:
# R@10 0.751 at nprobe 8, 0.924 at 32 (0.94 of the exhaustive 0.988).
DEFAULT_NPROBE_FRACTION = 1 / 32
# Rows of the file decoded to fit the additive codebooks (all rows when fewer).
FIT_SAMPLE = 32768
# Candidate pairs (queries x shortlist) re-ranked per block: bounds the decoded block's memory.
RERANK_PAIRS = 1 << 17
# Pairs whose exact distances are computed at once in the re-ranking: bounds its (pairs, d)
# temporaries (at d=384, 25 MB each instead of 200 MB for a whole block of RERANK_PAIRS).
SCORE_PAIRS = 1 << 14
# Table indices (pairs of a query and a probed row, times the steps) of one IVF scan block.
PAIR_BLOCK = 1 << 22


def _check_codes(codes, model):
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.dtype.kind not in "iu":
        raise InputError(f"codes: expected a 2-D integer array (n, steps), got dtype "
                         f"{codes.dtype}, shape {codes.shape}")
    if not 1 <= codes.shape[1] <= model.M:
        raise InputError(f"codes: expected 1 to {model.M} columns (the model's steps), got "
                         f"{codes.shape[1]}")
    return codes


def _check_metric(metric):
    if metric not in METRICS:
        raise InputError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    return metric


def sample_rows(n, size, seed=0):
    """Sorted row indices of a random sample of min(n, size) rows (all rows when n <= size)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def fit_for_codes(codes, model, *, sample=FIT_SAMPLE, seed=0, device="auto"):
    """Additive codebooks (m, K, d) for `codes` (n, m): decode a sample of them with the model
    at that prefix and fit (additive.fit_additive). For codes of residuals (IVF-QINCo) the
    model's output is the residual, so the codebooks are the residual's."""
    rows = sample_rows(len(codes), sample, seed)
    sample_codes = codes[rows]
    return fit_additive(sample_codes, model.decode(sample_codes, device=device), model.K)


class SearchIndex:
    """Codes (n, m) prepared for search: the additive codebooks, each row's ‖a‖², and
    (optionally) the inverted lists, with a copy of the codes grouped by list. Memory: the codes
    (twice with an IVF), 4 bytes a row of norms, 12 with an IVF (row order, list ids).

    Building it fits the additive codebooks (unless given) and does one pass over the codes;
    keep it to search many query blocks (QncFile.search caches one per prefix).

    residual=True (needs an IVF) is for codes of the residual x − c_list (IVF-QINCo, SPEC.md
    5.4): a row's vector is its list's centroid plus the model's output. The additive codebooks
    are then the residual's, each row's ‖c + a‖² is kept, the scan adds each probed list's
    −2⟨q, c⟩ (−⟨q, c⟩ for "ip"), and the re-ranking adds the centroid to the decoded rows.
    (Scoring residuals to the centroids for codes that are not residuals was measured and does
    not pay: GloVe-50, 16 B, 1024 lists, nprobe 32, R@10 0.785 against 0.924 with shortlist 30.)
    """

    def __init__(self, codes, model, *, additive=None, ivf=None, residual=False, device="auto",
                 sample=FIT_SAMPLE):
        self.codes = _check_codes(codes, model)
        self.model = model
        self.n, self.steps = self.codes.shape
        self.K = model.K
        self.ivf = None if ivf is None else IVF.of(ivf)
        if self.ivf is not None:
            if len(self.ivf.lists.list_ids) != self.n:
                raise InputError(f"ivf: {len(self.ivf.lists.list_ids):,} list ids for "
                                 f"{self.n:,} rows of codes")
            if self.ivf.centroids.shape[1] != model.dim:
                raise InputError(f"ivf: centroids of dimension {self.ivf.centroids.shape[1]}, "
                                 f"expected {model.dim} (the model's)")
        if residual and self.ivf is None:
            raise InputError("residual=True needs an IVF (the centroids the codes are residuals to)")
        self.residual = bool(residual)
        base = (self.ivf.centroids, self.ivf.lists.list_ids) if self.residual else (None, None)
        if additive is None and self.n == 0:
            additive = np.zeros((self.steps, self.K, model.dim), np.float32)
        elif additive is None:
            additive = fit_for_codes(self.codes, model, sample=sample, device=device)
        additive = np.ascontiguousarray(additive, dtype=np.float32)
        if additive.shape != (self.steps, self.K, model.dim):
            raise InputError(f"additive: expected codebooks of shape {(self.steps, self.K, model.dim)}"
                             f" (steps, K, dim), got {additive.shape}")
        self.codebooks = additive
        sqnorms = row_sqnorms(self.codes, additive, *base)              # (n,)
        if self.ivf is None:
            self._codes, self._sqnorms, self._rows = self.codes, sqnorms, None
        else:   # grouped by list: a probed list is one contiguous slice
            order = self.ivf.lists.rows
            self._codes, self._sqnorms, self._rows = self.codes[order], sqnorms[order], order

    # ---- the stages
    def shortlist(self, queries, S, *, nprobe=None, metric="l2"):
        """The additive stage: (nq, S) candidate rows (int64, -1 where fewer), best first."""
        tables = lookup_tables(queries, self.codebooks, metric)        # (nq, m, K)
        terms = self._sqnorms if metric == "l2" else None
        if self.ivf is None:
            if nprobe is not None:
                raise InputError(f"nprobe={nprobe} given, but there is no IVF (every row is "
                                 f"scanned): leave nprobe out, or add inverted lists")
            return scan_all(tables, self._codes, S, terms)[1]
        nprobe = self.default_nprobe() if nprobe is None else int(nprobe)
        if nprobe < 1:
            raise InputError(f"nprobe must be at least 1, got {nprobe}")
        lists, _ = probe(queries, self.ivf.centroids, nprobe)           # (nq, p)
        out = np.full((len(queries), S), -1, np.int64)
        sizes = self.ivf.lists.sizes()[lists]                            # (nq, p)
        per_query = np.maximum(sizes.sum(1), 1)
        # query blocks whose pairs (query, row) hold PAIR_BLOCK table indices at most
        bounds, total = [0], 0
        for i, rows in enumerate(per_query):
            if total and total + rows > PAIR_BLOCK // self.steps:
                bounds.append(i)
                total = 0
            total += rows
        bounds.append(len(queries))

        def scan(a, b, _workspace):
            out[a:b] = self._shortlist_lists(queries[a:b], tables[a:b], lists[a:b], S, metric)

        # whole blocks on worker threads, each single-threaded (as the codec does with chunks):
        # the same shortlists at any thread count
        each_chunk(scan, list(zip(bounds[:-1], bounds[1:])), torch.device("cpu"))
        return out

    def _shortlist_lists(self, queries, tables, lists, S, metric):
        """The IVF scan of one block of queries, vectorised over all its (query, row) pairs:
        tables (Q, m, K), lists (Q, p) probed. Returns (Q, S) rows, -1 padded."""
        Q = len(queries)
        offs = self.ivf.lists.offsets
        starts, stops = offs[lists], offs[lists + 1]                     # (Q, p)
        lengths = stops - starts
        per_query = lengths.sum(1)                                       # (Q,)
        pos = _concat_ranges(starts.ravel(), stops.ravel())              # (P,) by query
        out = np.full((Q, S), -1, np.int64)
        if len(pos) == 0:
            return out
        qidx = np.repeat(np.arange(Q), per_query)                        # (P,)
        MK = self.steps * self.K
        flat = flat_indices(self._codes[pos], self.K, torch.from_numpy(qidx * MK), Q * MK)  # (P, m)
        table = torch.from_numpy(np.ascontiguousarray(tables.reshape(-1, 1)))
        sc = torch.nn.functional.embedding_bag(flat, table, mode="sum")[:, 0]   # (P,)
        if metric == "l2":
            sc += torch.from_numpy(self._sqnorms[pos])
        if self.residual:
            qc = np.einsum("qd,qpd->qp", queries, self.ivf.centroids[lists])       # (Q, p)
            qc *= -2.0 if metric == "l2" else -1.0
            sc += torch.from_numpy(np.repeat(qc.ravel(), lengths.ravel()).astype(np.float32))
        first = np.cumsum(per_query) - per_query                         # (Q,)
        col = np.arange(len(pos)) - np.repeat(first, per_query)
        width = int(per_query.max())
        padded = torch.full((Q, width), float("inf"))
        padded[torch.from_numpy(qidx), torch.from_numpy(col)] = sc
        top_s, top_c = torch.topk(padded, min(S, width), dim=1, largest=False, sorted=True)
        top_c = top_c.numpy()
        where = first[:, None] + top_c                                   # (Q, S') pair index
        rows = self._rows[pos[np.minimum(where, len(pos) - 1)]]
        found = np.isfinite(top_s.numpy())
        out[:, :top_c.shape[1]] = np.where(found, rows, -1)
        return out

    def default_nprobe(self):
        return max(1, int(round(self.ivf.nlist * DEFAULT_NPROBE_FRACTION)))

    def rerank(self, queries, candidates, k, *, metric="l2", device="auto"):
        """Exact stage: decode the candidate rows (nq, S) and keep the k nearest. Returns D, I."""
        nq = len(queries)
        big = np.float32(np.inf)
        D = np.full((nq, k), big if metric == "l2" else -big, np.float32)
        I = np.full((nq, k), -1, np.int64)
        valid = candidates >= 0
        if not valid.any():
            return D, I
        uniq, inverse = np.unique(candidates[valid], return_inverse=True)
        decoded = self.model.decode(self.codes[uniq], device=device)     # (U, d)
        if self.residual:
            decoded += self.ivf.centroids[self.ivf.lists.list_ids[uniq]]
        qi = np.nonzero(valid)[0]
        score = np.empty(len(qi), np.float32)                            # (P,) pairs
        for s in range(0, len(qi), SCORE_PAIRS):   # (pairs, d) temporaries of SCORE_PAIRS rows
            x = decoded[inverse[s:s + SCORE_PAIRS]]
            q = queries[qi[s:s + SCORE_PAIRS]]
            if metric == "l2":
                diff = q - x
                score[s:s + SCORE_PAIRS] = np.einsum("ij,ij->i", diff, diff)
            else:
                score[s:s + SCORE_PAIRS] = -np.einsum("ij,ij->i", q, x)
        full = np.full(candidates.shape, np.inf, np.float32)             # smaller is nearer
        full[valid] = score
        kk = min(k, full.shape[1])
        # nearest first, ties (rows decoding to the same vector) broken by the lower row id
        tie = np.where(valid, candidates, np.iinfo(np.int64).max)
        order = np.lexsort((tie, full), axis=-1)[:, :kk]
        best = np.take_along_axis(full, order, 1)
        rows = np.take_along_axis(candidates, order, 1)
        found = np.isfinite(best)
        I[:, :kk] = np.where(found, rows, -1)
        D[:, :kk] = np.where(found, best if metric == "l2" else -best, D[:, :kk])
        return D, I

    def search(self, queries, k=10, *, shortlist=None, nprobe=None, metric="l2", device="auto"):
        """D, I (nq, k) for the queries (nq, dim): the whole pipeline (see the module docstring)."""
        q = check_queries(queries, self.model.dim)
        k, S = check_k(k), shortlist_size(k, shortlist)
        _check_metric(metric)
        if len(q) == 0:
            return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
        S = min(S, max(self.n, 1))
        block = max(1, RERANK_PAIRS // S)
        Ds, Is = [], []
        for s in range(0, len(q), block):
            qb = q[s:s + block]
            cand = self.shortlist(qb, S, nprobe=nprobe, metric=metric)
            D, I = self.rerank(qb, cand, k, metric=metric, device=device)
            Ds.append(D)
            Is.append(I)
        return np.concatenate(Ds), np.concatenate(Is)


def empty_result(queries, k, shortlist=None, metric="l2"):
    """The answer of a search over no rows: every I = -1, D = inf (-inf for "ip")."""
    k = check_k(k)
    shortlist_size(k, shortlist)
    _check_metric(metric)
    fill = np.inf if metric == "l2" else -np.inf
    return (np.full((len(queries), k), fill, np.float32),
            np.full((len(queries), k), -1, np.int64))


def _concat_ranges(starts, stops):
    """np.concatenate of the ranges [starts[j], stops[j]) as one int64 array, vectorised."""
    lengths = stops - starts
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, np.int64)
    nz = lengths > 0
    starts, lengths = starts[nz], lengths[nz]
    step = np.ones(total, np.int64)
    ends = np.cumsum(lengths)
    step[0] = starts[0]
    step[ends[:-1]] = starts[1:] - (starts[:-1] + lengths[:-1]) + 1
    return np.cumsum(step)


def check_queries(queries, dim):
    """Queries as float32 (nq, dim): a 2-D numeric array of the model's dimension, all finite."""
    return as_float_matrix(queries, dim=dim, name="queries")


def check_k(k):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    return int(k)


def shortlist_size(k, shortlist):
    """The shortlist size: `shortlist` (at least k), or max(k, DEFAULT_SHORTLIST)."""
    if shortlist is None:
        return max(k, DEFAULT_SHORTLIST)
    if isinstance(shortlist, bool) or not isinstance(shortlist, (int, np.integer)) or shortlist < 1:
        raise InputError(f"shortlist must be a positive integer, got {shortlist!r}")
    return max(int(k), int(shortlist))


def search(queries, codes, model, k=10, *, shortlist=None, ivf=None, nprobe=None, steps=None,
           metric="l2", additive=None, residual=False, device="auto"):
    """The k nearest rows of `codes` (n, m) for each query (nq, dim): D (nq, k) float32 and I
    (nq, k) int64, nearest first, I = -1 with D = inf (-inf for "ip") where fewer than k.

    shortlist: rows re-ranked with the QINCo decoder per query (default max(k, 100)); ivf: an
    object with .centroids (nlist, d) and .list_ids (n,) (an ivf.IVF, or the .qnc section), so
    that only the `nprobe` nearest lists are scanned (default nlist / 32); steps: search at that
    prefix of the codes (default all their columns); metric "l2" (squared distances) or "ip"
    (inner products, larger is nearer); additive: codebooks (steps, K, dim) from
    additive.fit_additive (default: fitted here on up to FIT_SAMPLE decoded rows); residual:
    the codes are of x − centroid of the row's list (IVF-QINCo; needs `ivf`); device: where the
    re-ranking decodes. To search several query blocks, build a SearchIndex once.
    """
    model_dim = model.dim
    q = check_queries(queries, model_dim)
    codes = _check_codes(codes, model)
    if steps is not None:
        from ..rates import check_steps
        codes = codes[:, :check_steps(steps, codes.shape[1], "the codes' columns")]
    _check_metric(metric)
    index = SearchIndex(codes, model, additive=additive, ivf=ivf, residual=residual, device=device)
    return index.search(q, k, shortlist=shortlist, nprobe=nprobe, metric=metric, device=device)
