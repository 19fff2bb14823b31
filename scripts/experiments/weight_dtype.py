"""What storing a model's weights in float16 or bfloat16 costs in MSE, and what it and a decode-only
file save in bytes (issue 13).

For each data set and rate: a model of the default preset is trained for a short budget (or read
back from --out when it is already there, with --reuse), then stored as float32, float16 and
bfloat16 (`serialize.model_to_bytes`), each full and decode-only (no pre-selection codebooks),
and each file is read back (`serialize.model_from_bytes`, the reader every user goes through).
On held-out vectors, per stored precision:

- `mse_reencoded`: encode and decode with the reloaded model, what `qinco_codec.compress` does
  (it encodes with exactly the weights the file will decode with);
- `mse_cross`: the float32 model's codes decoded by the reloaded model (codes written by a
  float32 model and decoded from a rounded copy of it);
- `same_codes`: the share of vectors whose codes equal the float32 model's;
- `decode_only_identical`: whether the decode-only file of that precision decodes those codes
  to exactly the same floats as the full one.

Bytes are the safetensors files' lengths; the faiss RQ codebooks at the same rate (M x K x d
float32) and the effective bytes per vector at 100k, 1M and 10M vectors (codes plus model / n)
are given beside them.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE nice .venv/bin/python scripts/experiments/weight_dtype.py \\
        --out out/weight-dtype --minutes 3 --sets glove50:8,glove50:16,minilm384:16
    # a model trained elsewhere, measured on a set's held-out vectors (no training):
    ... weight_dtype.py --out out/weight-dtype --sets '' --model glove50=model.safetensors
"""
import argparse
import json
import os
import time

import numpy as np

DTYPES = ("float32", "float16", "bfloat16")
COLLECTIONS = (100_000, 1_000_000, 10_000_000)
MINILM_DIR = "out/minilm384"


def load_set(name, n_eval):
    """(train, held-out) vectors of a data set: GloVe-50 train / base splits, or the MiniLM-384
    set's train.npy / base.npy (scripts/examples/README-sentence-embeddings.md)."""
    if name == "glove50":
        from qinco_codec import datasets

        return datasets.glove50("train"), datasets.glove50("base")[:n_eval]
    if name == "minilm384":
        paths = [os.path.join(MINILM_DIR, f) for f in ("train.npy", "base.npy")]
        missing = [p for p in paths if not os.path.exists(p)]
        if missing:
            raise SystemExit(f"weight_dtype.py: {missing[0]} not found (see "
                             "scripts/examples/README-sentence-embeddings.md)")
        train, base = (np.ascontiguousarray(np.load(p), dtype=np.float32) for p in paths)
        return train, base[:n_eval]
    raise SystemExit(f"weight_dtype.py: unknown set {name!r}; expected glove50 or minilm384")


def trained_model(name, nbytes, train, minutes, out, reuse, seed):
    """The float32 model for (set, rate): read from out/NAME-BYTESB.safetensors with --reuse,
    else trained for `minutes` and saved there. Returns (model, description)."""
    from qinco_codec import train as train_model
    from qinco_codec.serialize import load_model, save_model

    path = os.path.join(out, f"{name}-{nbytes}B.safetensors")
    if reuse and os.path.exists(path):
        return load_model(path), f"read from {path}"
    t0 = time.perf_counter()
    model = train_model(train, steps=nbytes, max_minutes=minutes, seed=seed, quiet=True)
    seconds = time.perf_counter() - t0
    save_model(model, path)
    info = model.config.trained or {}
    return model, (f"trained {seconds:.0f} s on {len(train):,} vectors ({info.get('epochs')} epochs, "
                   f"validation MSE {info.get('val_mse', float('nan')):.4g}), saved to {path}")


def weight_range(model):
    """Largest |weight| (float16 stops at 65504: a larger one would be stored as inf, and the file
    refused when read) and the share of non-zero weights below float16's smallest normal number
    (6.1e-5), which float16 keeps with fewer significant bits."""
    import torch

    w = torch.cat([t.detach().flatten().abs() for n, t in model.state_dict().items()
                   if t.is_floating_point() and n not in ("mean", "std")])
    nonzero = w[w > 0]
    tiny = torch.finfo(torch.float16).tiny
    return {"max_abs_weight": float(w.max()),
            "float16_subnormal_share": float((nonzero < tiny).float().mean()) if len(nonzero) else 0.0}


def measure(model, x):
    """One record per stored precision (see the module docstring)."""
    from qinco_codec.evaluation import mse
    from qinco_codec.serialize import model_from_bytes, model_to_bytes

    codes32 = model.encode(x)
    out = []
    for dtype in DTYPES:
        data = model_to_bytes(model, dtype)
        bare = model_to_bytes(model, dtype, decode_only=True)
        reloaded = model_from_bytes(data)
        codes = codes32 if dtype == "float32" else reloaded.encode(x)
        recon = reloaded.decode(codes)
        out.append({"weight_dtype": dtype, "model_bytes": len(data), "decode_only_bytes": len(bare),
                    "decode_only_saving": 1.0 - len(bare) / len(data),
                    "decode_only_identical": bool(np.array_equal(model_from_bytes(bare).decode(codes), recon)),
                    "mse_reencoded": mse(x, recon),
                    "mse_cross": mse(x, reloaded.decode(codes32)),
                    "same_codes": float((codes == codes32).all(1).mean())})
    base = out[0]
    for r in out:
        r["mse_reencoded_ratio"] = r["mse_reencoded"] / base["mse_reencoded"]
        r["mse_cross_ratio"] = r["mse_cross"] / base["mse_reencoded"]
        r["bytes_ratio"] = r["model_bytes"] / base["model_bytes"]
        r["bytes_per_vector"] = {str(n): model.bytes_per_vector + r["decode_only_bytes"] / n
                                 for n in COLLECTIONS}
    return out


def markdown(run):
    """The records of one (set, rate) run as a Markdown table."""
    lines = [f"**{run['set']}, {run['bytes']} B/vector** ({run['model']}; {run['n_eval']:,} held-out "
             f"vectors; faiss RQ codebooks at this rate: {run['rq_codebook_bytes']:,} bytes)", "",
             "| weights | model bytes | x float32 | decode-only bytes | decode-only saves | "
             "held-out MSE (re-encoded) | x float32 | MSE of float32 codes | x float32 | same codes | "
             "B/vector at 100k / 1M / 10M (decode-only) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    same = all(r["decode_only_identical"] for r in run["records"])
    lines[0] += ("; decode-only files decode " + ("bit-identically" if same else "DIFFERENTLY")
                 + f"; largest |weight| {run['max_abs_weight']:.3g}, "
                 f"{100 * run['float16_subnormal_share']:.3f}% of non-zero weights below float16's normal range")
    for r in run["records"]:
        bpv = " / ".join(f"{v:.3f}" for v in r["bytes_per_vector"].values())
        lines.append(f"| {r['weight_dtype']} | {r['model_bytes']:,} | {r['bytes_ratio']:.3f} | "
                     f"{r['decode_only_bytes']:,} | {100 * r['decode_only_saving']:.1f}% | "
                     f"{r['mse_reencoded']:.5f} | {r['mse_reencoded_ratio']:.5f} | {r['mse_cross']:.5f} | "
                     f"{r['mse_cross_ratio']:.5f} | {100 * r['same_codes']:.2f}% | {bpv} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="glove50:8,glove50:16,minilm384:16",
                    help="SET:BYTES pairs (SET: glove50 or minilm384)")
    ap.add_argument("--minutes", type=float, default=3.0, help="training budget per model")
    ap.add_argument("--n-eval", type=int, default=20000, help="held-out vectors (at most)")
    ap.add_argument("--out", default="out/weight-dtype", help="models and results.json go here")
    ap.add_argument("--reuse", action="store_true", help="read models already in --out instead of training")
    ap.add_argument("--model", action="append", default=[], metavar="SET=PATH",
                    help="also measure this model file on SET's held-out vectors (repeatable)")
    ap.add_argument("--json", default=None, help="results file (default: OUT/results.json)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    jobs = [("train", *item.partition(":")[::2]) for item in args.sets.split(",") if item]
    jobs += [("file", *item.partition("=")[::2]) for item in args.model]
    runs = []
    for kind, name, arg in jobs:
        train, x = load_set(name, args.n_eval)
        if kind == "train":
            model, desc = trained_model(name, int(arg), train, args.minutes, args.out, args.reuse, args.seed)
        else:
            from qinco_codec.serialize import load_model

            model = load_model(arg)
            info = model.config.trained or {}
            desc = f"model file {arg} ({info.get('epochs', '?')} epochs, validation MSE {info.get('val_mse', float('nan')):.4g})"
        M, K, d = model.M, model.K, model.dim
        run = {"set": name, "bytes": model.bytes_per_vector, "dim": d, "preset": model.config.preset, "model": desc,
               "n_eval": len(x), "rq_codebook_bytes": 4 * M * K * d, **weight_range(model),
               "records": measure(model, x),
               "load_average": os.getloadavg()}
        runs.append(run)
        print(markdown(run) + "\n", flush=True)
    with open(args.json or os.path.join(args.out, "results.json"), "w") as f:
        json.dump(runs, f, indent=2)


if __name__ == "__main__":
    main()
