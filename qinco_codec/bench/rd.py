"""Rate-distortion benchmark (`qinco-bench rd`): our presets against faiss codecs, in one process,
on the same training and evaluation vectors.

For every method and rate: bytes per vector, MSE (squared L2 error summed over dimensions, mean
over vectors), relative MSE (over the evaluated vectors' variance around their mean), R@1 and R@10
(exhaustive search among the decoded vectors, `evaluation.recalls`), training seconds, encode and
decode microseconds per vector, the model's bytes (what must be stored besides the codes) and the
effective bytes per vector with the model counted, at the benchmark's n and at 1M vectors.

Our multi-rate line: the model trained at the largest rate, decoded at prefixes of its codes.

Protocols: 'heldout' trains on separate vectors and evaluates on DATA (for GloVe-50: the train
split, then base); 'self' trains every method on a sample of DATA itself and evaluates on all of
DATA (compress-a-collection), where only the effective bytes (model counted) compare fairly.
"""
import datetime
import json
import os
import platform
import time

import numpy as np

from ..errors import InputError
from ..progress import note
from . import baselines
from .common import (Inputs, Timer, check_training_size, format_table, notes_and_figure,
                     require_faiss, sample_training, training_vectors, write_json_and_markdown)
from .common import write_partial as common_write_partial

METHODS = ("pq", "opq", "rq", "lsq", "sq", "rabitq", "turboquant", "eden", "qinco")
K = 256          # codewords per step of every trained method here (8-bit codes)
ONE_MILLION = 1_000_000

COLUMNS = [
    ("method", "method", ""),
    ("bytes", "B/vec", "d"),
    ("mse", "MSE", ".4f"),
    ("rel_mse", "rel MSE", ".4f"),
    ("R@1", "R@1", ".3f"),
    ("R@10", "R@10", ".3f"),
    ("train_s", "train s", ".1f"),
    ("encode_us", "enc us/vec", ".2f"),
    ("decode_us", "dec us/vec", ".2f"),
    ("model_bytes", "model bytes", ",d"),
    ("eff_bytes_n", "eff B/vec @n", ".2f"),
    ("eff_bytes_1M", "eff B/vec @1M", ".2f"),
]


# ---------------------------------------------------------------- inputs
def check_queries(base, queries, gt, qname="--queries", gname="--gt"):
    """Queries of the base's dimension; gt with one row per query whose first column holds row
    numbers of base."""
    if queries is None:
        return
    if queries.shape[1] != base.shape[1]:
        raise InputError(f"{qname}: dimension {queries.shape[1]} differs from DATA's {base.shape[1]}")
    if len(queries) == 0:
        raise InputError(f"{qname}: no query vectors")
    if gt is None:
        return
    if gt.ndim != 2 or gt.shape[1] < 1:
        raise InputError(f"{gname}: expected a 2-D array of neighbour ids (one row per query), got "
                         f"shape {tuple(gt.shape)}")
    if len(gt) != len(queries):
        raise InputError(f"{gname}: {len(gt)} rows, but {qname} has {len(queries)} queries")
    if gt[:, 0].min() < 0 or gt[:, 0].max() >= len(base):
        raise InputError(f"{gname}: neighbour ids must be row numbers of DATA (0..{len(base) - 1}), "
                         f"got values in [{gt[:, 0].min()}, {gt[:, 0].max()}]")


def prepare(name, protocol, base, train=None, queries=None, gt=None, train_size=None,
            eval_size=None, seed=0):
    """Inputs for one run: subsample the evaluated collection (first `eval_size` rows, ground
    truth recomputed exactly when given or needed), draw the training set per protocol."""
    from ..evaluation import knn
    from ..validation import as_float_matrix

    notes = []
    base = as_float_matrix(base, name="DATA", allow_empty=False)
    if queries is not None:
        queries = as_float_matrix(queries, name="queries", allow_empty=False)
        check_queries(base, queries, gt)
    if eval_size is not None and eval_size < len(base):
        notes.append(f"evaluated on the first {eval_size:,} of the {len(base):,} vectors of {name}"
                     + ("; ground truth recomputed exactly for them" if queries is not None else ""))
        base, gt = base[:eval_size], None
    if queries is not None and gt is None:
        gt = knn(base, queries, min(10, len(base)))
    if protocol == "self":
        n_train = len(base) if train_size is None else min(train_size, len(base))
        rows = np.sort(np.random.default_rng(seed).choice(len(base), n_train, replace=False))
        train = base[rows] if n_train < len(base) else base
        notes.append(f"protocol self: every method is trained on {n_train:,} vectors drawn from "
                     f"the {len(base):,} it is evaluated on; compare effective bytes (model counted)")
    else:
        train = sample_training(training_vectors(train, base, "training vectors"), train_size, seed)
    check_training_size(train)
    return Inputs(name, np.ascontiguousarray(train), np.ascontiguousarray(base), queries,
                  None if gt is None else np.asarray(gt), protocol=protocol, notes=notes)


def glove50_inputs(protocol, train_size=None, eval_size=None, seed=0):
    """GloVe-50: train split for training (heldout), base for evaluation, query / gt for recall."""
    from .. import datasets

    base, queries = datasets.glove50("base"), datasets.glove50("query")
    # with --eval-size the ground truth is recomputed for the subset: skip the full one
    gt = datasets.glove50("gt") if eval_size is None or eval_size >= len(base) else None
    train = datasets.glove50("train") if protocol == "heldout" else None
    return prepare("glove50", protocol, base, train, queries, gt, train_size, eval_size, seed)


# ---------------------------------------------------------------- measuring
def _quality(x, recon, var, inputs, search_ids=None):
    from ..evaluation import mse, recalls

    err = mse(x, recon)
    row = {"mse": err, "rel_mse": err / var if var else 0.0}
    if inputs.queries is not None:
        if search_ids is not None:
            truth = inputs.gt[:, :1]
            row.update({f"R@{k}": float((search_ids[:, :k] == truth).any(1).mean()) for k in (1, 10)})
        else:
            row.update(recalls(recon, inputs.queries, inputs.gt))
    return row


def _sizes(row, n):
    mb = row.get("model_bytes")
    if mb is not None:
        row["eff_bytes_n"] = row["bytes"] + mb / n
        row["eff_bytes_1M"] = row["bytes"] + mb / ONE_MILLION
    return row


def run_faiss_codec(codec, inputs, var):
    """Train (timed), encode and decode the evaluated vectors (timed): one result row."""
    x = inputs.base
    with Timer() as t_train:
        codec.train(inputs.train)
    with Timer() as t_enc:
        codes = codec.encode(x)
    with Timer() as t_dec:
        recon = codec.decode(codes)
    if codes.shape[1] != codec.code_size:
        raise RuntimeError(f"{codec.method}: {codes.shape[1]} code bytes, expected {codec.code_size}")
    ids = None
    if codec.search_recall and inputs.queries is not None:
        ids = codec.search(x, inputs.queries, 10)
    row = {"method": codec.method, "line": codec.line, "family": "faiss", "bytes": codec.code_size,
           **_quality(x, recon, var, inputs, ids),
           "train_s": t_train.seconds,
           "encode_us": t_enc.seconds / len(x) * 1e6, "decode_us": t_dec.seconds / len(x) * 1e6,
           "model_bytes": codec.model_bytes, "trained_on": getattr(codec, "trained_on", None),
           "params": codec.params}
    if ids is not None:
        row["recall_from"] = "index search"
    return _sizes(row, len(x))


def run_qinco(preset, nbytes, prefixes, inputs, var, opts, quiet):
    """Train one of our models at `nbytes`, evaluate it, its code prefixes, and (with
    opts['extra_beams']) the same model encoded with other beam widths: result rows."""
    from .. import train
    from ..rates import steps_for_bytes
    from ..serialize import model_from_bytes, model_to_bytes

    x = inputs.base
    with Timer() as t_train:
        steps = steps_for_bytes(nbytes, K, None, "the rate", name="--bytes")   # rates are bytes
        model = train(inputs.train, preset=preset, steps=steps, max_minutes=opts["budget_minutes"],
                      epochs=opts["epochs"], samples_per_epoch=opts["samples_per_epoch"],
                      seed=opts["seed"], quiet=quiet)
    if opts.get("models_dir"):
        os.makedirs(opts["models_dir"], exist_ok=True)
        model.save(os.path.join(opts["models_dir"], f"{preset}-{nbytes}B.safetensors"))
    weights = opts["weights"]
    blob = model_to_bytes(model, weights)
    if weights != "float32":  # encode and decode with the weights the file would hold
        model = model_from_bytes(blob)
    trained = model.config.trained or {}
    A = model.config.A if opts["A"] is None else opts["A"]
    B = model.config.B if opts["B"] is None else opts["B"]

    def encoded(beam):
        with Timer() as t_enc:
            codes = model.encode(x, A=A, B=beam)
        common = {"family": "qinco", "train_s": t_train.seconds,
                  "encode_us": t_enc.seconds / len(x) * 1e6, "model_bytes": len(blob),
                  "trained_on": len(inputs.train),
                  "params": {"preset": preset, "M": model.M, "K": model.K, "A": A, "B": beam,
                             "weights": weights, "epochs": trained.get("epochs"),
                             "val_mse": trained.get("val_mse"),
                             "parameters": model.num_parameters(),
                             "budget_minutes": opts["budget_minutes"]}}
        return codes, common

    def row(codes, common, method, line, m):
        with Timer() as t_dec:
            recon = model.decode(codes[:, :m // model.bytes_per_code])
        return _sizes({"method": method, "line": line, "bytes": m, **_quality(x, recon, var, inputs),
                       **common, "decode_us": t_dec.seconds / len(x) * 1e6}, len(x))

    codes, common = encoded(B)
    rows = [row(codes, common, preset, preset, nbytes)]
    for m in sorted(prefixes, reverse=True):
        r = row(codes, common, f"{preset} {nbytes}B prefix", f"{preset} prefixes of {nbytes} B", m)
        r["train_s"] = None  # the model is the full-rate row's; its training is counted there
        r["prefix_of"] = nbytes
        rows.append(r)
    for beam in opts["extra_beams"]:
        if beam != B:
            codes, common = encoded(beam)
            name = f"{preset} B={beam}"
            rows.append(row(codes, common, name, name, nbytes))
            rows[-1]["beam_of"] = nbytes
    return rows


def _environment(faiss):
    import torch

    from .._version import __version__
    return {"qinco_codec": __version__, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "faiss_threads": faiss.omp_get_max_threads(),
            "faiss": getattr(faiss, "__version__", "unknown"), "numpy": np.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "date": datetime.datetime.now().isoformat(timespec="seconds")}


def run(inputs, bytes_list=(4, 8, 16, 32), presets=("qinco2-XS",), methods=METHODS,
        budget_minutes=5.0, epochs=None, samples_per_epoch=32768, lsq_train_size=20000,
        rotation_bits=(1, 2, 3, 4), prefix_bytes=None, A=None, B=None, extra_beams=(),
        weights="float32", opq_iters=None, lsq_iters=None, seed=0, quiet=False, on_rows=None,
        previous=None, baseline_run=None, models_dir=None):
    """Every method on `inputs`; returns {'settings', 'environment', 'notes', 'warnings', 'rows',
    'complete'}. `on_rows(result)` is called with the partial result (complete=False) after each
    method, so that a long run that fails late keeps what it measured. `previous` (an earlier,
    interrupted result with the same settings) supplies the rows it already has: they are kept,
    not measured again. `baseline_run` (an earlier result on the same vectors, complete or not)
    supplies its faiss and reference rows, so that a new run of our presets is compared with
    baselines measured once. `models_dir`: where each of our trained models is written (float32,
    as PRESET-NB.safetensors), for later benchmarks on the same models."""
    from ..evaluation import variance

    faiss = require_faiss()
    bytes_list = sorted(set(int(b) for b in bytes_list))
    extra_beams = sorted(set(extra_beams or ()))
    top = bytes_list[-1]
    prefixes = sorted(set(prefix_bytes if prefix_bytes is not None else bytes_list[:-1]))
    bad = [p for p in prefixes if not 1 <= p < top]
    if bad:
        raise InputError(f"prefix rates must lie between 1 and {top - 1} bytes (below the largest "
                         f"--bytes), got {bad}")
    d, n = inputs.base.shape[1], len(inputs.base)
    t0 = time.perf_counter()
    result = {"settings": {
        "data": inputs.name, "protocol": inputs.protocol, "n_train": len(inputs.train),
        "n_eval": n, "dim": d, "n_queries": None if inputs.queries is None else len(inputs.queries),
        "bytes": bytes_list, "prefix_bytes": prefixes, "presets": list(presets),
        "methods": list(methods), "budget_minutes": budget_minutes, "epochs": epochs,
        "samples_per_epoch": samples_per_epoch, "lsq_train_size": lsq_train_size,
        "rotation_bits": list(rotation_bits), "A": A, "B": B,
        "extra_beams": extra_beams, "weights": weights, "opq_iters": opq_iters,
        "lsq_iters": lsq_iters, "seed": seed, "variance": variance(inputs.base),
        "total_seconds": 0.0},
        "environment": _environment(faiss), "notes": list(inputs.notes), "warnings": [],
        "rows": [], "complete": False}
    var, notes, rows = result["settings"]["variance"], result["notes"], result["rows"]
    reused = _reusable_rows(previous, result["settings"]) + _baseline_rows(baseline_run, result)

    def have(method, nbytes, our_rows=False):
        """Keep the earlier run's row for (method, nbytes) (and, for our models, the rows of its
        prefixes and other beam widths); True when there was one."""
        found = [r for r in reused if (r["method"], r["bytes"]) == (method, nbytes)]
        if found and our_rows:
            found += [r for r in reused if r["method"] == f"{method} {nbytes}B prefix"
                      or (r.get("beam_of") == nbytes and r["method"].startswith(f"{method} B="))]
        if found:
            step(f"{method} {nbytes} B: kept from the earlier run")
            done_rows(found)
        return bool(found)

    def step(desc):
        note(f"rd [{time.perf_counter() - t0:7.1f} s] {desc}", quiet)

    def done_rows(new_rows):
        rows.extend(new_rows)
        result["settings"]["total_seconds"] = time.perf_counter() - t0
        if on_rows:
            on_rows(result)

    def faiss_row(codec):
        with baselines.captured_native_stderr() as captured:
            row = run_faiss_codec(codec, inputs, var)
        for line in baselines.summarize_warnings(captured[0]):
            text = f"faiss, {codec.method} {row['bytes']} B: {line}"
            note(text, quiet)
            result["warnings"].append(text)
        if codec.note and codec.note not in notes:
            notes.append(codec.note)
        done_rows([row])

    builders = {"pq": lambda b: baselines.pq(faiss, d, b),
                "opq": lambda b: baselines.opq(faiss, d, b, opq_iters),
                "rq": lambda b: baselines.rq(faiss, d, b, beam=5),
                "lsq": lambda b: baselines.lsq(faiss, d, b, lsq_train_size, lsq_iters)}
    for m in ("pq", "opq", "rq", "lsq"):
        if m not in methods:
            continue
        for b in bytes_list:
            codec = builders[m](b)
            if have(codec.method, b):
                continue
            n_train = min(len(inputs.train), codec.train_rows or len(inputs.train))
            step(f"{codec.method} {b} B: train on {n_train:,}, encode / decode {n:,}")
            faiss_row(codec)
    padded = {r["bytes"]: r["params"]["padded_dim"] for r in rows
              if r["method"] == "PQ" and r["params"]["padded_dim"] != d}
    if padded:
        notes.append(f"PQ: the {d} dimensions are zero-padded (spread uniformly) to a multiple of "
                     f"the number of sub-quantizers: "
                     + ", ".join(f"{p} for {b} B" for b, p in padded.items())
                     + "; OPQ rotates into the same padded dimension")

    if {"sq", "rabitq", "turboquant", "eden"} & set(methods):
        refs, ref_notes = baselines.available_references(faiss, d, rotation_bits)
        families = {"scalar (SQ4, SQ8, float16)": "sq", "RaBitQ": "rabitq",
                    "TurboQuant": "turboquant", "EDEN": "eden"}
        notes += [text for about, text in ref_notes if about & set(methods)]
        for codec in refs:
            if families[codec.line] in methods and not have(codec.method, codec.code_size):
                step(f"{codec.method} ({codec.code_size} B): encode / decode {n:,}")
                faiss_row(codec)

    if "qinco" in methods:
        notes.append(f"{', '.join(presets)}: trained per rate for at most {budget_minutes:g} min "
                     f"of wall-clock time each (--budget-minutes); the 'prefixes' line decodes the "
                     f"first bytes of the {top}-byte model's codes; model bytes are its {weights} "
                     f"safetensors file (the whole model, also for prefixes); a prefix row's "
                     f"encode time is the full-rate encode (its codes are the first bytes of those)"
                     + (f"; weights rounded to {weights} before encoding" if weights != "float32" else "")
                     + (f"; rows 'B=N' encode the same model with beam width N"
                        if extra_beams else ""))
        opts = {"budget_minutes": budget_minutes, "epochs": epochs,
                "samples_per_epoch": samples_per_epoch, "seed": seed, "A": A, "B": B,
                "extra_beams": extra_beams, "weights": weights, "models_dir": models_dir}
        for preset in presets:
            for b in bytes_list:
                if have(preset, b, our_rows=True):
                    continue
                step(f"{preset} {b} B: train ({budget_minutes:g} min budget) on "
                     f"{len(inputs.train):,}, encode / decode {n:,}"
                     + (f", prefixes {prefixes}" if b == top and prefixes else ""))
                done_rows(run_qinco(preset, b, prefixes if b == top else [], inputs, var, opts,
                                    quiet))
    step("done")
    result["settings"]["total_seconds"] = time.perf_counter() - t0
    result["complete"] = True
    return result


# Settings that decide what the faiss and reference rows measure.
BASELINE_KEYS = ("data", "protocol", "n_train", "n_eval", "dim", "n_queries", "seed", "variance",
                 "lsq_train_size", "opq_iters", "lsq_iters", "rotation_bits")


def _differing(old, new, keys):
    """The keys whose values differ between two settings dicts, compared as JSON (an earlier run's
    settings come from rd.json, where tuples are lists)."""
    return [k for k in keys if json.loads(json.dumps(old.get(k))) != json.loads(json.dumps(new[k]))]


def _baseline_rows(earlier, result):
    """The faiss and reference rows of an earlier run on the same vectors (for --baselines-from),
    with a note saying where they come from; an InputError names a setting that differs."""
    if not earlier:
        return []
    old, new = earlier.get("settings", {}), result["settings"]
    differ = _differing(old, new, BASELINE_KEYS)
    if differ:
        raise InputError("cannot reuse the baselines: the earlier run differs in "
                         + ", ".join(f"{k} ({old.get(k)!r} there, {new[k]!r} here)" for k in differ))
    env = earlier.get("environment", {})
    rows = [dict(r, reused_from=env.get("date")) for r in earlier.get("rows", [])
            if r.get("family") != "qinco"]
    result["notes"].append(
        f"faiss and reference rows reused from an earlier run on the same vectors "
        f"({env.get('date', 'date unknown')}; faiss {env.get('faiss', '?')}, "
        f"{env.get('faiss_threads', '?')} faiss thread(s)); only our presets were measured now")
    result["settings"]["baselines_from"] = env.get("date")
    result["warnings"].extend(earlier.get("warnings", []))
    return rows


def _reusable_rows(previous, settings):
    """The rows of an interrupted earlier run, if it measured the same thing (same settings but
    for its duration); else an InputError saying which setting differs."""
    if not previous:
        return []
    if previous.get("complete"):
        raise InputError("the earlier rd.json is complete: nothing to resume (use another --out)")
    differ = _differing(previous.get("settings", {}), settings,
                        [k for k in settings if k != "total_seconds"])
    if differ:
        raise InputError(f"cannot resume: the earlier run differs in {', '.join(differ)}")
    return list(previous.get("rows", []))


# ---------------------------------------------------------------- outputs
def sort_rows(rows):
    return sorted(rows, key=lambda r: (r["bytes"], r["mse"]))


def text_table(result):
    return format_table(sort_rows(result["rows"]), COLUMNS)


def markdown(result, png_name="rd.png"):
    s, env = result["settings"], result["environment"]
    queries = f", {s['n_queries']:,} queries" if s["n_queries"] else ", no queries (no recall)"
    lines = [
        f"# Rate-distortion: {s['data']} ({s['protocol']} protocol)", "",
        f"`qinco-bench rd`, {env['date']}: trained on {s['n_train']:,} vectors, evaluated on "
        f"{s['n_eval']:,} vectors of dimension {s['dim']}{queries}; variance {s['variance']:.4f}; "
        f"{s['total_seconds']:.0f} s in all.", "",
        f"Settings: rates {s['bytes']} B, prefixes {s['prefix_bytes']} B, presets "
        f"{', '.join(s['presets'])} ({s['budget_minutes']:g} min each"
        + (f", at most {s['epochs']} epochs" if s["epochs"] else "") + "), "
        f"LSQ sample {s['lsq_train_size'] or 'all'}"
        + (f", OPQ iterations {s['opq_iters']}" if s["opq_iters"] else "")
        + (f", LSQ iterations {s['lsq_iters']}" if s["lsq_iters"] else "")
        + f", seed {s['seed']}. Software: qinco-codec {env['qinco_codec']}, torch {env['torch']}, "
        f"faiss {env['faiss']}, numpy {env['numpy']}, Python {env['python']}; {env['cpus']} CPUs, "
        f"threads: torch {env['torch_threads']}, faiss {env.get('faiss_threads', '?')}.", "",
        "MSE: squared L2 error summed over dimensions, mean over vectors; rel MSE: MSE over the "
        "variance. R@k: share of queries whose true nearest neighbour is among the k nearest "
        "decoded vectors. eff B/vec: code bytes plus the model's bytes spread over n vectors (the "
        "benchmark's n, and 1M).", "",
        format_table(sort_rows(result["rows"]), COLUMNS, markdown=True), "",
    ]
    lines += notes_and_figure(result, "rate-distortion", png_name)
    return "\n".join(lines)


def write_partial(result, out_dir):
    """rd.json alone, with "complete": false, while a run is going on."""
    common_write_partial(result, out_dir, "rd")


def write_outputs(result, out_dir):
    """rd.json, rd.md and rd.png under out_dir; returns their paths."""
    from .plot import plot_rd

    paths = write_json_and_markdown(result, out_dir, "rd", markdown(result))
    s = result["settings"]
    plot_rd(result["rows"], paths["png"], variance=s["variance"],
            title=f"{s['data']}, {s['protocol']} protocol, n={s['n_eval']:,}")
    return paths
