"""Model format 1.1 (MODEL-SPEC.md sections 0-3): versions and features, optional tensors,
decode-only models, what a model's identity covers, and the dtype and layout rules a reader
enforces."""
import json
import struct

import numpy as np
import pytest
import torch

import qinco_codec
from qinco_codec.errors import InputError, ModelFormatError
from qinco_codec.model import QincoModel
from qinco_codec.serialize import model_from_bytes, model_to_bytes, sha256_hex


@pytest.fixture(scope="module")
def model():
    m = QincoModel.from_preset("qinco2-XS", 10, 4, K=32, embed=6, hidden=8)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    m.set_normalization(torch.randn(10, generator=g), 1.3)
    return m


def split(data):
    """(header dict, tensor bytes) of a safetensors file."""
    hlen = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + hlen]), data[8 + hlen:]


def join(header, body):
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + body


def with_meta(data, **changes):
    header, body = split(data)
    header["__metadata__"].update(changes)
    return join(header, body)


# ---------------------------------------------------------------- versions and features
def test_the_writer_says_format_1_1(model):
    header, _ = split(model_to_bytes(model))
    assert header["__metadata__"]["format_version"] == "1.1"


def test_a_file_without_format_version_is_1_0_and_loads(model):
    header, body = split(model_to_bytes(model))
    del header["__metadata__"]["format_version"]
    config = json.loads(header["__metadata__"]["config"])
    config["version"] = "0.3.0"    # what releases before 1.1 wrote
    header["__metadata__"]["config"] = json.dumps(config)
    loaded = model_from_bytes(join(header, body))
    assert loaded.config.other["version"] == "0.3.0"
    codes = np.random.default_rng(0).integers(0, 16, (20, 4))
    np.testing.assert_array_equal(loaded.decode(codes), model.decode(codes))


@pytest.mark.parametrize("version,msg", [("2.0", "version 2.0 is not supported"),
                                         ("1", "must be 'MAJOR.MINOR'"), ("x.y", "must be 'MAJOR.MINOR'")])
def test_other_major_versions_are_refused(model, version, msg):
    with pytest.raises(ModelFormatError, match=msg):
        model_from_bytes(with_meta(model_to_bytes(model), format_version=version))


def test_a_later_minor_version_loads(model):
    assert model_from_bytes(with_meta(model_to_bytes(model), format_version="1.7")).M == 4


def test_an_unknown_required_feature_is_refused_by_name(model):
    data = with_meta(model_to_bytes(model), requires=json.dumps(["ivf-first-step"]))
    with pytest.raises(ModelFormatError, match="requires features this reader does not implement: ivf-first-step"):
        model_from_bytes(data)
    assert model_from_bytes(with_meta(model_to_bytes(model), requires="[]")).M == 4
    with pytest.raises(ModelFormatError, match="'requires' must be a JSON list of strings"):
        model_from_bytes(with_meta(model_to_bytes(model), requires="ivf"))


def test_unknown_config_keys_are_ignored_and_kept(model):
    header, body = split(model_to_bytes(model))
    config = json.loads(header["__metadata__"]["config"])
    config["notes"] = {"by": "a later minor version"}
    header["__metadata__"]["config"] = json.dumps(config, sort_keys=True)
    loaded = model_from_bytes(join(header, body))
    assert loaded.config.other["notes"] == {"by": "a later minor version"}
    assert json.loads(loaded.config.to_json())["notes"] == {"by": "a later minor version"}


# ---------------------------------------------------------------- optional tensors
def test_auxiliary_tensors_are_ignored(model):
    header, body = split(model_to_bytes(model))
    extra = np.arange(6, dtype="<i4").tobytes()   # any dtype: the reader does not use it
    header["aux.ivf.centroids"] = {"dtype": "I32", "shape": [2, 3],
                                   "data_offsets": [len(body), len(body) + len(extra)]}
    loaded = model_from_bytes(join(header, body + extra))
    codes = np.random.default_rng(1).integers(0, 16, (20, 4))
    np.testing.assert_array_equal(loaded.decode(codes), model.decode(codes))


def test_an_unknown_tensor_outside_aux_is_refused(model):
    header, body = split(model_to_bytes(model))
    extra = np.zeros(3, "<f4").tobytes()
    header["steps.0.shortlist"] = {"dtype": "F32", "shape": [3], "data_offsets": [len(body), len(body) + 12]}
    with pytest.raises(ModelFormatError, match="tensors do not match the config"):
        model_from_bytes(join(header, body + extra))


def test_decode_only_model_decodes_bit_identically_and_refuses_to_preselect(model, tmp_path):
    full, bare = model_to_bytes(model), model_to_bytes(model, decode_only=True)
    assert len(bare) < len(full) and sha256_hex(bare) != sha256_hex(full)
    assert not any(k.endswith("preselect") for k in split(bare)[0])
    loaded = model_from_bytes(bare)
    assert loaded.decode_only and not model_from_bytes(full).decode_only
    x = np.random.default_rng(2).standard_normal((50, 10)).astype(np.float32)
    codes = model.encode(x)
    for m in (1, 2, 4):
        np.testing.assert_array_equal(loaded.decode(codes, steps=m), model.decode(codes, steps=m))
    with pytest.raises(InputError, match="decode-only model .* cannot pre-select A=16 candidates"):
        loaded.encode(x)  # the preset default: A=16 of K=32
    np.testing.assert_array_equal(loaded.encode(x, A=0), model.encode(x, A=0))
    path = tmp_path / "bare.safetensors"
    qinco_codec.QincoModel.save(loaded, path)
    assert path.read_bytes() == bare   # a decode-only model saves as itself


def test_preselect_codebooks_are_all_or_none(model):
    header, body = split(model_to_bytes(model))
    a, b = header.pop("steps.1.preselect")["data_offsets"]
    for k, v in header.items():
        if k != "__metadata__" and v["data_offsets"][0] >= b:
            v["data_offsets"] = [v["data_offsets"][0] - (b - a), v["data_offsets"][1] - (b - a)]
    with pytest.raises(ModelFormatError, match=r"32 tensors, it implies 33 \(or 30 without pre-selection codebooks\)"):
        model_from_bytes(join(header, body[:a] + body[b:]))


# ---------------------------------------------------------------- identity
def test_the_id_does_not_depend_on_the_writing_release(model, monkeypatch):
    import qinco_codec._version as version
    before = sha256_hex(model_to_bytes(model))
    monkeypatch.setattr(version, "__version__", "99.0.0")
    assert sha256_hex(model_to_bytes(model)) == before
    assert sha256_hex(model_to_bytes(model_from_bytes(model_to_bytes(model)))) == before


def test_the_id_covers_encoder_defaults_and_weight_dtype(model):
    base = sha256_hex(model_to_bytes(model))
    other = QincoModel(model.config.replace(B=8))
    other.load_state_dict(model.state_dict())
    assert sha256_hex(model_to_bytes(other)) != base
    assert sha256_hex(model_to_bytes(model, "float16")) != base


# ---------------------------------------------------------------- dtype and layout rules
def _retyped(data, name, dtype, np_dtype):
    header, body = split(data)
    tensors = {}
    for k, v in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0] if kv[0] != "__metadata__" else -1):
        if k == "__metadata__":
            continue
        raw = body[v["data_offsets"][0]:v["data_offsets"][1]]
        if k == name:
            raw = np.frombuffer(raw, "<f4").astype(np_dtype).tobytes()
            v["dtype"] = dtype
        tensors[k] = (v, raw)
    new, offset = b"", 0
    for k, (v, raw) in tensors.items():
        v["data_offsets"] = [offset, offset + len(raw)]
        new += raw
        offset += len(raw)
        header[k] = v
    return join(header, new)


@pytest.mark.parametrize("name,dtype,np_dtype,msg", [
    ("codebook0", "F64", "<f8", "stored as F64; expected F32 or F16 or BF16"),
    ("codebook0", "I32", "<i4", "stored as I32"),
    ("mean", "F16", "<f2", "'mean' is stored as F16; expected F32"),
    ("std", "F16", "<f2", "'std' is stored as F16; expected F32"),
])
def test_dtypes_the_format_does_not_allow_are_refused(model, name, dtype, np_dtype, msg):
    with pytest.raises(ModelFormatError, match=msg):
        model_from_bytes(_retyped(model_to_bytes(model), name, dtype, np_dtype))


@pytest.mark.parametrize("dtype", ["F8_E4M3", "F8_E5M2", "F8_E4M3FNUZ", "F8_E5M2FNUZ"])
def test_float8_tensors_are_refused_before_loading(model, dtype):
    header, body = split(model_to_bytes(model))
    entry = header["codebook0"]
    entry["dtype"] = dtype
    with pytest.raises(ModelFormatError, match=f"codebook0.*{dtype}|holds .* bytes"):
        model_from_bytes(join(header, body))


def test_std_must_be_positive(model):
    header, body = split(model_to_bytes(model))
    a, b = header["std"]["data_offsets"]
    body = body[:a] + struct.pack("<f", 0.0) + body[b:]
    with pytest.raises(ModelFormatError, match="'std' is 0.0; it must be > 0"):
        model_from_bytes(join(header, body))


def test_trailing_bytes_are_refused(model):
    with pytest.raises(ModelFormatError, match="4 bytes after the last tensor's data"):
        model_from_bytes(model_to_bytes(model) + b"\0\0\0\0")


def test_gaps_and_overlaps_are_refused(model):
    header, body = split(model_to_bytes(model))
    first = min((v["data_offsets"][0], k) for k, v in header.items() if k != "__metadata__")[1]
    gapped = json.loads(json.dumps(header))
    for k, v in gapped.items():
        if k != "__metadata__":
            v["data_offsets"] = [v["data_offsets"][0] + 4, v["data_offsets"][1] + 4]
    with pytest.raises(ModelFormatError, match=f"starts at data byte 4, expected 0"):
        model_from_bytes(join(gapped, b"\0" * 4 + body))
    overlapping = json.loads(json.dumps(header))
    second = sorted((v["data_offsets"][0], k) for k, v in header.items() if k != "__metadata__")[1][1]
    a, b = overlapping[second]["data_offsets"]
    overlapping[second]["data_offsets"] = [a - 4, b - 4]
    with pytest.raises(ModelFormatError, match="packed without gaps or overlaps|bytes after"):
        model_from_bytes(join(overlapping, body))
    assert first


def test_a_device_as_model_path_is_refused_without_reading_it():
    """--model /dev/zero read until memory ran out (issue 17, bug 8): only regular files are read."""
    with pytest.raises(ModelFormatError, match="not a regular file .*: /dev/zero"):
        qinco_codec.load_model("/dev/zero")

