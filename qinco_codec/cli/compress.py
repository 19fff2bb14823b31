"""qinco-compress: encode vectors into a .qnc file, with a given model or one trained on the spot."""
import os

import click

from ..presets import DEFAULT_PRESET, PRESETS
from .arguments import parse_json_object
from .commands import command
from .common import device_option, force_option, quiet_option, search_options, threads_option
from .formatting import fmt_size, size_lines
from .paths import check_distinct, check_output, existing_input
from .stdio import STDIO, container_output, vector_source

EXAMPLE = """
qinco-compress base.fvecs base.qnc --model model.safetensors
qinco-compress base.fvecs base-8B.qnc --model model.safetensors --bytes 8   # store a prefix
qinco-compress base.npy base.qnc --preset qinco2-S --bytes 16 --max-minutes 10 --model-out m.safetensors
python make_vectors.py | qinco-compress - out.qnc --model model.safetensors --metadata '{"source": "x"}'
qinco-compress base.npy - --model model.safetensors | ssh host 'cat > base.qnc'   # .qnc on stdout
"""


@command("qinco-compress", EXAMPLE)
@click.argument("input_path", metavar="INPUT", is_eager=True, callback=existing_input("INPUT"))
@click.argument("output", metavar="OUTPUT.qnc")
@click.option("--model", "model_path", metavar="PATH", default=None, is_eager=True,
              callback=existing_input("--model"),
              help="Encode with this model (.safetensors, or a .qnc file: its embedded model, as "
                   "stored). Without it a model is trained on a sample "
                   "of INPUT first (see --preset, --bytes, --max-minutes).")
@click.option("--preset", type=click.Choice(list(PRESETS)), default=None,
              help="Architecture of the model to train when no --model is given. [default: qinco2-XS]")
@click.option("--bytes", "nbytes", type=click.IntRange(min=1), default=None,
              help="Bytes per vector. Without --model: the rate of the model to train (K=256: one "
                   "byte per code) [default: 16]. "
                   "With --model: store only this prefix of each code (a multiple of the code size, "
                   "at most the model's rate) [default: the model's rate].")
@click.option("--file-bytes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Size of the whole file per vector, everything counted (codes, the embedded "
                   "model, the container, --ivf's lists): the code rate and the model are chosen together for the "
                   "lowest error within it (instead of --bytes; without --model only).")
@click.option("--model-choice", type=click.Choice(["auto", "network", "codebooks"]), default="auto",
              show_default=True,
              help="Without --model, for the embedded model: auto keeps the trained network only when "
                   "it gives a lower held-out error than codebooks only (no network) in a file of the "
                   "same size; network or codebooks forces one. From d=256 on the network is the "
                   "narrow one (embed 32, hidden 64) when the bytes it saves are worth more as codes "
                   "(below about 2.8M vectors at 384-d; one line says so).")
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Training budget when no --model is given. [default: 5]")
@click.option("--train-size", type=click.IntRange(min=2), default=None,
              help="Vectors sampled from INPUT to train on when no --model is given. [default: 100000]")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the training sample and of training.")
@click.option("--chunk-rows", type=click.IntRange(min=1, max=1 << 24), default=65536, show_default=True,
              help="Rows per chunk: the granularity of random access by row.")
@click.option("--no-embed-model", is_flag=True,
              help="Do not put the model in the file; the file names it by its SHA-256 and the model "
                   "is added to the model store ($QINCO_MODEL_DIR, else ~/.cache/qinco-codec/models) "
                   "so that it can be found when decoding.")
@click.option("--zstd-level", type=click.IntRange(min=0, max=22), default=3, show_default=True,
              help="zstd level for the code planes (1-22; 0 stores them raw). A plane is stored raw "
                   "anyway when zstd does not make it smaller.")
@click.option("--weights", type=click.Choice(["float32", "float16", "bfloat16"]), default=None,
              help="Precision of the model weights written to the file (and to --model-out); the "
                   "codes are computed with these weights. [default: float16 for a model trained "
                   "here and embedded (half the bytes, the same MSE), else float32]")
@click.option("--unit-norm", is_flag=True,
              help="For unit-norm embeddings compared by cosine or inner product: the model trained "
                   "here decodes every vector onto the unit sphere (stored in the model; every input "
                   "row must have norm 1 within 0.01). Better ranking, slightly higher MSE.")
@click.option("--full-model", is_flag=True,
              help="Embed the model trained here with its encoder-only pre-selection codebooks. By "
                   "default the embedded copy is decode-only (smaller, decodes the same), unless "
                   "--model-out is given: that file gets the full model, and the .qnc embeds it too "
                   "so that files encoded later with it name the same model.")
@click.option("--metadata", metavar="JSON", default=None,
              help="User metadata stored in the file: a JSON object, or @FILE to read it from FILE.")
@click.option("--ivf", "ivf", metavar="NLIST", type=click.IntRange(min=1), default=None,
              help="Also add NLIST inverted lists for qinco-search (k-means on the training sample, "
                   "each row in the list nearest its input vector; the codes are unchanged). "
                   "qinco-index adds them to an existing file.")
@click.option("--ivf-residual/--ivf-filter", "ivf_residual", default=None,
              help="With --ivf. --ivf-residual (the default for a model trained here, unless "
                   "--unit-norm): encode each row as its residual to its list's centroid "
                   "(IVF-QINCo; the model is trained on those residuals). The list then carries "
                   "log2(NLIST) bits that the codes do not pay for (GloVe-50 at 8 B: 26% lower "
                   "MSE in the same file size). The file is a .qnc 1.3 file, which older readers "
                   "refuse, and its lists cannot be replaced by qinco-index. --ivf-filter (the "
                   "only choice with --model): the lists only filter rows; a .qnc 1.2 file.")
@click.option("--model-out", metavar="PATH", default=None,
              help="Also write the model used (trained or converted to --weights) to PATH.")
@force_option("OUTPUT.qnc and --model-out")
@search_options
@device_option("training and encoding")
@threads_option
@quiet_option("the summary, progress bars and notes on stderr")
def main(input_path, output, model_path, preset, nbytes, file_bytes, model_choice, max_minutes,
         train_size, seed, chunk_rows,
         no_embed_model, zstd_level, weights, unit_norm, full_model, metadata, model_out, force, A,
         B, device, quiet, ivf, ivf_residual):
    """Compress the vectors in INPUT into OUTPUT.qnc.

    INPUT is a vector file (.npy, .fvecs, .bvecs, .ivecs, .fbin, .u8bin, .ibin) or '-' for an .npy
    stream on stdin (read once: the training sample is its first rows). OUTPUT.qnc '-' writes the
    container to stdout (once it is complete). Unless --quiet, a summary goes to stderr:
    vectors, bytes per vector, file size, the model's share of the file, and the compression
    ratio with and without the model: against INPUT first (its file size, as zstd reports it),
    then against the vectors as float32, and the quality report stored in the file (MSE,
    relative MSE and mean cosine per rate on up to 2,000 vectors of INPUT, held out from
    training when the model is trained here). Before encoding, one line says how long it will
    take (timed on those vectors). --max-minutes counts all of training, its RQ start included.

    An existing OUTPUT.qnc (or --model-out) is refused unless -f/--force; no output may be the
    same file as an input or as the other output. --model may name a .qnc file: its embedded
    model is used, exactly as stored. --ivf NLIST writes a .qnc 1.2 file with inverted lists
    (SPEC.md 5.3) that qinco-search probes instead of scanning every row; for a model trained
    here the codes are then residuals to the lists' centroids (SPEC.md 5.4, a .qnc 1.3 file)
    unless --ivf-filter.
    """
    if model_path is not None:
        given = [name for name, value in (("--preset", preset), ("--max-minutes", max_minutes),
                                          ("--train-size", train_size)) if value is not None]
        given += [name for name, flag in (("--unit-norm", unit_norm), ("--full-model", full_model),
                                          ("--file-bytes", file_bytes is not None),
                                          ("--model-choice", model_choice != "auto"),
                                          ("--ivf-residual", ivf_residual is True)) if flag]
        if given:
            raise click.UsageError(f"{', '.join(given)}: only used to train a model, not with --model")
    metadata_file = metadata[1:] if metadata and metadata.startswith("@") else None
    check_distinct(inputs=[("INPUT", input_path), ("--model", model_path),
                           ("--metadata", metadata_file)],
                   outputs=[("OUTPUT", output), ("--model-out", model_out)])
    if ivf_residual is not None and ivf is None:
        raise click.UsageError(f"--ivf-{'residual' if ivf_residual else 'filter'} needs --ivf "
                               f"NLIST: it says how the codes relate to those lists")
    check_output(output, "OUTPUT", force)
    check_output(model_out, "--model-out", force)
    meta = parse_json_object(metadata, "--metadata")
    from .. import compress  # torch: imported only once the paths are known to be right
    from ..compressor import DEFAULT_STEPS, TRAIN_K
    from ..description import chunking_warning
    from ..formats.layout import bytes_per_code
    from ..model_resolution import ModelFile
    from ..qncfile import QncFile
    from ..rates import steps_for_bytes
    from ..sources import as_source

    with container_output(output) as path:  # checks OUTPUT (a directory? stdout a terminal?) first
        source = as_source(vector_source(input_path))  # opens INPUT: its n and dim
        kwargs = {}
        if model_path is None:
            model = None
            steps = steps_for_bytes(nbytes, TRAIN_K, None, "", name="--bytes")
            K, stored = TRAIN_K, DEFAULT_STEPS if steps is None else steps
            kwargs = {"preset": preset or DEFAULT_PRESET}
            if max_minutes is not None:
                kwargs["max_minutes"] = max_minutes
            if train_size is not None:
                kwargs["train_size"] = train_size
            kwargs.update(unit_norm=unit_norm, decode_only=None if not full_model else False,
                          model_choice=model_choice)
            if file_bytes is not None:
                if nbytes is not None:
                    raise click.UsageError("--bytes and --file-bytes: give one (--file-bytes picks "
                                           "the code rate)")
                if no_embed_model:
                    raise click.UsageError("--file-bytes counts the embedded model: not with "
                                           "--no-embed-model (use --bytes)")
                kwargs["file_bytes"] = file_bytes
                stored = 1   # the rate is chosen later; the chunking warning below assumes one code
        else:
            model = ModelFile.read(model_path)  # read once: its K and M turn --bytes into steps
            steps = steps_for_bytes(nbytes, model.model.K, model.model.M, "the model's rate",
                                    name="--bytes")
            K, stored = model.model.K, model.model.M if steps is None else steps
        warning = chunking_warning(source.n, source.dim, stored, bytes_per_code(K), chunk_rows)
        if warning and not quiet:
            click.echo(warning, err=True)
        compress(source, path, model, steps=steps, chunk_rows=chunk_rows,
                 embed_model=not no_embed_model, metadata=meta, zstd_level=zstd_level, A=A, B=B,
                 weight_dtype=weights, model_out=model_out, device=device, quiet=quiet, seed=seed,
                 ivf=ivf, ivf_residual=ivf_residual, **kwargs)
        if not quiet:
            with QncFile(path) as f:
                info = f.describe()
    if not quiet:
        for line in summary_lines("stdout" if output == STDIO else output, info,
                                  *_input_size(input_path, source)):
            click.echo(line, err=True)


def _input_size(input_path, source):
    """(name, bytes) of what INPUT was: the file's size, or for stdin the bytes of its vectors
    (the .npy header aside)."""
    if input_path == STDIO:
        import numpy as np
        return "stdin", source.n * source.dim * np.dtype(source.dtype).itemsize
    return input_path, os.path.getsize(input_path)


def summary_lines(where, info, input_name=None, input_bytes=None):
    """The end-of-run summary: what was written, its size accounting (ratios against the input
    first, then float32) and the model's id."""
    lines = [f"wrote {where}: {info['n']:,} vectors of dim {info['dim']}, "
             f"{info['bytes_per_vector']} bytes/vector ({fmt_size(info['codes_raw_bytes'], short=True)} "
             f"of codes before zstd)"]
    lines += size_lines(info, input_name, input_bytes)
    lines.append(f"model id:    {info['model_sha256']}")
    if not info["model_embedded"]:
        lines.append(f"model store: {info['model_in_store']}")
    from .info import quality_lines  # the file's quality report, as qinco-info shows it
    lines += quality_lines(info)
    if info.get("ivf"):  # --ivf: the inverted lists written, as qinco-info shows them
        from ..description import ivf_lines
        lines += ivf_lines(info)
    return lines


if __name__ == "__main__":
    main()
