"""qinco-bench speed: encode / decode throughput of our modes next to faiss, on the same vectors."""
import click

from ..presets import DEFAULT_PRESET, PRESETS
from ..bench.common import emit_report
from .common import DEVICES, quiet_option
from .multivalue import many_option, multi_command

EXAMPLE = """
qinco-bench speed --preset qinco1-L2 --dim 128 --bytes 8 --n 20000 --threads 1,2
qinco-bench speed --preset qinco2-XS --dim 50 --bytes 8 --settings 0/1,16/1,16/4 --out speed-xs
qinco-bench speed --model model.safetensors --threads 1 --json speed.json
qinco-bench speed --model m384.safetensors --data base.npy --train train.npy --settings 16/4,8/4,8/2
qinco-bench speed --preset qinco2-XS --dim 50 --bytes 8 --n 3000 --busy 2 --wait-policy default,unset,passive
qinco-bench speed --dims 50,128,384,768 --bytes 16 --threads 1 --train-size 5000 --out speed-dims
"""

# options the d-scaling mode (--dims) does not use: giving one with --dims is a usage error
NOT_WITH_DIMS = ("dim", "model_path", "data_path", "train_path", "settings", "no_bf16", "train_seconds",
                 "lsq_train_size", "busy", "wait_policies")


def thread_count(token):
    """One --threads value: a positive integer, or 'all' (the cores this process may use)."""
    if token.lower() == "all":
        return "all"
    if token.isdigit() and int(token) >= 1:
        return int(token)
    raise ValueError("a positive integer or 'all'")


def parse_threads(values, cores, default=None):
    """(1, 'all') -> (1, cores), duplicates dropped; () -> (default,) (default: cores)."""
    out = [cores if v == "all" else int(v) for v in values or ()]
    return tuple(dict.fromkeys(out)) or (default or cores,)


@multi_command("speed", EXAMPLE)
@click.option("--preset", type=click.Choice(list(PRESETS)), default=DEFAULT_PRESET, show_default=True,
              help="Model architecture (ignored with --model).")
@click.option("--dim", type=click.IntRange(min=1), default=50, show_default=True,
              help="Vector dimension. 50 measures GloVe-50 (base split; train split for training) "
                   "when its data is installed; other dimensions use standard Gaussian vectors.")
@click.option("--bytes", "nbytes", type=click.IntRange(min=1), default=8, show_default=True,
              help="Bytes per vector (M = bytes codes of K = 256 values).")
@click.option("--K", "K", type=click.IntRange(min=2), default=256, show_default=True,
              help="Codewords per step (power of two <= 256; faiss RQ / LSQ rows need 256).")
@click.option("--model", "model_path", metavar="PATH", default=None,
              help="Measure this model file instead of building one (its preset, dim, M and K apply).")
@click.option("--data", "data_path", metavar="PATH", default=None,
              help="Measure on these vectors (the first --n rows; .npy, .fvecs, ...) instead of "
                   "--dim's built-in or Gaussian ones, so that the MSE columns are those of real data.")
@click.option("--train", "train_path", metavar="PATH", default=None,
              help="With --data: the vectors faiss RQ / LSQ (and a model built here) train on "
                   "(default: --data itself).")
@click.option("--n", "n", type=click.IntRange(min=1), default=20000, show_default=True,
              help="Vectors to encode and decode per mode (slow modes: the prefix that fits "
                   "--time-limit).")
@many_option("--threads", item=thread_count, what="positive integers or 'all'", metavar="T...",
             help="Thread counts to measure, e.g. '1 2', '1,all' ('all': the cores this "
                  "process may use; default: $OMP_NUM_THREADS if set, else all). With several, "
                  "a scaling table compares them.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="Device for our encoder and decoder (faiss runs on the CPU).")
@click.option("--settings", metavar="A/B,...", default=None,
              help="QINCo2 search settings to measure, as A/B pairs (A = pre-selected candidates, "
                   "0 = all K; B = beam). Default: 0/1,16/1,0/4,16/4,32/8 and the preset's own.")
@click.option("--no-bf16", is_flag=True, help="Leave out the bfloat16 mode (slow on CPUs without "
                                               "native bf16 matmul).")
@click.option("--train-seconds", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Train the model for this long after its RQ initialisation (0: RQ initialisation "
                   "only, where the step networks are zero and pre-selection is exact).")
@click.option("--train-size", type=click.IntRange(min=256), default=20000, show_default=True,
              help="Training vectors (model, faiss RQ).")
@click.option("--lsq-train-size", type=click.IntRange(min=256), default=5000, show_default=True,
              help="Training vectors for faiss LSQ (slow to train).")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=20.0, show_default=True,
              help="Seconds of encoding per mode and thread count; slower modes encode a prefix.")
@click.option("--busy", type=click.IntRange(min=0), default=None, metavar="N",
              help="Measure speed under load instead: start N busy-spinning background processes "
                   "(numpy matmul loops; 0: an idle machine) and time our encoder and decoder "
                   "(the model's own search setting, float32, CPU) at each --threads count "
                   "(default: the default count, then 1), each in a fresh process per "
                   "--wait-policy. The faiss table is not measured then.")
@many_option("--wait-policy", "wait_policies", item=str, choices={"passive", "active", "unset", "default"},
             metavar="POLICY...",
             help="With --busy: the OMP_WAIT_POLICY values to measure, e.g. "
                  "'default,unset,passive'. PASSIVE: waiting threads sleep; ACTIVE: they spin; "
                  "UNSET: the OpenMP runtime's own default (torch imported first); DEFAULT: what "
                  "the package chooses by itself from the load average, policy and thread count "
                  "(measured once, after the load average has settled). Default: the policy in "
                  "force.")
@many_option("--dims", item=int, metavar="D...",
             help="Measure how the cost grows with the dimension instead: for --preset at --bytes, on "
                  "Gaussian vectors of each dimension (e.g. '50,128,384,768'), encode vectors/s with "
                  "the expanded and the direct error (and whether their codes agree), decode vectors/s, "
                  "training-step samples/s, FLOPs per vector and faiss RQ (beam 5) encode vectors/s, "
                  "per CPU second and per wall-clock second, each cost (CPU time) over its value at "
                  "the first dimension; one --threads count "
                  "(speed-dims.json / speed-dims.md with --out). --time-limit is per measurement.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--json", "json_path", metavar="PATH", default=None,
              help="Write the results as JSON to PATH ('-': to stdout, instead of the table).")
@click.option("--out", "out_dir", metavar="DIR", default=None,
              help="Write speed.json and speed.md (Markdown tables) to DIR.")
@quiet_option()
@click.pass_context
def speed(ctx, preset, dim, nbytes, K, model_path, data_path, train_path, n, threads, device, settings,
          no_bf16, train_seconds, train_size, lsq_train_size, time_limit, busy, wait_policies, dims, seed,
          json_path, out_dir, quiet):
    """Encode and decode throughput (vectors/s) of our modes (exact float32, bfloat16, QINCo2
    pre-selection / beam settings) and of faiss IndexQINCo on the same weights, plus faiss RQ
    (beam 5) and LSQ encoders, in one process on the same vectors.

    Prints, per thread count, one row per mode: vectors/s, ratios to faiss IndexQINCo and to the
    mode's exhaustive search, FLOPs per vector, the fraction of this machine's matmul rate (torch,
    float32 and bf16, measured in the same run for the network's shapes) that makes, and MSE (with
    its ratio to the reference mode's). Progress goes to stderr.

    With --busy N: vectors/s of our encoder and decoder while N other processes keep the cores
    busy, per OMP_WAIT_POLICY and thread count, and the ratio to 1 thread (load.json / load.md
    with --out).

    With --dims D...: the cost per vector (encode, decode, training step, FLOPs, faiss RQ) at
    each dimension and over its value at the first one.
    """
    import json
    import os

    from ..bench import speed as bench
    from ..bench.common import require_faiss
    from ..errors import InputError
    from ..threads import available_cores, default_threads

    if out_dir and os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise InputError(f"--out {out_dir} exists and is not a directory")
    if dims:
        return _dims(ctx, preset, nbytes, K, n, threads, device, train_size, time_limit, dims, seed,
                     json_path, out_dir, quiet)
    if busy is not None and (data_path or train_path):
        raise click.UsageError("--data / --train do not go with --busy (it times the encoder only)")
    if train_path and not data_path:
        raise click.UsageError("--train goes with --data")
    if busy is not None:
        return _under_load(preset, dim, nbytes, K, model_path, n, threads, device, train_seconds,
                           train_size, time_limit, busy, wait_policies, seed, json_path, out_dir,
                           quiet)
    if wait_policies:
        raise click.UsageError("--wait-policy goes with --busy N")
    require_faiss()
    thread_counts = parse_threads(threads, available_cores(), default_threads())
    parsed = bench.parse_settings(settings) if settings is not None else None
    model = None
    if model_path:
        from ..serialize import load_model
        model = load_model(model_path)
    vectors = None
    if data_path:
        from click.core import ParameterSource
        dim_given = ctx.get_parameter_source("dim") not in (ParameterSource.DEFAULT, None)
        vectors = _given_vectors(data_path, train_path, model, dim if dim_given else None, n, train_size)
        dim = vectors.base.shape[1]
    result = bench.run(preset, dim, nbytes, n=n, threads=thread_counts, device=device, settings=parsed,
                       K=K, train_seconds=train_seconds, train_size=train_size, time_limit=time_limit,
                       lsq_train_size=lsq_train_size, model=model, bf16=not no_bf16, seed=seed,
                       quiet=quiet, vectors=vectors)
    paths = bench.write_outputs(result, out_dir, json_path)
    emit_report(result, bench.text_report(result), paths, json_path, quiet)


def _given_vectors(data_path, train_path, model, dim, n, train_size):
    """--data (and --train) read and checked against the model's or --dim's dimension (dim None:
    not given, --data's own)."""
    from ..bench import speed as bench
    from ..errors import InputError
    from .common import load_vectors

    base = load_vectors(data_path)
    train = load_vectors(train_path) if train_path else base
    want = model.dim if model is not None else dim if dim is not None else base.shape[1]
    for path, x in ((data_path, base), (train_path or data_path, train)):
        if x.shape[1] != want:
            raise InputError(f"{path}: vectors of dimension {x.shape[1]}, expected {want} (the "
                             + ("model's" if model is not None else "--dim") + ")")
    return bench.given_vectors(base, train, n, train_size, data_path, train_path or data_path)


def _under_load(preset, dim, nbytes, K, model_path, n, threads, device, train_seconds, train_size,
                time_limit, busy, wait_policies, seed, json_path, out_dir, quiet):
    """qinco-bench speed --busy N (see bench/load.py)."""
    import json

    from ..bench import load, speed as bench
    from ..errors import InputError
    from ..threads import available_cores

    if device == "cuda":
        raise InputError("--busy measures CPU threads: use --device cpu or auto")
    policies = load.parse_policies(wait_policies)
    counts = parse_threads(threads, available_cores()) if threads else None
    model = None
    if model_path:
        from ..serialize import load_model
        model, desc = load_model(model_path), f"loaded from {model_path}"
    inputs = bench.prepare_vectors(model.dim if model else dim, n, train_size, seed)
    if model is None:
        model, desc = bench.build_model(preset, dim, nbytes, K, inputs.train, train_seconds, seed, quiet)
    result = load.measure(model, inputs.base, busy, counts, policies, time_limit, desc, inputs.description,
                          quiet)
    paths = load.write_outputs(result, out_dir, json_path)
    emit_report(result, load.text_report(result), paths, json_path, quiet)


def _dims(ctx, preset, nbytes, K, n, threads, device, train_size, time_limit, dims, seed, json_path,
          out_dir, quiet):
    """qinco-bench speed --dims D... (see bench/dscaling.py)."""
    from click.core import ParameterSource

    from ..bench import dscaling
    from ..threads import available_cores, default_threads

    given = [p for p in ctx.command.params if p.name in NOT_WITH_DIMS
             and ctx.get_parameter_source(p.name) not in (ParameterSource.DEFAULT, None)]
    if given:
        raise click.UsageError(f"{given[0].opts[0]} does not go with --dims (the d-scaling mode builds "
                               "its own RQ-initialised models on Gaussian vectors)")
    counts = parse_threads(threads, available_cores(), default_threads())
    if len(counts) > 1:
        raise click.UsageError(f"--dims measures one thread count, got --threads {','.join(map(str, counts))}")
    result = dscaling.run(preset, dims, nbytes, n=n, threads=counts[0], device=device, K=K,
                          train_size=train_size, time_limit=time_limit, seed=seed, quiet=quiet)
    paths = dscaling.write_outputs(result, out_dir, json_path)
    emit_report(result, dscaling.text_report(result), paths, json_path, quiet)
