"""R@1/R@10 with 2,000 extra queries (train.npy rows 0-1999; the quantizers saw them in training,
the base did not) for our full decode (the bench's cached codes) and faiss RQ exhaustive (beam 5)
at 8 and 16 B: exact search over each method's reconstructions of the 5,000 base vectors.
Needs out/minilm384/ and the model and code cache of the BENCHMARKS commands. From the
repository root: OMP_NUM_THREADS=1 nice .venv/bin/python docs/search-minilm384/recall_check.py"""
import time, numpy as np, faiss
from qinco_codec.serialize import load_model
faiss.omp_set_num_threads(1)
base = np.load("out/minilm384/base.npy"); train = np.load("out/minilm384/train.npy")
q = np.ascontiguousarray(train[:2000]); orig_q = np.load("out/minilm384/query.npy")
def knn(db, qq, k):
    ix = faiss.IndexFlatL2(db.shape[1]); ix.add(np.ascontiguousarray(db, dtype=np.float32))
    return ix.search(qq, k)[1]
def rec(db, qq):
    gt = knn(base, qq, 1)[:, 0]; I = knn(db, qq, 10)
    return (I[:, 0] == gt).mean(), (I == gt[:, None]).any(1).mean()
m = load_model("out/search-models/minilm384-qinco2-XS-16B.safetensors")
codes = np.load("out/search-minilm384/cache/codes-2e0d7dc5054f485a-e9773f6ca904b154-ANone-BNone.npy")
for steps in (8, 16):
    dec = np.asarray(m.decode(np.ascontiguousarray(codes[:, :steps])), dtype=np.float32)
    print(f"ours {steps} B full decode: 2000 queries R@1 %.4f R@10 %.4f; 200 queries R@1 %.3f R@10 %.3f"
          % (*rec(dec, q), *rec(dec, orig_q)), flush=True)
for M in (8, 16):
    rq = faiss.IndexResidualQuantizer(384, M, 8); rq.train(train); rq.add(base)
    dec = rq.reconstruct_n(0, len(base))
    print(f"faiss RQ{M} beam 5: 2000 queries R@1 %.4f R@10 %.4f; 200 queries R@1 %.3f R@10 %.3f"
          % (*rec(dec, q), *rec(dec, orig_q)), flush=True)
