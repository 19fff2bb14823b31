"""Training on real GloVe data: it must beat its RQ start on vectors it never saw, checkpoint
every epoch, resume to the same result after an interruption, and refuse corrupt checkpoints."""
import inspect

import numpy as np
import pytest
import torch

import qinco_codec
from qinco_codec.errors import InputError, ModelFormatError
from qinco_codec.model import QincoModel
from qinco_codec.rq_init import init_from_rq

QUICK = dict(preset="qinco2-XS", steps=4, samples_per_epoch=8192, quiet=True)


def _mse(model, x, B=1):
    return float(((model.decode(model.encode(x, B=B)) - x) ** 2).sum(1).mean())


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def trained_run(glove_train):
    return qinco_codec.train(glove_train, epochs=6, return_history=True, **QUICK)


@pytest.fixture(scope="module")
def trained(trained_run):
    return trained_run.model


def test_training_beats_rq_start_on_unseen_vectors(trained, trained_run, glove_train, glove_base):
    # the RQ start of the same run: training split = all but the held-out validation vectors
    start = init_from_rq(QincoModel.from_preset("qinco2-XS", 50, 4), glove_train, seed=0)
    history = trained_run.history
    assert history[-1]["val_mse"] < history[0]["val_mse"] or trained.config.trained["val_mse"] < history[0]["val_mse"]
    # (the start is within about 0.1% of what six short epochs reach at M = 4 since the
    # residual k-means stopped collapsing into singleton clusters: tests/test_rq_init.py)
    assert _mse(trained, glove_base) < _mse(start, glove_base) * 0.9995


def test_training_records_its_settings(trained, trained_run):
    assert trained.config.trained["epochs"] >= 1
    assert trained.config.trained["samples"] == trained.config.trained["epochs"] * 8192
    assert [h["epoch"] for h in trained_run.history] == list(range(len(trained_run.history)))
    assert set(trained_run.history[1]) == {"epoch", "train_mse", "val_mse", "reset", "lr"}


def test_history_is_returned_not_attached(tiny_x):
    """train() returns the model alone unless asked for the history; nothing is attached to it."""
    model = qinco_codec.train(tiny_x, steps=3, **TINY)
    assert isinstance(model, QincoModel) and not hasattr(model, "history")
    result = qinco_codec.train(tiny_x, steps=3, return_history=True, **TINY)
    model2, history = result
    assert result.model is model2 and result.history is history and not hasattr(model2, "history")
    assert [h["epoch"] for h in history] == [0, 1]
    assert _same_weights(model, model2)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_resume_after_interruption_reaches_the_same_model(tmp_path, glove_train, dropout):
    """Also with dropout: its masks come from a generator seeded per epoch, so the epochs after
    the resume draw the masks the uninterrupted run drew."""
    x = glove_train[:4000]
    kwargs = dict(QUICK, epochs=3, samples_per_epoch=1024, val=200, dropout=dropout)
    reference = qinco_codec.train(x, **kwargs)

    ckpt = tmp_path / "run.ckpt"

    def stop_after_first(record):
        if record["epoch"] == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        qinco_codec.train(x, checkpoint=ckpt, on_epoch=stop_after_first, **kwargs)
    assert ckpt.exists()
    resumed, history = qinco_codec.train(x, checkpoint=ckpt, return_history=True, **kwargs)
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    for k, v in reference.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), resumed.state_dict()[k].numpy(), err_msg=k)


def test_corrupt_checkpoint_is_refused_not_restarted(tmp_path, glove_train):
    x = glove_train[:3000]
    ckpt = tmp_path / "run.ckpt"
    qinco_codec.train(x, epochs=1, checkpoint=ckpt, **dict(QUICK, samples_per_epoch=1024))
    data = bytearray(ckpt.read_bytes())
    data[-10] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="corrupt checkpoint"):
        qinco_codec.train(x, epochs=2, checkpoint=ckpt, **dict(QUICK, samples_per_epoch=1024))
    ckpt.write_bytes(bytes(data[:100]))
    with pytest.raises(ModelFormatError, match="corrupt checkpoint"):
        qinco_codec.train(x, epochs=2, checkpoint=ckpt, **dict(QUICK, samples_per_epoch=1024))


def test_checkpoint_of_another_run_is_refused(tmp_path, glove_train):
    ckpt = tmp_path / "run.ckpt"
    qinco_codec.train(glove_train[:3000], epochs=1, checkpoint=ckpt, **dict(QUICK, samples_per_epoch=1024))
    with pytest.raises(ModelFormatError, match="other training data"):
        qinco_codec.train(glove_train[3000:6000], epochs=1, checkpoint=ckpt, **dict(QUICK, samples_per_epoch=1024))


def test_time_budget_stops_cleanly_with_a_model(glove_train):
    m = qinco_codec.train(glove_train[:4000], max_minutes=0.05, **dict(QUICK, samples_per_epoch=1024))
    assert m.config.trained["epochs"] >= 1
    assert m.encode(glove_train[:5]).shape == (5, 4)


def test_beam_trained_start_is_the_start_of_training(glove_train):
    """start_beam=5: the untrained model (epoch 0) is rq_init's beam-trained start, and it codes
    the held-out validation vectors with a beam of 5 better than the greedy start does."""
    import torch

    from qinco_codec.training import _split_validation, validation_mse
    x = glove_train[:6000]
    history = qinco_codec.train(x, epochs=1, start_beam=5, return_history=True,
                                **dict(QUICK, samples_per_epoch=1024)).history
    xtrain, xval = _split_validation(x, 0.05, 0)
    starts = {b: init_from_rq(QincoModel.from_preset("qinco2-XS", 50, 4), xtrain, seed=0, beam=b)
              for b in (1, 5)}
    xv = starts[5].normalize(torch.from_numpy(xval))
    assert history[0]["val_mse"] == pytest.approx(validation_mse(starts[5], xv, starts[5].config.A), rel=1e-6)
    assert _mse(starts[5], xval, B=5) < _mse(starts[1], xval, B=5)


@pytest.mark.parametrize("kwargs,msg", [
    (dict(x=np.zeros((1, 4), np.float32), steps=2), "cannot hold out"),
    (dict(x=np.zeros((100, 4), np.float32)), "give the number of steps"),
    (dict(x=np.zeros((100, 4), np.float32), steps=0), "steps=0 must be a positive integer"),
    (dict(x=np.zeros((100, 4), np.float32), bytes=3, K=4096), "whole number"),
    (dict(x=np.zeros((100, 4), np.float32), steps=2, bytes=2), "give the rate once"),
    (dict(x=np.zeros((0, 4), np.float32), steps=2), "at least one vector"),
    (dict(x=np.zeros((100, 4), np.float32), steps=2, dropout=1.0), "dropout must be in"),
    (dict(x=np.zeros((100, 4), np.float32), steps=2, noise=-0.1), "noise must be >= 0"),
    (dict(x=np.zeros((100, 4), np.float32), steps=2, lr=-1e-3), "lr must be a number >= 0"),
    (dict(x=np.zeros((100, 4), np.float32), steps=2, hidden="wide"), "hidden must be an integer"),
    (dict(x=np.zeros((100, 4), np.float32), steps=2, share_steps=1), "share_steps must be True or False"),
    (dict(x=np.zeros((100, 4), np.float32), steps=2, batch_size=0), "batch_size must be an integer >= 1"),
    (dict(x=np.zeros((100, 4), np.float32), steps=2, threads=0), "threads must be an integer >= 1"),
    (dict(x=np.zeros((100, 4), np.float32), steps=2, preset="qinco3"), "unknown preset"),
    (dict(x=np.zeros((100, 4), np.float32), steps=2, start_beam=0), "start_beam must be an integer >= 1"),
])
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_bad_training_arguments(kwargs, msg):
    with pytest.raises(InputError, match=msg):
        qinco_codec.train(quiet=True, epochs=1, **kwargs)


def test_every_option_is_in_the_signature_and_a_typo_is_refused():
    """help() and inspect show each option; a misspelt one is a TypeError naming it, before any
    work (it used to reach dataclasses.replace deep inside)."""
    import pydoc

    params = inspect.signature(qinco_codec.train).parameters
    assert not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params.values())
    options = {"preset", "steps", "K", "epochs", "max_minutes", "patience", "val", "seed", "checkpoint",
               "batch_size", "samples_per_epoch", "lr", "weight_decay", "train_A", "clip_value",
               "clip_norm", "last_step_loss", "L", "hidden", "embed", "A", "B", "share_steps", "noise",
               "dropout", "device", "threads", "quiet", "on_epoch"}
    assert options <= set(params)
    doc = pydoc.render_doc(qinco_codec.train)
    for name in options:
        assert f"`{name}`" in doc or f"{name}=" in doc, name
    with pytest.raises(TypeError, match="hiden"):
        qinco_codec.train(np.zeros((100, 4), np.float32), steps=2, hiden=64)


TINY = dict(preset="qinco2-XS", K=16, epochs=1, samples_per_epoch=512, batch_size=256, val=100, quiet=True,
            device="cpu")


@pytest.fixture(scope="module")
def tiny_x():
    rng = np.random.default_rng(5)
    return (rng.standard_normal((1500, 12)) @ rng.standard_normal((12, 12))).astype(np.float32)


def _same_weights(a, b):
    return a.state_dict().keys() == b.state_dict().keys() and all(
        np.array_equal(v.numpy(), b.state_dict()[k].numpy()) for k, v in a.state_dict().items())


@pytest.mark.parametrize("alias", [dict(M=3), dict(bytes=6, K=4096)])
def test_deprecated_rate_aliases_warn_and_train_the_same_model(tiny_x, alias):
    """M= and bytes= (bytes per vector; 2 bytes per code when K > 256) still work for one release:
    they warn, pointing at the caller's line, and train exactly the model steps=3 trains."""
    kwargs = dict(TINY, K=alias.get("K", TINY["K"]))
    reference = qinco_codec.train(tiny_x, steps=3, **kwargs)
    with pytest.warns(DeprecationWarning, match="use steps=") as caught:
        model = qinco_codec.train(tiny_x, **{**kwargs, **alias})
    assert caught[0].filename == __file__
    assert model.M == 3
    assert _same_weights(model, reference)


def test_recipe_overrides_reach_the_training(tiny_x):
    """clip_value (a preset field that is not part of the model) changes the run; an architecture
    override changes the model."""
    plain = qinco_codec.train(tiny_x, steps=3, **TINY)
    clipped = qinco_codec.train(tiny_x, steps=3, clip_value=1e-7, **TINY)
    assert not _same_weights(plain, clipped)
    narrow = qinco_codec.train(tiny_x, steps=3, hidden=8, L=1, **TINY)
    assert narrow.steps[0].blocks[0][0].weight.shape == (8, narrow.steps[0].embed)
    assert len(narrow.steps[0].blocks) == 1


@pytest.mark.parametrize("setting", [dict(dropout=0.3), dict(noise=0.2)])
def test_regularisation_changes_training_but_not_the_model_file(glove_train, setting):
    """Dropout and input noise are training-time only: the same run is reproducible, it differs
    from the plain run (its training losses; the best state returned may be the start in so short
    a run), and the model it returns has the same tensors (and dropout off)."""
    from qinco_codec.serialize import model_to_bytes

    x = glove_train[:4000]
    kwargs = dict(QUICK, epochs=4, samples_per_epoch=1024, val=200, return_history=True)
    plain, plain_history = qinco_codec.train(x, **kwargs)
    (first, first_history), (second, _) = (qinco_codec.train(x, **kwargs, **setting) for _ in range(2))
    for k, v in first.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), second.state_dict()[k].numpy(), err_msg=k)
    assert [r.get("train_mse") for r in first_history] != [r.get("train_mse") for r in plain_history]
    assert first.state_dict().keys() == plain.state_dict().keys()
    assert len(model_to_bytes(first)) == len(model_to_bytes(plain))
    assert not first.training
    np.testing.assert_array_equal(first.encode(x[:50]), first.encode(x[:50]))  # no dropout at encode


def _global_torch_state():
    return (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(), torch.random.get_rng_state())


@pytest.mark.parametrize("setting", [dict(dropout=0.3, noise=0.1), dict(dropout=0.3, threads=1),
                                     dict(threads=2, share_steps=True)])
def test_training_leaves_torch_global_state_as_it_found_it(tiny_x, setting):
    """Thread count, the deterministic-algorithms flag and the global RNG are the same after
    train() as before, after a normal return and after an exception raised inside the run; and
    the model does not depend on the caller's global RNG."""
    n = torch.get_num_threads()
    torch.set_num_threads(3 if n != 3 else 4)
    try:
        torch.manual_seed(123)
        before = _global_torch_state()
        model = qinco_codec.train(tiny_x, steps=3, **TINY, **setting)
        after = _global_torch_state()
        assert after[:3] == before[:3]
        assert torch.equal(after[3], before[3])

        def fail(record):
            raise Interrupt

        with pytest.raises(Interrupt):
            qinco_codec.train(tiny_x, steps=3, on_epoch=fail, **TINY, **setting)
        after = _global_torch_state()
        assert after[:3] == before[:3] and torch.equal(after[3], before[3])

        torch.manual_seed(7)  # another global RNG state: the same model
        assert _same_weights(model, qinco_codec.train(tiny_x, steps=3, **TINY, **setting))
    finally:
        torch.set_num_threads(n)


def test_early_stopping_waits_for_the_second_half_of_the_schedule(glove_train):
    """With nothing to learn (learning rate 0) validation never improves; patience=1 must still
    let the first half of the schedule run (the learning rate is high there, and the annealing
    after it is where a stalled run improves), then stop at the first bad epoch after it."""
    kwargs = dict(QUICK, K=16, epochs=6, samples_per_epoch=4096, val=200, lr=0.0, patience=1)
    model, history = qinco_codec.train(glove_train[:4000], return_history=True, **kwargs)
    assert all(h.get("reset", 0) == 0 for h in history)  # nothing changed the model
    assert model.config.trained["epochs"] == 3  # epochs 1-2 not counted, epoch 3 (progress 0.5) stops
