"""Speed benchmark (`qinco-bench speed`): encode and decode throughput of our modes next to faiss,
in one process, on the same vectors.

Modes: exact float32 search (the model's exhaustive greedy for QINCo1; exhaustive and several
pre-selection / beam settings A, B for QINCo2), the same with the candidate networks in bfloat16,
faiss `IndexQINCo` carrying the same QINCo1 weights (for a QINCo2 model: a QINCo1 reference model
of the same dimension and rate, measured both in faiss and with our encoder), and faiss RQ (beam 5)
and LSQ encoders for scale.

For every mode: vectors per second (encode, decode) at each thread count, ratios against faiss
IndexQINCo and against the mode's own exhaustive search, the FLOPs per vector its algorithm needs
(matmul multiply-adds x 2, counted from the architecture, K, M, A and B: `encode_flops`,
`decode_flops`), the fraction of this machine's matmul rate that makes (the rate is measured in
the same run with torch matmuls of the network's own shapes, `matmul_rate`), and the MSE of its
codes, with its ratio to the reference mode's MSE on the same vectors (bf16 against float32,
pre-selection against exhaustive search with the same beam).

Slow modes encode only a prefix of the vectors (whatever fits `time_limit` seconds, measured with a
probe first); every comparison of MSE is made on the common prefix, so the figures pair up.
"""
import datetime
import math
import os
import platform
import time
from dataclasses import dataclass, field

import numpy as np

from ..architecture import (decode_flops, effective_search, encode_flops, faiss_qinco_decode_flops,
                            faiss_qinco_encode_flops, faiss_representable, matmul_shapes)
from ..errors import InputError
from ..progress import note
from .common import Inputs, best_of, format_table, require_faiss, write_report

DEFAULT_N = 20000
DEFAULT_TIME_LIMIT = 20.0        # seconds of encoding per mode and thread count
DEFAULT_TRAIN_SECONDS = 60.0
DEFAULT_TRAIN_SIZE = 20000
FAISS_QINCO_BATCH = 64           # faiss's IndexQINCo encoder materialises batch x K x 2d floats
QINCO2_SETTINGS = ((0, 1), (16, 1), (0, 4), (16, 4), (32, 8))
MIN_PROBE_SECONDS = 0.25


# ---------------------------------------------------------------- FLOP counts
# FLOPs per vector and the matmul shapes whose rate bounds them come from the architecture, where
# the networks are defined (qinco_codec/architecture.py).


def matmul_rate(shapes, dtype, device, min_seconds=0.05, repeats=5):
    """GFLOP/s of torch matmuls of the given (rows, k, n, count) shapes, weighted by their FLOPs
    (best of `repeats` timings of at least `min_seconds` each, per shape), with the right operand
    laid out as the model's weights are (a transposed nn.Linear weight)."""
    import torch

    total_flops = total_time = 0.0
    gen = torch.Generator().manual_seed(0)
    for rows, k, n, count in shapes:
        a = torch.randn(rows, k, generator=gen).to(device=device, dtype=dtype)
        # the weights' layout in the model: nn.Linear stores (n, k), the networks multiply by its
        # transpose (bf16 matmul with a row-major right operand ran 4x slower on the AVX2 CPU)
        b = torch.randn(n, k, generator=gen).to(device=device, dtype=dtype).T
        out = torch.empty(rows, n, device=device, dtype=dtype)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        torch.mm(a, b, out=out)
        sync()
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        sync()
        one = max(time.perf_counter() - t0, 1e-6)
        reps = max(1, int(min_seconds / one))

        def run():
            for _ in range(reps):
                torch.mm(a, b, out=out)
            sync()

        seconds, _ = best_of(run, repeats=repeats)
        flops = 2.0 * rows * k * n
        total_flops += flops * count
        total_time += seconds / reps * count
    return total_flops / total_time / 1e9


# ---------------------------------------------------------------- inputs and models
def prepare_vectors(dim, n, train_size=DEFAULT_TRAIN_SIZE, seed=0):
    """GloVe-50 (base split measured, train split for training) when dim is 50 and the data is
    installed, else standard Gaussian vectors (a separate draw for training)."""
    from .. import datasets

    if dim == 50 and datasets.glove50_available():
        base = datasets.glove50("base")
        if n > len(base):
            raise InputError(f"--n {n}: GloVe-50 base has {len(base):,} vectors")
        train = datasets.glove50("train")
        return Inputs("glove50", np.ascontiguousarray(train[:train_size]), np.ascontiguousarray(base[:n]),
                      description=f"GloVe-50 base[:{n}] (train split[:{min(train_size, len(train))}] "
                                  "for training)")
    return gaussian_vectors(dim, n, train_size, seed,
                            why="" if dim != 50 else " (GloVe-50 data not installed)")


def given_vectors(base, train, n, train_size, base_name, train_name):
    """The first n rows of `base` measured and the first train_size rows of `train` for training
    (the user's own vectors: --data / --train)."""
    if n > len(base):
        raise InputError(f"--n {n}: {base_name} has {len(base):,} vectors")
    train = train[:train_size]
    return Inputs(os.path.basename(base_name), np.ascontiguousarray(train, dtype=np.float32),
                  np.ascontiguousarray(base[:n], dtype=np.float32),
                  description=f"{base_name}[:{n}] ({train_name}[:{len(train)}] for training)")


def gaussian_vectors(dim, n, train_size=DEFAULT_TRAIN_SIZE, seed=0, why=""):
    """Standard Gaussian vectors of dimension dim: n measured, a separate draw of train_size for
    training (the same seed gives the same vectors)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    train = rng.standard_normal((train_size, dim), dtype=np.float32)
    return Inputs("gaussian", train, x, description=f"standard Gaussian, d={dim}, n={n}{why} "
                                                   f"(separate draw of {train_size} for training)")


def build_model(preset, dim, M, K, train, train_seconds, seed=0, quiet=False):
    """An RQ-initialised model, trained for `train_seconds` (0: RQ initialisation only; no early
    stopping: the best state by validation MSE is kept). Returns (model, description)."""
    from ..model import QincoModel
    from ..rq_init import init_from_rq

    if train_seconds and train_seconds > 0:
        from ..training import train as train_model

        t0 = time.perf_counter()
        model, history = train_model(train, preset=preset, steps=M, K=K, max_minutes=train_seconds / 60.0,
                                     samples_per_epoch=4096, batch_size=512, val=min(0.05, 2000 / len(train)),
                                     patience=10 ** 6, seed=seed, device="cpu", quiet=quiet,
                                     return_history=True)
        info = model.config.trained or {}
        history = history or [{}]
        start = history[0].get("val_mse", float("nan"))
        return model, (f"RQ init + {time.perf_counter() - t0:.0f} s of training "
                       f"({info.get('epochs', '?')} epochs; validation MSE {start:.4g} at RQ init, "
                       f"best {info.get('val_mse', float('nan')):.4g})")
    model = QincoModel.from_preset(preset, dim, M, K=K)
    init_from_rq(model, train, seed=seed)
    return model, "RQ initialisation (untrained networks: every step returns its codeword)"


# ---------------------------------------------------------------- modes
@dataclass
class Mode:
    key: str
    label: str
    kind: str                    # "ours", "faiss-qinco", "faiss-rq", "faiss-lsq"
    model: str = "main"          # "main" or "ref" (the QINCo1 reference of a QINCo2 model)
    A: int = 0
    B: int = 1
    precision: str = "float32"
    ref: str = None              # mode whose MSE (and speed) this one is compared with
    exhaustive: str = None       # exhaustive mode with the same beam (speed ratio)
    info: dict = field(default_factory=dict)


def parse_settings(text):
    """'0/1,16/1,16/4' -> ((0, 1), (16, 1), (16, 4)); A=0 means all K."""
    out = []
    for item in str(text).replace(" ", ",").split(","):
        if not item:
            continue
        parts = item.split("/")
        try:
            a, b = (int(parts[0]), int(parts[1])) if len(parts) == 2 else (None, None)
        except ValueError:
            a = b = None
        if a is None or a < 0 or b < 1:
            raise InputError(f"--settings: expected A/B pairs such as 0/1,16/4 (A >= 0, 0 = all K; "
                             f"B >= 1), got {item!r}")
        out.append((a, b))
    if not out:
        raise InputError("--settings: no A/B pair given")
    return tuple(out)


def _setting_label(cfg, A, B):
    K = cfg.K
    a = f"A={K} (exhaustive)" if A == 0 else f"A={A}"
    return f"{a}, B={B}"


def make_modes(cfg, settings=None, bf16=True, faiss_rows=True):
    """The modes measured for a model of config cfg (see the module docstring)."""
    preset = effective_search(cfg, cfg.A, cfg.B)
    if settings is None:
        settings = QINCO2_SETTINGS + (preset, (0, preset[1])) if cfg.step.preselect else (preset,)
    eff = list(dict.fromkeys(effective_search(cfg, a, b) for a, b in settings))
    modes = []
    for A, B in eff:
        key = f"fp32 A{A} B{B}"
        exh = f"fp32 A0 B{B}"
        has_exh = (0, B) in eff
        modes.append(Mode(key, f"ours fp32 {_setting_label(cfg, A, B)}", "ours", A=A, B=B,
                          ref=exh if A and has_exh else None, exhaustive=exh if has_exh else None))
    if bf16:
        A, B = preset if preset in eff else eff[0]
        modes.append(Mode(f"bf16 A{A} B{B}", f"ours bf16 {_setting_label(cfg, A, B)}", "ours", A=A, B=B,
                          precision="bfloat16", ref=f"fp32 A{A} B{B}"))
    if faiss_rows:
        if faiss_representable(cfg):
            modes.append(Mode("faiss IndexQINCo", "faiss IndexQINCo (same weights)", "faiss-qinco",
                              ref="fp32 A0 B1" if (0, 1) in eff else None))
        else:
            modes.append(Mode("ref fp32", "ours fp32 qinco1-L2 reference, A=K, B=1", "ours", model="ref"))
            modes.append(Mode("faiss IndexQINCo", "faiss IndexQINCo (qinco1-L2 reference weights)",
                              "faiss-qinco", model="ref", ref="ref fp32"))
        modes.append(Mode("faiss RQ", "faiss RQ (beam 5), encode only", "faiss-rq"))
        modes.append(Mode("faiss LSQ", "faiss LSQ, encode only", "faiss-lsq"))
    return modes


# ---------------------------------------------------------------- measuring
def _timed_prefix(fn, n, time_limit):
    """Run fn(k) on growing prefixes until one takes MIN_PROBE_SECONDS, then once on the prefix
    that fits time_limit (at most n). Returns (k, wall seconds, process CPU seconds, result) of
    the measured run. One untimed call comes first: the first call of a mode pays one-off costs
    (CUDA context and cuBLAS start-up, lazily built tables) that are not throughput."""
    k = min(n, 8)
    fn(k)
    while True:
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn(k)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        if k >= n or seconds >= MIN_PROBE_SECONDS:
            break
        k = min(n, k * 8)
    target = min(n, max(k, int(k / max(seconds, 1e-9) * time_limit)))
    if target > k:
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn(target)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        k = target
    return k, seconds, cpu, result


def _time_n(fn, k, min_seconds=1.0):
    """Best wall-clock seconds of fn(k) (at least twice when quick, until min_seconds are spent)."""
    seconds, result = best_of(lambda: fn(k), repeats=2, min_seconds=min_seconds)
    return seconds, result


def _mse(x, recon):
    """`evaluation.mse`, or None for a mode that encoded no vectors."""
    from ..evaluation import mse

    return mse(x, recon) if len(x) else None


class _Bench:
    def __init__(self, models, inputs, device, time_limit, quiet):
        self.models, self.inputs, self.device = models, inputs, device
        self.time_limit, self.quiet = time_limit, quiet
        self.faiss_index = {}
        self.codecs = {}

    # -- per-mode encode / decode functions
    def functions(self, mode):
        x = self.inputs.base
        if mode.kind == "ours":
            model = self.models[mode.model]

            def enc(k):
                return model.encode(x[:k], A=mode.A, B=mode.B, device=self.device, precision=mode.precision)

            def dec(codes):
                return model.decode(codes, device=self.device, precision=mode.precision)

            return enc, dec
        faiss = require_faiss()
        if mode.kind == "faiss-qinco":
            from ..faiss_interop import codes_from_faiss, codes_to_faiss, to_faiss

            model = self.models[mode.model]
            index = self.faiss_index.setdefault(mode.model, to_faiss(model))
            bs = FAISS_QINCO_BATCH

            def enc(k):
                packed = np.concatenate([index.sa_encode(x[i:i + bs]) for i in range(0, k, bs)]) if k else \
                    np.empty((0, index.sa_code_size()), np.uint8)
                return codes_from_faiss(model, packed)

            def dec(codes):
                return index.sa_decode(codes_to_faiss(model, codes))

            return enc, dec
        codec = self.codecs[mode.key]

        def enc(k):
            return codec.encode(x[:k])

        return enc, codec.decode

    def train_baselines(self, modes, nbytes, lsq_train_size):
        from . import baselines

        faiss = require_faiss()
        d = self.inputs.base.shape[1]
        for mode in modes:
            if mode.kind not in ("faiss-rq", "faiss-lsq"):
                continue
            if mode.kind == "faiss-rq":
                codec = baselines.rq(faiss, d, nbytes, beam=5)
            else:
                codec = baselines.lsq(faiss, d, nbytes, train_rows=lsq_train_size, iters=5)
            rows = len(self.inputs.train) if codec.train_rows is None else min(len(self.inputs.train), codec.train_rows)
            note(f"training {mode.label.split(',')[0]} on {rows:,} vectors", self.quiet)
            t0 = time.perf_counter()
            with baselines.captured_native_stderr():
                codec.train(self.inputs.train)
            mode.info["train_seconds"] = time.perf_counter() - t0
            mode.info["params"] = codec.params
            self.codecs[mode.key] = codec


def run(preset, dim, nbytes, n=DEFAULT_N, threads=None, device="auto", settings=None, K=256,
        train_seconds=DEFAULT_TRAIN_SECONDS, train_size=DEFAULT_TRAIN_SIZE, time_limit=DEFAULT_TIME_LIMIT,
        lsq_train_size=5000, model=None, bf16=True, seed=0, quiet=False, vectors=None):
    """Measure every mode at every thread count; returns the result dict (see `text_report`).
    `vectors`: the Inputs to measure on (`given_vectors`) instead of `prepare_vectors`'."""
    import torch

    from ..devices import available_cores, resolve_device

    faiss = require_faiss()
    if n < 1:
        raise InputError(f"--n must be at least 1, got {n}")
    if time_limit <= 0:
        raise InputError(f"--time-limit must be positive, got {time_limit}")
    dev = resolve_device(device)
    cores = available_cores()
    threads = tuple(dict.fromkeys(int(t) for t in (threads or (cores,))))
    if any(t < 1 for t in threads):
        raise InputError(f"--threads must be positive, got {list(threads)}")
    saved_threads, saved_faiss = torch.get_num_threads(), faiss.omp_get_max_threads()
    try:
        return _run(preset, dim, nbytes, n, threads, dev, settings, K, train_seconds, train_size,
                    time_limit, lsq_train_size, model, bf16, seed, quiet, cores, faiss, vectors)
    finally:
        torch.set_num_threads(saved_threads)
        faiss.omp_set_num_threads(saved_faiss)


def _run(preset, dim, nbytes, n, threads, dev, settings, K, train_seconds, train_size, time_limit,
         lsq_train_size, model, bf16, seed, quiet, cores, faiss, vectors):
    import torch

    load_at_start = _load()

    from .. import codec as codec_module
    from ..model import QincoModel
    from ..presets import get_preset
    from ..rq_init import init_from_rq

    torch.set_num_threads(threads[0])
    faiss.omp_set_num_threads(threads[0])
    notes = []
    if model is not None:
        cfg = model.config
        preset, dim, K, M = cfg.preset, cfg.dim, cfg.K, cfg.M
        inputs = vectors or prepare_vectors(dim, n, train_size, seed)
        model_desc = "loaded model" + (" (trained)" if cfg.trained else "")
    else:
        get_preset(preset)
        if dim < 1:
            raise InputError(f"--dim must be at least 1, got {dim}")
        if K < 2 or K & (K - 1) or K > 256:
            raise InputError(f"--K must be a power of two between 2 and 256 (faiss RQ/LSQ use 8-bit "
                             f"codes), got {K}")
        if nbytes < 1:
            raise InputError(f"--bytes must be at least 1, got {nbytes}")
        M = nbytes
        inputs = vectors or prepare_vectors(dim, n, train_size, seed)
        note(f"building {preset} d={dim} M={M} K={K} on {len(inputs.train):,} training vectors", quiet)
        model, model_desc = build_model(preset, dim, M, K, inputs.train, train_seconds, seed, quiet)
    model.eval()
    cfg = model.config
    models = {"main": model}
    if cfg.step.out_proj:
        ref = QincoModel.from_preset("qinco1-L2", dim, M, K=K)
        init_from_rq(ref, inputs.train, seed=seed)
        models["ref"] = ref
    modes = make_modes(cfg, settings, bf16=bf16)
    if K != 256:
        modes = [m for m in modes if m.kind not in ("faiss-rq", "faiss-lsq")]
        notes.append(f"faiss RQ / LSQ rows left out: they use 8-bit codes (K=256), the model has K={K}")
    bench = _Bench(models, inputs, dev, time_limit, quiet)
    bench.train_baselines(modes, M, lsq_train_size)
    by_key = {m.key: m for m in modes}

    # flops per vector and matmul shapes
    rows = {name: codec_module.encode_chunk_rows(mdl) for name, mdl in models.items()}
    for m in modes:
        mcfg = models[m.model].config
        if m.kind == "ours":
            m.info["encode_flops"] = encode_flops(mcfg, m.A, m.B)
            m.info["decode_flops"] = decode_flops(mcfg)
        elif m.kind == "faiss-qinco":
            m.info["encode_flops"] = faiss_qinco_encode_flops(mcfg)
            m.info["decode_flops"] = faiss_qinco_decode_flops(mcfg)

    # matmul rates per thread count: measured before and after that thread count's timings,
    # the larger kept (on a shared machine, a rate measured while another process held the core
    # would understate the bound)
    def measure_rates(t):
        rates = {}
        for name, mdl in models.items():
            for direction in ("encode", "decode"):
                shapes = matmul_shapes(mdl.config, rows[name] if direction == "encode"
                                       else codec_module.CPU_DECODE_ROWS, direction)
                for dtype in (torch.float32, torch.bfloat16):
                    if dtype == torch.bfloat16 and not bf16:
                        continue
                    rates[f"{name} {direction} {str(dtype).replace('torch.', '')}"] = matmul_rate(
                        shapes, dtype, dev, min_seconds=min(0.03, time_limit / 100),
                        repeats=7 if time_limit >= 5 else 3)
        return rates

    matmul = {}
    # encode / decode timings
    results = {t: {} for t in threads}
    codes_by_mode, n_by_mode = {}, {}
    for ti, t in enumerate(threads):
        torch.set_num_threads(t)
        faiss.omp_set_num_threads(t)
        note(f"[threads={t}] matmul rates of the networks' shapes", quiet)
        matmul[t] = measure_rates(t)
        for m in modes:
            enc, dec = bench.functions(m)
            note(f"[threads={t}] {m.label}: encoding", quiet)
            k, seconds, cpu, codes = _timed_prefix(enc, n if ti == 0 else n_by_mode[m.key], time_limit)
            if ti == 0:
                codes_by_mode[m.key], n_by_mode[m.key] = codes, k
            elif not np.array_equal(codes, codes_by_mode[m.key][:k]):
                notes.append(f"{m.label}: codes at {t} threads differ from those at {threads[0]}")
            r = {"n": k, "encode_vps": k / seconds if seconds > 0 else None,
                 "encode_vps_per_cpu_second": k / cpu if cpu > 0 else None}
            if m.kind in ("ours", "faiss-qinco"):
                note(f"[threads={t}] {m.label}: decoding", quiet)
                dsec, _ = _time_n(lambda _k: dec(codes_by_mode[m.key][:k]), k, min_seconds=min(1.0, time_limit))
                r["decode_vps"] = k / dsec if dsec > 0 else None
            results[t][m.key] = r
        note(f"[threads={t}] matmul rates again", quiet)
        matmul[t] = {k: max(v, matmul[t][k]) for k, v in measure_rates(t).items()}

    # MSE and code agreement (on the measured prefixes, compared on common prefixes)
    recon = {}
    for m in modes:
        _, dec = bench.functions(m)
        codes = codes_by_mode[m.key]
        recon[m.key] = dec(codes) if len(codes) else np.empty((0, dim), np.float32)
        m.info["n"] = n_by_mode[m.key]
        m.info["mse"] = _mse(inputs.base[:len(codes)], recon[m.key])
    for m in modes:
        if m.ref and m.ref in by_key:
            k = min(n_by_mode[m.key], n_by_mode[m.ref])
            a = _mse(inputs.base[:k], recon[m.key][:k])
            b = _mse(inputs.base[:k], recon[m.ref][:k])
            m.info["mse_ratio"] = a / b if a is not None and b else None
            m.info["mse_ratio_n"] = k
            same = (codes_by_mode[m.key][:k] == codes_by_mode[m.ref][:k]).all(1)
            m.info["same_codes"] = float(same.mean()) if k else None

    # derived ratios and fractions of the matmul bound
    rows_out = []
    faiss_key = "faiss IndexQINCo" if "faiss IndexQINCo" in by_key else None
    for t in threads:
        for m in modes:
            r = dict(results[t][m.key])
            r.update(threads=t, mode=m.key)
            if faiss_key and m.kind in ("ours", "faiss-qinco"):
                f = results[t][faiss_key]
                r["encode_x_faiss"] = _ratio(r.get("encode_vps"), f.get("encode_vps"))
                r["decode_x_faiss"] = _ratio(r.get("decode_vps"), f.get("decode_vps"))
            if m.exhaustive and m.exhaustive in results[t]:
                r["encode_x_exhaustive"] = _ratio(r.get("encode_vps"), results[t][m.exhaustive].get("encode_vps"))
            if "encode_flops" in m.info:
                dtype = "bfloat16" if m.precision == "bfloat16" else "float32"
                enc_rate = matmul[t].get(f"{m.model} encode {dtype}")
                dec_rate = matmul[t].get(f"{m.model} decode {dtype}")
                r["encode_gflops"] = _times(r.get("encode_vps"), m.info["encode_flops"] / 1e9)
                r["decode_gflops"] = _times(r.get("decode_vps"), m.info["decode_flops"] / 1e9)
                r["encode_bound_fraction"] = _ratio(r["encode_gflops"], enc_rate)
                r["decode_bound_fraction"] = _ratio(r["decode_gflops"], dec_rate)
            rows_out.append(r)

    scaling = []
    if len(threads) > 1:
        t0 = threads[0]
        for t in threads[1:]:
            for m in modes:
                a, b = results[t0][m.key], results[t][m.key]
                scaling.append({"mode": m.key, "from_threads": t0, "to_threads": t,
                                "encode_speedup": _ratio(b.get("encode_vps"), a.get("encode_vps")),
                                "decode_speedup": _ratio(b.get("decode_vps"), a.get("decode_vps"))})

    for t in threads[1:]:
        one, many = matmul[threads[0]], matmul[t]
        if t > threads[0] and any(many[k] < one[k] for k in one if k.endswith("float32")):
            notes.append(f"the float32 matmul rate at {t} threads is below the one at {threads[0]}: "
                         "other processes were using the cores (OpenMP threads wait for descheduled "
                         "ones at every barrier), so the scaling figures measure that contention")
    if cfg.step.out_proj:
        notes.append("faiss IndexQINCo implements QINCo1 only: its rows carry the weights of an "
                     "RQ-initialised qinco1-L2 model of the same d, M, K ('ref' rows), and every "
                     "'x faiss' ratio is against that faiss row")
    slow = sorted({m.label for m in modes for t in threads if results[t][m.key]["n"] < n})
    if slow:
        notes.append(f"timed on a prefix of the vectors (column n) to fit the {time_limit:g} s limit: "
                     + "; ".join(slow) + ". MSE always comes from the first thread count's prefix")
    if any(m.kind in ("faiss-rq", "faiss-lsq") for m in modes):
        notes.append(f"faiss RQ (beam 5) and LSQ are there for their encode speed: RQ trains on "
                     f"{len(inputs.train):,} vectors, LSQ on at most {lsq_train_size:,} with 5 "
                     "training iterations (faiss's encoder settings unchanged), so LSQ's MSE "
                     "understates what a full training reaches")
    notes.append("MSE / ref: MSE of the mode's codes over the reference mode's (column ref) on "
                 "their common prefix; same codes: fraction of those vectors with identical codes")
    notes.append("FLOPs: matmul multiply-adds x 2 per vector (tables shared by a call and element-wise "
                 "work not counted); % bound: achieved GFLOP/s over the torch matmul rate measured "
                 f"for the network's shapes ({rows['main']} rows for encoding, "
                 f"{codec_module.CPU_DECODE_ROWS} for decoding) in this run")

    return {
        "benchmark": "speed",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": {"preset": cfg.preset, "arch": cfg.arch, "dim": dim, "M": M, "K": K,
                   "bytes_per_vector": model.bytes_per_vector, "L": cfg.L, "hidden": cfg.hidden,
                   "embed": cfg.step.de, "model_A": cfg.A, "model_B": cfg.B,
                   "model": model_desc, "n": n, "time_limit_s": time_limit, "device": str(dev),
                   "threads": list(threads), "vectors": inputs.description},
        "machine": _machine(cores, faiss, load_at_start),
        "matmul_gflops": {str(t): v for t, v in matmul.items()},
        "modes": [{"key": m.key, "label": m.label, "kind": m.kind, "model": m.model, "A": m.A, "B": m.B,
                   "precision": m.precision, "ref": m.ref, "exhaustive": m.exhaustive, **m.info}
                  for m in modes],
        "rows": rows_out,
        "scaling": scaling,
        "notes": notes,
    }


def _ratio(a, b):
    return a / b if a is not None and b else None


def _times(a, b):
    return a * b if a is not None and b is not None else None


def _load():
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def _machine(cores, faiss, load_at_start):
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = _load()
    return {"cpu": cpu, "cores": cores, "torch": torch.__version__, "cpu_capability":
            torch.backends.cpu.get_cpu_capability(), "faiss": getattr(faiss, "__version__", "?"),
            "python": platform.python_version(), "load_average_1min": load,
            "load_average_1min_at_start": load_at_start}


# ---------------------------------------------------------------- reports
COLUMNS = [
    ("label", "mode", ""),
    ("n", "n", ",d"),
    ("encode_vps", "enc vec/s", ",.0f"),
    ("decode_vps", "dec vec/s", ",.0f"),
    ("encode_x_faiss", "enc x faiss", ".2f"),
    ("decode_x_faiss", "dec x faiss", ".2f"),
    ("encode_x_exhaustive", "enc x exh", ".1f"),
    ("encode_mflops", "enc MFLOP/vec", ",.1f"),
    ("decode_mflops", "dec MFLOP/vec", ",.2f"),
    ("encode_bound_pct", "enc % bound", ".0f"),
    ("decode_bound_pct", "dec % bound", ".0f"),
    ("mse", "MSE", ".4f"),
    ("mse_ratio", "MSE / ref", ".4f"),
    ("same_codes_pct", "same codes %", ".2f"),
    ("ref_label", "ref", ""),
]
SCALING_COLUMNS = [("label", "mode", ""), ("encode_speedup", "encode speed-up", ".2f"),
                   ("decode_speedup", "decode speed-up", ".2f")]


def table_rows(result, threads):
    modes = {m["key"]: m for m in result["modes"]}
    out = []
    for r in result["rows"]:
        if r["threads"] != threads:
            continue
        m = modes[r["mode"]]
        pct = lambda v: None if v is None else 100.0 * v
        mf = lambda v: None if v is None else v / 1e6
        out.append({**r, "label": m["label"],
                    "encode_mflops": mf(m.get("encode_flops")), "decode_mflops": mf(m.get("decode_flops")),
                    "encode_bound_pct": pct(r.get("encode_bound_fraction")),
                    "decode_bound_pct": pct(r.get("decode_bound_fraction")),
                    "mse": m.get("mse"), "mse_ratio": m.get("mse_ratio"),
                    "same_codes_pct": pct(m.get("same_codes")),
                    "ref_label": m["ref"] if m.get("ref") in modes else None})
    return out


def _header_lines(result):
    c, mach = result["config"], result["machine"]
    lines = [f"qinco-bench speed: {c['preset']} d={c['dim']} M={c['M']} K={c['K']} "
             f"({c['bytes_per_vector']} B/vector), model: {c['model']}",
             f"vectors: {c['vectors']}",
             f"machine: {mach['cpu']}, {mach['cores']} cores, torch {mach['torch']} ({mach['cpu_capability']}), "
             f"faiss {mach['faiss']}, device {c['device']}, 1-min load average at start / end "
             f"{mach.get('load_average_1min_at_start') or 0:.2f} / {mach['load_average_1min']:.2f}"
             if mach.get("load_average_1min") is not None else
             f"machine: {mach['cpu']}, {mach['cores']} cores, torch {mach['torch']}, faiss {mach['faiss']}"]
    for t, rates in result["matmul_gflops"].items():
        parts = ", ".join(f"{k} {v:.1f}" for k, v in rates.items())
        lines.append(f"torch matmul GFLOP/s at {t} thread(s), network shapes: {parts}")
    return lines


def text_report(result, markdown=False):
    lines = []
    for line in _header_lines(result):
        lines.append(line if not markdown else f"- {line}")
    for t in result["config"]["threads"]:
        lines.append("")
        lines.append(f"{'### ' if markdown else ''}threads = {t}")
        if markdown:
            lines.append("")
        lines.append(format_table(table_rows(result, t), COLUMNS, markdown=markdown))
    if result["scaling"]:
        labels = {m["key"]: m["label"] for m in result["modes"]}
        for t in sorted({s["to_threads"] for s in result["scaling"]}):
            rows = [{**s, "label": labels[s["mode"]]} for s in result["scaling"] if s["to_threads"] == t]
            lines.append("")
            lines.append(f"{'### ' if markdown else ''}scaling: vectors/s at {t} threads over "
                         f"{rows[0]['from_threads']} thread(s)")
            if markdown:
                lines.append("")
            lines.append(format_table(rows, SCALING_COLUMNS, markdown=markdown))
    lines.append("")
    for text in result["notes"]:
        lines.append(f"{'- ' if markdown else '# '}{text}")
    return "\n".join(lines)


def write_outputs(result, out_dir=None, json_path=None):
    """speed.json and speed.md under out_dir and/or the JSON at json_path; returns the paths."""
    return write_report(result, "speed", "qinco-bench speed", text_report(result, markdown=True), out_dir, json_path)
