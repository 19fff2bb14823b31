"""qinco-decompress: decode a .qnc file (all of it or some rows, at any prefix rate) to vectors."""
import time

import click
import numpy as np

from ..errors import InputError
from .arguments import parse_rows
from .commands import command
from .common import device_option, force_option, quiet_option, threads_option
from .paths import check_distinct, check_output, existing_input
from .stdio import STDIO, check_output_path, stdin_binary, write_vectors_out

EXAMPLE = """
qinco-decompress base.qnc decoded.npy
qinco-decompress base.qnc coarse.fvecs --bytes 4            # decode a 4-byte prefix of each code
qinco-decompress base.qnc part.fbin --rows 1000:2000
qinco-decompress shared.qnc out.npy --model model.safetensors   # file written with --no-embed-model
qinco-decompress base.qnc - --dtype float16 | python consume.py
"""
BATCH_ROWS = 65536


@command("qinco-decompress", EXAMPLE)
@click.argument("input_path", metavar="INPUT.qnc", is_eager=True,
                callback=existing_input("INPUT.qnc"))
@click.argument("output", metavar="OUTPUT")
@click.option("--bytes", "nbytes", type=click.IntRange(min=1), default=None,
              help="Decode only this many bytes of each code (a multiple of the code size, at most "
                   "the file's rate; see qinco-info). [default: the file's rate]")
@click.option("--rows", "rows_text", metavar="A:B", default=None,
              help="Decode only rows A (included) to B (excluded); either end may be left out, "
                   "negative values count from the end. Only the chunks holding them are read.")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default=None,
              help="Output precision (.npy only: .fvecs and .fbin are float32). float16 is refused "
                   "when a decoded value is beyond its range (+-65504), which it would store as "
                   "inf. [default: float16 for .npy output when the compressed vectors were "
                   "float16, else float32]")
@click.option("--model", "model_path", metavar="PATH", default=None,
              help="The model file (or a .qnc embedding it), for a file written with "
                   "--no-embed-model whose model is not in the model store. It must be the file's "
                   "model (same SHA-256).")
@force_option()
@device_option("decoding")
@threads_option
@quiet_option("the progress bar on stderr")
def main(input_path, output, nbytes, rows_text, dtype, model_path, force, device, quiet):
    """Decode INPUT.qnc ('-': read it from stdin) into OUTPUT, a .npy, .fvecs or .fbin file chosen
    by extension, or '-' for an .npy on stdout.

    The whole file is decoded batch by batch, so memory stays bounded whatever its size; the
    output file appears only once complete. The model is the one embedded in the file, else the
    one given with --model, else the one with the file's model id in the model store.
    """
    from .. import open as qnc_open
    from ..progress import counted
    from ..rates import steps_for_bytes

    check_distinct(inputs=[("INPUT.qnc", input_path), ("--model", model_path)],
                   outputs=[("OUTPUT", output)])
    ext = check_output_path(output)
    check_output(output, "OUTPUT", force)
    source = stdin_binary() if input_path == STDIO else input_path
    with qnc_open(source, model=model_path) as f:
        steps = steps_for_bytes(nbytes, f.K, f.M, "the file's rate", name="--bytes")  # before any work
        rows = parse_rows(rows_text, f.n)
        if dtype is None:
            dtype = "float16" if f.header.source_dtype == "float16" and ext == ".npy" else "float32"
        if dtype != "float32" and ext != ".npy":
            raise click.BadParameter(f"{ext} stores float32 only; write .npy for {dtype}",
                                     param_hint="--dtype")
        if f.n or model_path is not None:
            # load the model and check it (id, dim, K, M) once, before any output is created
            f.model  # noqa: B018
        if rows is None:
            n = f.n
            batches = f.iter_decode(steps, batch_size=BATCH_ROWS, device=device)
        else:
            n = rows.stop - rows.start
            batches = iter([f.decode(steps, rows=rows, device=device)]) if n else iter(())
        if dtype == "float16":
            batches = within_float16(batches, n)
        batches = counted(batches, n, f"decode {steps * f.bytes_per_code} B/vec", quiet)
        t0 = time.perf_counter()
        write_vectors_out(output, batches, n, f.dim, np.dtype(dtype))
        if rows is None and n and not quiet:
            click.echo(timing_line(f.stream_stats, time.perf_counter() - t0), err=True)


def within_float16(batches, n):
    """The decoded float32 batches as float16, refused (InputError, so the output file is not
    created) at the first batch holding a value beyond float16's range, which the cast would
    turn into inf: how many values, in which rows, the largest, and what to use instead.
    Decoding stops there; the rows after it are not counted."""
    limit = float(np.finfo(np.float16).max)
    start = 0
    for batch in batches:
        with np.errstate(over="ignore"):  # counted below, not warned about
            half = batch.astype(np.float16)
        overflow = np.isinf(half) & np.isfinite(batch)
        if overflow.any():
            count, stop = int(np.count_nonzero(overflow)), start + len(batch)
            where = (f"of the {batch.size:,} decoded values" if start == 0 and stop == n else
                     f"decoded values in rows {start:,} to {stop - 1:,} (the first rows that "
                     f"hold any; decoding stopped there)")
            raise InputError(f"--dtype float16: {count:,} {where} are beyond float16's range "
                             f"(+-{limit:g}; largest {float(np.abs(batch[overflow]).max()):.6g}) "
                             f"and would be written as inf: use --dtype float32")
        yield half
        start += len(batch)


def timing_line(stats, total):
    """Where the time went: reading chunks (in a background thread, overlapping the rest),
    decoding, and everything else (writing the output, waiting)."""
    rate = stats["rows"] / total if total > 0 else float("inf")
    other = max(0.0, total - stats["decode_seconds"])
    return (f"decoded {stats['rows']:,} vectors in {total:.2f} s ({rate:,.0f} vectors/s): "
            f"read+decompress {stats['read_seconds']:.2f} s (overlapped), "
            f"decode {stats['decode_seconds']:.2f} s, write and waits {other:.2f} s")


if __name__ == "__main__":
    main()
