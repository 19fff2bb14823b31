"""Training: fit a QincoModel to vectors, starting from residual k-means.

Recipe (QINCo2 paper, adapted to a CPU budget): codes of each batch come from the model's own
encoder under no_grad (pre-selection of `train_A` candidates for QINCo2, greedy); the loss sums
the squared error of every prefix m = 1..M (so every prefix rate is a good code), plus, for QINCo2,
an RQ-style loss that keeps the pre-selection codebooks tracking the codes actually chosen.
AdamW with linear warm-up and cosine decay, gradient clipping, reset of codewords left unused
for an epoch, a held-out validation split with early stopping, and a wall-clock budget. The model
with the best validation MSE is returned.

An "epoch" is a fixed number of samples (`samples_per_epoch`), independent of the training-set
size, drawn from a permutation seeded by (seed, epoch). A checkpoint is written after every epoch;
resuming from it repeats exactly what an uninterrupted run would have done (when the run is
bounded by `epochs` rather than by wall-clock time).
"""
import math
import time

import numpy as np
import torch

from . import codec
from .checkpoint import Checkpoint
from .devices import resolve_device
from .errors import InputError
from .model import QincoModel
from .presets import DEFAULT_PRESET, get_preset
from .progress import bar
from .rq_init import init_from_rq
from .validation import as_float_matrix

DEFAULT_EPOCHS = 20
WARMUP_FRACTION = 0.05
# Early stopping only counts epochs without improvement from this fraction of the schedule on:
# before it the learning rate is still high, and the annealing that follows is where a stalled
# validation loss usually improves again (a 20-minute GloVe run stopped at 12 minutes otherwise).
EARLY_STOP_FROM = 0.5
MIN_LR_FACTOR = 0.02


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


def train(*args, **kwargs):
    """Train a model; see `_train` for the arguments. Runs with torch's deterministic algorithms so
    that the same data, settings and seed give the same model, and a resumed run the same result."""
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _train(*args, **kwargs)
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def _train(x, preset=DEFAULT_PRESET, M=None, K=256, *, bytes=None, max_minutes=None, epochs=None, val=0.05,
          seed=0, device="auto", checkpoint=None, batch_size=1024, samples_per_epoch=32768, lr=None,
          weight_decay=None, patience=6, train_A=None, last_step_loss=False, noise=0.0, dropout=0.0,
          threads=None, quiet=False, on_epoch=None, **overrides):
    """Train a model of `preset` on vectors x (n, d) and return it (on the CPU).

    M (codes per vector) may be given as `bytes` instead. Training stops after `epochs` epochs,
    after `max_minutes` of wall-clock time, or when validation MSE has not improved for `patience`
    epochs in the second half of the schedule (EARLY_STOP_FROM), whichever comes first; the
    learning-rate schedule spans the epochs or the time budget.
    `checkpoint` is a path: written after every epoch, and resumed from if it exists.
    `on_epoch(record)` is called after each epoch (and its checkpoint) with that epoch's record.
    Regularisation against fitting a small training set: `noise` adds Gaussian noise of that
    standard deviation (in units of the data's RMS per coordinate) to every training batch (codes
    and loss then refer to the noisy vectors); `dropout` drops that share of the step networks'
    hidden units during training. Neither changes the model file.
    """
    x = as_float_matrix(x, name="training vectors", allow_empty=False)
    if M is None:
        if bytes is None:
            raise InputError("give the number of steps M or the rate in bytes per vector")
        per_code = 1 if K <= 256 else 2
        if bytes % per_code:
            raise InputError(f"bytes={bytes} is not a whole number of {per_code}-byte codes (K={K})")
        M = bytes // per_code
    if epochs is None and max_minutes is None:
        epochs = DEFAULT_EPOCHS
    if threads:
        torch.set_num_threads(int(threads))
    p = get_preset(preset)
    train_A = p.train_A if train_A is None else train_A
    base_lr = p.lr if lr is None else lr
    weight_decay = p.weight_decay if weight_decay is None else weight_decay
    dev = resolve_device(device)
    xtrain, xval = _split_validation(x, val, seed)

    if not 0.0 <= dropout < 1.0:
        raise InputError(f"dropout must lie in [0, 1), got {dropout}")
    if noise < 0:
        raise InputError(f"noise must be >= 0, got {noise}")
    model = QincoModel.from_preset(preset, x.shape[1], M, K, **overrides)
    for step in model.steps:
        step.dropout = float(dropout)
    ckpt = Checkpoint(checkpoint, model.config, xtrain, seed) if checkpoint else None
    state = ckpt.load() if ckpt else None
    if state is None:
        init_from_rq(model, xtrain, seed=seed)
    model.to(dev)
    opt = torch.optim.AdamW(_param_groups(model, weight_decay), lr=base_lr)
    run = {"epoch": 0, "step": 0, "elapsed": 0.0, "best_val": None, "bad_epochs": 0, "history": []}
    best_state = None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        best_state = state["best"]
        run.update(state["run"])

    xt = torch.from_numpy(xtrain).to(dev)
    xv = model.normalize(torch.from_numpy(xval).to(dev))
    if run["best_val"] is None:
        run["best_val"] = validation_mse(model, xv, train_A)
        run["history"].append({"epoch": 0, "val_mse": run["best_val"]})
        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    steps_per_epoch = max(1, samples_per_epoch // batch_size)
    total_steps = epochs * steps_per_epoch if epochs else None
    budget = max_minutes * 60.0 if max_minutes else None

    def progress():
        fr = [run["step"] / total_steps] if total_steps else []
        fr += [run["elapsed"] / budget] if budget else []
        return max(fr)

    pbar = bar(total=epochs, desc=f"train {preset} M={M}", unit="epoch", quiet=quiet,
               initial=run["epoch"])
    pbar.set_postfix(val_mse=f"{run['best_val']:.4g}")
    while progress() < 1.0 and run["bad_epochs"] < patience:
        epoch = run["epoch"]
        t0 = time.monotonic()
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        if dropout:  # dropout draws from torch's global generator: seed it per epoch for resumability
            torch.manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(len(xt), generator=gen)
        if len(order) < steps_per_epoch * batch_size:
            order = order.repeat(math.ceil(steps_per_epoch * batch_size / len(order)))
        usage = torch.zeros(model.M, model.K, dtype=torch.int64, device=dev)
        residuals, train_mse = None, 0.0
        model.train()
        for i in range(steps_per_epoch):
            xb = model.normalize(xt[order[i * batch_size:(i + 1) * batch_size]])
            if noise:
                xb = xb + noise * torch.randn(xb.shape, generator=gen).to(xb)
            codes = codec.encode_normalized(model, xb, train_A, 1)
            usage += torch.nn.functional.one_hot(codes, model.K).sum(0)
            for g in opt.param_groups:
                g["lr"] = base_lr * lr_factor(progress())
            loss, mse, recon = prefix_losses(model, xb, codes, last_only=last_step_loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if p.clip_value:
                torch.nn.utils.clip_grad_value_(model.parameters(), p.clip_value)
            if p.clip_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), p.clip_norm)
            opt.step()
            run["step"] += 1
            train_mse += mse.item()
            if i == steps_per_epoch - 1:  # residual targets of each step, for dead-codeword reset
                residuals = [xb] + [xb - r.detach() for r in recon[:-1]]
        model.eval()
        n_reset = reset_dead_codewords(model, usage.cpu(), [r.cpu() for r in residuals], gen)
        val_mse = validation_mse(model, xv, train_A)
        run["epoch"] += 1
        run["elapsed"] += time.monotonic() - t0
        train_mse = train_mse / steps_per_epoch * model.dim * float(model.std) ** 2
        run["history"].append({"epoch": run["epoch"], "train_mse": train_mse, "val_mse": val_mse,
                               "reset": n_reset, "lr": opt.param_groups[0]["lr"]})
        if val_mse < run["best_val"]:
            run["best_val"], run["bad_epochs"] = val_mse, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif progress() >= EARLY_STOP_FROM:
            run["bad_epochs"] += 1
        if ckpt:
            ckpt.save(model, opt, best_state, run)
        if on_epoch:
            on_epoch(run["history"][-1])
        pbar.update(1)
        pbar.set_postfix(train_mse=f"{train_mse:.4g}", val_mse=f"{val_mse:.4g}", best=f"{run['best_val']:.4g}")
    pbar.close()
    for step in model.steps:
        step.dropout = 0.0
    model.load_state_dict(best_state)
    model.to("cpu")
    model.config["trained"] = {"epochs": run["epoch"], "samples": run["step"] * batch_size,
                               "val_mse": run["best_val"]}
    model.history = run["history"]
    return model
