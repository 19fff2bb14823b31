"""Compress-a-collection with the model counted, from a `qinco-bench rd --save-models` run: our
file (codes plus the embedded model as qinco-compress writes it: float16, decode-only) against
faiss RQ's file at the same MSE (codes plus float16 codebooks), per vector at several n, and the
collection size from which ours is the smaller file.

faiss RQ's rate at our MSE is interpolated between the two RQ rates of the run that bracket it,
log-linearly in MSE (RQ's error falls about geometrically with its steps: measured 16 and 32 B);
a MSE outside the measured RQ rates is reported as such, not extrapolated.

    python scripts/experiments/collection_bytes.py docs/rd-minilm384-20min
"""
import argparse
import json
import math
import os

from qinco_codec import load_model
from qinco_codec.sizing import model_file_bytes

K = 256
SIZES = (100_000, 1_000_000, 10_000_000)


def rq_bytes_at(mse, rq):
    """faiss RQ's bytes per vector reaching `mse`, from its measured (bytes, mse) points, or None."""
    pts = sorted(rq)
    for (b0, m0), (b1, m1) in zip(pts, pts[1:]):
        if m1 <= mse <= m0:
            return b0 + (b1 - b0) * math.log(m0 / mse) / math.log(m0 / m1)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="the --out directory of a qinco-bench rd --save-models run")
    args = ap.parse_args()
    result = json.load(open(os.path.join(args.run, "rd.json")))
    d, n_eval = result["settings"]["dim"], result["settings"]["n_eval"]
    rq = [(r["bytes"], r["mse"]) for r in result["rows"] if r["method"].startswith("RQ")]
    sizes = (n_eval,) + SIZES
    head = ["row", "B/vec", "MSE", "model bytes (f16, decode-only)", "faiss RQ B/vec at this MSE"]
    head += [f"ours / RQ file, n={n:,}" for n in sizes] + ["crossover n"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in result["rows"]:
        if r.get("family") != "qinco" or r.get("beam_of"):
            continue
        top = r.get("prefix_of") or r["bytes"]
        path = os.path.join(args.run, "models", f"{r['params']['preset']}-{top}B.safetensors")
        model = load_model(path)
        # a prefix row counts the whole model (conservative: its later steps are not needed)
        ours_model = model_file_bytes(model.config, "float16", decode_only=True)
        b_rq = rq_bytes_at(r["mse"], rq)
        cells = [r["method"], str(r["bytes"]), f"{r['mse']:.4f}", f"{ours_model:,}"]
        if b_rq is None:
            print("| " + " | ".join(cells + ["outside the measured RQ rates"] + [""] * (len(sizes) + 1)) + " |")
            continue
        rq_model = b_rq * K * d * 2
        ratios = [(r["bytes"] + ours_model / n) / (b_rq + rq_model / n) for n in sizes]
        cross = (ours_model - rq_model) / (b_rq - r["bytes"]) if b_rq > r["bytes"] else math.inf
        cells += [f"{b_rq:.2f}"] + [f"{x:.3f}" for x in ratios]
        cells += ["never" if math.isinf(cross) else f"{max(cross, 0):,.0f}"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
