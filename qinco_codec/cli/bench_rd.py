"""qinco-bench rd: rate-distortion of our presets against faiss codecs on the same vectors."""
import os

import click

from ..presets import DEFAULT_PRESET, PRESETS
from .common import load_vectors, quiet_option, search_options
from .multivalue import many_option, multi_command

EXAMPLE = """
qinco-bench rd --dataset glove50 --bytes 4 8 16 32 --budget-minutes 20 --out docs/rd-glove50
qinco-bench rd base.fvecs --queries q.fvecs --gt gt.ivecs --train learn.fvecs --bytes 8 16
qinco-bench rd base.npy --protocol self --train-size 50000 --bytes 8 16 --out rd-self
"""
METHOD_NAMES = ("pq", "opq", "rq", "lsq", "sq", "rabitq", "turboquant", "eden", "qinco")


def _earlier_run(path, option):
    """The result object of an earlier run's rd.json, or an InputError naming the problem."""
    import json

    from ..errors import InputError
    if not os.path.exists(path):
        raise InputError(f"{option}: no earlier run at {path} (the file does not exist)")
    try:
        with open(path, encoding="utf-8") as f:
            earlier = json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{option}: {path} is not valid JSON ({exc})") from None
    if not isinstance(earlier, dict) or not isinstance(earlier.get("rows"), list):
        raise InputError(f"{option}: {path} is not a qinco-bench rd result (no 'rows' list)")
    return earlier


@multi_command("rd", EXAMPLE)
@click.argument("data", metavar="[DATA]", required=False)
@click.option("--dataset", type=click.Choice(["glove50"]), default=None,
              help="A built-in data set instead of DATA: glove50 trains on its train split, "
                   "evaluates on base, and measures recall with its queries and ground truth.")
@click.option("--queries", metavar="PATH", default=None,
              help="Query vectors for R@1 / R@10 (search among the decoded DATA).")
@click.option("--gt", metavar="PATH", default=None,
              help="Ground truth: per query, ids of its nearest DATA rows (.ivecs, .ibin, .npy); "
                   "computed exactly when --queries is given without it.")
@click.option("--train", "train_path", metavar="PATH", default=None,
              help="Training vectors for the heldout protocol with DATA (default protocol with "
                   "DATA and no --train: self).")
@click.option("--protocol", type=click.Choice(["heldout", "self"]), default=None,
              help="heldout: train on separate vectors (GloVe train split, or --train), evaluate "
                   "on DATA / base. self: train every method on a sample of the evaluated "
                   "collection itself. Default: heldout when training vectors are available, "
                   "else self.")
@many_option("--bytes", "nbytes", metavar="N...", default=("4", "8", "16", "32"),
             show_default=True, help="Rates in bytes per vector for the trained methods "
                                     "(one or more values: '8 16', '8,16' or repeated).")
@many_option("--prefix-bytes", metavar="N...", default=None,
             help="Prefix rates at which the model trained at the largest --bytes is decoded. "
                  "Default: the other --bytes values.")
@many_option("--presets", item=str, choices={p.lower() for p in PRESETS}, metavar="NAME...",
             default=(DEFAULT_PRESET,), show_default=True,
             help=f"Our presets to train ({', '.join(PRESETS)}).")
@many_option("--methods", item=str, choices=set(METHOD_NAMES), metavar="NAME...",
             default=METHOD_NAMES,
             help=f"Methods to run (default all): {', '.join(METHOD_NAMES)}; 'sq' is float16, "
                  "SQ8 and SQ4.")
@click.option("--train-size", type=click.IntRange(min=1), default=None,
              help="Train on a random sample of this many training vectors (all methods). With "
                   "--protocol self: drawn from DATA (default: all of it).")
@click.option("--eval-size", type=click.IntRange(min=1), default=None,
              help="Evaluate on the first N vectors of DATA / base only (ground truth recomputed "
                   "exactly for them).")
@click.option("--budget-minutes", type=click.FloatRange(min=0, min_open=True), default=5.0,
              show_default=True, help="Wall-clock training budget of each of our models.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Cap on the epochs of each of our models (default: the budget decides).")
@click.option("--samples-per-epoch", type=click.IntRange(min=1), default=32768, show_default=True,
              help="Training samples per epoch of our models (smaller: quicker tiny runs).")
@click.option("--lsq-train-size", type=click.IntRange(min=0), default=20000, show_default=True,
              help="faiss LSQ trains on a random sample of at most this many vectors "
                   "(it is slow; 0 = all).")
@many_option("--rotation-bits", metavar="B...", default=("1", "2", "3", "4"),
             show_default=True, help="Bits per dimension of the rotation-based references "
                                     "(RaBitQ, TurboQuant, EDEN).")
@click.option("--opq-iters", type=click.IntRange(min=1), default=None,
              help="OPQ training iterations (default: faiss's, 50).")
@click.option("--lsq-iters", type=click.IntRange(min=1), default=None,
              help="LSQ training iterations (default: faiss's, 25).")
@search_options
@many_option("--extra-beams", metavar="N...", default=(),
             help="Also encode each of our full-rate models with these beam widths (rows "
                  "'PRESET B=N'; the same trained model, so only the encode time is extra).")
@click.option("--weights", type=click.Choice(["float32", "float16"]), default="float32",
              show_default=True,
              help="Precision of our models' weights: the model is rounded to it before "
                   "encoding, and its bytes are counted at it.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch and faiss (default: $OMP_NUM_THREADS if set, else "
                   "the cores this process may run on).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--out", "out_dir", metavar="DIR", default="qinco-bench-rd", show_default=True,
              help="Directory for rd.json, rd.md and rd.png.")
@click.option("--save-models", is_flag=True,
              help="Also write each of our trained models to DIR/models/PRESET-NB.safetensors "
                   "(float32), for qinco-bench search or speed on the same models.")
@click.option("--resume", is_flag=True,
              help="Keep the rows of the interrupted run whose rd.json is in --out (same "
                   "settings required) and measure only the missing ones.")
@click.option("--baselines-from", metavar="RD_JSON", default=None,
              help="Reuse the faiss and reference rows of an earlier run's rd.json on the same "
                   "vectors (same data, split, seed and faiss settings) and measure only our "
                   "presets: compare new recipes without re-training every baseline.")
@quiet_option()
def rd(data, dataset, queries, gt, train_path, protocol, nbytes, prefix_bytes, presets, methods,
       train_size, eval_size, budget_minutes, epochs, samples_per_epoch, lsq_train_size,
       rotation_bits, opq_iters, lsq_iters, A, B, extra_beams, weights, threads, seed, out_dir,
       save_models, resume, baselines_from, quiet):
    """Rate-distortion: train and evaluate faiss PQ, OPQ+PQ, RQ (beam 5) and LSQ at every
    --bytes rate, the training-free references at their own rates (float16, SQ8, SQ4, and the
    rotation-based RaBitQ, TurboQuant and EDEN where this faiss has them) and our presets, on
    the same training and evaluation vectors (DATA, or --dataset glove50).

    Prints one table (bytes/vector, MSE, relative MSE, R@1, R@10, training seconds, encode and
    decode microseconds per vector, model bytes, effective bytes/vector with the model counted
    at the benchmark's n and at 1M vectors) and writes rd.json, rd.md and rd.png to --out.
    Progress goes to stderr; rd.json is rewritten after each method (with "complete": false
    until the run ends), so a run that fails late keeps what it measured.
    """
    from ..bench import rd as bench
    from ..bench.common import require_faiss
    from ..errors import InputError
    from ..readers import read_ints, read_vectors

    if (data is None) == (dataset is None):
        raise click.UsageError("give DATA or --dataset glove50 (exactly one)")
    if gt is not None and queries is None:
        raise click.UsageError("--gt needs --queries")
    if dataset is not None and (queries or train_path):
        raise click.UsageError("--dataset brings its own queries, ground truth and training split; "
                               "--queries, --gt and --train go with DATA")
    unknown = [m for m in methods if m.lower() not in METHOD_NAMES]
    if unknown or not methods:
        raise click.BadParameter(f"unknown method(s) {', '.join(unknown) or '(none given)'}; "
                                 f"expected some of: {', '.join(METHOD_NAMES)}",
                                 param_hint="--methods")
    methods = tuple(m.lower() for m in methods)
    canonical = {p.lower(): p for p in PRESETS}
    bad = [p for p in presets if p.lower() not in canonical]
    if bad or not presets:
        raise click.BadParameter(f"unknown preset(s) {', '.join(bad) or '(none given)'}; expected "
                                 f"some of: {', '.join(PRESETS)}", param_hint="--presets")
    presets = tuple(dict.fromkeys(canonical[p.lower()] for p in presets))
    if not nbytes or min(nbytes) < 1:
        raise click.BadParameter(f"rates must be positive integers, got {list(nbytes)}",
                                 param_hint="--bytes")
    if not rotation_bits or not all(1 <= b <= 8 for b in rotation_bits):
        raise click.BadParameter(f"bits must lie in 1..8, got {list(rotation_bits)}",
                                 param_hint="--rotation-bits")
    if extra_beams and min(extra_beams) < 1:
        raise click.BadParameter(f"beam widths must be at least 1, got {list(extra_beams)}",
                                 param_hint="--extra-beams")
    if protocol is None:
        protocol = "heldout" if dataset is not None or train_path is not None else "self"
    if protocol == "heldout" and data is not None and train_path is None:
        raise click.UsageError("--protocol heldout with DATA needs --train PATH (training vectors "
                               "kept apart from DATA); or use --protocol self")
    if protocol == "self" and train_path is not None:
        raise click.UsageError("--train goes with --protocol heldout (self trains on DATA itself)")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise InputError(f"--out {out_dir} exists and is not a directory")
    faiss = require_faiss()
    from ..devices import use_threads
    from ..threads import default_threads
    faiss.omp_set_num_threads(use_threads(threads or default_threads()))  # torch's and faiss's

    if dataset == "glove50":
        inputs = bench.glove50_inputs(protocol, train_size, eval_size, seed)
    else:
        base = load_vectors(data)
        train = read_vectors(train_path) if train_path else None
        q = read_vectors(queries) if queries else None
        g = read_ints(gt) if gt else None
        inputs = bench.prepare(os.path.basename(data), protocol, base, train, q, g, train_size,
                               eval_size, seed)
    previous = _earlier_run(os.path.join(out_dir, "rd.json"), "--resume") if resume else None
    baselines = _earlier_run(baselines_from, "--baselines-from") if baselines_from else None
    result = bench.run(inputs, bytes_list=nbytes, presets=presets, methods=methods,
                       budget_minutes=budget_minutes, epochs=epochs, samples_per_epoch=samples_per_epoch,
                       lsq_train_size=lsq_train_size or None, rotation_bits=rotation_bits,
                       prefix_bytes=prefix_bytes or None, A=A, B=B, extra_beams=extra_beams,
                       weights=weights, opq_iters=opq_iters,
                       lsq_iters=lsq_iters, seed=seed, quiet=quiet,
                       on_rows=lambda partial: bench.write_partial(partial, out_dir),
                       previous=previous, baseline_run=baselines,
                       models_dir=os.path.join(out_dir, "models") if save_models else None)
    paths = bench.write_outputs(result, out_dir)
    click.echo(bench.text_table(result))
    for text in result["notes"]:
        click.echo(f"# {text}")
    if not quiet:
        click.echo(f"wrote {paths['json']}, {paths['md']}, {paths['png']}", err=True)
