"""A decoder written from MODEL-SPEC.md alone (numpy; no torch, no package code) agrees with the
package's decoder: the spec says enough to turn a .qnc file's codes back into vectors."""
import json
import struct

import numpy as np
import pytest
import torch

from qinco_codec.model import QincoModel
from qinco_codec.serialize import model_to_bytes

DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2")}


def read_model(data):
    """(config, {name: float32 array}) from safetensors bytes, per MODEL-SPEC.md sections 1-3."""
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hlen])
    meta = header.pop("__metadata__")
    assert meta["format"] == "qinco-codec-model"
    body = data[8 + hlen:]
    tensors = {}
    for name, t in header.items():
        a, b = t["data_offsets"]
        if t["dtype"] == "BF16":
            raw = np.frombuffer(body[a:b], "<u2").astype(np.uint32) << 16
            arr = raw.view(np.float32)
        else:
            arr = np.frombuffer(body[a:b], DTYPES[t["dtype"]]).astype(np.float32)
        tensors[name] = arr.reshape(t["shape"])
    return json.loads(meta["config"]), tensors


def spec_decode(data, codes):
    """MODEL-SPEC.md section 4, one vector at a time."""
    cfg, T = read_model(data)
    out = []
    for row in codes:
        xhat = T["codebook0"][row[0]].copy()
        for j in range(2, len(row) + 1):
            i = j - 2
            n = 0 if cfg.get("share_steps") else i
            net = lambda part: T.get(f"steps.{n}.{part}")
            c = T[f"steps.{i}.codebook"][row[j - 1]]
            u = net("in_proj.weight") @ c if net("in_proj.weight") is not None else c
            z = u + net("concat.weight") @ np.concatenate([u, xhat]) + net("concat.bias")
            for l in range(cfg["L"]):
                z = z + net(f"blocks.{l}.2.weight") @ np.maximum(net(f"blocks.{l}.0.weight") @ z, 0)
            f = z if cfg["arch"] == "qinco1" else c + net("out_proj.weight") @ z
            xhat = xhat + f
        x = xhat * T["std"] + T["mean"]
        if cfg.get("unit_norm"):  # version 1.2: then `requires` lists the feature
            assert "unit_norm" in json.loads(read_requires(data))
            x = x / max(np.linalg.norm(x), np.finfo(np.float32).tiny)
        out.append(x)
    return np.array(out, dtype=np.float32)


def read_requires(data):
    """The metadata `requires` list (a JSON string; absent means "[]")."""
    (hlen,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + hlen])["__metadata__"].get("requires", "[]")


def _model(preset, dim, M, seed, **overrides):
    model = QincoModel.from_preset(preset, dim, M, K=16, **overrides)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        model.mean.copy_(torch.randn(dim, generator=gen))
        model.std.fill_(1.7)
    return model


@pytest.mark.parametrize("preset,dim,overrides,weights", [
    ("qinco1-L2", 6, {"hidden": 8}, "float32"),
    ("qinco2-XS", 12, {"embed": 5, "hidden": 7}, "float32"),     # de < D: in_proj present
    ("qinco2-XS", 5, {"embed": 0, "hidden": 7, "L": 1}, "float32"),  # de = D: no in_proj
    ("qinco2-XS", 12, {"embed": 5, "hidden": 7, "share_steps": True}, "float32"),
    ("qinco2-XS", 12, {"embed": 5, "hidden": 7}, "float16"),
    ("qinco1-L2", 6, {"hidden": 8, "L": 0}, "bfloat16"),
    ("qinco2-XS", 12, {"embed": 5, "hidden": 7, "unit_norm": True}, "float32"),  # version 1.2
])
def test_spec_decoder_matches_the_package(preset, dim, overrides, weights):
    overrides = dict(overrides)
    unit_norm = overrides.pop("unit_norm", False)
    model = _model(preset, dim, 4, seed=len(overrides), **overrides)
    model.config = model.config.replace(unit_norm=unit_norm)
    data = model_to_bytes(model, weights)
    from qinco_codec.serialize import model_from_bytes
    stored = model_from_bytes(data)  # the weights as the file holds them
    codes = np.random.default_rng(0).integers(0, 16, (50, 4))
    for m in (1, 2, 4):
        ours = stored.decode(codes[:, :m], device="cpu")
        spec = spec_decode(data, codes[:, :m])
        err = np.linalg.norm(ours - spec, axis=1) / np.linalg.norm(spec, axis=1)
        assert err.max() < 1e-5, (m, err.max())


def test_spec_decoder_matches_a_decode_only_model_with_an_aux_tensor():
    """MODEL-SPEC.md 0 and 3: without the pre-selection codebooks, and with an auxiliary tensor the
    spec decoder skips, the file decodes to the same vectors."""
    from qinco_codec.serialize import model_from_bytes
    model = _model("qinco2-XS", 12, 4, seed=9, embed=5, hidden=7)
    data = model_to_bytes(model, decode_only=True)
    (hlen,) = struct.unpack("<Q", data[:8])
    header, body = json.loads(data[8:8 + hlen]), data[8 + hlen:]
    header["aux.note"] = {"dtype": "U8", "shape": [3], "data_offsets": [len(body), len(body) + 3]}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    data = struct.pack("<Q", len(text)) + text + body + b"abc"
    stored = model_from_bytes(data)
    assert stored.decode_only
    spec_header = {k: v for k, v in header.items() if not k.startswith("aux.")}
    text = json.dumps(spec_header).encode()
    text += b" " * (-len(text) % 8)
    codes = np.random.default_rng(4).integers(0, 16, (30, 4))
    spec = spec_decode(struct.pack("<Q", len(text)) + text + body, codes)
    ours = stored.decode(codes, device="cpu")
    err = np.linalg.norm(ours - spec, axis=1) / np.linalg.norm(spec, axis=1)
    assert err.max() < 1e-5
