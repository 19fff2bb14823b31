"""Train one model with given recipe settings and report its MSE on unseen vectors.

A research helper for the training recipe (issue 6): every choice is judged on vectors training
never saw (GloVe-50 'base' by default), greedy and with beam search, next to the model's own RQ
start. Data comes from qinco_codec.datasets, or from .npy files given with --train/--base.

    python scripts/experiments/recipe_probe.py --preset qinco2-XS --bytes 8 --minutes 5 --device cuda
"""
import argparse
import json
import time

import numpy as np

import qinco_codec
from qinco_codec.evaluation import mse


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="qinco2-XS")
    ap.add_argument("--bytes", type=int, default=8)
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--train", default=None, help=".npy of training vectors (default: GloVe train)")
    ap.add_argument("--base", default=None, help=".npy of evaluation vectors (default: GloVe base)")
    ap.add_argument("--n-eval", type=int, default=20000)
    ap.add_argument("--beam", type=int, nargs="*", default=[1, 4, 16])
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="train() keyword arguments or preset overrides, e.g. lr=1e-3 batch_size=4096 L=4")
    args = ap.parse_args()
    xt = np.load(args.train) if args.train else qinco_codec.datasets.glove50("train")
    xb = np.load(args.base) if args.base else qinco_codec.datasets.glove50("base")
    xb = xb[:args.n_eval]
    extra = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        extra[k] = json.loads(v) if v[:1].isdigit() or v[:1] in "-[{" or v in ("true", "false") else v
    t0 = time.time()
    history = []
    model = qinco_codec.train(xt, preset=args.preset, steps=args.bytes, max_minutes=args.minutes,
                              device=args.device, quiet=True, on_epoch=history.append, **extra)
    secs = time.time() - t0
    from qinco_codec.model import QincoModel
    from qinco_codec.rq_init import init_from_rq
    rq = init_from_rq(QincoModel.from_preset(args.preset, xt.shape[1], model.M), xt, seed=0)
    out = {"preset": args.preset, "bytes": args.bytes, "minutes": args.minutes, "set": extra,
           "train_seconds": round(secs, 1), "epochs": len(history),
           "params": model.num_parameters(decoding_only=True)}
    for B in args.beam:
        A = model.config.A
        got = mse(xb, model.decode(model.encode(xb, A=A, B=B, device=args.device), device=args.device))
        ref = mse(xb, rq.decode(rq.encode(xb, A=0, B=B, device=args.device), device=args.device))
        out[f"mse_B{B}"], out[f"rq_mse_B{B}"], out[f"ratio_B{B}"] = round(got, 4), round(ref, 4), round(got / ref, 4)
    if history:
        out["last_epochs"] = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in h.items()}
                              for h in history[-3:]]
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
