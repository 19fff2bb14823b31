"""Model files: a safetensors round trip keeps codes and the model id; hostile or malformed files
are refused with a clear error before anything large is built, and nothing executes code."""
import hashlib
import json
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save

import qinco_codec
from qinco_codec.errors import ModelFormatError
from qinco_codec.serialize import model_to_bytes


def test_round_trip_gives_identical_codes_and_the_file_sha256(tmp_path, rq_model, glove_base):
    path = tmp_path / "m.safetensors"
    sha = rq_model.save(path)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = qinco_codec.load_model(path)
    assert loaded.sha256 == sha and loaded.config == rq_model.config
    x = glove_base[:500]
    np.testing.assert_array_equal(loaded.encode(x), rq_model.encode(x))
    np.testing.assert_array_equal(loaded.decode(rq_model.encode(x)), rq_model.decode(rq_model.encode(x)))
    assert loaded.save(tmp_path / "again.safetensors") == sha  # deterministic bytes


def test_config_is_json_metadata(tmp_path, rq_model):
    path = tmp_path / "m.safetensors"
    rq_model.save(path)
    data = path.read_bytes()
    header = json.loads(data[8:8 + struct.unpack("<Q", data[:8])[0]])
    config = json.loads(header["__metadata__"]["config"])
    for key in ("arch", "dim", "M", "K", "L", "hidden", "embed", "A", "B", "train_A", "preset"):
        assert key in config
    assert "version" not in config  # the writing release is not part of the model's identity
    assert header["__metadata__"]["format_version"] == "1.1"
    assert "std" in header and "mean" in header  # normalisation travels with the weights


def test_float16_weights_halve_the_file(rq_model):
    assert len(model_to_bytes(rq_model, "float16")) < 0.6 * len(model_to_bytes(rq_model))


def _write_model(path, tensors, config):
    config = config.to_dict() if hasattr(config, "to_dict") else config
    meta = {"format": "qinco-codec-model", "config": json.dumps(config)}
    path.write_bytes(st_save(tensors, metadata=meta))
    return path


@pytest.fixture
def small_model():
    return qinco_codec.QincoModel.from_preset("qinco2-XS", 8, 2, K=16)


def test_nan_weights_are_refused(tmp_path, small_model):
    sd = {k: v.clone() for k, v in small_model.state_dict().items()}
    sd["codebook0"][0, 0] = float("nan")
    p = _write_model(tmp_path / "m.safetensors", sd, small_model.config)
    with pytest.raises(ModelFormatError, match="NaN"):
        qinco_codec.load_model(p)


def test_wrong_shapes_for_config_are_refused(tmp_path, small_model):
    sd = {k: v.clone() for k, v in small_model.state_dict().items()}
    sd["codebook0"] = torch.zeros(16, 9)
    p = _write_model(tmp_path / "m.safetensors", sd, small_model.config)
    with pytest.raises(ModelFormatError, match="codebook0"):
        qinco_codec.load_model(p)


def test_huge_config_is_refused_before_allocating(tmp_path, small_model):
    config = dict(small_model.config.to_dict(), dim=60000, K=65536, M=1000)
    p = _write_model(tmp_path / "m.safetensors", dict(small_model.state_dict()), config)
    with pytest.raises(ModelFormatError, match="describes a model of at least .* bytes of tensor data"):
        qinco_codec.load_model(p)


def test_an_unknown_preset_name_is_informational(tmp_path, small_model):
    p = _write_model(tmp_path / "m.safetensors", dict(small_model.state_dict()),
                     {**small_model.config.to_dict(), "preset": "someone-elses-recipe"})
    assert qinco_codec.load_model(p).config.preset == "someone-elses-recipe"


@pytest.mark.parametrize("change,msg", [
    ({"arch": "qinco9"}, "'arch' must be one of"),
    ({"K": 100}, "power of two"),
    ({"M": "8"}, "'M' must be an integer"),
    ({"dim": -1}, r"'dim' must be in \[1, 65536\], got -1"),
    ({"share_steps": "yes"}, "'share_steps' must be true or false"),
])
def test_bad_configs_are_refused(tmp_path, small_model, change, msg):
    p = _write_model(tmp_path / "m.safetensors", dict(small_model.state_dict()), {**small_model.config.to_dict(), **change})
    with pytest.raises(ModelFormatError, match=msg):
        qinco_codec.load_model(p)


@pytest.mark.parametrize("data,msg", [
    (b"", "not a safetensors"),
    (struct.pack("<Q", 1 << 40) + b"{}", "header length"),
    (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
    (struct.pack("<Q", 3) + b"{x}", "not valid JSON"),
    (struct.pack("<Q", 2) + b"{}", "not a qinco-codec model"),
    (b"\x80\x04\x95" + b"\x00" * 40, "header length|not"),  # a pickle is never unpickled
])
def test_malformed_files_are_refused(tmp_path, data, msg):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(data)
    with pytest.raises(ModelFormatError, match=msg):
        qinco_codec.load_model(p)


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelFormatError, match="no such model file"):
        qinco_codec.load_model(tmp_path / "nope.safetensors")
