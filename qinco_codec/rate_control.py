"""Rate control for self-contained files: what a .qnc that embeds its own model holds, so that the
whole file, model counted, gives the lowest error it can for its size.

Two kinds of model compete, both measured on the same sample of the input (held out from
training when the input has rows training did not take; else rows of the training sample, which
are then rows of the file itself: for a file the error on its own rows is what counts):

* the network: the preset `qinco-compress` trains (sized by sizing.py, stored decode-only);
* codebooks only: the residual quantizer every network starts from. An untrained QINCo2 step is
  the identity on its codeword, so a qinco2 model whose steps share one network of width 1 with
  no blocks (3·dim + 1 floats in all) decodes exactly as RQ with the same codebooks; its
  codebooks are stored as float16 and it encodes with a beam of CODEBOOKS_BEAM, like faiss's
  ResidualQuantizer with float16 codebooks, the bar of issue 14. Its greedy residual k-means
  is then refined to the beam's codes (rq_refine.py), within REFINE_SHARE of the time budget:
  on GloVe-50 that takes it from 1.05x faiss RQ's MSE to 0.96x.

At a code rate the user fixed (`--bytes`), the network is kept when its error is below what
codebooks only reach in a file as large as the network's (which may afford more steps); else the
file holds codebooks only at the requested rate (a smaller file with RQ's error: never worse than
RQ). Under a whole-file budget (`--file-bytes`), each kind gets the most steps the budget allows
and the lower error wins. The codebooks-only model is fitted on at most PROBE_ROWS rows of the
training sample with PROBE_ITERS Lloyd iterations per step; its time counts in the budget.
"""
import time
from typing import NamedTuple

import numpy as np

from .errors import InputError
from .formats.layout import bytes_per_code
from .formats.sections import encode_json
from .formats.size import file_size

CODEBOOKS_ONLY = "codebooks-only"   # the preset label of a model without a network
CODEBOOKS_BEAM = 5                  # faiss ResidualQuantizer's default beam (max_beam_size)
PROBE_ROWS = 50_000
PROBE_ITERS = 10
# Share of the time budget kept for refining a codebooks-only model (rq_refine.py).
REFINE_SHARE = 0.2
# Most steps the codebooks-only model is fitted to when it is the comparison at a fixed rate:
# this many times the requested steps (a network that needs more to be matched is kept).
COMPARE_STEPS_FACTOR = 4
# Most steps a whole-file budget may buy (the model format's limit is 1024).
MAX_STEPS = 256
# Bytes kept for the quality_report section (its JSON is about 1.5 KB with 11 report rates).
QUALITY_REPORT_BOUND = 4096


class Choice(NamedTuple):
    """What rate control picked: the model to embed (a QincoModel), its kind, the steps stored,
    the weight dtype to store it with, one line why, and what was measured (`measured`: the
    held-out MSE of each candidate, its steps and model bytes; benchmarks read it)."""
    model: object
    kind: str
    steps: int
    weight_dtype: str
    line: str
    measured: dict = {}


def codebooks_only_config(dim, steps, K, B=CODEBOOKS_BEAM):
    """The config of a model that is residual quantization and nothing else."""
    from .config import ModelConfig
    return ModelConfig(arch="qinco2", dim=int(dim), M=int(steps), K=int(K), L=0, hidden=1, embed=1,
                       share_steps=True, A=0, B=int(B), preset=CODEBOOKS_ONLY)


def fit_codebooks_only(x, steps, K, seed=0, B=CODEBOOKS_BEAM):
    """Residual k-means codebooks of `steps` steps on (a sample of) x, trained for the beam of B
    that will encode with them (rq_init.beam_residual_kmeans), as a model; `refined` polishes it."""
    from .model import QincoModel
    from .rq_init import init_from_rq
    model = QincoModel(codebooks_only_config(x.shape[1], steps, K, B))
    return init_from_rq(model, x, iters=PROBE_ITERS, seed=seed, max_points=PROBE_ROWS, beam=B)


def refine_sample(x, seed=0):
    """The rows the codebooks are refined on: a seeded sample of at most PROBE_ROWS rows of x."""
    if len(x) <= PROBE_ROWS:
        return np.asarray(x, dtype=np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(len(x), PROBE_ROWS, replace=False))
    return np.asarray(x[rows], dtype=np.float32)


def refined(codebooks, x, seconds, device="auto", quiet=True):
    """A copy of the codebooks-only model `codebooks` refined on x (rq_refine.refine) for at most
    `seconds` (whole rounds: a round started is finished), with a note of what it reached."""
    import copy

    from . import rq_refine
    from .progress import note
    t0 = time.monotonic()
    model = copy.deepcopy(codebooks)
    errors = rq_refine.refine(model, x, stop=rq_refine.time_limit(seconds), device=device)
    if len(errors) > 1:
        note(f"rate control: codebooks refined {len(errors) - 1} rounds in {time.monotonic() - t0:.1f} s "
             f"({model.M} steps; training MSE {errors[0]:.4g} to {errors[-1]:.4g}, normalised)", quiet)
    return model


def first_steps(model, steps):
    """A model of the first `steps` steps of `model` (the same decoder for those prefixes)."""
    from .model import QincoModel
    small = QincoModel(model.config.replace(M=int(steps)), preselect=not model.decode_only)
    wanted = small.state_dict()
    small.load_state_dict({k: v for k, v in model.state_dict().items() if k in wanted})
    return small


def stored_model(model, weight_dtype, decode_only=True):
    """(file bytes, the model as those bytes decode) of `model` stored at `weight_dtype`."""
    from .serialize import model_from_bytes, model_to_bytes
    data = model_to_bytes(model, weight_dtype, decode_only=decode_only)
    return data, model_from_bytes(data)


def held_out_mse(model, x, steps=None, device="auto"):
    """Mean squared error of x coded by `model` at its own search settings, first `steps` codes."""
    codes = model.encode(x, device=device)
    recon = model.decode(codes, steps=steps, device=device)
    return float(((recon.astype(np.float64) - x) ** 2).sum(1).mean())


def _container_bytes(n, steps, K, chunk_rows, model_bytes, config_bytes, metadata_bytes):
    """Whole-file bytes of n vectors at `steps` codes with an embedded model (upper bound)."""
    sections = [config_bytes, model_bytes, QUALITY_REPORT_BOUND]
    if metadata_bytes is not None:
        sections.append(metadata_bytes)
    return file_size(n, steps, bytes_per_code(K), chunk_rows, sections)


def _codebooks_only_bytes(dim, steps, K):
    """Bytes of a codebooks-only model file (float16 codebooks), by arithmetic."""
    from .sizing import model_file_bytes
    return model_file_bytes(codebooks_only_config(dim, steps, K), "float16", decode_only=True)


def _config_bytes(config):
    from .compressor import CONFIG_SUMMARY_KEYS
    c = config.to_dict()
    return len(encode_json({**{k: c[k] for k in CONFIG_SUMMARY_KEYS if k in c},
                            "parameters": 10 ** 12}, "model_config"))


def most_codebook_steps(n, dim, K, budget, chunk_rows, metadata_bytes, limit):
    """The most steps (<= limit) a codebooks-only file of n vectors keeps within `budget` bytes
    (0 when not even one fits)."""
    best = 0
    for steps in range(1, limit + 1):
        size = _container_bytes(n, steps, K, chunk_rows, _codebooks_only_bytes(dim, steps, K),
                                _config_bytes(codebooks_only_config(dim, steps, K)), metadata_bytes)
        if size > budget:
            break
        best = steps
    return best


def most_network_steps(n, dim, K, budget, chunk_rows, metadata_bytes, preset, weight_dtype, limit,
                       overrides=None):
    """The most steps (<= limit) a file with the preset's network (shape `overrides`, decode-only,
    `weight_dtype`) keeps within `budget` bytes, and that model's bytes (0, None when not even
    one fits)."""
    from .config import ModelConfig
    from .sizing import model_file_bytes
    best = (0, None)
    for steps in range(2, limit + 1):   # a network needs a second step to act on
        config = ModelConfig.from_preset(preset, dim, steps, K, **(overrides or {}))
        model_bytes = model_file_bytes(config, weight_dtype, decode_only=True)
        if _container_bytes(n, steps, K, chunk_rows, model_bytes, _config_bytes(config),
                            metadata_bytes) > budget:
            break
        best = (steps, model_bytes)
    return best


def smallest_file(n, dim, K, chunk_rows, metadata_bytes):
    """Bytes of the smallest self-contained file: one code per vector with its codebook."""
    return _container_bytes(n, 1, K, chunk_rows, _codebooks_only_bytes(dim, 1, K),
                            _config_bytes(codebooks_only_config(dim, 1, K)), metadata_bytes)


def check_file_budget(n, dim, K, file_bytes, chunk_rows, metadata_bytes, reserved_bytes=0):
    """Refuse a whole-file budget (bytes per vector) too small for any code (`reserved_bytes`:
    what other sections, such as inverted lists, take of it)."""
    need = smallest_file(n, dim, K, chunk_rows, metadata_bytes) + reserved_bytes
    if file_bytes * n < need:
        raise InputError(f"--file-bytes {file_bytes:g}: {n:,} vectors of dim {dim} need at least "
                         f"{need / max(n, 1):,.2f} bytes per vector in a self-contained file (one "
                         f"code each, its codebook and the container"
                         + (f", and {reserved_bytes / max(n, 1):,.2f} of inverted lists"
                            if reserved_bytes else "") + "); raise --file-bytes, or share a "
                         f"model across files (--model PATH --no-embed-model) and use --bytes")


def probe(train_sample, steps, K, seed, quiet):
    """The codebooks-only model of `steps` steps, fitted on (at most PROBE_ROWS of) the sample."""
    from .progress import note
    t0 = time.monotonic()
    model = fit_codebooks_only(train_sample, steps, K, seed)
    note(f"rate control: codebooks only fitted to {steps} steps in {time.monotonic() - t0:.1f} s", quiet)
    return model


def network_file_size(n, dim, steps, K, chunk_rows, model_bytes, preset, metadata_bytes):
    """Whole-file bytes with the preset's network of `model_bytes` bytes embedded (upper bound)."""
    from .config import ModelConfig
    return _container_bytes(n, steps, K, chunk_rows, model_bytes,
                            _config_bytes(ModelConfig.from_preset(preset, dim, steps, K)), metadata_bytes)


def codebooks_only_choice(codebooks, n):
    """Codebooks only because no network fits a self-contained file of n vectors."""
    return Choice(codebooks, CODEBOOKS_ONLY, codebooks.M, "float16",
                  f"model: codebooks only, no network: {n:,} vectors are too few to carry one (share "
                  f"a network trained on more data: --model PATH --no-embed-model)")


def decide_fixed_rate(network, network_bytes, codebooks, steps, held_out, n, chunk_rows,
                      metadata_bytes, network_dtype, device="auto", refine_on=None, refine_seconds=0.0,
                      quiet=True, label="held-out"):
    """At `steps` codes per vector: the network, or codebooks only when they reach a lower error in
    a file no larger than the network's. `codebooks`: a greedy codebooks-only model of at least
    `steps` steps (the comparison uses as many of them as fit the network's file size).

    Refinement on `refine_on` (rows of the training sample), `refine_seconds` in all, goes first
    to the model stored: the compared codebooks are refined (half the time) only when the network
    beats them unrefined; codebooks only, once chosen, are refined at `steps` with what is left."""
    dim, K = network.dim, network.K
    net_size = _container_bytes(n, steps, K, chunk_rows, network_bytes,
                                _config_bytes(network.config), metadata_bytes)
    equal = min(codebooks.M, max(steps, most_codebook_steps(n, dim, K, net_size, chunk_rows,
                                                             metadata_bytes, codebooks.M)))
    net_mse = held_out_mse(network, held_out, device=device)
    started = time.monotonic()
    at_equal, polished = first_steps(codebooks, equal), False
    cb_mse = held_out_mse(stored_model(at_equal, "float16")[1], held_out, device=device)
    if net_mse <= cb_mse and refine_on is not None:     # close: refined codebooks may still win
        at_equal, polished = refined(at_equal, refine_on, refine_seconds / 2, device, quiet), True
        cb_mse = held_out_mse(stored_model(at_equal, "float16")[1], held_out, device=device)
    per_vector = net_size / n
    measured = {"network_mse": net_mse, "network_steps": steps, "network_model_bytes": network_bytes,
                "network_file_bytes": net_size, "codebooks_mse": cb_mse, "codebooks_steps": equal,
                "codebooks_model_bytes": _codebooks_only_bytes(dim, equal, K), "compared_on": label}
    if net_mse <= cb_mse:
        return Choice(network, "network", steps, network_dtype,
                      f"model: network {network.config.preset} ({network_bytes:,} bytes, "
                      f"{per_vector:,.1f} bytes/vector in all), {label} MSE {net_mse:.4g} at {steps} "
                      f"steps; codebooks only reach {cb_mse:.4g} in the same file size ({equal} steps)",
                      measured)
    if equal == steps and polished:
        chosen = at_equal
    else:
        chosen = first_steps(codebooks, steps)
        if refine_on is not None:
            left = max(refine_seconds - (time.monotonic() - started), 0.0)
            chosen = refined(chosen, refine_on, left, device, quiet)
    why = (f"{n:,} vectors are too few to pay for a network (share one trained on more data: "
           f"--model PATH --no-embed-model)" if equal > steps else
           "the network did not learn enough to beat them (a longer --max-minutes may)")
    return Choice(chosen, CODEBOOKS_ONLY, steps, "float16",
                  f"model: codebooks only, no network: the network ({network_bytes:,} bytes) reaches "
                  f"{label} MSE {net_mse:.4g} at {steps} steps, codebooks only {cb_mse:.4g} in the "
                  f"same file size ({equal} steps); {why}", measured)


def decide_file_budget(network, codebooks, held_out, budget_per_vector, device="auto",
                       label="held-out"):
    """Under a whole-file budget: the candidate with the lower held-out error (either may be None
    when the budget does not allow it). Both are stored with float16 weights."""
    results = []
    for model, kind in ((network, "network"), (codebooks, CODEBOOKS_ONLY)):
        if model is not None:
            stored = stored_model(model, "float16", decode_only=False)[1]
            results.append((held_out_mse(stored, held_out, device=device), kind, model, "float16"))
    mse, kind, model, dtype = min(results, key=lambda r: r[0])
    measured = {f"{'network' if k == 'network' else 'codebooks'}_{what}": value
                for m, k, mod, _ in results for what, value in (("mse", m), ("steps", mod.M))}
    measured["compared_on"] = label
    others = "; ".join(f"{k} {m:.4g} at {mod.M} steps" for m, k, mod, _ in results if k != kind)
    return Choice(model, kind, model.M, dtype,
                  f"model: {kind} ({model.M} steps) within --file-bytes {budget_per_vector:g}: "
                  f"{label} MSE {mse:.4g}" + (f" (against {others})" if others else ""), measured)


def quality_sample_or_train(quality_rows, train_sample, held, rows=2000):
    """The rows to compare candidates on and what they are: the quality sample of the input when
    there is one ("held-out" when `held`, none of its rows trained on; else "in-sample"), else
    the first `rows` of the training sample ("in-sample")."""
    if quality_rows is not None and len(quality_rows):
        return quality_rows, "held-out" if held else "in-sample"
    return np.asarray(train_sample[:rows], dtype=np.float32), "in-sample"
