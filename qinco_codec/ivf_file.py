"""Adding inverted lists to a .qnc file: `add_ivf` fits coarse centroids on the file's own
decoded vectors, puts every row in the list of its nearest centroid, and rewrites the file with
an ivf section (SPEC.md 5.3) and every chunk copied byte for byte.

The codes do not depend on the lists, so no row is re-encoded and no original vector is needed:
the rewritten file decodes to exactly the vectors it decoded to before. Memory stays bounded: the
training sample (`sample` rows, decoded), one batch of decoded rows at a time while assigning,
and the n list ids (2 or 4 bytes a row) that the section holds; the chunks are streamed from the
old file into the new one.
"""
import contextlib
import os
import tempfile

import numpy as np

from .errors import InputError
from .formats import QncReader, QncWriter
from .formats.ivf import IvfSection
from .formats.layout import MAX_NLIST, ZSTD_DEFAULT_LEVEL
from .progress import bar, note

DEFAULT_SAMPLE = 100_000  # decoded rows the coarse centroids are fitted on, at most
ASSIGN_BATCH = 65536      # rows decoded and assigned at a time


def check_nlist(nlist, n, where="nlist"):
    """`nlist` as an int, or InputError: a positive integer, at most the file's rows (k-means
    needs a row per centroid) and the format's limit."""
    if isinstance(nlist, bool) or not isinstance(nlist, (int, np.integer)):
        raise InputError(f"{where} must be an integer, got {nlist!r}")
    nlist = int(nlist)
    if not 1 <= nlist <= min(n, MAX_NLIST):
        if n == 0:
            raise InputError(f"{where}={nlist}: the file has no rows to fit inverted lists on")
        raise InputError(f"{where}={nlist} must be in [1, {min(n, MAX_NLIST):,}] (at most the "
                         f"{n:,} rows of the file and the format's {MAX_NLIST:,})")
    return nlist


def sample_rows(n, size, seed):
    """`size` distinct rows of n (all of them when size >= n), in increasing order."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def list_id_dtype(nlist):
    """The narrowest unsigned dtype holding list ids below nlist (as the section stores them)."""
    return np.uint16 if nlist <= 1 << 16 else np.uint32


def refuse_residual(header, path):
    """InputError for a file whose codes are residuals to its inverted lists (SPEC.md 5.4):
    its lists cannot be replaced or dropped without re-encoding every row."""
    if header.residual_codes:
        raise InputError(f"{os.fspath(path)}: its codes are residuals to its inverted lists "
                         f"(IVF-QINCo, as qinco-compress --ivf writes them), so the lists "
                         f"cannot be replaced or removed without re-encoding: compress the "
                         f"vectors again with the --ivf you want")


def assign_decoded(qnc, centroids, *, batch_size=ASSIGN_BATCH, device="auto", quiet=True):
    """The list id of every row of an open QncFile: its nearest centroid (L2) to the row's
    decoded vector, decoded and assigned one batch at a time."""
    from .search.ivf import assign

    ids = np.empty(qnc.n, list_id_dtype(len(centroids)))
    start = 0
    with bar(total=qnc.n, desc="assign", unit="vec", quiet=quiet) as pbar:
        for batch in qnc.iter_decode(batch_size=batch_size, device=device):
            ids[start:start + len(batch)] = assign(batch, centroids)  # (rows,) int32
            start += len(batch)
            pbar.update(len(batch))
    return ids


def rewrite_with_ivf(source, out, ivf, *, zstd_level=ZSTD_DEFAULT_LEVEL, residual=False):
    """Write `source` (a .qnc path) to `out` with `ivf` (an IvfSection, or None to drop the
    section) as its ivf section: the same header fields, model_config, user_metadata,
    embedded model and quality_report, every chunk copied byte for byte (QncReader.raw_chunks,
    CRCs verified on the way). Sections of types this version does not know are not copied
    (whether they still hold for the rewritten file cannot be known). The output is written under
    a temporary name, fsynced and renamed into place (formats.atomic), so `out` may be `source`.
    `zstd_level` applies to the list ids only (SPEC.md 12); the planes keep their encoding.
    `residual=True` marks the codes of `source` as residuals to the centroids of `ivf` (the
    ivf_residual section, SPEC.md 5.4). A source whose codes already are residuals to its lists
    is refused: other lists (or none) would change every decoded vector."""
    with QncReader(source) as reader:
        h = reader.header
        refuse_residual(h, source)
        with QncWriter(out, n=h.n, dim=h.dim, source_dtype=h.source_dtype, K=h.K, M=h.M,
                       model_sha256=h.model_sha256, model_config=h.model_config,
                       metadata=h.metadata, model_bytes=reader.model_bytes(),
                       chunk_rows=h.chunk_rows, zstd_level=zstd_level,
                       quality_report=h.quality_report, ivf=ivf, ivf_residual=residual) as writer:
            for raw in reader.raw_chunks():
                writer.write_raw_chunk(raw)


class _AssigningSource:
    """A vector source whose batches are put in lists as compress reads them to encode; every
    other attribute is the wrapped source's."""

    def __init__(self, src, lists):
        self._src, self._lists = src, lists

    def __getattr__(self, name):
        return getattr(self._src, name)

    def iter_batches(self, batch_size):
        for batch in self._src.iter_batches(batch_size):
            self._lists.add(batch)
            yield batch


class _ResidualSource:
    """A vector source whose rows are the residuals x − c(x) to their nearest centroid (what
    compress trains on and encodes for IVF-QINCo codes); batches read to encode are also put in
    their lists. Rows by index (`array[rows]`) when the wrapped source allows it; every other
    attribute (n, dim, the source dtype the file records, name) is the wrapped source's."""

    def __init__(self, src, lists):
        self._src, self._lists = src, lists

    def __getattr__(self, name):
        if name == "vectors":
            raise AttributeError(name)   # rows by index go through `array`, as residuals
        if name == "array":
            if not hasattr(self._src, "array") and not hasattr(self._src, "vectors"):
                raise AttributeError(name)
            return _ResidualRows(self._src, self._lists)
        return getattr(self._src, name)

    def sample(self, k, seed=0):
        return self._lists.split(self._src.sample(k, seed))[0]

    def iter_batches(self, batch_size):
        for batch in self._src.iter_batches(batch_size):
            yield self._lists.split(batch, record=True)[0]


class _ResidualRows:
    """`array[rows]` of a _ResidualSource: those rows of the wrapped source, as residuals."""

    def __init__(self, src, lists):
        self._src, self._lists = src, lists

    def __getitem__(self, rows):
        from .sources import read_rows
        return self._lists.split(read_rows(self._src, rows))[0]


class CompressLists:
    """The inverted lists `compress(..., ivf=nlist)` writes: centroids fitted by k-means on the
    input's own training sample (`train_size` rows drawn with `seed`, the rows a model compress
    trains is trained on), then each row put in the list of the centroid nearest its *original*
    vector while it is encoded (`source` wraps the input). Measured on GloVe-50 (README,
    "Inverted lists"), original vectors give a higher recall at small nprobe than decoded ones,
    which are what add_ivf must use since it has no originals. The file is written without the section
    first and then rewritten with it (`written_to`): the section precedes the chunks, the list
    ids are known only once every row has been read.

    residual=True (IVF-QINCo, SPEC.md 5.4): `source` yields the residuals x − c(x) instead of x,
    for the model to be trained on and to encode, and the file is marked so that decoding adds
    each row's centroid back."""

    def __init__(self, src, nlist, *, train_size, seed=0, quiet=True, residual=False):
        from .search.ivf import train_coarse
        from .validation import as_float_matrix

        self.nlist = check_nlist(nlist, src.n, "ivf")
        sample = as_float_matrix(src.sample(train_size, seed), dim=src.dim, name="input")
        if len(sample) < self.nlist:
            raise InputError(f"ivf={self.nlist:,}: the training sample has {len(sample):,} rows, "
                             f"fewer than the lists to fit; raise train_size or lower ivf")
        note(f"ivf: fitting {self.nlist:,} centroids on {len(sample):,} input rows", quiet)
        self.centroids = train_coarse(sample, self.nlist, seed=seed)
        self.ids = np.empty(src.n, list_id_dtype(self.nlist))
        self.rows = 0
        self.residual = bool(residual)
        self.source = _ResidualSource(src, self) if residual else _AssigningSource(src, self)

    def add(self, batch):
        """Assign the next rows of the input (any numeric dtype) to their nearest centroids."""
        from .search.ivf import assign

        self._record(assign(np.asarray(batch, dtype=np.float32), self.centroids))

    def _record(self, ids):
        """Keep the list ids (rows,) of the file's next rows."""
        self.ids[self.rows:self.rows + len(ids)] = ids
        self.rows += len(ids)

    def split(self, batch, *, record=False):
        """(residuals x − c(x), offsets c(x)) of rows of the input, both (rows, d) float32, c(x)
        the centroid nearest x; `record`: they are the next rows of the file (their list ids are
        kept, and errors name their row numbers). The rows are checked as compress checks its
        input (numeric, finite)."""
        from .search.ivf import assign
        from .validation import as_float_matrix

        x = as_float_matrix(batch, dim=self.centroids.shape[1], name="input",
                            row_offset=self.rows if record else 0, allow_empty=True)
        ids = assign(x, self.centroids)                                   # (rows,) int32
        if record:
            self._record(ids)
        offsets = self.centroids[ids]
        return x - offsets, offsets

    @contextlib.contextmanager
    def written_to(self, path, zstd_level=ZSTD_DEFAULT_LEVEL):
        """Yield a temporary path (hidden, in the output's directory, not the `.tmp` pattern
        formats.atomic cleans up) to write the file without lists to; once the block ends
        without error, write it to `path` with the ivf section. The temporary file is removed
        in every case."""
        directory, name = os.path.split(os.path.abspath(path))
        handle, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".without-ivf")
        os.close(handle)
        try:
            yield tmp
            if self.rows != len(self.ids):
                raise InputError(f"ivf: {self.rows:,} rows were assigned, the file has "
                                 f"{len(self.ids):,}")
            rewrite_with_ivf(tmp, path, IvfSection(self.centroids, self.ids), zstd_level=zstd_level,
                             residual=self.residual)
        finally:
            os.unlink(tmp)

    def summary(self):
        sizes = np.bincount(self.ids, minlength=self.nlist)
        return {"nlist": self.nlist, "residual_codes": self.residual,
                "list_size_min": int(sizes.min()),
                "list_size_median": float(np.median(sizes)), "list_size_max": int(sizes.max())}


def add_ivf(path, nlist, *, out=None, seed=0, sample=DEFAULT_SAMPLE, model=None,
            batch_size=ASSIGN_BATCH, device="auto", zstd_level=ZSTD_DEFAULT_LEVEL, quiet=True):
    """Add inverted lists (an ivf section, SPEC.md 5.3) with `nlist` lists to the .qnc file at
    `path`, replacing any it has; written to `out` (default: `path` itself, atomically).

    The coarse centroids are fitted by k-means (search.ivf.train_coarse, `seed`) on the decoded
    vectors of `sample` rows of the file drawn at random (all rows when it has fewer); then
    every row goes to the list of the centroid nearest its decoded vector. Decoding needs the
    file's model: embedded, `model` (a path or QincoModel), or the model store's copy. The codes
    are copied byte for byte, so the new file decodes to the same vectors. Returns a summary:
    path, n, nlist, sample (rows fitted on), list sizes min/median/max, ivf_bytes (the section's
    payload) and file_size."""
    from . import qncfile
    from .search.ivf import train_coarse

    if isinstance(sample, bool) or not isinstance(sample, (int, np.integer)) or sample < 1:
        raise InputError(f"sample must be a positive integer (rows to fit the centroids on), "
                         f"got {sample!r}")
    out = path if out is None else out
    with qncfile.open(path, model) as f:
        refuse_residual(f.header, path)
        nlist = check_nlist(nlist, f.n)
        if sample < nlist:
            raise InputError(f"sample={sample:,} rows cannot fit nlist={nlist:,} centroids: "
                             f"give at least one row per list")
        rows = sample_rows(f.n, int(sample), seed)
        note(f"ivf: fitting {nlist:,} centroids on {len(rows):,} decoded rows", quiet)
        centroids = train_coarse(f.decode(rows=rows, device=device), nlist, seed=seed)
        ids = assign_decoded(f, centroids, batch_size=batch_size, device=device, quiet=quiet)
    section = IvfSection(centroids, ids)
    rewrite_with_ivf(path, out, section, zstd_level=zstd_level)
    sizes = section.list_sizes()
    with QncReader(out) as reader:
        ivf_bytes = reader.ivf_size
    return {"path": os.fspath(out), "n": len(ids), "nlist": nlist, "sample": len(rows),
            "list_size_min": int(sizes.min()), "list_size_median": float(np.median(sizes)),
            "list_size_max": int(sizes.max()), "ivf_bytes": ivf_bytes,
            "file_size": os.path.getsize(out)}
