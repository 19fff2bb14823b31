"""qinco-shard: encode a collection as N .qnc shards with one model, as Ray tasks or in local
processes, restartable; optionally merged into one .qnc at the end."""
import os
import re

import click

from ..errors import InputError
from .arguments import parse_json_object
from .commands import command
from .common import device_option, force_option, quiet_option, search_options
from .paths import STDIO, check_distinct, check_input, check_output, existing_input

EXAMPLE = """
qinco-shard base.npy -o shards/ --model model.safetensors --shards 16 --merge base.qnc
qinco-shard part-*.fbin -o shards/ --model model.safetensors --shards 64 --ray=auto
qinco-shard 'base.npy[0:50000000]' -o shards/ --model m.safetensors --shards 8 --bytes 8
"""
RANGE = re.compile(r"^(?P<path>.+)\[(?P<start>\d*):(?P<stop>\d*)\]$")
LOCAL_RAY = "local"


def parse_input(text):
    """INPUT as compress_sharded takes it: a path, or 'PATH[START:STOP]' (a row range; either
    bound may be left out) when no file of that exact name exists."""
    if text == STDIO:
        raise InputError("INPUT '-': stdin cannot be sharded (each task reads its own rows); "
                         "give files")
    match = RANGE.match(text)
    if match and not os.path.exists(text):
        path = match["path"]
        check_input(path, "INPUT")
        from ..readers import open_vectors
        with open_vectors(path) as vectors:
            n = vectors.n
        start = int(match["start"]) if match["start"] else 0
        stop = int(match["stop"]) if match["stop"] else n
        return (path, start, stop)
    check_input(text, "INPUT")
    return text


def _inputs(ctx, param, value):
    return [parse_input(v) for v in value]


@command("qinco-shard", EXAMPLE)
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True, is_eager=True,
                callback=_inputs)
@click.option("-o", "--out-dir", metavar="OUT_DIR", required=True,
              help="Directory of the shards (created if missing) and of their manifest.")
@click.option("--model", "model_path", metavar="PATH", required=True, is_eager=True,
              callback=existing_input("--model"),
              help="The model every shard is encoded with (.safetensors, or a .qnc embedding one); "
                   "train it first with qinco-train.")
@click.option("--shards", type=click.IntRange(min=1), required=True,
              help="Number of shards (at most one per chunk of --chunk-rows rows).")
@click.option("--ray", "ray_address", metavar="[ADDRESS]", is_flag=False, flag_value=LOCAL_RAY,
              default=None,
              help="Run the shards as Ray tasks: on a local Ray started for the run (--ray "
                   "alone), or on the cluster at ADDRESS (--ray=auto: the one this machine "
                   "belongs to). Needs the [distributed] extra. Without --ray the shards run in "
                   "local processes. Give an address as --ray=ADDRESS; --ray alone goes after "
                   "INPUT... or before another option (else the next word is taken as ADDRESS).")
@click.option("--bytes", "nbytes", type=click.IntRange(min=1), default=None,
              help="Store only this prefix of each code (a multiple of the code size, at most "
                   "the model's rate). [default: the model's rate]")
@click.option("--chunk-rows", type=click.IntRange(min=1, max=1 << 24), default=65536,
              show_default=True,
              help="Rows per chunk; shard boundaries fall on multiples of it.")
@click.option("--zstd-level", type=click.IntRange(min=0, max=22), default=3, show_default=True,
              help="zstd level for the code planes (1-22; 0 stores them raw).")
@click.option("--no-embed-model", is_flag=True,
              help="Do not put the model in the shards; it is added to the model store.")
@click.option("--metadata", metavar="JSON", default=None,
              help="User metadata stored in every shard: a JSON object, or @FILE.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="CPU threads per shard task.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Local processes without --ray. [default: the cores at --threads each]")
@click.option("--retries", type=click.IntRange(min=0), default=2, show_default=True,
              help="Attempts after a shard task fails (bad input is not retried).")
@click.option("--merge", "merge_out", metavar="OUT.qnc", default=None,
              help="Then merge the shards into OUT.qnc (as qinco-merge does).")
@force_option("the --merge output")
@search_options
@device_option("encoding")
@quiet_option("the progress bar, notes and summary on stderr")
def main(inputs, out_dir, model_path, shards, ray_address, nbytes, chunk_rows, zstd_level,
         no_embed_model, metadata, threads, workers, retries, merge_out, force, A, B, device,
         quiet):
    """Encode the vectors in INPUT... (in order, as one collection) into --shards .qnc files in
    OUT_DIR with one --model.

    INPUT is a vector file (.npy, .fvecs, .bvecs, .ivecs, .fbin, .u8bin, .ibin), or
    'PATH[START:STOP]' for its rows START to STOP-1. Shards are cut on multiples of
    --chunk-rows, so merging them gives the file qinco-compress would write with the same model
    and options, byte for byte; every shard carries the quality report of the whole collection
    (measured once, on the sample qinco-compress measures).

    Restartable: OUT_DIR/shard.manifest.json records the run's parameters; a rerun with the
    same ones skips every shard that exists and verifies (header, model id, row count, CRCs) and
    redoes the rest. A failed task is retried (--retries). On a Ray cluster the inputs and
    OUT_DIR must be on a filesystem every node sees, and qinco-codec installed on every node.
    """
    if merge_out is not None:
        check_distinct(inputs=[("INPUT", i if isinstance(i, str) else i[0]) for i in inputs],
                       outputs=[("--merge", merge_out)])
        check_output(merge_out, "--merge", force)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise InputError(f"--out-dir {out_dir} is not a directory")
    meta = parse_json_object(metadata)
    from ..model_resolution import ModelFile
    from ..rates import steps_for_bytes
    from ..sharded import compress_sharded

    model = ModelFile.read(model_path)
    steps = steps_for_bytes(nbytes, model.model.K, model.model.M, "the model's rate",
                            name="--bytes")
    address = None if ray_address in (None, LOCAL_RAY) else ray_address
    summary = compress_sharded(inputs if len(inputs) > 1 else inputs[0], out_dir, model,
                               shards=shards, steps=steps, A=A, B=B, chunk_rows=chunk_rows,
                               zstd_level=zstd_level, embed_model=not no_embed_model,
                               metadata=meta, device=device, ray_address=address,
                               use_ray=ray_address is not None, threads=threads, workers=workers,
                               retries=retries, quiet=quiet)
    if merge_out is not None:
        from ..merging import merge
        merge(summary["paths"], merge_out, quiet=quiet)


if __name__ == "__main__":
    main()
