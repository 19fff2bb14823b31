"""qinco-index: add inverted lists (an IVF, SPEC.md 5.3) to a .qnc file so that qinco-search
scans only the lists nearest each query; no code is re-encoded."""
import os
import time

import click

from ..errors import InputError
from .commands import command
from .common import device_option, force_option, quiet_option, threads_option
from .paths import STDIO, check_distinct, check_output, existing_input

EXAMPLE = """
qinco-index base.qnc --ivf 1024                       # in place (atomically)
qinco-index base.qnc --ivf 4096 -o base-ivf.qnc --sample 200000
qinco-index shared.qnc --ivf 256 --model model.safetensors   # file written with --no-embed-model
"""


@command("qinco-index", EXAMPLE)
@click.argument("path", metavar="FILE.qnc", is_eager=True, callback=existing_input("FILE.qnc"))
@click.option("--ivf", "nlist", metavar="NLIST", type=click.IntRange(min=1), required=True,
              help="Number of inverted lists (k-means centroids); at most the file's rows. A few "
                   "times sqrt(n) is usual (1,024 for a million vectors).")
@click.option("-o", "--output", metavar="OUT.qnc", default=None,
              help="Write the indexed file here instead of replacing FILE.qnc.")
@click.option("--model", "model_path", metavar="PATH", default=None, is_eager=True,
              callback=existing_input("--model"),
              help="The model file (or a .qnc embedding it), for a file written with "
                   "--no-embed-model whose model is not in the model store.")
@click.option("--sample", metavar="ROWS", type=click.IntRange(min=1), default=None,
              help="Rows of the file decoded to fit the centroids on (at least NLIST). "
                   "[default: 100000, or every row of a smaller file]")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the sample and of k-means.")
@force_option("OUT.qnc")
@device_option("decoding")
@threads_option
@quiet_option("the progress bars and the summary on stderr")
def main(path, nlist, output, model_path, sample, seed, force, device, quiet):
    """Add NLIST inverted lists to FILE.qnc, replacing any it has.

    The centroids are fitted by k-means on the decoded vectors of a random sample of the file's
    rows, then every row goes to the list of the centroid nearest its decoded vector: the file
    alone is enough, no original vector is needed. The codes are copied byte for byte (the file
    decodes to exactly the same vectors; readers of .qnc 1.0 and 1.1 still read it, skipping
    the lists), and the file is written under a temporary name and renamed into place, so an
    interrupted run leaves FILE.qnc as it was. Memory: the sample, one batch of decoded rows,
    and 2 bytes per row (4 beyond 65,536 lists) for the list ids.
    """
    from ..ivf_file import DEFAULT_SAMPLE

    if path == STDIO:
        raise InputError("FILE.qnc: '-' is not supported: the file is rewritten; give a file")
    if output == STDIO:
        raise InputError("OUT.qnc: '-' is not supported; give a file")
    check_distinct(inputs=[("FILE.qnc", path), ("--model", model_path)],
                   outputs=[("OUT.qnc", output)])
    check_output(output, "OUT.qnc", force)
    from ..ivf_file import add_ivf  # torch: imported once the arguments are known to be right

    t0 = time.perf_counter()
    info = add_ivf(path, nlist, out=output, seed=seed,
                   sample=DEFAULT_SAMPLE if sample is None else sample, model=model_path,
                   device=device, quiet=quiet)
    if not quiet:
        click.echo(summary_line(path, info, time.perf_counter() - t0), err=True)


def summary_line(path, info, seconds):
    """The one-line summary: lists, their sizes, the section's bytes, where it went."""
    where = "in place" if os.path.abspath(info["path"]) == os.path.abspath(path) else \
        f"wrote {info['path']}"
    return (f"indexed {path}: {info['n']:,} vectors in {info['nlist']:,} lists (rows per list "
            f"min {info['list_size_min']:,}, median {info['list_size_median']:,.0f}, max "
            f"{info['list_size_max']:,}; centroids fitted on {info['sample']:,} rows), "
            f"{info['ivf_bytes']:,} bytes of inverted lists; {where} ({info['file_size']:,} "
            f"bytes) in {seconds:.1f} s")


if __name__ == "__main__":
    main()
