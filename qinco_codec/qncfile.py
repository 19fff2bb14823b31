"""`QncFile`, the Python face of a .qnc file opened for reading: its codes (no torch needed), its
vectors decoded at any prefix rate (whole, by rows, or streamed in bounded memory), and a
description of what it holds and costs (`describe()`).

Rates are in steps: the number of codes per vector to use, at most the file's M (see rates.py).
"""
import os

import numpy as np

from .formats import QncReader
from .rates import deprecated_bytes
from .streaming import check_batch_size, iter_decoded, new_stream_stats


def open(source, model=None):  # noqa: A001 - mirrors builtins.open on purpose
    """Open a .qnc file (path or binary file object) for reading; see QncFile."""
    return QncFile(source, model)


def _selects_nothing(rows, n):
    """True for a row selection of a file of n rows that selects nothing: an empty 1-D index
    array, or a step-1 slice that is empty once resolved against n, so that no chunk is read
    for it. Anything else, valid or not, goes to the reader, which checks it."""
    if rows is None:
        return False
    if isinstance(rows, slice):
        if rows.step not in (None, 1):
            return False
        try:
            start, stop, _ = rows.indices(n)
        except TypeError:  # non-integer bounds: the reader's error
            return False
        return stop <= start
    idx = np.asarray(rows)
    return idx.ndim == 1 and idx.size == 0


class QncFile:
    """A .qnc file opened for reading codes (no torch needed) and decoding vectors.

    `model` (a path or a loaded QincoModel) is only needed when the file does not embed its
    model and the model store does not hold it; a QincoModel given here is not modified or
    moved (decoding uses a copy). Attributes: n, dim, K, M (steps stored), bytes_per_code,
    bytes_per_vector, metadata, model_sha256 (hex), model_size (embedded model bytes or None),
    header (the formats.QncHeader).
    """

    def __init__(self, source, model=None):
        from .description import file_size_of

        self._reader = QncReader(source)
        self._source_name = os.fspath(source) if isinstance(source, (str, os.PathLike)) \
            else getattr(source, "name", None)
        self._file_size = file_size_of(source)
        self._model_arg = model
        self._model = None
        h = self._reader.header
        self.header = h
        self.n, self.dim, self.K, self.M = h.n, h.dim, h.K, h.M
        self.bytes_per_code = h.bytes_per_code
        self.bytes_per_vector = h.M * h.bytes_per_code
        self.metadata = h.metadata
        self.model_sha256 = h.model_sha256.hex()
        self.model_size = self._reader.model_size

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._reader.close()

    @property
    def bytes_read(self):
        """Bytes read from the file so far (header, index and the planes actually needed)."""
        return self._reader.bytes_read

    def plane_sizes(self):
        """Per chunk, per plane: (stored bytes, raw bytes, zstd-compressed?)."""
        return self._reader.plane_sizes()

    def verify(self):
        """Read every plane and the embedded model, checking every checksum (raises QncFormatError)."""
        for _ in self._reader.iter_chunks():
            pass
        if self.header.has_embedded_model:
            self._reader.model_bytes()

    def describe(self, verify=False):
        """What the file holds and what it costs, as a plain JSON-ready dict: n, dim,
        source_dtype, K, bytes_per_code, M, bytes_per_vector, chunks, the prefix `rates`, the
        model (id, embedded or not, its size in `model_bytes`, the model store copy), the
        `model_config` summary and `metadata` stored in the file, per code plane the stored and
        raw bytes summed over chunks (`planes`), the `file_size`, the compression ratios against
        float32 and against the source dtype with and without the model, and the model's share
        of the file. Reads headers and the index only (on a pipe, consumes the code stream);
        verify=True also reads every plane and the embedded model and checks their checksums."""
        from .description import describe, external_model_size, ivf_summary

        if self.header.has_embedded_model:
            model_bytes, store = self.model_size, None
        else:
            model_bytes, store = external_model_size(self._model_arg, self.model_sha256)
        info = describe(self.header, self.plane_sizes(), self._file_size, model_bytes, store,
                        path=self._source_name, ivf=ivf_summary(self._reader.ivf(), self._reader.ivf_size,
                                            self.residual_codes))
        if verify:
            self.verify()
            info["verified"] = True
        return info

    def _steps(self, steps, nbytes):
        return deprecated_bytes(steps, nbytes, self.K, self.M, "the file's rate", stacklevel=4)

    def _empty_codes(self, steps):
        return np.empty((0, steps), self.header.code_dtype)

    def codes(self, steps=None, rows=None, *, bytes=None):
        """Codes (rows, steps) as stored: the first `steps` codes (default M) of each vector, for
        `rows` (None: all; a step-1 slice; a 1-D integer array). Reads only the chunks holding
        those rows, and in each only the first `steps` planes. `bytes=` is deprecated."""
        steps = self._steps(steps, bytes)
        if _selects_nothing(rows, self.n):
            return self._empty_codes(steps)
        return self._reader.codes(steps=steps, rows=rows)

    @property
    def model(self):
        """The model that decodes this file: embedded, given, or found in the model store,
        checked against the file's id and header (model_resolution.resolve_model)."""
        if self._model is None:
            from .model_resolution import resolve_model
            self._model = resolve_model(self._reader, self._model_arg)
        return self._model

    def decode(self, steps=None, rows=None, device="auto", *, bytes=None):
        """float32 vectors (rows, dim) decoded from the first `steps` codes (default M) of each
        vector; `rows` as for codes(). `bytes=` is deprecated."""
        steps = self._steps(steps, bytes)
        model = self.model
        if _selects_nothing(rows, self.n):
            return np.empty((0, self.dim), dtype=np.float32)
        codes = self._reader.codes(steps=steps, rows=rows)
        if len(codes) == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        decoded = model.decode(codes, device=device)
        if self.residual_codes:
            ivf = self._reader.ivf()
            decoded += ivf.centroids[ivf.list_ids if rows is None else ivf.list_ids[rows]]
        return decoded

    @property
    def residual_codes(self):
        """Whether the codes are residuals to the ivf centroids (IVF-QINCo, SPEC.md 5.4): the
        decoded vectors then add each row's list centroid, which decode() does."""
        return self.header.residual_codes

    def search(self, queries, k=10, *, shortlist=None, nprobe=None, steps=None, bytes=None,
               metric="l2", device="auto"):
        """The k nearest rows of each query (nq, dim) without decoding the file: D (nq, k)
        float32 (squared L2 distances to the decoded vectors, or inner products for
        metric="ip", larger nearer) and I (nq, k) int64 row ids, nearest first; I = -1 with
        D = inf (-inf for "ip") where the file has fewer than k candidate rows.

        An additive shortlist of `shortlist` rows per query (default max(k, 100)), scored from
        the code planes by lookup tables, is re-ranked by decoding it with the model
        (search/engine.py). When the file has an IVF section only the `nprobe` nearest lists
        are scanned (default nlist / 32); otherwise every row is. `steps` searches a prefix:
        only those planes are read and scored. The first search at a prefix reads its codes,
        fits the additive codebooks on up to 32,768 decoded rows of the file and keeps them
        (`search_index`); later searches reuse them. `bytes=` is deprecated."""
        from .search.engine import check_queries, empty_result

        steps = self._steps(steps, bytes)
        q = check_queries(queries, self.dim)
        if self.n == 0:
            return empty_result(q, k, shortlist, metric)
        return self.search_index(steps, device=device).search(
            q, k, shortlist=shortlist, nprobe=nprobe, metric=metric, device=device)

    def search_index(self, steps=None, device="auto"):
        """The search/engine.SearchIndex of this file at `steps` (default M), built on first use
        (the prefix's codes, the IVF section when the file has one, the additive codebooks
        fitted on a sample of the file's decoded rows) and cached on this QncFile."""
        from .search.engine import SearchIndex

        steps = self._steps(steps, None)
        cache = self.__dict__.setdefault("_search_indexes", {})
        if steps not in cache:
            model = self.model
            codes = self._reader.codes(steps=steps)
            read_ivf = getattr(self._reader, "ivf", None)   # the IVF section's reader (SPEC 5.3)
            ivf = read_ivf() if callable(read_ivf) else None
            cache[steps] = SearchIndex(codes, model, ivf=ivf, residual=self.residual_codes,
                                       device=device)
        return cache[steps]

    def iter_decode(self, steps=None, batch_size=65536, device="auto", prefetch=True, *, bytes=None):
        """Decoded float32 batches of up to `batch_size` rows, in file order, in bounded memory.

        The rate and the model are checked when this is called; the batches come as the
        returned iterator is consumed. With `prefetch` a background thread reads and
        decompresses the next chunk while the current batch decodes. `stream_stats` then holds
        the rows decoded and the seconds spent reading chunks and decoding them.
        `bytes=` is deprecated.
        """
        steps = self._steps(steps, bytes)
        check_batch_size(batch_size)
        if self.n:
            self.model  # noqa: B018 - resolve (and check) the model before the first batch
        stats = self.stream_stats = new_stream_stats(prefetch)
        blocks = (block for _, block in self._reader.iter_chunks(steps=steps))
        return iter_decoded(blocks, self._batch_decoder(device), batch_size, prefetch, stats)

    def _batch_decoder(self, device):
        """decode(codes) for consecutive batches of rows from row 0, in file order: with
        residual codes each batch adds the centroids of its rows' lists."""
        if not self.residual_codes:
            return lambda codes: self.model.decode(codes, device=device)
        ivf, start = self._reader.ivf(), [0]

        def decode(codes):
            out = self.model.decode(codes, device=device)
            out += ivf.centroids[ivf.list_ids[start[0]:start[0] + len(codes)]]
            start[0] += len(codes)
            return out
        return decode
