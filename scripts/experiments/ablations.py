"""The paper's ablations, one model per row, same budget, measured on vectors training never saw.

Rows: the baseline recipe; parameters shared across steps; loss on the last step only (against
the sum over prefixes, which also buys the multi-rate prefixes); network depth L; PQ-QINCo (two
independent half-dimension models). With --embed-sweep, QINCo-LR rows: QINCo2's projection of the
data to a lower width de (our form of the low-rank first layer) for high-dimensional data.

    python scripts/experiments/ablations.py --bytes 8 --minutes 5 --device cuda --only baseline shared
"""
import argparse
import json
import pathlib
import sys
import time

import numpy as np

import qinco_codec
from qinco_codec.evaluation import mse
from qinco_codec.serialize import model_to_bytes

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # pq_qinco.py lives beside this script
from pq_qinco import PQQinco  # noqa: E402

ROWS = {
    "baseline": {},
    "shared": {"share_steps": True},
    "last-step-loss": {"last_step_loss": True},
    "L1": {"L": 1},
    "L4": {"L": 4},
    "pq2": {"pq": 2},
}


def run_row(name, settings, xt, xb, args):
    settings = dict(settings)
    t0 = time.time()
    kw = dict(preset=args.preset, max_minutes=args.minutes, device=args.device, quiet=True,
              patience=args.patience)
    nsub = settings.pop("pq", 0)
    if nsub:
        model = PQQinco.train(xt, nsub, args.bytes, **kw, **settings)
        size = sum(len(model_to_bytes(m)) for m in model.models)
        A = model.models[0].config.A
    else:
        model = qinco_codec.train(xt, steps=args.bytes, **kw, **settings)
        size = len(model_to_bytes(model))
        A = model.config.A
    row = {"row": name, "settings": settings | ({"pq": nsub} if nsub else {}),
           "train_s": round(time.time() - t0, 1), "params": model.num_parameters(decoding_only=True),
           "model_bytes": size}
    for B in args.beam:
        codes = model.encode(xb, A=A, B=B, device=args.device)
        row[f"mse_B{B}"] = round(mse(xb, model.decode(codes, device=args.device)), 4)
        if not nsub and B == args.beam[0]:  # the half-rate prefix of the same codes
            half = codes.shape[1] // 2
            row["mse_half_prefix"] = round(mse(xb, model.decode(codes[:, :half], device=args.device)), 4)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="qinco2-XS")
    ap.add_argument("--bytes", type=int, default=8)
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--patience", type=int, default=6)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--train", default=None, help=".npy training vectors (default: GloVe train)")
    ap.add_argument("--base", default=None, help=".npy evaluation vectors (default: GloVe base)")
    ap.add_argument("--n-eval", type=int, default=20000)
    ap.add_argument("--beam", type=int, nargs="*", default=[1, 4])
    ap.add_argument("--only", nargs="*", default=None, help=f"rows to run (default: all of {list(ROWS)})")
    ap.add_argument("--embed-sweep", type=int, nargs="*", default=None,
                    help="QINCo-LR rows: train the preset with these projection widths de instead")
    args = ap.parse_args()
    xt = np.load(args.train) if args.train else qinco_codec.datasets.glove50("train")
    xb = (np.load(args.base) if args.base else qinco_codec.datasets.glove50("base"))[:args.n_eval]
    rows = ({f"de{e}": {"embed": e} for e in args.embed_sweep} if args.embed_sweep
            else {k: v for k, v in ROWS.items() if args.only is None or k in args.only})
    for name, settings in rows.items():
        print(json.dumps(run_row(name, settings, xt, xb, args)), flush=True)


if __name__ == "__main__":
    main()
