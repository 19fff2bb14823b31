"""qinco-merge: concatenate .qnc shards written with the same model into one .qnc, copying their
chunks byte for byte (no model, no torch)."""
import click

from ..errors import InputError
from .arguments import parse_json_object
from .commands import command
from .common import force_option, quiet_option
from .paths import STDIO, check_distinct, check_input, check_output

EXAMPLE = """
qinco-merge base.qnc shards/shard-*.qnc
qinco-merge base.qnc a.qnc b.qnc --metadata '{"source": "crawl 2026-11"}' -f
"""


def _existing_shards(ctx, param, value):
    for path in value:
        if path == STDIO:
            raise click.BadParameter("shards are read by seeking: give files, not '-'")
        check_input(path, "SHARD")
    return value


@command("qinco-merge", EXAMPLE)
@click.argument("output", metavar="OUT.qnc")
@click.argument("shards", metavar="SHARD.qnc...", nargs=-1, required=True, is_eager=True,
                callback=_existing_shards)
@click.option("--metadata", metavar="JSON", default=None,
              help="User metadata of the merged file (a JSON object, or @FILE), instead of the "
                   "shards' own (kept when every shard has the same; shards that differ are "
                   "refused without --metadata or --no-metadata).")
@click.option("--no-metadata", is_flag=True, help="Write the merged file without user metadata.")
@click.option("--zstd-level", type=click.IntRange(min=0, max=22), default=None,
              help="zstd level of repacked chunks when the shards' own level cannot be found "
                   "from their planes (0: raw). [default: the shards' level, else 3]")
@force_option("OUT.qnc")
@quiet_option("the summary and progress bar on stderr")
def main(output, shards, metadata, no_metadata, zstd_level, force, quiet):
    """Merge the .qnc shards SHARD.qnc... (in the order given) into OUT.qnc.

    Every shard must have the first one's model (SHA-256), dim, K, M (rate), chunk_rows and
    source dtype: a shard that differs is refused, naming it and the field, before anything is
    written. Chunks are copied byte for byte (CRCs checked); a shard that is not the last and
    whose rows are not a multiple of chunk_rows shifts the chunks after it, which are then
    repacked (decoded and re-chunked, no model), as the summary says. The embedded model is
    written once (kept when any shard embeds it). User metadata: kept when identical in every
    shard. The quality report: kept when identical in every shard (as qinco-shard writes it),
    else dropped. Inverted lists (IVF): merged when every shard has lists over the same
    centroids (each row keeps its list), else dropped, as the summary says (rebuild them on
    OUT.qnc with qinco-index). Sections of later versions are dropped and named.
    """
    if metadata is not None and no_metadata:
        raise click.UsageError("--metadata and --no-metadata: give one")
    check_distinct(inputs=[("SHARD", s) for s in shards], outputs=[("OUT.qnc", output)])
    if output == STDIO:
        raise InputError("OUT.qnc: '-' is not supported; give a file")
    check_output(output, "OUT.qnc", force)
    from ..merging import KEEP, merge

    meta = None if no_metadata else KEEP if metadata is None else parse_json_object(metadata)
    merge(list(shards), output, metadata=meta, zstd_level=zstd_level, quiet=quiet)  # its summary


if __name__ == "__main__":
    main()
