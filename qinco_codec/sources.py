"""Input sources of `compress`: what it was given (an array, a vector file path, a one-pass
stream) seen alike, as an object with `n`, `dim`, `dtype` (the source's own dtype), `name`,
`sample(k, seed)` (the training sample) and `iter_batches(batch_size)` (the rows, in order).
NumPy only: no torch."""
import os

import numpy as np

from .errors import InputError

SAMPLE_READ_ROWS = 65536


def read_rows(src, rows):
    """The rows `rows` (sorted indices) of a source with random access (an array, `.array`, or a
    vector file, `.vectors`), as an array of the source's dtype; streams have neither."""
    if hasattr(src, "array"):
        return np.asarray(src.array[rows])
    if not len(rows):
        return np.empty((0, src.dim), np.float32)
    return np.concatenate([src.vectors.read(r, r + 1) for r in rows])


def _sample_rows(n, k, seed):
    """k distinct row numbers of [0, n), sorted (the same for the same n, k and seed)."""
    return np.sort(np.random.default_rng(seed).choice(n, k, replace=False))


class ArraySource:
    """An in-memory or memory-mapped (n, d) array (or a torch tensor), read batch by batch."""

    def __init__(self, array, name="x"):
        if hasattr(array, "detach"):
            array = array.detach().cpu().numpy()
        array = np.asarray(array) if not isinstance(array, np.ndarray) else array
        if array.ndim != 2:
            raise InputError(f"{name}: expected a 2-D array (n, d), got shape {tuple(array.shape)}")
        self.array, self.name = array, name
        self.n, self.dim, self.dtype = array.shape[0], array.shape[1], array.dtype

    def iter_batches(self, batch_size):
        for s in range(0, self.n, batch_size):
            yield self.array[s:s + batch_size]

    def sample(self, k, seed=0):
        if self.n <= k:
            return np.asarray(self.array)
        return np.asarray(self.array[_sample_rows(self.n, k, seed)])


class StreamSource:
    """A one-pass stream of batches (stdin): the training sample is its first rows, kept in
    memory so that they are still encoded."""

    def __init__(self, stream, name="stdin"):
        self.stream, self.name = stream, name
        self.n, self.dim, self.dtype = stream.n, stream.dim, stream.dtype
        self._head, self._it = [], iter(stream.batches)

    def sample(self, k, seed=0):
        got = sum(len(b) for b in self._head)
        while got < k:
            batch = next(self._it, None)
            if batch is None:
                break
            self._head.append(batch)
            got += len(batch)
        return np.concatenate(self._head)[:k] if self._head else np.empty((0, self.dim), np.float32)

    def iter_batches(self, batch_size):
        yield from self._head
        self._head = []
        yield from self._it


class FileSource:
    """A vector file (any format `readers.open_vectors` reads), read batch by batch."""

    def __init__(self, vectors):
        self.vectors, self.name = vectors, vectors.path
        self.n, self.dim, self.dtype = vectors.n, vectors.dim, vectors.dtype

    def iter_batches(self, batch_size):
        return self.vectors.iter_batches(batch_size)

    def sample(self, k, seed=0):
        if self.n <= k:
            return self.vectors.read(0, self.n)
        rows = _sample_rows(self.n, k, seed)
        parts, start = [], 0
        for batch in self.vectors.iter_batches(SAMPLE_READ_ROWS):
            lo, hi = np.searchsorted(rows, [start, start + len(batch)])
            parts.append(batch[rows[lo:hi] - start])
            start += len(batch)
        return np.concatenate(parts)


def as_source(x):
    """What compress() was given, as a source: a path (opened as a vector file), an object that
    already is a source (has iter_batches and sample), a stream with `n` and `batches` (such as
    `readers.iter_npy_stream`), else an array."""
    if isinstance(x, (str, os.PathLike)):
        from .readers import open_vectors
        return FileSource(open_vectors(x))
    if hasattr(x, "iter_batches") and hasattr(x, "sample"):
        return x
    if hasattr(x, "batches") and hasattr(x, "n"):
        return StreamSource(x)
    return ArraySource(x)
