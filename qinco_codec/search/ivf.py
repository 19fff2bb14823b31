"""Inverted lists in memory: a coarse k-means quantizer whose cells filter the rows a query scans.

Two kinds of codes use the lists. Codes of the vectors themselves do not depend on them, so an
IVF can be fitted afterwards on a file's decoded vectors and added to an existing file without
re-encoding it (the lists only say which rows to score). Codes of the residual to the row's
centroid (IVF-QINCo; `qinco-compress --ivf NLIST`'s default) need the lists to decode,
and gain the log2(nlist) bits of the list a row sits in (engine.SearchIndex, `residual`). The
on-disk form (centroids and per-row list ids) is the .qnc IVF section (formats/ivf.py); this
module is what search builds from it.

Probing is by L2 distance to the centroids for both metrics: the cells are L2 Voronoi cells, and
for normalised embeddings the L2-nearest rows are the inner-product-nearest ones.
"""
import numpy as np

from ..errors import InputError

KMEANS_ITERS = 10
# Training points per centroid at most (faiss's max_points_per_centroid): a sample beyond this
# changes the centroids little and costs time.
MAX_POINTS_PER_CENTROID = 256


def _check_vectors(x, name):
    from ..validation import as_float_matrix
    return as_float_matrix(x, name=name, allow_empty=False)


def train_coarse(x, nlist, *, seed=0, iters=KMEANS_ITERS):
    """Coarse centroids (nlist, d) float32: k-means (rq_init.kmeans: Lloyd iterations that split
    clusters left with too few points) on x, or on a random sample of at most
    MAX_POINTS_PER_CENTROID * nlist rows of it."""
    import torch

    from ..rq_init import kmeans

    x = _check_vectors(x, "train_coarse: x")
    nlist = int(nlist)
    if not 1 <= nlist <= len(x):
        raise InputError(f"train_coarse: nlist must be between 1 and the {len(x):,} training "
                         f"vectors, got {nlist:,}")
    gen = torch.Generator().manual_seed(int(seed))
    xt = torch.from_numpy(x)
    limit = MAX_POINTS_PER_CENTROID * nlist
    if len(xt) > limit:
        xt = xt[torch.randperm(len(xt), generator=gen)[:limit]]
    return kmeans(xt, nlist, iters, gen).numpy().astype(np.float32, copy=False)


def assign(x, centroids):
    """The nearest centroid (L2) of each row of x: (n,) int32 list ids."""
    import torch

    from ..rq_init import nearest

    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or centroids.ndim != 2 or x.shape[1] != centroids.shape[1]:
        raise InputError(f"assign: expected x (n, d) and centroids (nlist, d) of the same d, got "
                         f"{x.shape} and {centroids.shape}")
    if len(x) == 0:
        return np.empty(0, np.int32)
    idx, _ = nearest(torch.from_numpy(x), torch.from_numpy(centroids))
    return idx.numpy().astype(np.int32)


def probe(queries, centroids, nprobe):
    """The `nprobe` nearest lists (L2) of each query, nearest first: (nq, nprobe) int64, and the
    query-centroid squared distances of those lists (nq, nprobe) float32."""
    import torch

    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    c = torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32))
    nprobe = max(1, min(int(nprobe), len(c)))
    d = (c * c).sum(1) - 2.0 * (q @ c.T) + (q * q).sum(1, keepdim=True)   # (nq, nlist)
    dist, lists = torch.topk(d, nprobe, dim=1, largest=False, sorted=True)
    return lists.numpy(), dist.clamp_min_(0).numpy()


class InvertedLists:
    """Each list's rows, in file order within a list: list l holds rows[offsets[l]:offsets[l+1]].

    Attributes: nlist, offsets (nlist + 1,) int64, rows (n,) int64, list_ids (n,) int32."""

    def __init__(self, offsets, rows, list_ids):
        self.offsets, self.rows, self.list_ids = offsets, rows, list_ids
        self.nlist = len(offsets) - 1

    @classmethod
    def from_list_ids(cls, list_ids, nlist):
        """Group rows by list id (a counting sort: bincount for the offsets, then a stable radix
        sort of the ids, O(n) for nlist <= 65536)."""
        ids = np.asarray(list_ids)
        nlist = int(nlist)
        if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
            raise InputError(f"inverted lists: expected a 1-D array of integer list ids, got "
                             f"dtype {ids.dtype}, shape {ids.shape}")
        if nlist < 1:
            raise InputError(f"inverted lists: nlist must be at least 1, got {nlist}")
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= nlist):
            raise InputError(f"inverted lists: list ids must lie in [0, {nlist}), got "
                             f"[{int(ids.min())}, {int(ids.max())}]")
        counts = np.bincount(ids, minlength=nlist) if ids.size else np.zeros(nlist, np.int64)
        offsets = np.zeros(nlist + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        key = ids.astype(np.uint16) if nlist <= 1 << 16 else ids.astype(np.int64)
        rows = np.argsort(key, kind="stable").astype(np.int64)   # radix sort for uint16 keys
        return cls(offsets, rows, ids.astype(np.int32, copy=False))

    def sizes(self):
        return np.diff(self.offsets)

    def rows_of(self, lists):
        """The rows of the given lists, concatenated in that order, and each list's length."""
        starts, stops = self.offsets[lists], self.offsets[np.asarray(lists) + 1]
        if len(starts) == 1:
            return self.rows[starts[0]:stops[0]], stops - starts
        return np.concatenate([self.rows[a:b] for a, b in zip(starts, stops)]), stops - starts


class IVF:
    """Coarse centroids (nlist, d) float32 and the inverted lists of a set of rows."""

    def __init__(self, centroids, list_ids):
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        if self.centroids.ndim != 2 or len(self.centroids) == 0:
            raise InputError(f"IVF: expected centroids (nlist, d), got shape {self.centroids.shape}")
        self.lists = InvertedLists.from_list_ids(list_ids, len(self.centroids))
        self.nlist = len(self.centroids)

    @classmethod
    def of(cls, ivf):
        """An IVF from anything with `.centroids` and `.list_ids` (the .qnc reader's section)."""
        if isinstance(ivf, cls):
            return ivf
        return cls(ivf.centroids, ivf.list_ids)

    @classmethod
    def build(cls, vectors, nlist, *, seed=0):
        """Train the centroids on `vectors` and assign them (for tests and in-memory use)."""
        centroids = train_coarse(vectors, nlist, seed=seed)
        return cls(centroids, assign(vectors, centroids))
