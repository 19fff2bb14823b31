"""MSE on the 5,000 base vectors: our model's codes (from the bench cache) at 8 and 16 B, against
faiss RQ (beam 5, as the bench builds it) trained on train.npy at 8 and 16 B.
Needs out/minilm384/ and the model and code cache of the BENCHMARKS commands. From the
repository root: OMP_NUM_THREADS=1 nice .venv/bin/python docs/search-minilm384/mse_check.py"""
import time, numpy as np, faiss
from qinco_codec.serialize import load_model
faiss.omp_set_num_threads(1)
base = np.load("out/minilm384/base.npy"); train = np.load("out/minilm384/train.npy")
m = load_model("out/search-models/minilm384-qinco2-XS-16B.safetensors")
codes = np.load("out/search-minilm384/cache/codes-2e0d7dc5054f485a-e9773f6ca904b154-ANone-BNone.npy")
for steps in (8, 16):
    dec = np.asarray(m.decode(np.ascontiguousarray(codes[:, :steps])), dtype=np.float32)
    print(f"ours {steps} B prefix: MSE {((dec - base) ** 2).sum(1).mean():.4f}", flush=True)
for M in (8, 16):
    t = time.time()
    rq = faiss.IndexResidualQuantizer(384, M, 8)
    rq.train(train); rq.add(base)
    dec = rq.reconstruct_n(0, len(base))
    print(f"faiss RQ{M} beam {rq.rq.max_beam_size}: MSE {((dec - base) ** 2).sum(1).mean():.4f} "
          f"({time.time() - t:.0f} s)", flush=True)
