"""share_steps: one step network for all steps (the paper's parameter-sharing ablation), each step
keeping its own codebooks; the file stores the network once."""
import json

import numpy as np
import pytest
import torch

import qinco_codec
from qinco_codec.errors import ModelFormatError
from qinco_codec.model import QincoModel
from qinco_codec.serialize import model_from_bytes, model_to_bytes


def _perturbed(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


@pytest.mark.parametrize("preset", ["qinco1-L2", "qinco2-XS"])
def test_shared_model_is_smaller_and_round_trips(preset):
    shared = _perturbed(QincoModel.from_preset(preset, 24, 6, share_steps=True))
    plain = QincoModel.from_preset(preset, 24, 6)
    assert shared.steps[4].concat is shared.steps[1].concat
    assert shared.steps[4].codebook is not shared.steps[1].codebook
    data = model_to_bytes(shared)
    assert len(data) < 0.6 * len(model_to_bytes(plain))
    loaded = model_from_bytes(data)
    assert loaded.config.share_steps is True
    assert loaded.steps[3].blocks is loaded.steps[0].blocks
    x = np.random.default_rng(0).standard_normal((200, 24)).astype(np.float32)
    codes = shared.encode(x, B=1)
    np.testing.assert_array_equal(loaded.encode(x, B=1), codes)
    np.testing.assert_array_equal(loaded.decode(codes), shared.decode(codes))


def test_training_keeps_the_network_shared(glove_train):
    # real vectors and a few epochs: the RQ start is good enough that a short run on random data
    # keeps it as its best state, which would leave the network untrained
    x = np.ascontiguousarray(glove_train[:6000])
    model = qinco_codec.train(x, preset="qinco2-XS", steps=4, epochs=3, samples_per_epoch=4096,
                              quiet=True, share_steps=True, device="cpu")
    assert model.steps[2].concat is model.steps[0].concat
    assert model.steps[0].concat.weight.abs().sum() > 0  # it was trained


def test_share_steps_must_be_a_boolean():
    data = model_to_bytes(QincoModel.from_preset("qinco2-XS", 8, 3, share_steps=True))
    hlen = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + hlen])
    config = json.loads(header["__metadata__"]["config"])
    config["share_steps"] = "yes"
    header["__metadata__"]["config"] = json.dumps(config)
    new = json.dumps(header).encode()
    with pytest.raises(ModelFormatError, match="share_steps"):
        model_from_bytes(len(new).to_bytes(8, "little") + new + data[8 + hlen:])
