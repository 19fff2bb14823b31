"""File-size benchmark (`qinco-bench filesize`, issue 14): the default `qinco-compress` file
against faiss RQ in the same number of bytes, per collection size n.

For each n (a seeded subset of the collection):

* ours: `qinco_codec.compress(x, path, steps=--bytes, max_minutes=--max-minutes, seed=--seed)`
  with every other argument at its default (the default command); the whole file is decoded
  and its full-rate MSE measured over every row;
* faiss RQ (beam 5, 8-bit codes) trained on a seeded sample of min(n, the compressor's
  DEFAULT_TRAIN_SIZE) rows, at the largest M whose file (codes plus float16 codebooks) is no
  larger than ours (`largest_faiss_m`), and at M = our steps (same code rate) for reference.

The bar is met at n when our MSE is at most faiss's at the largest M that fits our file.

Crossover (per dataset): when does the learned network beat codebooks only (no network) in
the same file size? Measured from rate control's own comparison at each n (summary
`model_choice`: network_mse against codebooks_mse), and computed beyond the largest n measured
(`crossover_beyond`): the network's MSE at the largest n (conservative: more data only helps
it) against a codebooks-only model's held-out MSE at the steps that fit the network's file at
each larger n (`codebooks_steps_fitting`).

MSE: squared L2 error summed over dimensions, mean over vectors (float64 accumulation).
"""
import os
import tempfile
import time

import numpy as np

from ..errors import InputError
from ..progress import note
from .common import (MIN_TRAIN, Timer, format_table, require_faiss, sample_training,
                     write_json_and_markdown)

K = 256                   # codewords per step (8-bit codes), ours and faiss's
FAISS_BEAM = 5            # faiss ResidualQuantizer's beam (max_beam_size), the bar of issue 14
CODEBOOK_BYTES = 2        # float16 codebook entries in the faiss file size
HELD_OUT_ROWS = 2000      # rows the codebooks-only curve is measured on
DECODE_BATCH = 65536      # rows decoded at a time when measuring a file's MSE
CROSSOVER_LIMIT = 10 ** 12  # largest collection size the computed crossover looks at
DATASETS = ("glove50", "glove50-all")

COLUMNS = [
    ("n", "n", ",d"),
    ("file_bpv", "file B/vec", ".2f"),
    ("code_bpv", "code B/vec", ".2f"),
    ("model_share", "model share", ".3f"),
    ("model_kind", "model", ""),
    ("mse", "MSE", ".4f"),
    ("faiss_m", "RQ M", "d"),
    ("faiss_file_bpv", "RQ file B/vec", ".2f"),
    ("faiss_mse", "RQ MSE", ".4f"),
    ("ratio", "ours/RQ", ".3f"),
    ("faiss_rate_mse", "RQ MSE @steps", ".4f"),
    ("verdict", "ours <= RQ", ""),
]
CROSSOVER_COLUMNS = [
    ("data", "data", ""),
    ("steps", "steps", "d"),
    ("sizes", "sizes measured", ""),
    ("measured", "network wins from (measured)", ""),
    ("computed", "network wins from (computed)", ""),
    ("computed_held_out", "computed on held-out rows", ""),
]


# ---------------------------------------------------------------- arithmetic
def faiss_file_bytes(n, dim, M, K=K):
    """Bytes of a faiss RQ 'file' of n vectors at M codes of 8 bits: the codes (n * M bytes) plus
    M codebooks of K float16 entries of `dim` values. No header is counted (it favours faiss)."""
    return n * M + M * K * dim * CODEBOOK_BYTES


def largest_faiss_m(n, dim, budget, K=K, limit=256):
    """The largest M (<= limit) whose faiss RQ file (`faiss_file_bytes`) is at most `budget`
    bytes; 0 when not even one step fits. Each step costs the same, so it is a division."""
    per_step = faiss_file_bytes(n, dim, 1, K)
    return int(min(limit, max(budget, 0) // per_step))


def measured_crossover(points):
    """The smallest n where the network's MSE is at most that of codebooks only in the same file
    size, from rate control's measurements: points are (n, network_mse, codebooks_mse), either
    MSE None where rate control did not compare (no network fitted). None when it never does."""
    wins = [n for n, net, cb in sorted(points) if net is not None and cb is not None and net <= cb]
    return wins[0] if wins else None


def best_codebooks_mse(curve, steps):
    """The lowest codebooks-only MSE with at most `steps` steps (a file that holds `steps` steps
    also holds fewer); `curve` maps steps to held-out MSE. None when no entry is that small."""
    fits = [mse for s, mse in curve.items() if int(s) <= steps]
    return min(fits) if fits else None


def crossover_beyond(network_mse, curve, steps_fitting, n_from, n_limit=CROSSOVER_LIMIT):
    """The smallest n >= n_from at which `network_mse` is at most the best codebooks-only MSE
    (`curve`, steps -> MSE) with the steps that fit the network's file size at n
    (`steps_fitting(n)`, non-increasing in n: the network's model is paid for once, so at larger
    n it buys fewer extra code steps). None ("never at this budget") when the network still
    loses at n_limit, where codebooks only are left with about the network's own steps.
    Bisection: the network's advantage only grows with n."""
    def wins(n):
        cb = best_codebooks_mse(curve, steps_fitting(n))
        return cb is None or network_mse <= cb

    if wins(n_from):
        return int(n_from)
    if not wins(n_limit):
        return None
    lo, hi = int(n_from), int(n_limit)    # loses at lo, wins at hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if wins(mid) else (mid, hi)
    return hi


def codebooks_steps_fitting(n, dim, steps, network_model_bytes, limit, K=K, chunk_rows=None,
                            preset=None):
    """The codebooks-only steps (at least `steps`, at most `limit`) whose file of n vectors is no
    larger than the network's file at `steps` with a model of `network_model_bytes` bytes: what
    rate control compares the network with (rate_control.decide_fixed_rate), no metadata."""
    from .. import rate_control as rc
    from ..compressor import DEFAULT_CHUNK_ROWS
    from ..presets import DEFAULT_PRESET
    chunk_rows = chunk_rows or DEFAULT_CHUNK_ROWS
    size = rc.network_file_size(n, dim, steps, K, chunk_rows, network_model_bytes,
                                preset or DEFAULT_PRESET, None)
    equal = rc.most_codebook_steps(n, dim, K, size, chunk_rows, None, limit)
    return min(limit, max(steps, equal))


def measured_text(sizes, measured):
    """The measured crossover as a table cell: from which measured size the network wins."""
    if measured is None:
        return "not at " + ", ".join(f"{n:,}" for n in sizes)
    if measured == min(sizes):
        return f"below the smallest size measured (wins at {measured:,})"
    return f"{measured:,}"


def computed_text(computed, n_from, network_mse, floor_mse, steps):
    """The computed crossover as a table cell: `computed` from crossover_beyond (None: never),
    `floor_mse` the codebooks-only MSE at `steps` (what they keep at any n)."""
    if network_mse is None:
        return "no network measured (none fitted at these sizes)"
    if computed is None:
        return (f"never at this budget (network MSE {network_mse:.4g} at n={n_from:,}; codebooks "
                f"only reach {floor_mse:.4g} at {steps} steps)")
    if computed == n_from:
        return f"{computed:,} (the network wins at the largest size measured)"
    return f"about {computed:,} (computed beyond {n_from:,})"


# ---------------------------------------------------------------- collections
def glove50_collection(name):
    """(vectors, description) of a built-in collection: 'glove50' is the base split (100,000 x
    50); 'glove50-all' is base plus train_all (every GloVe row but the 1,000 queries: 399,000)."""
    from .. import datasets
    if name == "glove50":
        return datasets.glove50("base"), "GloVe-50 base split"
    if name == "glove50-all":
        return (np.concatenate([datasets.glove50("base"), datasets.glove50("train_all")]),
                "GloVe-50 base + train_all splits (every row but the queries)")
    raise InputError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


def files_collection(paths):
    """(vectors, description) of one or more vector files concatenated row-wise."""
    from ..readers import read_vectors
    from ..validation import as_float_matrix
    parts = []
    for path in paths:
        if not os.path.exists(path):
            raise InputError(f"--data {path}: no such file")
        parts.append(as_float_matrix(read_vectors(path), name=path, allow_empty=False))
        if parts[-1].shape[1] != parts[0].shape[1]:
            raise InputError(f"--data {path}: dimension {parts[-1].shape[1]} differs from "
                             f"{paths[0]}'s {parts[0].shape[1]}")
    return np.concatenate(parts), " + ".join(os.path.basename(p) for p in paths)


def check_sizes(sizes, total):
    """Sizes sorted and distinct, each between MIN_TRAIN and the collection's rows."""
    sizes = sorted(set(int(s) for s in sizes))
    if not sizes:
        raise InputError("--sizes: give at least one collection size")
    if sizes[0] < MIN_TRAIN:
        raise InputError(f"--sizes: {sizes[0]:,} is below {MIN_TRAIN} (k-means needs as many "
                         f"vectors as its 256 codewords)")
    if sizes[-1] > total:
        raise InputError(f"--sizes: {sizes[-1]:,} is larger than the collection ({total:,} rows)")
    return sizes


def subset_rows(total, n, seed):
    """Row numbers of a seeded random subset of n of `total` rows, in order (all when n >= total)."""
    if n >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, n, replace=False))


def subset(x, n, seed):
    """The seeded random subset of n rows of x (`subset_rows`)."""
    return np.ascontiguousarray(x if n >= len(x) else x[subset_rows(len(x), n, seed)])


def curve_rows(total, n, train_size, seed):
    """The rows of the codebooks-only curve: {'train': a seeded sample of min(n, train_size) rows
    of the n-row subset (`subset_rows`), 'collection': HELD_OUT_ROWS rows of that subset (rows the
    file compresses: trained on when n <= train_size, as in rate control's own comparison), and
    'held_out': HELD_OUT_ROWS rows of the whole collection outside the training sample (None when
    there are too few)}."""
    rng = np.random.default_rng(seed + 2)
    chosen = subset_rows(total, n, seed)
    train = np.sort(rng.choice(chosen, min(n, train_size), replace=False))
    collection = np.sort(rng.choice(chosen, min(n, HELD_OUT_ROWS), replace=False))
    others = np.setdiff1d(np.arange(total), train)
    held_out = (np.sort(rng.choice(others, HELD_OUT_ROWS, replace=False))
                if len(others) >= HELD_OUT_ROWS else None)
    return {"train": train, "collection": collection, "held_out": held_out}


# ---------------------------------------------------------------- measuring
def _load():
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def mse_of(x, recon):
    """Squared L2 error summed over dimensions, mean over rows, in float64."""
    return float(((np.asarray(recon, np.float64) - x) ** 2).sum(1).mean())


def file_mse(path, x):
    """The full-rate MSE of the .qnc at `path` against x: every row decoded, in batches."""
    import qinco_codec
    total, start = 0.0, 0
    with qinco_codec.open(path) as f:
        for batch in f.iter_decode(batch_size=DECODE_BATCH):
            stop = start + len(batch)
            total += float(((np.asarray(batch, np.float64) - x[start:stop]) ** 2).sum())
            start = stop
    if start != len(x):
        raise RuntimeError(f"{path}: decoded {start} rows, expected {len(x)}")
    return total / len(x)


def faiss_rq(faiss, train, x, M):
    """faiss ResidualQuantizer(d, M, 8), beam FAISS_BEAM, trained on `train`: (MSE on x, seconds,
    faiss's warnings: its C++ stderr, each distinct line once with its count)."""
    from .baselines import captured_native_stderr, summarize_warnings
    rq = faiss.ResidualQuantizer(x.shape[1], int(M), 8)
    rq.max_beam_size = FAISS_BEAM
    with captured_native_stderr() as captured, Timer() as t:
        rq.train(np.ascontiguousarray(train, dtype=np.float32))
        recon = rq.decode(rq.compute_codes(np.ascontiguousarray(x, dtype=np.float32)))
    return mse_of(x, recon), t.seconds, summarize_warnings(captured[0])


def measure_size(data, n, steps, max_minutes, seed, faiss, quiet, step):
    """One row: our default file and faiss RQ on a seeded subset of n rows of `data`."""
    from .. import compress
    from ..compressor import DEFAULT_TRAIN_SIZE

    x = subset(data, n, seed)
    dim = x.shape[1]
    with tempfile.TemporaryDirectory(prefix="qinco-bench-filesize-") as tmp:
        path = os.path.join(tmp, "collection.qnc")
        step(f"n={n:,}: qinco-compress --bytes {steps} --max-minutes {max_minutes:g}")
        load_before = _load()
        with Timer() as t:
            summary = compress(x, path, steps=steps, max_minutes=max_minutes, seed=seed, quiet=quiet)
        load_after = _load()
        step(f"n={n:,}: decode {n:,} rows")
        mse = file_mse(path, x)
    ours_steps, file_size = summary["steps"], summary["file_size"]
    choice = summary.get("model_choice") or {}
    train = sample_training(x, DEFAULT_TRAIN_SIZE, seed)
    M = largest_faiss_m(n, dim, file_size)
    row = {"n": n, "dim": dim, "file_size": file_size, "file_bpv": file_size / n,
           "code_bytes": summary["code_bytes"], "code_bpv": summary["code_bytes"] / n,
           "model_bytes": summary["model_bytes"], "model_share": summary["model_bytes"] / file_size,
           "steps": ours_steps, "model_kind": choice.get("kind", "given"),
           "model_choice": choice, "mse": mse, "compress_s": t.seconds,
           "load_before": load_before, "load_after": load_after,
           "faiss_train_rows": len(train), "faiss_m": M}
    if M:
        step(f"n={n:,}: faiss RQ M={M} (beam {FAISS_BEAM}) on {len(train):,} rows")
        row["faiss_mse"], row["faiss_s"], row["faiss_warnings"] = faiss_rq(faiss, train, x, M)
        row["faiss_file_bytes"] = faiss_file_bytes(n, dim, M)
        row["faiss_file_bpv"] = row["faiss_file_bytes"] / n
        row["ratio"] = mse / row["faiss_mse"] if row["faiss_mse"] else None
        row["verdict"] = "yes" if mse <= row["faiss_mse"] else "no"
    else:
        row["verdict"] = "yes (no RQ fits)"
    if M == ours_steps and M:
        row["faiss_rate_mse"] = row["faiss_mse"]
    else:
        step(f"n={n:,}: faiss RQ M={ours_steps} (our code rate)")
        row["faiss_rate_mse"] = faiss_rq(faiss, train, x, ours_steps)[0]
    return row


def codebooks_curve(train, tests, steps, s_max, seed, refine_seconds, quiet):
    """The MSE of one codebooks-only model of s_max steps at each prefix steps..s_max, on each
    set of rows in `tests` (name -> rows): {name: {steps: MSE}}. Fitted on `train`
    (rate_control.fit_codebooks_only), refined for `refine_seconds` as rate control refines its
    own (0: not refined), stored as float16 (as a file holds it)."""
    from .. import rate_control as rc
    model = rc.fit_codebooks_only(train, s_max, K, seed)
    if refine_seconds > 0:
        model = rc.refined(model, rc.refine_sample(train, seed), refine_seconds, quiet=quiet)
    model = rc.stored_model(model, "float16")[1]
    curves = {}
    for name, x in tests.items():
        codes = model.encode(x)
        curves[name] = {s: mse_of(x, model.decode(codes, steps=s)) for s in range(steps, s_max + 1)}
    return curves


def apply_stored_codebooks(entry, curve, rows, steps):
    """Put the largest codebooks-only file's own MSE at `steps` into the curve where it is lower.

    Why: the curve is the prefixes of one model refined at its largest steps, and a prefix of a
    jointly refined model is worse than codebooks refined at that prefix (GloVe-50, 100k: 0.594
    at 16 steps against 0.537 for the 16-step file), which would credit the network with wins
    that codebooks only, as rate control stores them, do not give it."""
    stored = [r for r in rows if r.get("model_kind") == "codebooks-only" and r.get("steps") == steps]
    if stored and steps in curve and stored[-1]["mse"] < curve[steps]:
        entry["curve_prefix_at_steps"] = curve[steps]
        curve[steps] = stored[-1]["mse"]
        entry["curve_at_steps_from_file"] = {"n": stored[-1]["n"], "mse": stored[-1]["mse"]}


def crossover(name, data, rows, steps, seed, refine_seconds, quiet):
    """The crossover entry of one dataset from the measured rows (see the module docstring)."""
    from .. import rate_control as rc
    from ..compressor import DEFAULT_TRAIN_SIZE

    sizes = [r["n"] for r in rows]
    points = [(r["n"], r["model_choice"].get("network_mse"), r["model_choice"].get("codebooks_mse"))
              for r in rows]
    measured = measured_crossover(points)
    compared = [r for r in rows if r["model_choice"].get("network_mse") is not None]
    entry = {"data": name, "steps": steps, "sizes": ", ".join(f"{n:,}" for n in sizes),
             "points": [{"n": n, "network_mse": a, "codebooks_mse": b,
                         "codebooks_steps": r["model_choice"].get("codebooks_steps"),
                         "network_model_bytes": r["model_choice"].get("network_model_bytes")}
                        for (n, a, b), r in zip(points, rows)],
             "measured_n": measured, "computed_n": None}
    entry["measured"] = measured_text(sizes, measured)
    if not compared:
        entry["computed"] = computed_text(None, sizes[-1], None, None, steps)
        return entry
    last = compared[-1]
    choice = last["model_choice"]
    seen = [r["model_choice"].get("codebooks_steps") or steps for r in compared]
    s_max = min(max(seen), rc.COMPARE_STEPS_FACTOR * steps)
    rows_of = curve_rows(len(data), last["n"], DEFAULT_TRAIN_SIZE, seed)
    tests = {k: np.ascontiguousarray(data[r]) for k, r in rows_of.items()
             if k != "train" and r is not None}
    curves = codebooks_curve(data[rows_of["train"]], tests, steps, s_max, seed, refine_seconds,
                             quiet)
    curve = curves["collection"]
    apply_stored_codebooks(entry, curve, rows, steps)
    dim, net_mse, model_bytes = data.shape[1], choice["network_mse"], choice["network_model_bytes"]

    def fitting(n):
        return codebooks_steps_fitting(n, dim, steps, model_bytes, s_max)

    computed = crossover_beyond(net_mse, curve, fitting, last["n"])
    entry.update({"computed_n": computed, "from_n": last["n"], "network_mse": net_mse,
                  "curve": {str(s): v for s, v in curve.items()},
                  "curve_trained_on": len(rows_of["train"]), "curve_refine_seconds": refine_seconds,
                  "curve_s_max": s_max})
    if "held_out" in curves:   # the same against rows no model trained on
        held = curves["held_out"]
        apply_stored_codebooks({}, held, rows, steps)
        entry["curve_held_out"] = {str(s): v for s, v in held.items()}
        entry["computed_held_out_n"] = crossover_beyond(net_mse, held, fitting, last["n"])
        entry["computed_held_out"] = computed_text(entry["computed_held_out_n"], last["n"],
                                                   net_mse, held[steps], steps)
    if choice.get("codebooks_steps") in curve and choice.get("codebooks_mse"):
        # how the curve's codebooks compare with rate control's own at the steps it compared
        entry["curve_vs_rate_control"] = curve[choice["codebooks_steps"]] / choice["codebooks_mse"]
    entry["computed"] = computed_text(computed, last["n"], net_mse, curve[steps], steps)
    return entry


def _environment(faiss):
    from .rd import _environment as rd_environment
    return rd_environment(faiss)


def run(name, data, description, sizes, steps=16, max_minutes=None, seed=0, quiet=False,
        refine_seconds=None, on_rows=None, source_args=""):
    """The benchmark on one collection: {'settings', 'environment', 'rows', 'crossover',
    'commands', 'complete'}; `on_rows(result)` after each size (partial, complete=False)."""
    from .. import rate_control as rc
    from ..compressor import DEFAULT_MAX_MINUTES, DEFAULT_TRAIN_SIZE

    faiss = require_faiss()
    max_minutes = DEFAULT_MAX_MINUTES if max_minutes is None else max_minutes
    if refine_seconds is None:   # the share of the budget rate control refines its codebooks for
        refine_seconds = rc.REFINE_SHARE * max_minutes * 60
    sizes = check_sizes(sizes, len(data))
    t0 = time.perf_counter()

    def step(desc):
        note(f"filesize [{time.perf_counter() - t0:7.1f} s] {desc}", quiet)

    command = (f"qinco-bench filesize {source_args} --sizes {' '.join(map(str, sizes))} "
               f"--bytes {steps} --max-minutes {max_minutes:g} --seed {seed}")
    result = {"settings": {"data": name, "collection": description, "collection_rows": len(data),
                           "dim": int(data.shape[1]), "sizes": sizes, "steps": steps,
                           "max_minutes": max_minutes, "seed": seed,
                           "faiss_beam": FAISS_BEAM, "faiss_train_size": DEFAULT_TRAIN_SIZE,
                           "faiss_file_bytes": "n*M + M*256*dim*2 (codes + float16 codebooks)",
                           "total_seconds": 0.0},
              "environment": _environment(faiss), "commands": [command], "rows": [],
              "crossover": [], "load_start": _load(), "complete": False}
    for n in sizes:
        result["rows"].append(measure_size(data, n, steps, max_minutes, seed, faiss, quiet, step))
        result["settings"]["total_seconds"] = time.perf_counter() - t0
        if on_rows:
            on_rows(result)
    step("crossover: codebooks-only curve")
    result["crossover"].append(crossover(name, data, result["rows"], steps, seed, refine_seconds,
                                         quiet))
    step("done")
    result["settings"]["total_seconds"] = time.perf_counter() - t0
    result["load_end"] = _load()
    result["complete"] = True
    return result


# ---------------------------------------------------------------- outputs
def text_table(result):
    return format_table(result["rows"], COLUMNS)


def crossover_table(result, markdown=False):
    return format_table(result["crossover"], CROSSOVER_COLUMNS, markdown=markdown)


def _load_text(value):
    return "?" if value is None else f"{value:.2f}"


def markdown(result):
    s, env = result["settings"], result["environment"]
    load = ", ".join(f"n={r['n']:,}: {_load_text(r['load_before'])} -> {_load_text(r['load_after'])}"
                     for r in result["rows"])
    lines = [
        f"# File size: {s['data']} ({s['collection']}, {s['collection_rows']:,} x {s['dim']})", "",
        f"`qinco-bench filesize`, {env['date']}: the default `qinco-compress` file (--bytes "
        f"{s['steps']}, --max-minutes {s['max_minutes']:g}, seed {s['seed']}) of a seeded subset of "
        f"n rows, against faiss RQ (beam {s['faiss_beam']}) trained on a seeded sample of at most "
        f"{s['faiss_train_size']:,} of those rows, at the largest M whose file ({s['faiss_file_bytes']}; "
        f"no header counted) is no larger than ours; {s['total_seconds']:.0f} s in all.", "",
        "MSE: squared L2 error summed over dimensions, mean over every row of the collection "
        "(ours: the file decoded). model share: the embedded model's share of our file. "
        "RQ MSE @steps: faiss RQ at our code rate (smaller file), for reference.", "",
        format_table(result["rows"], COLUMNS, markdown=True), "",
        "## Crossover: the learned network against codebooks only in the same file size", "",
        "Measured: rate control's own comparison at each n (the MSE of the network against "
        "codebooks only with the steps that fit the network's file, on the rows rate control "
        "compares on: held out from training, or rows it trained on when training took all n). "
        "Computed: the network's MSE at the largest n measured against a codebooks-only model's "
        "MSE at the steps that fit the network's file at larger n, that MSE measured on rows of "
        "the collection (as rate control measures) and, in the last column, on rows outside the "
        "training sample.", "",
        crossover_table(result, markdown=True), "",
        "Commands:", "", "```", *result["commands"], "```", "",
        f"Software: qinco-codec {env['qinco_codec']}, torch {env['torch']}, faiss {env['faiss']}, "
        f"numpy {env['numpy']}, Python {env['python']}; {env['cpus']} CPUs, threads: torch "
        f"{env['torch_threads']}, faiss {env['faiss_threads']}.", "",
        f"Load (1-minute average, before -> after each compress): {load}; at start "
        f"{_load_text(result.get('load_start'))}, at end {_load_text(result.get('load_end'))}.", "",
    ]
    return "\n".join(lines)


def write_partial(result, out_dir):
    """filesize.json alone, with "complete": false, while a run is going on."""
    from .common import write_partial as common_write_partial
    common_write_partial(result, out_dir, "filesize")


def write_outputs(result, out_dir):
    """filesize.json and filesize.md under out_dir; returns their paths."""
    paths = write_json_and_markdown(result, out_dir, "filesize", markdown(result))
    paths.pop("png")
    return paths
