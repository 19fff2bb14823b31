"""Check that a refactor changed no bytes: `make DIR` writes model files, .qnc files, codes and
decoded vectors from randomly perturbed models of every architecture variant; `check DIR` (run on
the new code) reloads them and asserts that models load, files decode, and fresh encodes and decodes
are bit-identical to what was recorded.

    python scripts/experiments/refactor_identity.py make /tmp/ref     # on the old code
    python scripts/experiments/refactor_identity.py check /tmp/ref    # on the new code
"""
import sys
from pathlib import Path

import numpy as np
import torch

import qinco_codec as qc
from qinco_codec.model import QincoModel
from qinco_codec.serialize import load_model, save_model

VARIANTS = {  # name -> (preset, dim, M, K, overrides)
    "q1-L2-d24-M4-K16": ("qinco1-L2", 24, 4, 16, {}),
    "q1-L0-d12-M3-K32": ("qinco1-L2", 12, 3, 32, {"L": 0}),
    "q2xs-d50-M6-K256": ("qinco2-XS", 50, 6, 256, {}),
    "q2xs-share-d20-M5-K64": ("qinco2-XS", 20, 5, 64, {"share_steps": True}),
    "q2-noproj-d16-M3-K16": ("qinco2-XS", 16, 3, 16, {"embed": 0, "hidden": 24}),
    "q2-K512-d10-M3": ("qinco2-XS", 10, 3, 512, {"embed": 8, "hidden": 16}),
    "q2-M1-d8": ("qinco2-XS", 8, 1, 16, {}),
}
SEARCHES = ((0, 1), (4, 1), (4, 3), (0, 2))


def perturbed(preset, dim, M, K, overrides, seed):
    model = QincoModel.from_preset(preset, dim, M, K, **overrides)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    model.set_normalization(torch.randn(dim, generator=g), 1.7)
    return model


def run(model, x):
    out = {}
    for A, B in SEARCHES:
        codes = model.encode(x, A=A, B=B)
        out[f"codes_A{A}_B{B}"] = codes
    codes = out["codes_A0_B1"]
    for m in range(1, model.M + 1):
        out[f"decode_m{m}"] = model.decode(codes, steps=m)
    return out


def make(d):
    d.mkdir(parents=True, exist_ok=True)
    for i, (name, (preset, dim, M, K, ov)) in enumerate(VARIANTS.items()):
        model = perturbed(preset, dim, M, K, ov, seed=i)
        x = np.random.default_rng(i).standard_normal((300, dim)).astype(np.float32) * 2
        np.save(d / f"{name}.x.npy", x)
        save_model(model, d / f"{name}.safetensors")
        save_model(model, d / f"{name}.f16.safetensors", weight_dtype="float16")
        model = load_model(d / f"{name}.safetensors")
        np.savez(d / f"{name}.out.npz", **run(model, x))
        qc.compress(x, d / f"{name}.qnc", model=str(d / f"{name}.safetensors"), quiet=True)
        print("made", name)


def check(d):
    bad = 0
    for name in VARIANTS:
        x = np.load(d / f"{name}.x.npy")
        ref = np.load(d / f"{name}.out.npz")
        model = load_model(d / f"{name}.safetensors")
        load_model(d / f"{name}.f16.safetensors")
        got = run(model, x)
        for key in ref.files:
            if not np.array_equal(ref[key], got[key]):
                bad += 1
                print("DIFFERS", name, key)
        with qc.open(d / f"{name}.qnc") as f:
            if not np.array_equal(f.codes(), ref["codes_A0_B1"][:, :f.codes().shape[1]]) and \
                    not np.array_equal(f.codes(), model.encode(x)):
                bad += 1
                print("DIFFERS", name, "qnc codes")
            if not np.array_equal(f.decode(), model.decode(f.codes())):
                bad += 1
                print("DIFFERS", name, "qnc decode")
        print("checked", name, len(ref.files), "arrays")
    print("all identical" if not bad else f"{bad} differences")
    return 1 if bad else 0


if __name__ == "__main__":
    mode, path = sys.argv[1], Path(sys.argv[2])
    sys.exit(make(path) if mode == "make" else check(path))
