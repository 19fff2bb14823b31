"""qinco-bench filesize: the default qinco-compress file against faiss RQ in the same bytes."""
import os

import click

from .common import quiet_option
from .multivalue import many_option, multi_command

EXAMPLE = """
qinco-bench filesize --dataset glove50 --sizes 10000 30000 100000 --bytes 16 --out docs/filesize-glove50
qinco-bench filesize --dataset glove50-all --sizes 100000 399000 --bytes 16 --out docs/filesize-glove50-all
qinco-bench filesize --data out/minilm384/base.npy --name minilm384 --sizes 10000 30000 --out fs-384
"""
DATASET_NAMES = ("glove50", "glove50-all")


@multi_command("filesize", EXAMPLE)
@click.option("--dataset", type=click.Choice(DATASET_NAMES), default=None,
              help="A built-in collection: glove50 (its base split, 100,000 x 50) or glove50-all "
                   "(base plus train_all: every GloVe-50 row but the queries, 399,000 x 50).")
@many_option("--data", "data_paths", item=str, metavar="PATH...", default=(),
             help="Vector files (.npy, .fvecs, .fbin) concatenated row-wise into the collection, "
                  "instead of --dataset.")
@click.option("--name", default=None, help="Label of the --data collection (default: the first "
                                           "file's name).")
@many_option("--sizes", metavar="N...", default=("10000", "30000", "100000"), show_default=True,
             help="Collection sizes n: each a seeded random subset of n rows of the collection.")
@click.option("--bytes", "nbytes", type=click.IntRange(min=1), default=16, show_default=True,
              help="qinco-compress --bytes (code bytes per vector) for our file.")
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="qinco-compress --max-minutes. Default: qinco-compress's own.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch and faiss (default: $OMP_NUM_THREADS if set, else "
                   "the cores this process may run on).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--out", "out_dir", metavar="DIR", default="qinco-bench-filesize", show_default=True,
              help="Directory for filesize.json and filesize.md.")
@quiet_option()
def filesize(dataset, data_paths, name, sizes, nbytes, max_minutes, threads, seed, out_dir, quiet):
    """File size: the default qinco-compress file against faiss RQ in as many bytes, per
    collection size n (issue 14's bar: is our full-rate MSE at most that of faiss RQ, beam 5,
    trained on the same collection, with the largest M whose file, codes plus float16
    codebooks, is no larger than ours?).

    Compresses a seeded subset of n rows with `qinco_codec.compress` (--bytes, --max-minutes,
    --seed; every other setting at its default), decodes the whole file, and trains and runs
    faiss RQ at that M and at our code rate. Then the crossover: from which n the learned network
    beats codebooks only (no network) in the same file size, measured by rate control at each n
    and computed beyond the largest n. Prints the table, writes filesize.json and filesize.md to
    --out (filesize.json after each size, "complete": false until the end); progress on stderr.
    """
    from ..bench import filesize as bench
    from ..bench.common import require_faiss
    from ..errors import InputError

    if (dataset is None) == (not data_paths):
        raise click.UsageError("give --dataset or --data PATH... (exactly one)")
    if name is not None and not data_paths:
        raise click.UsageError("--name labels a --data collection")
    if not sizes:
        raise click.BadParameter("give at least one size", param_hint="--sizes")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise InputError(f"--out {out_dir} exists and is not a directory")
    faiss = require_faiss()
    from ..devices import use_threads
    from ..threads import default_threads
    faiss.omp_set_num_threads(use_threads(threads or default_threads()))  # torch's and faiss's

    if dataset is not None:
        data, description = bench.glove50_collection(dataset)
        label, source = dataset, f"--dataset {dataset}"
    else:
        data, description = bench.files_collection(data_paths)
        label = name or os.path.splitext(os.path.basename(data_paths[0]))[0]
        source = "--data " + " ".join(data_paths) + f" --name {label}"
    bench.check_sizes(sizes, len(data))
    result = bench.run(label, data, description, sizes, steps=nbytes, max_minutes=max_minutes,
                       seed=seed, quiet=quiet, source_args=source,
                       on_rows=lambda partial: bench.write_partial(partial, out_dir))
    paths = bench.write_outputs(result, out_dir)
    click.echo(bench.text_table(result))
    click.echo("")
    click.echo(bench.crossover_table(result))
    if not quiet:
        click.echo(f"wrote {paths['json']}, {paths['md']}", err=True)
