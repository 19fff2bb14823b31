"""The compress pipeline: vectors in (any source, see sources.py), a model (given, or trained on
a sample of the input and sized so that the file stays small), codes out into a .qnc file.

Rates are in steps (codes per vector, see rates.py). The torch-side modules are imported only
when compress() runs.

Before encoding, a sample of the input (up to SAMPLE_ROWS rows, held out from the training
sample when compress trains the model) is encoded: its timing gives the estimate printed before
the encode starts and the size of the pieces the bar moves by, and its error at each report rate
is the file's quality report (SPEC.md 5.2: written in the quality_report section, shown by
qinco-info and the end-of-run summary).
"""
import binascii
import contextlib
import os
import time

import numpy as np

from ._version import __version__
from .errors import InputError
from .formats import QncWriter
from .formats.layout import bytes_per_code
from .model_resolution import load_model_arg
from .progress import bar, duration, note
from .rates import deprecated_bytes
from .sources import _sample_rows, as_source, read_rows
from .unit_norm import check_unit_norm
from .validation import as_float_matrix

DEFAULT_CHUNK_ROWS = 65536
DEFAULT_TRAIN_SIZE = 100_000
DEFAULT_STEPS = 16
DEFAULT_MAX_MINUTES = 5.0
TRAIN_K = 256  # codebook size of the models compress() trains itself
CONFIG_SUMMARY_KEYS = ("preset", "arch", "dim", "M", "K", "L", "hidden", "embed", "A", "B", "version")
SAMPLE_ROWS = 2000      # input rows timed for the estimate and measured for the quality report
ESTIMATE_SECONDS = 0.5  # the estimate is the rate of the last of pieces encoded for this long
UPDATE_SECONDS = 0.5    # the encode bar moves about this often (rows per update from the timing)


def config_summary(model, n_params=None):
    """The model_config section of a file written with `model`: its main settings and its
    parameter count (the model file itself is the full description)."""
    c = model.config.to_dict()
    out = {k: c[k] for k in CONFIG_SUMMARY_KEYS if k in c}
    out["parameters"] = n_params if n_params is not None else model.num_parameters()
    return out


def fits_float16(model):
    """Whether every weight of the model is within float16's finite range (it would store inf)."""
    import torch
    limit = torch.finfo(torch.float16).max
    return all(bool(p.detach().abs().max() <= limit) for p in model.parameters() if p.numel())


def _fit_model(n, dim, steps, preset, weight_dtype, decode_only, quiet):
    """The model shape and weight precision for a self-trained file that embeds its model: below
    float16 size (sizing.fit_model_to_file), and narrower when the width rule says the bytes are
    worth more as codes (sizing.shape_for_file)."""
    from .sizing import ModelChoice, fit_model_to_file, model_file_bytes, shape_for_file
    choice = fit_model_to_file(n, dim, steps * bytes_per_code(TRAIN_K), TRAIN_K, preset, weight_dtype,
                               decode_only)
    if not choice.overrides:
        narrow, line = shape_for_file(n, dim, steps, TRAIN_K, preset, choice.weight_dtype, decode_only)
        if narrow:
            from .config import ModelConfig
            size = model_file_bytes(ModelConfig.from_preset(preset, dim, steps, TRAIN_K, **narrow),
                                    choice.weight_dtype, decode_only)
            note(line, quiet)
            return ModelChoice(narrow, choice.weight_dtype, size, choice.budget_bytes)
    if choice.overrides or choice.weight_dtype != weight_dtype:
        shape = ", ".join(f"{k}={v}" for k, v in choice.overrides.items()) or "the preset's shape"
        note(f"model sized for {n:,} vectors: {preset} with {shape}, {choice.weight_dtype} weights "
             f"({choice.model_bytes:,} bytes), so that the file stays below float16 size", quiet)
    return choice


def _network_under_budget(n, dim, budget, chunk_rows, meta_bytes, preset, quiet):
    """(steps, shape overrides) of the network a whole-file budget affords: the preset's, or the
    narrow one when the steps its saved bytes buy are worth more than its cost (sizing.py's
    width rule)."""
    from . import rate_control as rc
    from .sizing import NARROW, narrow_applies, narrow_line, narrow_pays

    steps = rc.most_network_steps(n, dim, TRAIN_K, budget, chunk_rows, meta_bytes, preset,
                                  "float16", rc.MAX_STEPS)[0]
    if not narrow_applies(dim, preset):
        return steps, {}
    narrow_steps, narrow_bytes = rc.most_network_steps(n, dim, TRAIN_K, budget, chunk_rows,
                                                       meta_bytes, preset, "float16", rc.MAX_STEPS,
                                                       overrides=NARROW)
    extra = (narrow_steps - steps) * bytes_per_code(TRAIN_K)
    if narrow_steps >= 2 and narrow_pays(extra):
        note(narrow_line(f"{narrow_bytes:,} bytes", f"the budget then holds {narrow_steps} steps, "
                                                    f"not {steps}, worth more"), quiet)
        return narrow_steps, dict(NARROW)
    return steps, {}


def _training_sample(src, train_size, seed, unit_norm, quiet):
    """The rows compress trains on (src.sample(train_size, seed)), checked for unit norm when the
    model is to decode to unit norm (else a unit-norm sample gets a hint)."""
    from . import unit_norm as sphere
    sample = src.sample(train_size, seed)
    if len(sample) < 2:
        raise InputError(f"{getattr(src, 'name', 'input')}: need at least 2 vectors to train a model, "
                         f"got {len(sample)}; pass a trained model instead")
    if unit_norm:
        sphere.check_unit_norm(sample, name=getattr(src, "name", None) or "input")
    elif sphere.looks_unit_norm(sample):
        note(f"input is unit norm (every sampled row within {sphere.TOLERANCE:g} of norm 1): "
             f"--unit-norm makes the model decode onto the sphere (better cosine and inner-product "
             f"ranking, slightly higher MSE)", quiet)
    return sample


def _train_network(sample, steps, preset, overrides, max_minutes, seed, device, quiet, unit_norm):
    """The preset's network of `steps` steps (K=TRAIN_K) trained on the sample."""
    from .training import train
    model = train(sample, preset=preset, steps=steps, K=TRAIN_K, max_minutes=max_minutes, seed=seed,
                  device=device, quiet=quiet, **overrides)
    model.config = model.config.replace(unit_norm=bool(unit_norm))
    return model


def _self_trained(src, steps, file_bytes, preset, embed_model, weight_dtype, train_size, max_minutes,
                  seed, device, quiet, unit_norm, decode_only, model_choice, chunk_rows, metadata,
                  reserved_bytes=0):
    """The model compress trains for the source: (model, weight dtype, rows trained on, steps to
    store, rate control's Choice or None). A file that embeds it gets what rate control picks
    (rate_control.py): the network or codebooks only, whichever gives the lower error for the
    file's size; `model_choice` 'network' or 'codebooks' forces one. `reserved_bytes`: what the
    file's inverted lists take of a whole-file budget."""
    from . import rate_control as rc
    from .presets import DEFAULT_PRESET

    preset = preset or DEFAULT_PRESET
    sample = _training_sample(src, train_size, seed, unit_norm, quiet)
    if (not embed_model or model_choice == "network") and file_bytes is None:
        overrides = {}
        if embed_model:
            fit = _fit_model(src.n, src.dim, steps, preset, weight_dtype, decode_only, quiet)
            overrides, weight_dtype = fit.overrides, fit.weight_dtype
        model = _train_network(sample, steps, preset, overrides, max_minutes, seed, device, quiet, unit_norm)
        return model, weight_dtype, len(sample), steps, None
    started = time.monotonic()
    quality_rows, held = _sample(src, len(sample), seed)
    compare_on, label = rc.quality_sample_or_train(quality_rows, sample, held)
    n, dim = src.n, src.dim
    meta_bytes = None if metadata is None else len(rc.encode_json(metadata, "metadata"))

    def minutes_left():
        return max(max_minutes - (time.monotonic() - started) / 60, 0.01)

    def seconds_left():
        return minutes_left() * 60

    reserve = rc.REFINE_SHARE * max_minutes * 60   # seconds kept for refining codebooks only

    def fit_codebooks(m):
        model = rc.probe(sample, m, TRAIN_K, seed, quiet)
        model.config = model.config.replace(unit_norm=bool(unit_norm))
        return model

    def polish(codebooks, seconds):
        return rc.refined(codebooks, rc.refine_sample(sample, seed), seconds, device, quiet)

    if file_bytes is not None:
        rc.check_file_budget(n, dim, TRAIN_K, file_bytes, chunk_rows, meta_bytes, reserved_bytes)
        budget = int(file_bytes * n) - reserved_bytes
        m_cb = rc.most_codebook_steps(n, dim, TRAIN_K, budget, chunk_rows, meta_bytes, rc.MAX_STEPS)
        m_net, shape = 0, {}
        if model_choice != "codebooks":
            m_net, shape = _network_under_budget(n, dim, budget, chunk_rows, meta_bytes, preset, quiet)
        if model_choice == "network" and m_net < 2:
            raise InputError(f"--file-bytes {file_bytes:g}: no {preset} network fits the budget for "
                             f"{n:,} vectors (it needs at least two steps); let rate control choose "
                             f"codebooks only, or raise --file-bytes")
        codebooks = None if model_choice == "network" else polish(
            fit_codebooks(m_cb), reserve if m_net >= 2 else seconds_left())
        network = None if m_net < 2 else _train_network(sample, m_net, preset, shape, minutes_left(),
                                                        seed, device, quiet, unit_norm)
        choice = rc.decide_file_budget(network, codebooks, compare_on, file_bytes, device, label)
    else:
        fit = None
        if model_choice != "codebooks":
            try:
                fit = _fit_model(n, dim, steps, preset, weight_dtype, decode_only, quiet)
            except InputError as exc:
                note(f"rate control: {exc}", quiet)
        if fit is None:
            choice = rc.codebooks_only_choice(polish(fit_codebooks(steps), seconds_left()), n)
        else:
            size = rc.network_file_size(n, dim, steps, TRAIN_K, chunk_rows, fit.model_bytes, preset,
                                        meta_bytes)
            equal = rc.most_codebook_steps(n, dim, TRAIN_K, size, chunk_rows, meta_bytes,
                                           rc.COMPARE_STEPS_FACTOR * steps)
            codebooks = fit_codebooks(max(steps, equal))
            network = _train_network(sample, steps, preset, fit.overrides,
                                     max(minutes_left() - reserve / 60, 0.01), seed, device, quiet,
                                     unit_norm)
            embedded = rc.stored_model(network, fit.weight_dtype, decode_only)[0]
            stored = rc.stored_model(network, fit.weight_dtype, decode_only=False)[1]  # it encodes
            choice = rc.decide_fixed_rate(stored, len(embedded), codebooks, steps, compare_on, n,
                                          chunk_rows, meta_bytes, fit.weight_dtype, device,
                                          refine_on=rc.refine_sample(sample, seed),
                                          refine_seconds=seconds_left(), quiet=quiet,
                                          label=label)
            if choice.kind == "network":
                choice = choice._replace(model=network)
    note(choice.line, quiet)
    return choice.model, choice.weight_dtype, len(sample), choice.steps, choice


def _sample(src, trained_rows, seed):
    """Up to SAMPLE_ROWS rows of the input (float32) and whether they are held out from the
    training sample: True (none of them was trained on), False (compress trained on every row),
    None (the model was given: unknown). `trained_rows` is the size of the training sample
    compress drew (src.sample(train_size, seed)), None for a given model. Reads only those rows."""
    n = src.n
    if not hasattr(src, "array") and not hasattr(src, "vectors"):  # a stream: its first rows
        first = trained_rows or 0
        head = src.sample(first + SAMPLE_ROWS)
        held = len(head) > first
        rows = head[first:] if held else head[:SAMPLE_ROWS]
        return (as_float_matrix(rows, dim=src.dim, name="input", allow_empty=True),
                held if trained_rows is not None else None)
    rng = np.random.default_rng(seed + 1)
    if trained_rows is not None and n > trained_rows:
        trained = _sample_rows(n, trained_rows, seed)  # the rows src.sample(trained_rows, seed) read
        # trained_rows + SAMPLE_ROWS distinct rows hold at least SAMPLE_ROWS untrained ones
        candidates = rng.choice(n, min(n, trained_rows + SAMPLE_ROWS), replace=False)
        rows = np.sort(candidates[~np.isin(candidates, trained)][:SAMPLE_ROWS])
        held = True
    else:
        rows = _sample_rows(n, min(n, SAMPLE_ROWS), seed + 1)
        held = None if trained_rows is None else False
    return as_float_matrix(read_rows(src, rows), dim=src.dim, name="input", allow_empty=True), held


def _piece_rows(rate, batch_size):
    """Rows encoded between two moves of a bar: about UPDATE_SECONDS' worth at `rate`."""
    return batch_size if rate is None else min(batch_size, max(16, int(rate * UPDATE_SECONDS)))


def _timed_encode(model, x, A, B, device, n, quiet):
    """Codes of the sample x and the encoding rate (vectors per second; None for no rows).

    x is encoded in pieces of doubling size from 16 rows until ESTIMATE_SECONDS have passed; the
    rate of the last piece (the largest: the least per-call overhead) gives the estimate for the
    n vectors of the input, printed before the rest of the sample is encoded (under its own bar:
    on a slow model the quality sample itself takes a while)."""
    parts, start, size, spent, rate = [], 0, 16, 0.0, None
    while start < len(x) and spent < ESTIMATE_SECONDS:
        t0 = time.monotonic()
        parts.append(model.encode(x[start:start + size], A=A, B=B, device=device))
        seconds = time.monotonic() - t0
        rate = len(parts[-1]) / max(seconds, 1e-9)
        spent, start, size = spent + seconds, start + size, size * 2
    if rate is None:
        return None, None
    rest = x[start:]
    after = f", after {duration(len(rest) / rate)} for the rest of the quality sample" if len(rest) else ""
    note(f"encode: {n:,} vectors in about {duration(n / rate)} ({rate:,.0f} vectors/s, timed on "
         f"a sample){after}", quiet)
    if len(rest):
        with bar(total=len(rest), desc="quality sample", unit="vec", quiet=quiet) as pbar:
            for part in _pieces(rest, _piece_rows(rate, len(rest))):
                parts.append(model.encode(part, A=A, B=B, device=device))
                pbar.update(len(part))
    return np.concatenate(parts), rate


def _weight_dtype(data):
    """The precision of a model file's stored weights: the `weight_dtype` its metadata records,
    else that of its weight tensors ('mixed' when they differ)."""
    from .serialize import _parse_header

    header, _ = _parse_header(data, "model")
    recorded = (header.get("__metadata__") or {}).get("weight_dtype")
    if recorded:
        return recorded
    names = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
    kinds = {names.get(v.get("dtype"), v.get("dtype")) for k, v in header.items()
             if k not in ("__metadata__", "mean", "std") and isinstance(v, dict)}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def quality_report(model, data, sample, codes, held_out, device="auto", offsets=None):
    """The quality_report section of a file (SPEC.md 5.2): the writer, the model's weight
    precision and training record, the sample, and the error of its `codes` (the file's prefix
    of steps) at each report rate (evaluation.prefix_quality; `offsets`: the sample and its
    codes are residuals to them). None for an empty sample."""
    from .evaluation import prefix_quality

    if codes is None or not len(codes):
        return None
    trained = model.config.trained
    return _finite({"writer": f"qinco-codec {__version__}",
            "model": {"weight_dtype": _weight_dtype(data), "trained": dict(trained) if trained else None},
            "sample": {"rows": len(sample), "held_out": held_out},
            "rates": prefix_quality(model, sample, codes, device=device, offsets=offsets)})


def _finite(value):
    """`value` with every NaN or infinite float replaced by None (JSON sections refuse them: a
    diverged training record must not stop the file from being written)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _pieces(batch, rows):
    """`batch` cut into pieces of about `rows` rows, of nearly equal sizes (no tiny tail)."""
    count = max(1, -(-len(batch) // max(1, rows)))
    bounds = [len(batch) * i // count for i in range(count + 1)]
    return [batch[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _encode_into(writer, src, model, steps, A, B, device, batch_size, rate, quiet):
    """Encode every row of the source into the writer, moving the bar every UPDATE_SECONDS or
    so: each batch is encoded in pieces of the rows the measured `rate` does in that time.
    Codes do not depend on how rows are grouped (codec._chunks keeps every piece's matmuls
    large), so the file is the same whatever the pieces."""
    piece = _piece_rows(rate, batch_size)
    with bar(total=src.n, desc="encode", unit="vec", quiet=quiet) as pbar:
        start = 0
        for batch in src.iter_batches(batch_size):
            xb = as_float_matrix(batch, dim=model.dim, name="input", row_offset=start)
            if model.config.unit_norm:
                check_unit_norm(xb, row_offset=start)
            for part in _pieces(xb, piece):
                writer.write_codes(model.encode(part, A=A, B=B, device=device)[:, :steps])
                pbar.update(len(part))
            start += len(batch)


def _lists_bytes(n, dim, nlist, residual):
    """The most bytes the inverted lists of a file take (its ivf section, and its ivf_residual
    section with residual codes): what a whole-file budget keeps for them."""
    if nlist is None:
        return 0
    from .formats.ivf import ivf_section_bound
    from .formats.residual import IVF_RESIDUAL_SECTION_BYTES
    return ivf_section_bound(n=n, dim=dim, nlist=nlist) + (IVF_RESIDUAL_SECTION_BYTES if residual else 0)


def _check_residual_request(ivf, model, unit_norm):
    """InputError unless ivf_residual=True can be honoured: it needs the lists (ivf=NLIST) and a
    model compress trains on the residuals itself."""
    if ivf is None:
        raise InputError("ivf_residual needs ivf=NLIST: the codes are residuals to those lists' "
                         "centroids")
    if model is not None:
        raise InputError("ivf_residual: only for a model compress trains itself (on the residuals "
                         "to the centroids it fits); a given model was trained on vectors")
    if unit_norm:
        raise InputError("ivf_residual with unit_norm: residuals to the centroids are not unit "
                         "norm; leave out one of them")


def compress(x, path, model=None, *, steps=None, chunk_rows=DEFAULT_CHUNK_ROWS, embed_model=True,
             metadata=None, preset=None, max_minutes=DEFAULT_MAX_MINUTES, train_size=DEFAULT_TRAIN_SIZE,
             zstd_level=3, A=None, B=None, weight_dtype=None, model_out=None, batch_size=16384,
             device="auto", quiet=False, seed=0, report=True, bytes=None, unit_norm=None,
             decode_only=None, ivf=None, file_bytes=None, model_choice="auto", ivf_residual=None):
    """Encode vectors x into a .qnc file at `path`; returns a summary dict.

    x: an (n, d) array (memory-mapped arrays are read batch by batch), a vector file path, or a
    stream with `.n`, `.dim`, `.dtype` and batches (stdin). `model`: a model file path, a
    model_resolution.ModelFile (a model file already read) or a QincoModel (not modified); with model=None a model of `preset` with M=`steps` (default 16)
    codes of K=256 values is trained on a sample of x (`train_size` rows, `max_minutes`).
    `steps` is the number of codes stored per vector: a prefix of the model's M (default: all).
    The model is embedded unless embed_model=False; then it is put in the model store so the
    file still opens. `weight_dtype` ('float32', 'float16', 'bfloat16') sets how the model's
    weights are stored; None (default) means float16 for a model compress trains and embeds
    (the same MSE as float32 to 1e-4, half the bytes: docs/experiments/2026-12-02-weight-dtype.md;
    float32 when a weight is beyond float16's range) and float32 otherwise. `zstd_level` 1-22 compresses the code planes, 0 or None stores them raw.
    `bytes=` (bytes per vector) is the deprecated former spelling of `steps`.
    `report=False` leaves out the quality report (the file is then a version 1.0 file); the
    summary's `quality_report` is the report written (see the module docstring), or None.
    `ivf=NLIST` adds NLIST inverted lists for search (SPEC.md 5.3, a version 1.2 file): k-means
    centroids fitted on the input's training sample (`train_size` rows, `seed`), each row in
    the list of the centroid nearest its original vector (ivf_file.CompressLists); the codes are
    the same as without them. The summary's `ivf` then gives nlist and the rows per list.
    `ivf_residual` (with ivf=NLIST, for a model compress trains): IVF-QINCo, the centroids are
    fitted first and the model is trained on and encodes the residual of each row to its
    nearest centroid, which decoding adds back (SPEC.md 5.4, a version 1.3 file that older
    readers refuse). The list a row sits in then carries log2(NLIST) bits the codes do not pay
    for: on GloVe-50 at 8 B, 26% lower MSE in a file of the same size and R@10 0.868 against
    0.808; on 384-d MiniLM, 0.7% lower MSE (docs/experiments/2026-12-03-ivf-qinco-potential.md).
    The lists cannot then be replaced (qinco-index) without re-encoding. None (default): True
    when compress trains the model and the model does not decode onto the sphere (`unit_norm`),
    else False; False: the lists only filter rows (a 1.2 file).
    `unit_norm`: True makes the model compress trains decode onto the unit sphere (config
    `unit_norm`; every input row must then be unit norm); None or False (default) does not, and a
    unit-norm input gets a hint. With a given model it must be None or match the model's flag.
    `decode_only`: embed the model without its encoder-only pre-selection codebooks (it decodes
    the same; MODEL-SPEC.md 3). None (default) means yes for a model compress trains and writes
    nowhere else, no when `model_out` is given (the file then names the model written there, so
    files encoded later with it share one model id) and no for a given model (whose id the file
    keeps). `model_out` always gets the full model.
    Rate control (rate_control.py), for a model compress trains and embeds: `model_choice`
    'auto' (default) embeds the network or codebooks only (no network), whichever gives the lower
    held-out error for the file's size; 'network' or 'codebooks' forces one. `file_bytes` (bytes
    per vector, everything in the file counted) replaces `steps`: the code rate and the model are
    chosen together and the file stays within file_bytes * n bytes (with `ivf`, the lists'
    sections are counted at their largest: list ids raw). The summary's `model_choice`
    says what was chosen and why (None when rate control did not run).
    """
    from .serialize import model_from_bytes, model_to_bytes, sha256_hex

    src = as_source(x)
    if ivf is not None:
        from .ivf_file import check_nlist
        check_nlist(ivf, src.n, "ivf")  # before any training or encoding
    lists, originals = None, src
    if ivf_residual is None:
        ivf_residual = ivf is not None and model is None and not unit_norm
        if ivf is not None and model is None and unit_norm:
            note("ivf: the lists only filter rows (codes of residuals to the centroids are not "
                 "unit norm, as --unit-norm needs)", quiet)
    if ivf_residual:
        _check_residual_request(ivf, model, unit_norm)
        from .ivf_file import CompressLists
        lists = CompressLists(src, ivf, train_size=train_size, seed=seed, quiet=quiet, residual=True)
        src = lists.source   # the model is trained on, and encodes, residuals to the centroids
    trained_rows = None
    if decode_only is None:
        decode_only = model is None and embed_model and not model_out
    choice = None
    if weight_dtype is None:
        weight_dtype = "float16" if model is None and embed_model else "float32"
        chosen_dtype = True
    else:
        chosen_dtype = False
    if model is None:
        steps, bytes = deprecated_bytes(steps, bytes, TRAIN_K, None, ""), None
        if file_bytes is not None and steps is not None:
            raise InputError("file_bytes and steps: give one (file_bytes chooses the code rate)")
        if model_choice not in ("auto", "network", "codebooks"):
            raise InputError(f"model_choice must be 'auto', 'network' or 'codebooks', got {model_choice!r}")
        steps = DEFAULT_STEPS if steps is None else steps
        model, weight_dtype, trained_rows, steps, choice = _self_trained(
            src, steps, file_bytes, preset, embed_model, weight_dtype, train_size, max_minutes, seed,
            device, quiet, bool(unit_norm), decode_only, model_choice, chunk_rows, metadata,
            _lists_bytes(src.n, src.dim, ivf, ivf_residual))
        if choice is not None and choice.kind != "network":
            decode_only = True   # codebooks only: encoded exhaustively, nothing to pre-select
        if chosen_dtype and weight_dtype == "float16" and not fits_float16(model):
            note("note: a weight is beyond float16's range: the model is stored as float32", quiet)
            weight_dtype = "float32"
    elif file_bytes is not None:
        raise InputError("file_bytes: only for a model compress trains and embeds (with a given "
                         "model the code rate is `steps`)")
    model, data, sha = load_model_arg(model)
    chosen_A = model.config.A if A is None else A
    if model.decode_only and 0 < chosen_A < model.K:
        raise InputError(f"the model is decode-only (no pre-selection codebooks; qinco-compress "
                         f"embeds models that way by default), so it cannot encode with A={chosen_A}: "
                         f"use the full model (written by --model-out, or embedded with --full-model), "
                         f"or --A 0 (every codeword evaluated, about {model.K // chosen_A}x slower)")
    if unit_norm is not None and bool(unit_norm) != model.config.unit_norm:
        raise InputError(f"unit_norm={bool(unit_norm)} does not match the given model "
                         f"(unit_norm={model.config.unit_norm}); it is part of the model, set when "
                         f"the model is trained")
    full_data = data
    if weight_dtype != "float32" or decode_only:
        full_data = model_to_bytes(model, weight_dtype)
        data = model_to_bytes(model, weight_dtype, decode_only=decode_only)
        sha = sha256_hex(data)
    model = model_from_bytes(full_data)  # encode with exactly the weights the file decodes with
    if src.dim != model.dim:
        raise InputError(f"input has dimension {src.dim}, the model expects {model.dim}")
    steps = deprecated_bytes(steps, bytes, model.K, model.M, "the model's rate")
    if model_out:
        from .formats.atomic import write_bytes_atomic
        write_bytes_atomic(model_out, data if choice is not None and choice.kind != "network" else full_data)
    if not embed_model:
        from . import model_store
        model_store.put(data, sha)
    code_bytes = src.n * steps * model.bytes_per_code
    if embed_model and len(data) > code_bytes and not quiet:
        hint = "" if weight_dtype != "float32" else ", or store its weights as float16"
        note(f"warning: the embedded model ({len(data):,} bytes) is larger than the codes "
             f"({code_bytes:,} bytes); share one model across files with --no-embed-model and the "
             f"model store{hint}", quiet)
    sample, held_out = _sample(originals, trained_rows, seed)
    offsets = None
    if lists is not None and lists.residual:
        sample, offsets = lists.split(sample)
    sample_codes, rate = _timed_encode(model, sample, A, B, device, src.n, quiet)
    quality = quality_report(model, data, sample, None if sample_codes is None else sample_codes[:, :steps],
                             held_out, device, offsets) if report else None
    from .ivf_file import CompressLists

    if ivf is not None and lists is None:
        lists = CompressLists(src, ivf, train_size=train_size, seed=seed, quiet=quiet)
    with (contextlib.nullcontext(path) if lists is None else
          lists.written_to(path, zstd_level or None)) as target, \
            QncWriter(target, n=src.n, dim=model.dim, source_dtype=np.dtype(src.dtype).name,
                   K=model.K, M=steps, model_sha256=binascii.unhexlify(sha),
                   model_config=config_summary(model), metadata=metadata,
                   model_bytes=data if embed_model else None, chunk_rows=chunk_rows,
                   zstd_level=zstd_level or None, quality_report=quality) as w:
        _encode_into(w, src if lists is None else lists.source, model, steps, A, B, device,
                     batch_size, rate, quiet)
    return {"path": os.fspath(path), "n": src.n, "dim": model.dim, "steps": steps,
            "bytes_per_vector": steps * model.bytes_per_code, "model_sha256": sha,
            "model_bytes": len(data), "model_embedded": bool(embed_model),
            "code_bytes": code_bytes, "file_size": os.path.getsize(path), "quality_report": quality,
            "ivf": None if lists is None else lists.summary(),
            "model_choice": None if choice is None else {"kind": choice.kind, "line": choice.line,
                                                          **choice.measured}}
