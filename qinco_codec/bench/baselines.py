"""The faiss codecs `qinco-bench rd` puts next to ours, behind one small interface.

Every codec has `train(x)`, `encode(x) -> uint8 codes (n, code_size)`, `decode(codes) -> x`,
`code_size` (bytes per vector) and `model_bytes` (what has to be stored besides the codes: faiss's
own serialisation of the trained, empty index). Trained codecs (PQ, OPQ+PQ, RQ, LSQ) get a rate
in bytes; training-free references (float16, SQ8, SQ4 and the rotation-based quantizers RaBitQ,
TurboQuant, EDEN) come at their own rates. What this faiss build lacks is skipped with a note
(`available_references`).
"""
import os
import sys
import tempfile
from contextlib import contextmanager

import numpy as np

ROTATION_SEED = 1234


@contextmanager
def captured_native_stderr():
    """Collect what native code (faiss's C++ warnings) writes to file descriptor 2, instead of
    letting hundreds of identical lines interleave with the progress output. Yields a list that
    holds the captured text once the block ends."""
    captured = []
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable descriptor 2: nothing to capture
        yield captured
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.append(tmp.read().decode("utf-8", "replace"))


def summarize_warnings(text):
    """Distinct non-empty lines of captured output, each with its count: ['line (x12)', ...]."""
    counts = {}
    for line in text.splitlines():
        line = " ".join(line.split())
        if line:
            counts[line] = counts.get(line, 0) + 1
    return [f"{line} (x{c})" if c > 1 else line for line, c in counts.items()]


class FaissCodec:
    """A faiss index used as a codec through sa_encode / sa_decode."""

    search_recall = False  # True: recall comes from the index's own search (see RaBitQ)

    def __init__(self, faiss, index, method, line, note=None, train_rows=None, params=None):
        self.faiss, self.index, self.method, self.line = faiss, index, method, line
        self.note, self.train_rows, self.params = note, train_rows, dict(params or {})

    def train(self, x):
        if self.train_rows is not None and len(x) > self.train_rows:
            rows = np.sort(np.random.default_rng(0).choice(len(x), self.train_rows, replace=False))
            x = x[rows]
        self.trained_on = len(x)
        self.index.train(np.ascontiguousarray(x, dtype=np.float32))

    @property
    def code_size(self):
        return int(self.index.sa_code_size())

    @property
    def model_bytes(self):
        return len(self.faiss.serialize_index(self.index))

    def encode(self, x):
        return self.index.sa_encode(np.ascontiguousarray(x, dtype=np.float32))

    def decode(self, codes):
        return self.index.sa_decode(codes)

    def search(self, base, queries, k):
        """Ids (nq, k) of the nearest base vectors by the index's own distance estimates."""
        self.index.reset()
        self.index.add(np.ascontiguousarray(base, dtype=np.float32))
        _, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        self.index.reset()
        return ids


def _padded(d, m):
    """Smallest multiple of m that is >= d (PQ needs the dimension split in m equal parts)."""
    return -(-d // m) * m


def _rotated(faiss, d, index):
    """index behind a random orthogonal rotation (fixed seed), as faiss's 'RR' factory prefix."""
    rr = faiss.RandomRotationMatrix(d, d)
    rr.init(ROTATION_SEED)
    return faiss.IndexPreTransform(rr, index)  # faiss's wrapper keeps rr and index alive


# ---------------------------------------------------------------- trained codecs
def pq(faiss, d, nbytes):
    d2 = _padded(d, nbytes)
    sub = faiss.IndexPQ(d2, nbytes, 8)
    index = faiss.IndexPreTransform(faiss.RemapDimensionsTransform(d, d2, True), sub) if d2 != d else sub
    return FaissCodec(faiss, index, "PQ", "PQ", params={"M": nbytes, "nbits": 8, "padded_dim": d2})


def opq(faiss, d, nbytes, iters=None):
    d2 = _padded(d, nbytes)
    index = faiss.index_factory(d, f"OPQ{nbytes}_{d2},PQ{nbytes}")
    opq_matrix = faiss.downcast_VectorTransform(index.chain.at(0))
    # the factory turns on polysemous training (a slow permutation of the centroids for Hamming
    # search); it leaves reconstructions unchanged, so it is off here
    faiss.downcast_index(index.index).do_polysemous_training = False
    if iters:
        opq_matrix.niter = iters
    return FaissCodec(faiss, index, "OPQ+PQ", "OPQ+PQ",
                      params={"M": nbytes, "nbits": 8, "opq_out_dim": d2, "niter": opq_matrix.niter})


def rq(faiss, d, nbytes, beam=5):
    index = faiss.IndexResidualQuantizer(d, nbytes, 8)
    index.rq.max_beam_size = beam
    return FaissCodec(faiss, index, f"RQ (beam {beam})", f"RQ (beam {beam})",
                      params={"M": nbytes, "nbits": 8, "max_beam_size": beam})


def lsq(faiss, d, nbytes, train_rows=20000, iters=None):
    index = faiss.IndexLocalSearchQuantizer(d, nbytes, 8)
    if iters:
        index.lsq.train_iters = iters
    note = (f"LSQ is trained on a random sample of at most {train_rows:,} training vectors "
            f"(faiss LSQ training is slow; --lsq-train-size)") if train_rows else None
    return FaissCodec(faiss, index, "LSQ", "LSQ", note, train_rows=train_rows,
                      params={"M": nbytes, "nbits": 8, "train_rows": train_rows,
                              "train_iters": index.lsq.train_iters,
                              "encode_ils_iters": index.lsq.encode_ils_iters})


# ---------------------------------------------------------------- training-free references
class TurboQuantCodec(FaissCodec):
    """TurboQuant (MSE variant): centre (training mean), random rotation, store the norm as
    float16, quantize the unit vector with faiss's `QT_<b>bit_tqmse` scalar quantizer (Lloyd-Max
    levels for the coordinates of a random unit vector); decode multiplies back by the norm."""

    NORM_BYTES = 2

    def __init__(self, faiss, d, bits):
        sq = faiss.IndexScalarQuantizer(d, getattr(faiss.ScalarQuantizer, f"QT_{bits}bit_tqmse"))
        index = _rotated(faiss, d, sq)
        super().__init__(faiss, index, f"TurboQuant {bits}b", "TurboQuant",
                         params={"bits": bits, "norm": "float16", "rotation": "RR"})
        self.sq, self.rotation, self.d = sq, faiss.downcast_VectorTransform(index.chain.at(0)), d
        self.mean = np.zeros(d, np.float32)

    def train(self, x):
        self.trained_on = len(x)
        self.mean = np.asarray(x, dtype=np.float64).mean(0).astype(np.float32)
        self.sq.train(np.eye(self.d, dtype=np.float32))  # data-independent levels

    @property
    def code_size(self):
        return int(self.sq.sa_code_size()) + self.NORM_BYTES

    @property
    def model_bytes(self):
        return len(self.faiss.serialize_index(self.index)) + 4 * self.d  # + the mean, float32

    def encode(self, x):
        y = self.rotation.apply(np.ascontiguousarray(x - self.mean, dtype=np.float32))
        norms = np.linalg.norm(y, axis=1).astype(np.float16)
        safe = np.where(norms > 0, norms.astype(np.float32), 1.0)[:, None]
        codes = self.sq.sa_encode(np.ascontiguousarray(y / safe, dtype=np.float32))
        return np.concatenate([codes, norms.view(np.uint8).reshape(len(x), self.NORM_BYTES)], axis=1)

    def decode(self, codes):
        codes = np.ascontiguousarray(codes)
        u = self.sq.sa_decode(np.ascontiguousarray(codes[:, :-self.NORM_BYTES]))
        norms = np.ascontiguousarray(codes[:, -self.NORM_BYTES:]).view(np.float16).astype(np.float32)
        return self.rotation.reverse_transform(np.ascontiguousarray(u * norms)) + self.mean


def sq(faiss, d, kind):
    qtype, name = {"fp16": ("QT_fp16", "float16"), "SQ8": ("QT_8bit", "SQ8"),
                   "SQ4": ("QT_4bit", "SQ4")}[kind]
    index = faiss.IndexScalarQuantizer(d, getattr(faiss.ScalarQuantizer, qtype))
    return FaissCodec(faiss, index, name, "scalar (SQ4, SQ8, float16)", params={"qtype": qtype})


def rabitq(faiss, d, bits):
    index = faiss.IndexRaBitQ(d, faiss.METRIC_L2, bits)
    index.qb = 0  # search with float queries: measures the codes, not the query's quantization
    codec = FaissCodec(faiss, _rotated(faiss, d, index), f"RaBitQ {bits}b", "RaBitQ",
                       params={"nb_bits": bits, "rotation": "RR", "qb": 0})
    codec.search_recall = True
    return codec


def eden(faiss, d, bits):
    return FaissCodec(faiss, _rotated(faiss, d, faiss.IndexEDEN(d, faiss.METRIC_L2, bits)),
                      f"EDEN {bits}b", "EDEN", params={"nb_bits": bits, "rotation": "RR"})


def _try(build):
    try:
        return build(), None
    except Exception as exc:  # a faiss build without this codec or bit width
        return None, " ".join(str(exc).split())[:160] or type(exc).__name__


def _each_width(build, bits, family, name, codecs, notes):
    """Add build(b) for every bit width b to codecs; a width this faiss refuses becomes a note."""
    for b in bits:
        codec, why = _try(lambda: build(b))
        if codec is None:
            notes.append(({family}, f"{name} {b}b skipped: {why}"))
        else:
            codecs.append(codec)


def available_references(faiss, d, rotation_bits=(1, 2, 3, 4)):
    """(codecs, notes): the training-free references this faiss build has, at their own rates,
    and notes [(families the note is about, text)] on what was skipped or is special."""
    codecs = [sq(faiss, d, k) for k in ("SQ4", "SQ8", "fp16")]
    notes = []

    if hasattr(faiss, "IndexRaBitQ"):
        _each_width(lambda b: rabitq(faiss, d, b), rotation_bits, "rabitq", "RaBitQ", codecs, notes)
        notes.append(({"rabitq"}, "RaBitQ: faiss decodes RaBitQ codes from their sign bits "
                      "only (the extra bits refine distance estimates), so its MSE does not fall "
                      "with bits; its R@1 and R@10 come from the index's own search (float "
                      "queries, qb=0), not from decoded vectors"))
    else:
        notes.append(({"rabitq"}, "RaBitQ skipped: this faiss has no IndexRaBitQ"))

    tq_bits = [b for b in rotation_bits if hasattr(faiss.ScalarQuantizer, f"QT_{b}bit_tqmse")]
    for b in rotation_bits:
        if b not in tq_bits and hasattr(faiss.ScalarQuantizer, "QT_1bit_tqmse"):
            notes.append(({"turboquant"},
                          f"TurboQuant {b}b skipped: this faiss has no QT_{b}bit_tqmse"))
    if tq_bits:
        _each_width(lambda b: TurboQuantCodec(faiss, d, b), tq_bits, "turboquant", "TurboQuant",
                    codecs, notes)
        notes.append(({"turboquant"}, f"TurboQuant: centred on the training mean, randomly "
                      f"rotated, norm stored as float16 ({TurboQuantCodec.NORM_BYTES} bytes, "
                      f"counted), unit vector coded with faiss's SQtqmse scalar quantizer"))
    else:
        notes.append(({"turboquant"},
                      "TurboQuant skipped: this faiss has no SQtqmse scalar quantizer types"))

    if hasattr(faiss, "IndexEDEN"):
        _each_width(lambda b: eden(faiss, d, b), rotation_bits, "eden", "EDEN", codecs, notes)
    else:
        notes.append(({"eden"}, "EDEN skipped: this faiss has no IndexEDEN"))
    if hasattr(faiss, "IndexRaBitQ") or hasattr(faiss, "IndexEDEN"):
        notes.append(({"rabitq", "eden"}, "RaBitQ and EDEN run behind a random rotation "
                     "(faiss's 'RR' pre-transform); both centre on the training mean"))
    return codecs, notes
