"""qinco-bench search: recall against queries per second, our codes through the search engine
beside faiss's compressed indexes at the same bytes per vector."""
import os

import click

from ..bench.search import (DEFAULT_EF, DEFAULT_NPROBE, DEFAULT_OUR_NPROBE, DEFAULT_SHORTLIST,
                            IVF_VARIANTS, METHODS)
from ..presets import DEFAULT_PRESET, PRESETS
from .common import DEVICES, load_vectors, quiet_option, search_options
from .multivalue import many_option, multi_command

EXAMPLE = """
qinco-bench search --dataset glove50 --bytes 8 16 --train-minutes 5 --out docs/search-glove50
qinco-bench search --dataset glove50 --bytes 16 --model m16.safetensors --shortlist 30 100 300
qinco-bench search --dataset minilm384 --bytes 16 --metric ip --model m16.safetensors
qinco-bench search base.npy --queries q.npy --train learn.npy --bytes 8 --nlist 256 --nprobe 1 4 16
"""
METHOD_NAMES = METHODS
DATASETS = {"glove50": None, "minilm384": os.path.join("out", "minilm384")}


def _positive(values, option):
    if not values or min(values) < 1:
        raise click.BadParameter(f"expected positive integers, got {list(values)}",
                                 param_hint=option)
    return tuple(dict.fromkeys(values))


def _earlier_run(path):
    """The result object of an earlier run's search.json, or an InputError naming the problem."""
    import json

    from ..errors import InputError
    if not os.path.isfile(path):
        raise InputError(f"--baselines-from: no earlier run at {path} (no such file)")
    try:
        with open(path, encoding="utf-8") as f:
            earlier = json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"--baselines-from: {path} is not valid JSON ({exc})") from None
    if not isinstance(earlier, dict) or not isinstance(earlier.get("rows"), list) \
            or not isinstance(earlier.get("settings"), dict):
        raise InputError(f"--baselines-from: {path} is not a qinco-bench search result (no "
                         f"'settings' and 'rows')")
    return earlier


@multi_command("search", EXAMPLE)
@click.argument("data", metavar="[DATA]", required=False)
@click.option("--dataset", type=click.Choice(sorted(DATASETS)), default=None,
              help="A data set instead of DATA: glove50 (the built-in GloVe-50: train split for "
                   "training, 100k base, 1k queries) or minilm384 (train.npy, base.npy and "
                   "query.npy in --data-dir).")
@click.option("--data-dir", metavar="DIR", default=None,
              help="Directory of --dataset minilm384. [default: out/minilm384]")
@click.option("--queries", metavar="PATH", default=None,
              help="Query vectors (.npy, .fvecs, ...), required with DATA.")
@click.option("--train", "train_path", metavar="PATH", default=None,
              help="Training vectors with DATA (default: DATA itself, with a note).")
@many_option("--bytes", "nbytes", metavar="N...", default=("8", "16"), show_default=True,
             help="Bytes of codes per vector, for every method.")
@many_option("--methods", item=str, choices=set(METHOD_NAMES), metavar="NAME...",
             default=METHOD_NAMES,
             help=f"Methods (default all): {', '.join(METHOD_NAMES)}. Each faiss method brings "
                  "its exhaustive ceiling (IndexPQ, IndexPQFastScan, IndexResidualQuantizer).")
@click.option("--model", "model_paths", metavar="PATH", multiple=True,
              help="Our model file (repeat for several rates): at each --bytes the model of "
                   "exactly that rate is searched, else a larger one at its prefix; without one "
                   "a model is trained within --train-minutes.")
@click.option("--preset", type=click.Choice(list(PRESETS)), default=DEFAULT_PRESET,
              show_default=True, help="Preset of the models trained here.")
@click.option("--train-minutes", type=click.FloatRange(min=0, min_open=True), default=5.0,
              show_default=True, help="Wall-clock training budget of each model trained here.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Cap on the epochs of each model trained here.")
@click.option("--samples-per-epoch", type=click.IntRange(min=1), default=32768,
              show_default=True, help="Training samples per epoch of the models trained here.")
@click.option("--nlist", type=click.IntRange(min=1), default=None,
              help="Inverted lists of every IVF (ours and faiss's). [default: a power of two "
                   "near 4*sqrt(training vectors), at most 1/39 of them]")
@many_option("--nprobe", metavar="N...", default=tuple(map(str, DEFAULT_NPROBE)),
             show_default=True, help="nprobe sweep of faiss's IVF indexes (values above "
                                     "--nlist are skipped).")
@many_option("--our-nprobe", metavar="N...", default=tuple(map(str, DEFAULT_OUR_NPROBE)),
             show_default=True,
             help="nprobe sweep of our IVF, each with every --shortlist (--our-nprobe 0: "
                  "no IVF, exhaustive search only).")
@many_option("--ivf-variants", item=str, choices=set(IVF_VARIANTS), metavar="NAME...",
             default=IVF_VARIANTS, show_default=True,
             help="Our IVF variants: 'filter' (the lists only choose the rows scanned), "
                  "'residual' (IVF-QINCo: codes of each row's residual to its list's centroid, "
                  "by a model trained on the training set's residuals: --residual-model, else "
                  "one trained here).")
@click.option("--residual-model", "residual_paths", metavar="PATH", multiple=True,
              help="Our IVF-QINCo model (repeat for several rates), trained on the residuals of "
                   "the training vectors to the --ivf-centroids (scripts/experiments/"
                   "train_ivf_models.py writes both).")
@click.option("--ivf-centroids", metavar="PATH.npy", default=None,
              help="The coarse centroids (nlist, d) of our IVF instead of k-means here: the ones "
                   "a --residual-model was trained with.")
@many_option("--shortlist", metavar="N...", default=tuple(map(str, DEFAULT_SHORTLIST)),
             show_default=True, help="Our shortlist sizes (rows re-ranked with the QINCo "
                                     "decoder); the full decode (every row) is always added.")
@many_option("--ef-search", metavar="N...", default=tuple(map(str, DEFAULT_EF)),
             show_default=True, help="efSearch sweep of faiss's HNSW-PQ.")
@many_option("--threads", metavar="T...", default=("1", "2"), show_default=True,
             help="Thread counts at which every point's queries per second are measured.")
@click.option("--repeats", type=click.IntRange(min=1), default=1, show_default=True,
              help="Timed runs per point and thread count (the fastest counts).")
@click.option("--metric", type=click.Choice(["l2", "ip"]), default="l2", show_default=True,
              help="Distance: squared L2, or inner product (for normalised embeddings); the "
                   "ground truth is exact brute force by the same metric.")
@click.option("--train-size", type=click.IntRange(min=1), default=None,
              help="Train every method on a random sample of this many training vectors.")
@click.option("--n-base", type=click.IntRange(min=1), default=None,
              help="Search the first N base vectors only.")
@click.option("--n-queries", type=click.IntRange(min=1), default=None,
              help="Use the first N queries only.")
@search_options
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="Device for our encoder, decoder and search (faiss runs on the CPU).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--out", "out_dir", metavar="DIR", default="qinco-bench-search", show_default=True,
              help="Directory for search.json, search.md and search.png.")
@click.option("--cache-dir", metavar="DIR", default=None,
              help="Keep our encoded base vectors here (keyed by model, vectors and encoder "
                   "settings) and reuse them in a later run instead of encoding again.")
@click.option("--baselines-from", metavar="SEARCH_JSON", default=None,
              help="Keep the faiss rows of an earlier run's search.json on the same vectors "
                   "(same data, sizes, metric, nlist, sweeps, threads and seed) instead of "
                   "measuring them again; their QPS are that run's (a note says so).")
@quiet_option()
def search(data, dataset, data_dir, queries, train_path, nbytes, methods, model_paths, preset,
           train_minutes, epochs, samples_per_epoch, nlist, nprobe, our_nprobe, shortlist,
           ef_search, ivf_variants, residual_paths, ivf_centroids, threads, repeats, metric, train_size, n_base, n_queries, A, B,
           device, seed, out_dir, cache_dir, baselines_from, quiet):
    """Recall against speed: R@1, R@10 and R@100 (share of queries whose exact nearest
    neighbour is among the first 1, 10, 100 results) and queries per second at each --threads
    count, for our model's codes through the search engine (exhaustive shortlist and IVF, over
    --shortlist and --our-nprobe; ceiling: every row decoded) and, at the same bytes per vector,
    faiss IVF-PQ, IVF-PQ fast scan (4-bit), IVF-RQ and HNSW-PQ over their nprobe / efSearch
    sweeps, with the exhaustive ceilings IndexPQ, IndexPQFastScan and IndexResidualQuantizer.

    Bytes per vector count the codes only; inverted-list ids and graph links are extra (shown
    as 'extra B/vec'), for faiss and for us. Prints the table and writes search.json (every
    point with its parameters; rewritten after each method), search.md and search.png (R@10
    against QPS, log scale) to --out. Progress goes to stderr.
    """
    from ..errors import InputError

    if (data is None) == (dataset is None):
        raise click.UsageError("give DATA or --dataset glove50 / minilm384 (exactly one)")
    if dataset is not None and (queries or train_path):
        raise click.UsageError("--dataset brings its own queries and training vectors; "
                               "--queries and --train go with DATA")
    if data is not None and queries is None:
        raise click.UsageError("DATA needs --queries PATH")
    if data_dir is not None and dataset != "minilm384":
        raise click.UsageError("--data-dir goes with --dataset minilm384")
    methods = tuple(dict.fromkeys(m.lower() for m in methods))
    unknown = [m for m in methods if m not in METHOD_NAMES]
    if unknown or not methods:
        raise click.BadParameter(f"unknown method(s) {', '.join(unknown) or '(none given)'}; "
                                 f"expected some of: {', '.join(METHOD_NAMES)}",
                                 param_hint="--methods")
    nbytes = _positive(nbytes, "--bytes")
    nprobe, shortlist = _positive(nprobe, "--nprobe"), _positive(shortlist, "--shortlist")
    ef_search, threads = _positive(ef_search, "--ef-search"), _positive(threads, "--threads")
    our_nprobe = () if tuple(our_nprobe) == (0,) else _positive(our_nprobe, "--our-nprobe")
    ivf_variants = tuple(dict.fromkeys(v.lower() for v in ivf_variants))
    bad = [v for v in ivf_variants if v not in IVF_VARIANTS]
    if bad:
        raise click.BadParameter(f"unknown variant(s) {', '.join(bad)}; expected some of: "
                                 f"{', '.join(IVF_VARIANTS)}", param_hint="--ivf-variants")
    if model_paths and "qinco" not in methods:
        raise click.UsageError("--model goes with the method qinco (see --methods)")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise InputError(f"--out {out_dir} exists and is not a directory")
    for option, path in [("--model", p) for p in model_paths] + \
            [("--residual-model", p) for p in residual_paths] + \
            ([("--ivf-centroids", ivf_centroids)] if ivf_centroids else []):
        if not os.path.isfile(path):
            raise InputError(f"{option} {path}: no such file")
    if residual_paths and "residual" not in ivf_variants:
        raise click.UsageError("--residual-model goes with --ivf-variants residual")
    earlier = _earlier_run(baselines_from) if baselines_from else None

    from ..bench import search as bench
    from ..bench.common import require_faiss
    from ..readers import read_vectors
    from ..serialize import load_model

    require_faiss()
    models = []
    for path in model_paths:
        model = load_model(path)
        if not any(b % model.bytes_per_code == 0 and b <= model.bytes_per_vector for b in nbytes):
            raise InputError(f"--model {path}: its codes are {model.bytes_per_vector} bytes per "
                             f"vector, below every --bytes ({', '.join(map(str, nbytes))}); a "
                             f"model is searched at its own rate or a prefix of it")
        models.append(model)
    residual_models = [load_model(path) for path in residual_paths]
    centroids = read_vectors(ivf_centroids) if ivf_centroids else None
    if centroids is not None and nlist is not None and len(centroids) != nlist:
        raise InputError(f"--ivf-centroids {ivf_centroids}: {len(centroids):,} centroids, but "
                         f"--nlist {nlist}")
    if centroids is not None:
        nlist = len(centroids)
    if dataset == "glove50":
        inputs = bench.glove50_inputs(metric, train_size, n_base, n_queries, seed)
    elif dataset == "minilm384":
        inputs = bench.directory_inputs("minilm384", data_dir or DATASETS["minilm384"], metric,
                                        train_size, n_base, n_queries, seed)
    else:
        base = load_vectors(data)
        train = read_vectors(train_path) if train_path else None
        inputs = bench.prepare(os.path.basename(data), base[:n_base],
                               read_vectors(queries)[:n_queries], train, metric, train_size, seed,
                               f"{os.path.basename(data)} searched with "
                               f"{os.path.basename(queries)}")
    for m in models:
        if m.config.dim != inputs.base.shape[1]:
            raise InputError(f"--model: a model of dimension {m.config.dim}, but the vectors "
                             f"have {inputs.base.shape[1]}")
    result = bench.run(inputs, bytes_list=nbytes, methods=methods, models=models, preset=preset,
                       train_minutes=train_minutes, epochs=epochs,
                       samples_per_epoch=samples_per_epoch, nlist=nlist, nprobe=nprobe,
                       our_nprobe=our_nprobe, ivf_variants=ivf_variants, shortlist=shortlist,
                       ef_search=ef_search,
                       threads=threads, repeats=repeats, metric=metric, A=A, B=B, device=device,
                       seed=seed, cache_dir=cache_dir, quiet=quiet,
                       residual_models=residual_models, ivf_centroids=centroids,
                       on_rows=lambda partial: bench.write_partial(partial, out_dir),
                       baseline_run=earlier)
    paths = bench.write_outputs(result, out_dir)
    click.echo(bench.text_table(result))
    for text in bench.target_lines(result) + result["notes"]:
        click.echo(f"# {text}")
    if not quiet:
        click.echo(f"wrote {paths['json']}, {paths['md']}, {paths['png']}", err=True)
