"""qinco-train: train a QINCo / QINCo2 model on vectors and save it as a .safetensors file."""
import os

import click

from ..distributed import is_main_process, launched_world
from ..presets import DEFAULT_PRESET, PRESETS
from .common import command, device_option, force_option, load_vectors, quiet_option, threads_option
from .paths import check_distinct, check_output, existing_input

EXAMPLE = """
qinco-train base.fvecs -o model.safetensors --preset qinco2-XS --bytes 16 --max-minutes 10
qinco-train base.npy -o model.safetensors --epochs 20 --resume run.ckpt   # re-run to resume
torchrun --standalone --nproc_per_node 2 -m qinco_codec.cli.train base.npy -o model.safetensors --epochs 20
"""


@command("qinco-train", EXAMPLE)
@click.argument("data", metavar="DATA", is_eager=True, callback=existing_input("DATA"))
@click.option("-o", "--output", required=True, metavar="MODEL",
              help="Where to write the trained model (.safetensors, written atomically).")
@click.option("--preset", type=click.Choice(list(PRESETS)), default=DEFAULT_PRESET, show_default=True,
              help="Model architecture and training recipe.")
@click.option("--bytes", "nbytes", type=click.IntRange(min=1), default=16, show_default=True,
              help="Code size in bytes per vector (M = bytes / bytes-per-code steps). Every prefix "
                   "of the code is trained to be decodable too.")
@click.option("--K", "K", type=click.IntRange(min=2), default=256, show_default=True,
              help="Codewords per step (a power of two; above 256 each code takes 2 bytes).")
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Wall-clock budget for training.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Number of epochs (fixed-size passes over random samples). Default: 20 when "
                   "--max-minutes is not given; with both, whichever ends first.")
@click.option("--val", type=click.FloatRange(min=0, min_open=True), default=0.05, show_default=True,
              help="Held-out validation share (a fraction < 1, or a number of vectors) used for "
                   "early stopping (6 epochs without improvement, counted in the second half of the "
                   "schedule only) and to pick the best epoch.")
@click.option("--resume", "checkpoint", metavar="CKPT", default=None,
              help="Checkpoint file: written after every epoch and, if it already exists, resumed "
                   "from (same data, settings and seed required).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--start-beam", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train the residual k-means start for a beam search of this width (faiss "
                   "ResidualQuantizer's way: each step's k-means on every beam hypothesis' "
                   "residual); 1: greedy.")
@click.option("--unit-norm", is_flag=True,
              help="For unit-norm embeddings compared by cosine or inner product: the model decodes "
                   "every vector onto the unit sphere (MODEL-SPEC.md feature unit_norm; every row of "
                   "DATA must have norm 1 within 0.01).")
@force_option("MODEL (-o)")
@device_option("training")
@threads_option
@quiet_option("the progress bar on stderr")
def main(data, output, preset, nbytes, K, max_minutes, epochs, val, checkpoint, seed, start_beam, unit_norm,
         force, device, quiet):
    """Train a model on the vectors in DATA (.npy, .fvecs, .bvecs, .fbin, .u8bin, ...; '-' reads
    an .npy from stdin) and write it to MODEL.

    Prints the model id (the SHA-256 of the model file, which .qnc files refer to), the best
    validation MSE (squared L2 error summed over dimensions, mean over vectors) and its RQ start's
    (start_val_mse) on stdout; when training gained less than 1% over the start, a note on stderr
    says the network did not learn from DATA.

    Launched by torchrun (python -m qinco_codec.cli.train, see the last example), it trains
    data-parallel: every process reads DATA, each computes its share of every batch, and rank 0
    alone writes MODEL and the checkpoint and prints. The recipe and the samples per epoch are
    those of one process.
    """
    if data == "-" and launched_world() > 1:
        raise click.UsageError("DATA '-' (stdin) cannot be read by several torchrun processes: "
                               "give a file every rank can read")
    check_distinct(inputs=[("DATA", data)],  # --resume is read and written: an output
                   outputs=[("-o", output), ("--resume", checkpoint)])
    check_output(output, "-o", force)
    if checkpoint and not os.path.exists(checkpoint):
        check_output(checkpoint, "--resume", force=True)  # its directory must take the file
    from ..rates import steps_for_bytes

    steps = steps_for_bytes(nbytes, K, None, None, name="--bytes")
    from .. import train  # torch: imported only once the paths and the rate are known to be right
    from ..training import LEARNED_LITTLE, gain_over_start
    x = load_vectors(data)
    if unit_norm:
        from ..unit_norm import check_unit_norm
        check_unit_norm(x, name=data)
    if checkpoint and os.path.exists(checkpoint) and not quiet and is_main_process():
        click.echo(f"resuming from checkpoint {checkpoint}", err=True)
    if val >= 1:
        val = int(val)
    model, history = train(x, preset=preset, steps=steps, K=K, max_minutes=max_minutes, epochs=epochs,
                           val=val, seed=seed, start_beam=start_beam, device=device, checkpoint=checkpoint,
                           quiet=quiet, return_history=True)
    if not is_main_process():  # every rank holds the same model: rank 0 writes and reports it
        return
    model.config = model.config.replace(unit_norm=unit_norm)   # decoding only: training is the same
    sha = model.save(output)
    trained = model.config.trained or {}
    click.echo(f"model: {output}")
    click.echo(f"sha256: {sha}")
    click.echo(f"val_mse: {trained.get('val_mse', float('nan')):.6g}")
    click.echo(f"epochs: {trained.get('epochs', 0)}")
    gain = gain_over_start(history)
    if gain is not None:
        click.echo(f"start_val_mse: {gain[0]:.6g}")
        if gain[2] < LEARNED_LITTLE and not quiet:
            click.echo(f"note: the network gained {100 * gain[2]:.1f}% over its RQ start (validation MSE "
                       f"{gain[0]:.4g} to {gain[1]:.4g}): {len(x):,} training vectors were too few for it to "
                       f"learn, or the budget too short (at 384-d it needed 25,000 to 50,000 vectors to "
                       f"pass faiss RQ). Train on more vectors or longer; qinco-compress stores the "
                       f"codebooks alone when they do as well", err=True)
    click.echo(f"rate: {model.M * model.bytes_per_code} bytes/vector (M={model.M}, K={model.K})")


if __name__ == "__main__":
    main()
