"""How the cost per vector grows with the dimension (`qinco-bench speed --dims 50,128,384,768`).

For one preset (the default: `presets.DEFAULT_PRESET`) at one code rate, on standard Gaussian
vectors of each dimension d (the same draw at every d: only its cost is measured), an
RQ-initialised model is built and measured at one thread count:

- training throughput: samples/s of the training step (`training.py`'s recipe: the codes of a
  batch from the model's own encoder under no_grad with the preset's `train_A`, greedy; the
  prefix losses, backward, gradient clipping, an AdamW step), timed on a few batches, with the
  share of it the encoding takes;
- encode vectors/s with the model's own search (its A, B) scoring candidates both ways: by the
  expanded error (`steps.candidate_errors`) and by the direct one (`candidate_residuals`), on the
  same vectors, with the share of vectors whose codes agree and the MSE of each; the encoder's
  own choice between them is `architecture.expands_error`;
- decode vectors/s;
- the FLOPs per vector `architecture.encode_flops` / `decode_flops` count for the encoder as it
  runs (its own choice of error);
- faiss RQ (beam 5) encode vectors/s at the same bytes per vector, trained on the same vectors.

Every rate is given twice: per wall-clock second, and per CPU second of this process (its user
and system time, all its threads together). On a shared machine the wall-clock rate also
measures how much of a core the other processes left; the CPU rate measures the work, so the
cost ratios are computed from it: every cost (CPU seconds per vector, FLOPs per vector) at each
d over its value at the first d, next to d over the first d. The cost should grow far slower
than d.

The encoder is measured after the training batches, so its networks are no longer the zero
networks of the RQ start (where both errors agree trivially); no model is trained to
convergence (its cost per vector does not depend on how well it is trained).
"""
import datetime
import time

import numpy as np

from ..errors import InputError
from ..progress import note
from .common import format_table, require_faiss, write_report

DEFAULT_DIMS = (50, 128, 384, 768)
TRAIN_BATCH_CAP = 50         # training batches timed at most per d
FAISS_RQ_BEAM = 5


def parse_dims(values):
    """(50, 128, 384) from the --dims values: positive, distinct, in the order given."""
    dims = tuple(dict.fromkeys(int(v) for v in values))
    if not dims or any(d < 1 for d in dims):
        raise InputError(f"--dims must be positive integers, got {list(values)}")
    return dims


def timed(fn, repeats=2):
    """(best wall-clock seconds, best process CPU seconds, last result) of `repeats` calls of fn()
    (each minimum taken over the calls separately)."""
    wall = cpu = float("inf")
    result = None
    for _ in range(max(1, repeats)):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return wall, cpu, result


def _rates(rec, name, count, wall, cpu):
    """rec[name] = count / wall (per wall-clock second), rec[name + '_cpu'] = count / cpu."""
    rec[name] = count / wall if wall > 0 else None
    rec[f"{name}_cpu"] = count / cpu if cpu > 0 else None


def _training_step(model, batch_size):
    """One step of training.py's recipe for `model` (see the module docstring): a function of a
    normalised batch returning the seconds its encoding took. The learning rate is the preset's
    peak rate throughout (the schedule does not change what a step costs)."""
    import torch

    from .. import codec, training
    from ..presets import get_preset

    p = get_preset(model.config.preset, model.dim)
    opt = torch.optim.AdamW(training._param_groups(model, p.weight_decay), lr=p.lr)

    def step(xb):
        t0 = time.perf_counter()
        codes = codec.encode_normalized(model, xb, p.train_A, 1)      # under no_grad
        encode_seconds = time.perf_counter() - t0
        loss, _, _ = training.prefix_losses(model, xb, codes)
        training.optimizer_step(model, opt, loss, p)
        return encode_seconds

    return step


def measure_training(model, train, batch_size, time_limit, seed):
    """Samples per wall-clock and per CPU second of the training step on random batches of
    `train` (one untimed batch first, then batches until `time_limit` seconds, at least 2, at
    most TRAIN_BATCH_CAP), and the share of the wall-clock time spent encoding. Leaves the model
    in eval mode with the updated weights."""
    import torch

    from ..training import _torch_settings

    xt = torch.from_numpy(np.ascontiguousarray(train))
    batch_size = min(batch_size, len(xt))
    gen = torch.Generator().manual_seed(seed)
    step = _training_step(model, batch_size)

    def batch():
        return model.normalize(xt[torch.randint(len(xt), (batch_size,), generator=gen)])

    model.train()
    with _torch_settings(None):
        step(batch())
        batches, seconds, cpu, encode_seconds = 0, 0.0, 0.0, 0.0
        while batches < 2 or (seconds < time_limit and batches < TRAIN_BATCH_CAP):
            xb = batch()
            t0, c0 = time.perf_counter(), time.process_time()
            encode_seconds += step(xb)
            seconds, cpu = seconds + time.perf_counter() - t0, cpu + time.process_time() - c0
            batches += 1
    model.eval()
    rec = {"train_batch_size": batch_size, "train_batches": batches,
           "train_encode_share": encode_seconds / seconds}
    _rates(rec, "train_samples_per_s", batches * batch_size, seconds, cpu)
    return rec


def measure_dim(preset, dim, M, K, n, train_size, time_limit, seed, faiss, quiet):
    """Every figure of one dimension (see the module docstring) as a dict."""
    import torch

    from .. import codec
    from ..architecture import decode_flops, encode_flops, expands_error
    from ..evaluation import mse
    from ..model import QincoModel
    from ..rq_init import init_from_rq
    from . import baselines
    from .speed import _timed_prefix, gaussian_vectors

    inputs = gaussian_vectors(dim, n, train_size, seed)
    note(f"[d={dim}] RQ start of {preset} M={M} K={K} on {len(inputs.train):,} vectors", quiet)
    model = QincoModel.from_preset(preset, dim, M, K=K)
    init_from_rq(model, inputs.train, seed=seed)
    cfg = model.config
    A, B = cfg.A, cfg.B
    rec = {"dim": dim, "A": A, "B": B, "default_path": "expanded" if expands_error(cfg.step) else "direct",
           "encode_flops": encode_flops(cfg, A, B), "decode_flops": decode_flops(cfg),
           "parameters": model.num_parameters()}

    note(f"[d={dim}] training steps", quiet)
    rec.update(measure_training(model, inputs.train, _train_batch_size(), time_limit, seed))

    with torch.inference_mode():
        xn = model.normalize(torch.from_numpy(inputs.base))

        def encoder(expanded):
            return lambda k: codec.encode_normalized(model, xn[:k], A, B, expanded=expanded).numpy()

        note(f"[d={dim}] encoding (direct error, then expanded)", quiet)
        k, _, _, direct_codes = _timed_prefix(encoder(False), n, time_limit)
        codes = {False: direct_codes}
        for expanded in (False, True):
            wall, cpu, codes[expanded] = timed(lambda: encoder(expanded)(k))
            _rates(rec, f"encode_vps_{'expanded' if expanded else 'direct'}", k, wall, cpu)
        rec["n"] = k
        for suffix in ("", "_cpu"):
            rec[f"encode_vps{suffix}"] = rec[f"encode_vps_{rec['default_path']}{suffix}"]
        rec["same_codes"] = float((codes[True] == codes[False]).all(1).mean())
        x = inputs.base[:k]
        recon = {e: model.denormalize(codec.decode_normalized(model, torch.from_numpy(c))).numpy()
                 for e, c in codes.items()}
        rec["mse_expanded"], rec["mse_direct"] = mse(x, recon[True]), mse(x, recon[False])

        note(f"[d={dim}] decoding", quiet)
        c = torch.from_numpy(codes[True])
        reps = max(2, int(min(1.0, time_limit) / max(timed(lambda: codec.decode_normalized(model, c), 1)[0], 1e-6)))
        wall, cpu, _ = timed(lambda: codec.decode_normalized(model, c), min(reps, 20))
        _rates(rec, "decode_vps", k, wall, cpu)

    if K == 256:
        note(f"[d={dim}] faiss RQ (beam {FAISS_RQ_BEAM}): training, encoding", quiet)
        rq = baselines.rq(faiss, dim, M, beam=FAISS_RQ_BEAM)
        t0 = time.perf_counter()
        with baselines.captured_native_stderr():
            rq.train(inputs.train)
        rec["faiss_rq_train_seconds"] = time.perf_counter() - t0
        k_rq, _, _, rq_codes = _timed_prefix(lambda k: rq.encode(inputs.base[:k]), n, time_limit)
        wall, cpu, _ = timed(lambda: rq.encode(inputs.base[:k_rq]))
        rec["faiss_rq_n"] = k_rq
        _rates(rec, "faiss_rq_encode_vps", k_rq, wall, cpu)
        rec["faiss_rq_mse"] = mse(inputs.base[:k_rq], rq.decode(rq_codes))
        for suffix in ("", "_cpu"):
            rec[f"encode_x_faiss_rq{suffix}"] = rec[f"encode_vps{suffix}"] / rec[f"faiss_rq_encode_vps{suffix}"]
    return rec


def _train_batch_size():
    """train()'s own default batch size (one definition: its signature)."""
    import inspect

    from ..training import train

    return inspect.signature(train).parameters["batch_size"].default


# cost(d) / cost(first d): (record key, label, whether the key is a rate, i.e. the cost is 1/value);
# the rates per CPU second (see the module docstring)
COSTS = [
    ("encode_flops", "encode FLOPs", False),
    ("encode_vps_cpu", "encode (own choice)", True),
    ("encode_vps_expanded_cpu", "encode, expanded", True),
    ("encode_vps_direct_cpu", "encode, direct", True),
    ("decode_vps_cpu", "decode", True),
    ("train_samples_per_s_cpu", "training step", True),
    ("faiss_rq_encode_vps_cpu", "faiss RQ encode", True),
]


def cost_ratios(records):
    """Per record, {key: cost(d) / cost(first d)} for COSTS, and 'dim' (d over the first d)."""
    first = records[0]
    out = []
    for r in records:
        ratios = {"dim": r["dim"] / first["dim"]}
        for key, _, rate in COSTS:
            a, b = r.get(key), first.get(key)
            if a and b:
                ratios[key] = b / a if rate else a / b
        out.append(ratios)
    return out


def run(preset, dims, nbytes, n=20000, threads=None, device="auto", K=256, train_size=20000,
        time_limit=5.0, seed=0, quiet=False):
    """Measure every dimension of `dims` at M = `nbytes` codes of K values (K <= 256: one byte a
    code) on the CPU (`device`: 'auto' or 'cpu'), `threads` threads (default: every core this
    process may use); returns the result dict (see the module docstring)."""
    import torch

    from ..architecture import bytes_per_code
    from ..presets import get_preset
    from ..threads import available_cores
    from .speed import _load, _machine

    faiss = require_faiss()
    get_preset(preset)
    dims = parse_dims(dims)
    if n < 1:
        raise InputError(f"--n must be at least 1, got {n}")
    if time_limit <= 0:
        raise InputError(f"--time-limit must be positive, got {time_limit}")
    if K < 2 or K & (K - 1) or K > 256:
        raise InputError(f"--K must be a power of two between 2 and 256, got {K}")
    if nbytes < 1:
        raise InputError(f"--bytes must be at least 1, got {nbytes}")
    if device == "cuda":
        raise InputError("--dims measures the CPU encoder and training step: use --device cpu or auto")
    cores = available_cores()
    threads = int(threads or cores)
    if threads < 1:
        raise InputError(f"--threads must be positive, got {threads}")
    saved = torch.get_num_threads(), faiss.omp_get_max_threads()
    load_at_start = _load()
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    try:
        records = [measure_dim(preset, d, nbytes, K, n, train_size, time_limit, seed, faiss, quiet)
                   for d in dims]
    finally:
        torch.set_num_threads(saved[0])
        faiss.omp_set_num_threads(saved[1])
    p = get_preset(preset)
    notes = [
        f"standard Gaussian vectors at every d (n = {n:,} at most, column n; {train_size:,} for the RQ "
        f"start, the training batches and faiss RQ); RQ-initialised models after the timed training "
        f"batches; {threads} thread(s)",
        f"encode: the model's own search at each d (column A/B: the preset's A={p.A}, B={p.B} with "
        f"presets.DIMENSION_RULES applied); 'own choice' is the error the encoder "
        "picks (architecture.expands_error: expanded where de·de + de < de·d); same codes: share of "
        "vectors whose codes the two errors agree on",
        f"training step: training.py's recipe (encode under no_grad with train_A={p.train_A}, prefix "
        "losses, backward, clipping, AdamW) on random batches of train()'s default size; "
        "'encode share' is the part of it spent encoding",
        "FLOPs: architecture.encode_flops / decode_flops (matmul multiply-adds x 2 per vector) of the "
        "encoder as it runs",
        "rates per CPU second of this process (all threads), wall-clock rates beside them in the JSON "
        "(keys without _cpu); cost ratios: CPU seconds (or FLOPs) per vector at d over the same at "
        "the first d",
    ]
    if K != 256:
        notes.append(f"faiss RQ left out: it uses 8-bit codes (K=256), the model has K={K}")
    return {
        "benchmark": "speed-dims",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": {"preset": preset, "dims": list(dims), "M": nbytes, "K": K, "A": p.A, "B": p.B,
                   "train_A": p.train_A, "bytes_per_vector": nbytes * bytes_per_code(K),
                   "n": n, "train_size": train_size, "time_limit_s": time_limit, "threads": threads,
                   "device": "cpu"},
        "machine": _machine(cores, faiss, load_at_start),
        "dims": records,
        "cost_ratios": cost_ratios(records),
        "notes": notes,
    }


# ---------------------------------------------------------------- reports
COLUMNS = [
    ("dim", "d", "d"),
    ("n", "n", ",d"),
    ("search", "A/B", ""),
    ("default_path", "own choice", ""),
    ("encode_vps_expanded_cpu", "enc vec/CPU-s expanded", ",.0f"),
    ("encode_vps_direct_cpu", "enc vec/CPU-s direct", ",.0f"),
    ("expanded_x_direct", "expanded x direct", ".2f"),
    ("same_codes_pct", "same codes %", ".2f"),
    ("encode_vps", "enc vec/s (wall)", ",.0f"),
    ("decode_vps_cpu", "dec vec/CPU-s", ",.0f"),
    ("train_samples_per_s_cpu", "train samples/CPU-s", ",.0f"),
    ("train_encode_pct", "train: encode %", ".0f"),
    ("encode_mflops", "enc MFLOP/vec", ",.2f"),
    ("decode_mflops", "dec MFLOP/vec", ",.3f"),
    ("faiss_rq_encode_vps_cpu", "faiss RQ enc vec/CPU-s", ",.0f"),
    ("encode_x_faiss_rq_cpu", "enc x faiss RQ", ".2f"),
]
RATIO_COLUMNS = [("dim_label", "d", ""), ("dim", "d / d0", ".2f")] + [
    (key, label, ".2f") for key, label, _ in COSTS]


def table_rows(result):
    """The rows of the main table (derived columns added)."""
    out = []
    for r in result["dims"]:
        pct = lambda v: None if v is None else 100.0 * v
        out.append({**r, "expanded_x_direct": r["encode_vps_expanded_cpu"] / r["encode_vps_direct_cpu"],
                    "search": f"{r['A']}/{r['B']}",
                    "same_codes_pct": pct(r["same_codes"]), "train_encode_pct": pct(r["train_encode_share"]),
                    "encode_mflops": r["encode_flops"] / 1e6, "decode_mflops": r["decode_flops"] / 1e6})
    return out


def text_report(result, markdown=False):
    c, mach = result["config"], result["machine"]
    head = [f"qinco-bench speed --dims: {c['preset']} (its search at each d: column A/B), M={c['M']} K={c['K']} "
            f"({c['bytes_per_vector']} B/vector), {c['threads']} thread(s)",
            f"machine: {mach['cpu']}, {mach['cores']} cores, torch {mach['torch']}, faiss {mach['faiss']}, "
            f"1-min load average at start / end {mach.get('load_average_1min_at_start') or 0:.2f} / "
            f"{mach.get('load_average_1min') or 0:.2f}"]
    lines = [f"- {h}" if markdown else h for h in head]
    lines += ["", format_table(table_rows(result), COLUMNS, markdown=markdown), ""]
    first = result["dims"][0]["dim"]
    lines.append(f"{'### ' if markdown else ''}cost per vector at d over the cost at d = {first}")
    if markdown:
        lines.append("")
    rows = [{**r, "dim_label": str(rec["dim"])} for r, rec in zip(result["cost_ratios"], result["dims"])]
    lines += [format_table(rows, RATIO_COLUMNS, markdown=markdown), ""]
    lines += [f"{'- ' if markdown else '# '}{text}" for text in result["notes"]]
    return "\n".join(lines)


def write_outputs(result, out_dir=None, json_path=None):
    """speed-dims.json and speed-dims.md under out_dir and/or the JSON at json_path."""
    return write_report(result, "speed-dims", "qinco-bench speed --dims", text_report(result, markdown=True),
                        out_dir, json_path)
