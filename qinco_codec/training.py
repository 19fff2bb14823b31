"""Training: fit a QincoModel to vectors, starting from residual k-means.

Recipe (QINCo2 paper, adapted to a CPU budget): codes of each batch come from the model's own
encoder under no_grad (pre-selection of `train_A` candidates for QINCo2, greedy); the loss sums
the squared error of every prefix m = 1..M (so every prefix rate is a good code), plus, for QINCo2,
an RQ-style loss that keeps the pre-selection codebooks tracking the codes actually chosen.
AdamW with linear warm-up and cosine decay, gradient clipping, reset of codewords left unused
for an epoch, a held-out validation split with early stopping, and a wall-clock budget. The model
with the best validation MSE is returned.

The budget (`max_minutes`) counts everything train() does: the split, the RQ start (residual
k-means, with its own progress bar, cut short when the budget runs out there), every batch and
validation. It is checked before every Lloyd iteration of the RQ start and before every batch,
keeping back the time the closing validation takes (measured on the first one), so a run ends
within its budget plus at most one batch or one Lloyd iteration; an epoch cut short by the budget
is recorded with its number of `batches` and resets no codeword. A run that never reaches its
budget computes exactly what it computed before the budget was checked inside epochs.

An "epoch" is a fixed number of samples (`samples_per_epoch`), independent of the training-set
size, drawn from a permutation seeded by (seed, epoch). A checkpoint is written after every epoch;
resuming from it repeats exactly what an uninterrupted run would have done (when the run is
bounded by `epochs` rather than by wall-clock time).
"""
import contextlib
import hashlib
import math
import time
import warnings
from typing import NamedTuple

import numpy as np
import torch

from . import codec, distributed
from .checkpoint import Checkpoint, data_fingerprint
from .devices import resolve_device
from .errors import InputError
from .model import QincoModel
from .presets import DEFAULT_PRESET, get_preset
from .progress import bar
from .rates import check_steps, steps_for_bytes
from .rq_init import LLOYD_ITERS, init_from_rq
from .validation import as_float_matrix

DEFAULT_EPOCHS = 20
WARMUP_FRACTION = 0.05
# Early stopping only counts epochs without improvement from this fraction of the schedule on:
# before it the learning rate is still high, and the annealing that follows is where a stalled
# validation loss usually improves again (a 20-minute GloVe run stopped at 12 minutes otherwise).
EARLY_STOP_FROM = 0.5
MIN_LR_FACTOR = 0.02
DROPOUT_STREAM = 0x64726F70  # offset of the dropout masks' seed from the epoch's sampling seed
RANK_STREAM = 1 << 40  # offset of each data-parallel rank's dropout seed (rank 0's is the one above)


def _split_validation(x, val, seed):
    """(train, val) arrays: `val` is an array, a count, or a fraction of x held out."""
    if isinstance(val, np.ndarray) or hasattr(val, "shape"):
        return x, as_float_matrix(val, dim=x.shape[1], name="val")
    n = len(x)
    n_val = int(round(val * n)) if isinstance(val, float) and val < 1 else int(val)
    n_val = min(n_val, 10_000) if isinstance(val, float) else n_val
    if n_val < 1 or n - n_val < 2:
        raise InputError(f"val: cannot hold out {n_val} of {n} vectors (need >= 1 and >= 2 left to train on)")
    perm = np.random.default_rng(seed).permutation(n)
    return x[np.sort(perm[n_val:])], x[np.sort(perm[:n_val])]


def _param_groups(model, weight_decay):
    """Weight decay on network matrices only: decaying codebooks or biases pulls the model off
    the data it quantizes."""
    decay, plain = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() == 2 and "codebook" not in name and "preselect" not in name else plain).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def optimizer_step(model, opt, loss, recipe):
    """One update from `loss`: gradients, the recipe's clipping (by value, by norm), the step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if recipe.clip_value:
        torch.nn.utils.clip_grad_value_(model.parameters(), recipe.clip_value)
    if recipe.clip_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_norm)
    opt.step()


def lr_factor(progress):
    """Multiplier of the base learning rate at a fraction `progress` of the run (warm-up, cosine)."""
    if progress < WARMUP_FRACTION:
        return (progress + 1e-3) / WARMUP_FRACTION
    p = min(1.0, (progress - WARMUP_FRACTION) / (1 - WARMUP_FRACTION))
    return MIN_LR_FACTOR + (1 - MIN_LR_FACTOR) * 0.5 * (1 + math.cos(math.pi * p))


def prefix_losses(model, x, codes, last_only=False):
    """Training loss for normalised x and fixed codes: sum over prefixes (or the last) of the MSE,
    plus the pre-selection codebooks' RQ loss. Returns (loss, mse of the full reconstruction,
    the M partial reconstructions)."""
    outs = codec.decode_with_grad(model, codes)
    errs = [(o - x).square().mean() for o in outs]
    loss = errs[-1] if last_only else sum(errs)
    for j, step in enumerate(model.steps, start=1):
        if step.preselect is not None:
            loss = loss + (outs[j - 1].detach() + step.preselect[codes[:, j]] - x).square().mean()
    return loss, errs[-1].detach(), outs


@torch.no_grad()
def validation_mse(model, xval, A, batch=2048):
    """MSE (sum over dimensions, mean over vectors, raw units) of the training-time encoder."""
    total = 0.0
    for s in range(0, len(xval), batch):
        xb = xval[s:s + batch]
        codes = codec.encode_normalized(model, xb, A, 1)
        total += (codec.decode_normalized(model, codes) - xb).square().sum().item()
    return total / len(xval) * float(model.std) ** 2


def _group_validation_mse(model, xval, A, group):
    """validation_mse of xval, each rank encoding its share of the rows: the same number on
    every rank (validation_mse itself with one process)."""
    if group.world == 1:
        return validation_mse(model, xval, A)
    part = group.rows(xval)
    return group.sum(validation_mse(model, part, A) * len(part) if len(part) else 0.0) / len(xval)


class _PrefixLoss(torch.nn.Module):
    """prefix_losses as a module's forward(), the call DistributedDataParallel needs to average
    the gradients of the backward() that follows over the ranks."""

    def __init__(self, model, last_only):
        super().__init__()
        self.model, self.last_only = model, last_only

    def forward(self, x, codes):
        return prefix_losses(self.model, x, codes, last_only=self.last_only)


@torch.no_grad()
def reset_dead_codewords(model, usage, residuals, generator):
    """Re-draw codewords no training vector used this epoch from residuals that reached that step."""
    n_reset = 0
    for m in range(model.M):
        dead = (usage[m] == 0).nonzero().flatten()
        if len(dead) == 0:
            continue
        pool = residuals[m]
        pick = pool[torch.randint(len(pool), (len(dead),), generator=generator)]
        pick = pick + 0.01 * pick.std() * torch.randn(pick.shape, generator=generator)
        pick = pick.to(model.codebook0.device)
        dead = dead.to(model.codebook0.device)
        if m == 0:
            model.codebook0[dead] = pick
        else:
            step = model.steps[m - 1]
            step.codebook[dead] = pick
            if step.preselect is not None:
                step.preselect[dead] = pick
        n_reset += len(dead)
    return n_reset


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _check(name, value, ok, expected):
    """InputError naming the option, what it must be and what it is, when `ok` is false."""
    if not ok:
        raise InputError(f"{name} must be {expected}, got {value!r}")


def _resolve_steps(steps, M, nbytes, K):
    """The number of steps from `steps`, or once from a deprecated alias (M, or bytes per vector,
    converted by rates.steps_for_bytes). Its warnings point at train()'s caller."""
    given = [name for name, v in (("steps", steps), ("M", M), ("bytes", nbytes)) if v is not None]
    if len(given) > 1:
        raise InputError(f"give the rate once, as steps=...; got {' and '.join(given)}")
    if M is not None:
        warnings.warn("train(M=...) is deprecated; use steps=... (the same number: codes per vector)",
                      DeprecationWarning, stacklevel=3)
        steps = M
    elif nbytes is not None:
        warnings.warn("train(bytes=...) is deprecated; use steps=... (codes per vector: bytes divided "
                      "by the bytes per code, 1 for K <= 256, else 2)", DeprecationWarning, stacklevel=3)
        steps = steps_for_bytes(nbytes, K, None, None)
    if steps is None:
        raise InputError("give the number of steps (codes per vector), e.g. train(x, steps=8)")
    return check_steps(steps, None, None)


def _recipe(preset, dim, **given):
    """The preset for `dim`-dimensional vectors with the training-recipe options that were given
    (not None) in place of its own."""
    for name, value in given.items():
        _check(name, value, value is None or (_is_number(value) and value >= 0), "a number >= 0")
    train_A = given["train_A"]
    _check("train_A", train_A, train_A is None or _is_int(train_A), "an integer >= 0")
    return get_preset(preset, dim, **{k: v for k, v in given.items() if v is not None})


def _shape(**given):
    """The model-shape overrides that were given (not None), for QincoModel.from_preset."""
    for name, value in given.items():
        if name == "share_steps":
            _check(name, value, value is None or isinstance(value, bool), "True or False")
        else:
            _check(name, value, value is None or (_is_int(value) and value >= 0), "an integer >= 0")
    return {k: v for k, v in given.items() if v is not None}


@contextlib.contextmanager
def _torch_settings(threads):
    """torch's deterministic algorithms (the same data, options and seed give the same model, and
    a resumed run the same result) and, when given, `threads` CPU threads, for one run: both are
    restored on exit, also on an error or an interruption. They are process-wide while the run
    lasts (torch has no per-thread setting); train() leaves them as it found them."""
    deterministic = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled())
    n_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        if threads:
            torch.set_num_threads(int(threads))
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        if threads:
            torch.set_num_threads(n_threads)


@contextlib.contextmanager
def _dropout(model, p, generator):
    """Inverted dropout of a share p of the step networks' hidden units (the output of each residual
    block's ReLU) while gradients are computed in training mode, with masks drawn from `generator`
    rather than torch's global RNG: the caller's random state is untouched, and a run resumed from
    a checkpoint draws the same masks. Forward hooks on the ReLU modules (a shared network's once),
    removed on exit; nothing reaches the model or its file. Yields [number of masks drawn]."""
    drawn = [0]

    def hook(module, inputs, output):
        if not (module.training and torch.is_grad_enabled()):
            return None
        drawn[0] += 1
        keep = torch.empty_like(output).bernoulli_(1.0 - p, generator=generator)
        return output * keep.div_(1.0 - p)

    relus = {id(block[1]): block[1] for step in model.steps for block in step.blocks} if p else {}
    handles = [relu.register_forward_hook(hook) for relu in relus.values()]
    try:
        yield drawn
    finally:
        for handle in handles:
            handle.remove()


class _Clock:
    """Seconds counted against the budget (None: no budget): those of the calls before a resume
    (`before`, from the checkpoint) plus this call's since the clock was made. In a data-parallel
    run, `agree` (set once every rank trains) makes every reading and decision rank 0's."""

    def __init__(self, budget, start):
        self.budget, self.before, self._start = budget, 0.0, start
        self.agree = None

    def _local(self):
        return self.before + time.monotonic() - self._start

    def elapsed(self):
        return self.agree(self._local()) if self.agree else self._local()

    def out(self, reserve=0.0):
        """Whether less than `reserve` seconds of the budget are left (never without a budget)."""
        if self.budget is None:
            return False
        late = self._local() + reserve >= self.budget
        return self.agree(float(late)) > 0 if self.agree else late


def _validation_seconds(model, xval, A, probe_rows=256):
    """About how long validation_mse takes on xval: timed on its first `probe_rows` vectors with
    the (not yet trained) model, whose encoding costs what the trained one's does, and scaled."""
    probe = torch.from_numpy(np.ascontiguousarray(xval[:probe_rows]))
    t0 = time.monotonic()
    validation_mse(model, probe, A)
    return (time.monotonic() - t0) * len(xval) / max(1, len(probe))


def _digest(text):
    """A 63-bit integer fingerprint of text (for Group.check_same)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)


# A network whose best validation MSE is less than this share below its RQ start's has not
# learned from its training set (384-d, 16 B, 20 epochs: 0.3% at 12,500 vectors, 13% at 75,000;
# BENCHMARKS.md "Training-set size at 384-d"); qinco-train says so.
LEARNED_LITTLE = 0.01


def gain_over_start(history):
    """(RQ start's validation MSE, best validation MSE, relative gain) from train()'s epoch records,
    or None when the history does not begin with the RQ start."""
    if not history or history[0].get("epoch") != 0:
        return None
    start = history[0]["val_mse"]
    best = min(r["val_mse"] for r in history)
    return start, best, (start - best) / start if start > 0 else 0.0


class TrainResult(NamedTuple):
    """What train(..., return_history=True) returns: the trained model and its epoch records."""

    model: QincoModel
    history: list


def train(x, preset=DEFAULT_PRESET, steps=None, K=256, *,
          max_minutes=None, epochs=None, patience=6, val=0.05, seed=0, checkpoint=None,
          batch_size=1024, samples_per_epoch=32768,
          lr=None, weight_decay=None, train_A=None, clip_value=None, clip_norm=None, last_step_loss=False,
          L=None, hidden=None, embed=None, A=None, B=None, share_steps=None,
          noise=0.0, dropout=0.0, start_beam=1,
          device="auto", threads=None, quiet=False, on_epoch=None, return_history=False,
          M=None, bytes=None):
    """Train a model of `preset` with `steps` codes of K values per vector on vectors x (n, d) and
    return it (on the CPU). The same data, options and seed give the same model.

    Rate: `steps` codes per vector (the model's M), each one of K codewords (a power of two; a code
    takes 1 byte for K <= 256, else 2). Every prefix of the code is trained to be decodable.
    `M=` and `bytes=` (bytes per vector) are deprecated aliases of `steps`, kept for one release:
    they warn (DeprecationWarning) and are converted once.

    Stopping: after `epochs` epochs (DEFAULT_EPOCHS when neither `epochs` nor `max_minutes` is
    given), after `max_minutes` of wall-clock time, or when validation MSE has not improved for
    `patience` epochs in the second half of the schedule (EARLY_STOP_FROM), whichever comes first;
    the learning-rate schedule spans the epochs when they are given, else the time the budget
    leaves after the RQ start.
    The budget counts the whole call (RQ start included) and is checked between batches (see the
    module docstring); a budget spent by the RQ start returns the RQ model. The weights with the best
    validation MSE are returned. `val` is the held-out validation set: an array, a number of
    vectors, or a fraction < 1 of x (at most 10,000 vectors). `seed` seeds every random choice.
    `checkpoint` is a path: written after every epoch, and resumed from if it exists (same data,
    options and seed; the result is that of an uninterrupted run when bounded by `epochs`).
    An epoch is `samples_per_epoch` vectors drawn at random, in batches of `batch_size`.

    Recipe (None keeps the preset's value): `lr` (peak learning rate of AdamW: warm-up, then cosine
    decay), `weight_decay` (on network matrices only), `train_A` (candidates pre-selected when
    encoding training batches; 0 = all K), `clip_value` / `clip_norm` (gradient clipping by value /
    by norm; 0 = off). `last_step_loss` trains on the full-rate error only, not every prefix's.

    Model shape (None keeps the preset's value; recorded in the model file): `L` residual blocks
    per step, `hidden` their width, `embed` the width of QINCo2's projections (0 = the data
    dimension), `A` / `B` the encoder's default pre-selection and beam, `share_steps` one step
    network for all steps.

    Regularisation against fitting a small training set, training-time only (the model file does
    not change): `noise` adds Gaussian noise of that standard deviation (in units of the data's
    RMS per coordinate) to every training batch (codes and loss then refer to the noisy vectors);
    `dropout` drops that share of the step networks' hidden units.

    Start: `start_beam` > 1 trains the RQ start for a beam search of that width
    (rq_init.beam_residual_kmeans, faiss ResidualQuantizer's way) instead of greedily.

    Runtime: `device` ('auto', 'cpu' or 'cuda'), `threads` (torch CPU threads during this call),
    `quiet` (no progress bar), `on_epoch(record)` called after each epoch (and its checkpoint)
    with that epoch's record. Runs with torch's deterministic algorithms.

    Data-parallel: in a process torchrun started with others (WORLD_SIZE > 1), every rank calls
    train() with the same data and options (checked) and they train one model together: rank 0's
    RQ start is broadcast, each rank encodes and back-propagates its share of every batch (the
    batch, epoch and schedule stay those of one process) with gradients averaged by
    DistributedDataParallel, metrics and codeword resets are agreed, and rank 0's clock takes
    the budget decisions. Only rank 0 writes the checkpoint (every rank reads it on resume) and
    shows progress; `on_epoch` is called on every rank, and every rank returns the same model.
    See distributed.py and docs/scale-out.md.

    Returns the model, or with `return_history=True` a TrainResult (model, history): the history
    is the list of epoch records, `{"epoch": 0, "val_mse": ...}` for the RQ start, then per epoch
    `epoch`, `train_mse`, `val_mse` (MSE summed over dimensions, mean over vectors), `reset` (dead
    codewords re-drawn) and `lr`, and `batches` for an epoch the budget cut short; a resumed run's
    history includes the epochs before the resume.
    """
    started = time.monotonic()  # the budget counts the whole call
    x = as_float_matrix(x, name="training vectors", allow_empty=False)
    M = _resolve_steps(steps, M, bytes, K)
    _check("epochs", epochs, epochs is None or (_is_int(epochs) and epochs >= 1), "an integer >= 1")
    _check("max_minutes", max_minutes, max_minutes is None or (_is_number(max_minutes) and max_minutes > 0),
           "a number > 0")
    for name, value in (("patience", patience), ("batch_size", batch_size),
                        ("samples_per_epoch", samples_per_epoch)):
        _check(name, value, _is_int(value) and value >= 1, "an integer >= 1")
    _check("threads", threads, threads is None or (_is_int(threads) and threads >= 1), "an integer >= 1")
    _check("dropout", dropout, _is_number(dropout) and 0.0 <= dropout < 1.0, "in [0, 1)")
    _check("noise", noise, _is_number(noise) and noise >= 0, ">= 0")
    _check("start_beam", start_beam, _is_int(start_beam) and start_beam >= 1, "an integer >= 1")
    if epochs is None and max_minutes is None:
        epochs = DEFAULT_EPOCHS
    p = _recipe(preset, x.shape[1], lr=lr, weight_decay=weight_decay, train_A=train_A, clip_value=clip_value,
                clip_norm=clip_norm)
    shape = _shape(L=L, hidden=hidden, embed=embed, A=A, B=B, share_steps=share_steps)
    dev = resolve_device(device)
    with _torch_settings(threads), distributed.session(dev) as group:
        model, history = _fit(x, p, M, K, shape, epochs=epochs, patience=patience,
                              val=val, seed=seed, checkpoint=checkpoint, batch_size=batch_size,
                              samples_per_epoch=samples_per_epoch, last_step_loss=last_step_loss, noise=noise,
                              dropout=dropout, start_beam=start_beam, dev=group.device,
                              quiet=quiet or not group.main, on_epoch=on_epoch, group=group,
                              clock=_Clock(max_minutes * 60.0 if max_minutes else None, started))
    return TrainResult(model, history) if return_history else model


def _fit(x, p, M, K, shape, *, epochs, patience, val, seed, checkpoint, batch_size,
         samples_per_epoch, last_step_loss, noise, dropout, start_beam, dev, quiet, on_epoch, group,
         clock):
    """The training run of train(), its options checked: p is the preset with the recipe applied,
    shape the model-shape overrides, group the distributed.Group of the ranks (each draws its
    share of every batch; see docs/scale-out.md), clock the _Clock of the budget.
    Returns (model, history)."""
    preset, train_A, base_lr = p.name, p.train_A, p.lr
    xtrain, xval = _split_validation(x, val, seed)

    model = QincoModel.from_preset(preset, x.shape[1], M, K, **shape)
    job = (data_fingerprint(xtrain, seed), xval.shape, p, shape, epochs, patience, batch_size,
           samples_per_epoch, last_step_loss, noise, dropout, checkpoint is None, clock.budget)
    if start_beam > 1:  # (so that the fingerprint of a greedy start stays what it was)
        job += (("start_beam", start_beam),)
    group.check_same(_digest(repr(job)), "the training data or options")
    ckpt = Checkpoint(checkpoint, model.config, xtrain, seed) if checkpoint else None
    state = ckpt.load() if ckpt else None
    group.check_same(state["run"]["epoch"] if state else -1,
                     f"the epoch checkpoint {checkpoint} resumes from")  # -1: none
    # the longest validation seen (estimated before the first): kept back for the closing one
    val_seconds = _validation_seconds(model, xval, train_A) if clock.budget else 0.0
    if state is None and group.main:  # the other ranks receive rank 0's start (broadcast_ below)
        with bar(total=M * LLOYD_ITERS, desc=f"RQ start M={M}", unit="it", quiet=quiet) as rq_bar:
            stop = (lambda reserve: clock.out(reserve + val_seconds)) if clock.budget else None
            init_from_rq(model, xtrain, seed=seed, stop=stop, on_iteration=lambda: rq_bar.update(1),
                         beam=start_beam)
    model.to(dev)
    opt = torch.optim.AdamW(_param_groups(model, p.weight_decay), lr=base_lr)
    # elapsed: seconds counted against the budget so far; start_seconds: those the RQ start and
    # first validation took, which the time-based learning-rate schedule does not span
    run = {"epoch": 0, "step": 0, "elapsed": 0.0, "start_seconds": 0.0, "best_val": None,
           "bad_epochs": 0, "history": []}
    best_state = None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        best_state = state["best"]
        run.update(state["run"])
        clock.before = run["elapsed"]
    group.broadcast_(model)
    if group.world > 1:
        clock.agree = group.agree
    loss_of = group.wrap(_PrefixLoss(model, last_step_loss))

    xt = torch.from_numpy(xtrain).to(dev)
    xv = model.normalize(torch.from_numpy(xval).to(dev))
    if run["best_val"] is None:
        t0 = time.monotonic()
        run["best_val"] = _group_validation_mse(model, xv, train_A, group)
        val_seconds = max(val_seconds, time.monotonic() - t0)
        run["history"].append({"epoch": 0, "val_mse": run["best_val"]})
        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        run["start_seconds"] = run["elapsed"] = clock.elapsed()
    steps_per_epoch = max(1, samples_per_epoch // batch_size)
    total_steps = epochs * steps_per_epoch if epochs else None

    def progress():
        """Fraction of the schedule done: of the epochs when they are given (a budget then only
        stops the run, so a run it does not stop is reproducible), else of the time the budget
        left after the RQ start, measured now (an epoch can be longer than the budget)."""
        if total_steps:
            return run["step"] / total_steps
        left = clock.budget - run["start_seconds"]
        return (clock.elapsed() - run["start_seconds"]) / left if left > 0 else 1.0

    pbar = bar(total=epochs, desc=f"train {preset} M={M}", unit="epoch", quiet=quiet,
               initial=run["epoch"])
    pbar.set_postfix(val_mse=f"{run['best_val']:.4g}")
    drop_gen = torch.Generator(device=dev)
    batch_seconds = 0.0  # the last batch's duration: the next one is not started without it left
    with _dropout(model, dropout, drop_gen) as masks_drawn:
        while ((total_steps is None or run["step"] < total_steps) and run["bad_epochs"] < patience
               and not clock.out(val_seconds + batch_seconds)):
            epoch = run["epoch"]
            gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            # per epoch (resumable), and per rank
            drop_gen.manual_seed(seed * 1_000_003 + epoch + DROPOUT_STREAM + group.rank * RANK_STREAM)
            order = torch.randperm(len(xt), generator=gen)
            if len(order) < steps_per_epoch * batch_size:
                order = order.repeat(math.ceil(steps_per_epoch * batch_size / len(order)))
            usage = torch.zeros(model.M, model.K, dtype=torch.int64, device=dev)
            residuals, train_mse, batches = None, 0.0, 0
            model.train()
            for i in range(steps_per_epoch):
                if clock.out(val_seconds + batch_seconds):
                    break
                t_batch = time.monotonic()
                batch = order[i * batch_size:(i + 1) * batch_size]  # of all ranks together
                xb = model.normalize(xt[group.rows(batch)])  # this rank's share
                if noise:  # drawn for the whole batch, so the generator stays the same on every rank
                    xb = xb + noise * group.rows(torch.randn((len(batch), xt.shape[1]), generator=gen)).to(xb)
                codes = codec.encode_normalized(model, xb, train_A, 1)
                usage += torch.nn.functional.one_hot(codes, model.K).sum(0)
                for g in opt.param_groups:
                    g["lr"] = base_lr * lr_factor(progress())
                loss, mse, recon = loss_of(xb, codes)
                if group.world > 1:  # the mean over the whole batch, as in one process, when
                    share = len(xb) / len(batch)  # ranks hold unequal shares (DDP averages)
                    loss, mse = loss * (share * group.world), mse * share
                optimizer_step(model, opt, loss, p)
                run["step"] += 1
                if i == 0 and dropout and not masks_drawn[0] and any(s.blocks for s in model.steps):
                    raise RuntimeError("dropout drew no mask: QincoStep.forward no longer calls the "
                                       "residual blocks' ReLU modules (see training._dropout)")
                train_mse += mse.item()
                if i == steps_per_epoch - 1:  # residual targets of each step, for dead-codeword reset
                    residuals = [xb] + [xb - r.detach() for r in recon[:-1]]
                batches += 1
                batch_seconds = time.monotonic() - t_batch
            if batches == 0:  # the budget ran out before this epoch's first batch
                break
            model.eval()
            # every rank resets the same codewords to the same draws: usage and the last batch's
            # residuals of all ranks, and the generator every rank advanced alike
            usage, train_mse = group.sum(usage), group.sum(train_mse)
            if residuals is not None:
                residuals = [group.gather_rows(r, len(batch)) for r in residuals]
            # an epoch cut short has seen too few vectors to call a codeword dead
            n_reset = (reset_dead_codewords(model, usage.cpu(), [r.cpu() for r in residuals], gen)
                       if residuals is not None else 0)
            t0 = time.monotonic()
            val_mse = _group_validation_mse(model, xv, train_A, group)
            val_seconds = max(val_seconds, time.monotonic() - t0)
            run["epoch"] += 1
            run["elapsed"] = clock.elapsed()
            train_mse = train_mse / batches * model.dim * float(model.std) ** 2
            record = {"epoch": run["epoch"], "train_mse": train_mse, "val_mse": val_mse,
                      "reset": n_reset, "lr": opt.param_groups[0]["lr"]}
            if batches < steps_per_epoch:
                record["batches"] = batches
            run["history"].append(record)
            if val_mse < run["best_val"]:
                run["best_val"], run["bad_epochs"] = val_mse, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            elif progress() >= EARLY_STOP_FROM:
                run["bad_epochs"] += 1
            if ckpt and group.main:  # the other ranks hold the same state
                ckpt.save(model, opt, best_state, run)
            if on_epoch:
                on_epoch(run["history"][-1])
            pbar.update(1)
            pbar.set_postfix(train_mse=f"{train_mse:.4g}", val_mse=f"{val_mse:.4g}",
                             best=f"{run['best_val']:.4g}")
    pbar.close()
    run["elapsed"] = clock.elapsed()
    model.load_state_dict(best_state)
    model.to("cpu")
    model.config = model.config.replace(trained={"epochs": run["epoch"], "samples": run["step"] * batch_size,
                               "val_mse": run["best_val"]})
    return model, run["history"]
