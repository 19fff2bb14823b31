"""The options the qinco-* commands share: --device, --threads, --quiet, -f/--force, and the encoder's
search effort (--A, --B).

The other shared helpers each have their own module: `commands` (one-line errors, command and
group decorators), `arguments` (--metadata, --rows), `stdio` (vector and container input and
output, '-' for stdin/stdout), `formatting` (JSON, sizes, ratios). The names below that come from
them are re-exported because commands import them from here. This module imports neither torch
nor the model code, so that `qinco-info` stays cheap.
"""
import click

from .commands import command, group  # noqa: F401 - re-exported for the commands
from .stdio import check_not_directory, load_vectors  # noqa: F401 - re-exported for the commands

DEVICES = ("auto", "cpu", "cuda")


# ---------------------------------------------------------------- shared options
def device_option(what="computation"):
    return click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                        help=f"Device for {what}: 'auto' picks CUDA when available, else the CPU.")


def threads_option(f):
    """--threads: CPU threads for torch. Default: $OMP_NUM_THREADS when set, else the cores this
    process may run on less those other work keeps busy (`qinco_codec.threads.default_threads`)."""
    def apply(ctx, param, value):
        from ..threads import default_threads, request_threads
        return request_threads(value or default_threads())
    return click.option("--threads", type=click.IntRange(min=1), default=None, callback=apply,
                        expose_value=False, is_eager=False,
                        help="CPU threads. [default: $OMP_NUM_THREADS if set, else the cores this "
                             "process may run on (os.sched_getaffinity) less those the 1-minute load "
                             "average shows busy ($QINCO_BUSY_CORES overrides), at least 1]")(f)


def force_option(what="OUTPUT"):
    """-f/--force: replace outputs that already exist (without it they are refused, as zstd does)."""
    return click.option("-f", "--force", is_flag=True,
                        help=f"Replace {what} if it already exists (refused otherwise). A replaced "
                             f"file keeps its permissions; a symbolic link is kept and the file it "
                             f"points to is replaced.")


def quiet_option(what="the progress bars and notes on stderr"):
    return click.option("-q", "--quiet", is_flag=True, help=f"Do not print {what}.")


def search_options(f):
    """--A and --B: the encoder's search effort (defaults: the model's own settings)."""
    f = click.option("--B", "B", type=click.IntRange(min=1), default=None,
                     help="Beam width of the encoder (1 = greedy). Default: the model's setting.")(f)
    f = click.option("--A", "A", type=click.IntRange(min=0), default=None,
                     help="Candidates pre-selected per beam entry at each step (0 = all K). "
                          "Default: the model's setting.")(f)
    return f
