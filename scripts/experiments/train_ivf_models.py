"""Train the models an IVF-QINCo search comparison needs, with the coarse centroids they go with.

`qinco-bench search --ivf-variants residual` needs a model trained on the residuals x - c(x) of
the training set to its nearest coarse centroid, and the centroids themselves (`--ivf-centroids`),
so that the bench's lists are the ones the model was trained for. This writes, for one rate:

    PREFIX-centroids.npy          k-means centroids (nlist, d) on the training split (seed 0)
    PREFIX-residual.safetensors   the model trained on train - c(train)     (--kind residual)
    PREFIX-plain.safetensors      the same recipe trained on train itself   (--kind plain)

Run the two kinds as two processes (one thread each) so that they train side by side:

    python scripts/experiments/train_ivf_models.py --data-dir out/glove --bytes 8 --nlist 1024 \\
        --epochs 150 --kind residual --out out/search-models/glove50-8B
"""
import argparse
import os

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True, help="holds train.npy")
    ap.add_argument("--bytes", type=int, default=8)
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--preset", default="qinco2-XS")
    ap.add_argument("--kind", choices=("plain", "residual"), required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True, help="prefix of the files written")
    args = ap.parse_args()

    import torch

    from qinco_codec import train
    from qinco_codec.search.ivf import assign, train_coarse
    from qinco_codec.serialize import save_model

    torch.set_num_threads(args.threads)
    xt = np.ascontiguousarray(np.load(os.path.join(args.data_dir, "train.npy")), dtype=np.float32)
    fit_on = xt
    if args.kind == "residual":
        path = f"{args.out}-centroids.npy"
        if os.path.exists(path):
            centroids = np.load(path)
        else:
            centroids = train_coarse(xt, args.nlist, seed=0)
            np.save(path, centroids)
        fit_on = np.ascontiguousarray(xt - centroids[assign(xt, centroids)])
    model = train(fit_on, preset=args.preset, steps=args.bytes, epochs=args.epochs, seed=0)
    save_model(model, f"{args.out}-{args.kind}.safetensors")
    print(args.kind, model.config.trained)


if __name__ == "__main__":
    main()
