"""Data-parallel training across processes (torch.distributed), as launched by `torchrun`.

This module is the process-group plumbing of training.py, kept apart so that the recipe reads
the same for one process and for many: `session()` joins the group torchrun describes in the
environment (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT) and leaves it afterwards, and the
`Group` it yields offers the few collectives the recipe needs: a rank's share of a batch, sums
of metrics, rank 0's reading of the clock (so every rank takes the same stop decision), rank 0's
weights for everyone, a check that every rank runs the same job, and the DistributedDataParallel
wrapper. A Group of world size 1 (no torchrun, or torchrun with one process) communicates
nothing and hands its inputs back untouched, so a single-process run computes exactly what it
computed before data-parallel training existed.

Backends: gloo on the CPU; NCCL on CUDA, one GPU per local rank (that path follows the torch
documentation and has not been run here: no GPU). Only rank 0 writes files (checkpoints, the
model) and prints progress; every rank must see the same training file and checkpoint path (a
shared filesystem across nodes).

Failures: when a worker dies, torchrun ends the others (SIGTERM), and a rank blocked in a
collective whose peer has gone gets an error from the backend; either way the surviving ranks
stop with one `RankLostError` line. The process group's timeout (QINCO_DIST_TIMEOUT seconds,
default 1800) bounds the wait of a rank whose peer hangs without dying, and the longest planned
wait: the other ranks wait in a broadcast while rank 0 computes the RQ start (residual k-means on
at most 200,000 vectors).

Importing this module does not import torch (qinco-train reads the launch before it loads torch).
"""
import atexit
import contextlib
import datetime
import inspect
import os

from .errors import InputError, QincoError

TIMEOUT_ENV = "QINCO_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0


class RankLostError(QincoError, RuntimeError):
    """A collective failed: another rank died, was stopped, or cannot be reached."""


def _env_int(name, default, minimum):
    """The integer environment variable `name` (torchrun's), or `default` when it is unset."""
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise InputError(f"environment variable {name} must be an integer, got {text!r}") from None
    if value < minimum:
        raise InputError(f"environment variable {name} must be >= {minimum}, got {value}")
    return value


def launched_world():
    """Number of processes torchrun started for this job (WORLD_SIZE; 1 when not launched by it)."""
    return _env_int("WORLD_SIZE", 1, 1)


def launched_rank():
    """This process's rank in the job (RANK; 0 when not launched by torchrun)."""
    return _env_int("RANK", 0, 0)


def is_main_process():
    """Whether this process is the one that writes files and prints: rank 0, or the only one.
    Readable without a process group (before train() joins one or after it has left)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return launched_rank() == 0


def collective_timeout():
    """The process group's timeout: QINCO_DIST_TIMEOUT seconds, else DEFAULT_TIMEOUT_S."""
    text = os.environ.get(TIMEOUT_ENV)
    if not text:
        return datetime.timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise InputError(f"environment variable {TIMEOUT_ENV} must be a number of seconds > 0, got {text!r}")
    return datetime.timedelta(seconds=seconds)


class Group:
    """The ranks of one training run as the recipe sees them: `rank`, `world`, `device` (where
    this rank computes) and the collectives below. Every rank must call them in the same order.
    With world 1 they communicate nothing and return their input unchanged."""

    def __init__(self, rank=0, world=1, device="cpu"):
        import torch

        self.rank, self.world, self.device = int(rank), int(world), torch.device(device)

    @property
    def main(self):
        """Whether this rank writes files and prints (rank 0)."""
        return self.rank == 0

    # ---- a rank's share of the data
    def rows(self, t):
        """This rank's rows of t (every world-th row from its rank): the ranks' shares are
        disjoint and together are t."""
        return t if self.world == 1 else t[self.rank::self.world]

    def gather_rows(self, part, n):
        """The inverse of rows(): the n rows (n, ...) whose shares the ranks hold, in their order."""
        if self.world == 1:
            return part
        import torch
        import torch.distributed as dist

        width = -(-n // self.world)  # ceil: all_gather needs equal shapes; short shares are padded
        padded = part.new_zeros((width,) + tuple(part.shape[1:]))
        padded[:len(part)] = part
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        out = part.new_empty((n,) + tuple(part.shape[1:]))
        for r, p in enumerate(parts):
            out[r::self.world] = p[:len(range(r, n, self.world))]
        return out

    # ---- metrics and decisions
    def sum(self, value):
        """The sum over ranks of a number (returned as a float) or a tensor (returned as one)."""
        if self.world == 1:
            return value
        import torch
        import torch.distributed as dist

        if isinstance(value, torch.Tensor):
            out = value.to(self.device).clone()
            dist.all_reduce(out)
            return out.to(value.device)
        out = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(out)
        return float(out.item())

    def agree(self, value):
        """Rank 0's value of a number, for every rank: decisions that depend on the clock
        (budget, time-based schedule) are taken once, so that no rank waits in a collective
        the others have left."""
        if self.world == 1:
            return value
        import torch
        import torch.distributed as dist

        out = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.broadcast(out, src=0)
        return float(out.item())

    def check_same(self, value, what):
        """InputError naming `what` unless every rank holds the same integer `value` (a
        fingerprint of its data and options, the epoch its checkpoint resumes from)."""
        if self.world == 1:
            return
        import torch
        import torch.distributed as dist

        mine = torch.tensor([int(value)], dtype=torch.int64, device=self.device)
        values = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(values, mine)
        values = [int(v.item()) for v in values]
        other = next((r for r, v in enumerate(values) if v != values[0]), None)
        if other is not None:
            raise InputError(f"{what} differs between ranks: rank 0 has {values[0]}, rank {other} has "
                             f"{values[other]}")

    # ---- weights
    def broadcast_(self, module):
        """Rank 0's parameters and buffers copied into every rank's `module` (in place)."""
        if self.world == 1:
            return module
        import torch
        import torch.distributed as dist

        seen = set()
        for t in list(module.parameters()) + list(module.buffers()):
            if id(t) in seen:  # a shared network is listed once
                continue
            seen.add(id(t))
            with torch.no_grad():
                dist.broadcast(t.data, src=0)
        return module

    def wrap(self, module):
        """`module` for the gradient computation: itself with world 1, else wrapped in
        DistributedDataParallel, which averages the gradients over the ranks during backward()
        (the ranks' weights were made equal by broadcast_ and stay equal)."""
        if self.world == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        # buffers (the normalisation) do not change while training: no broadcast before each
        # forward (the keyword's name changed in torch 2.13)
        names = inspect.signature(DistributedDataParallel).parameters
        quiet = {"forward_sync_buffers" if "forward_sync_buffers" in names else "broadcast_buffers": False}
        return DistributedDataParallel(module, device_ids=ids, **quiet)


def _is_collective_failure(exc):
    """Whether exc is a failed collective: torch's DistError, or the plain RuntimeError that
    gloo raises (inside DDP's backward too) when a peer's connection closes or times out."""
    import torch.distributed as dist

    text = str(exc)
    return isinstance(exc, dist.DistError) or (isinstance(exc, RuntimeError) and (
        "/gloo/" in text or "NCCL" in text or "Connection closed by peer" in text))


def _describe(exc):
    """The first sentence of a backend error, without its C++ source location."""
    line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    line = line.split("] ", 1)[1] if line.startswith("[") and "] " in line else line
    return line.split(". ", 1)[0].rstrip(".")


_JOINED = set()  # the process group this module joined (the caller's own one is left to the caller)


def _leave():
    """Leave the process group this module joined (at exit, or after a failed collective)."""
    import torch.distributed as dist

    if dist.is_initialized() and dist.group.WORLD in _JOINED:
        _JOINED.clear()
        dist.destroy_process_group()


@contextlib.contextmanager
def session(device):
    """The Group of this process: world 1 unless torchrun started several (WORLD_SIZE > 1), in
    which case this joins the process group (gloo on the CPU, NCCL on CUDA with this rank's GPU,
    LOCAL_RANK) unless it or the caller already did. The group is left when the process exits,
    not after each training run: a group joined again in the same process reuses torchrun's
    rendezvous keys, and a rank that read its peer's stale address failed to connect (seen with
    two train() calls in one script). A failed collective (a lost rank) becomes one
    RankLostError, and the group, unusable after it, is left at once."""
    import torch

    world = launched_world()
    device = torch.device(device)
    if world == 1:
        yield Group(0, 1, device)
        return
    import torch.distributed as dist

    rank = launched_rank()
    if device.type == "cuda":  # NCCL: one GPU per local rank (not run here: no GPU)
        device = torch.device("cuda", _env_int("LOCAL_RANK", 0, 0))
        torch.cuda.set_device(device)
    try:
        if not dist.is_initialized():  # else this module's group of an earlier call, or the caller's
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=collective_timeout())
            _JOINED.add(dist.group.WORLD)
            atexit.register(_leave)
        if dist.get_world_size() != world:
            raise InputError(f"WORLD_SIZE is {world} but the process group has {dist.get_world_size()} ranks")
        yield Group(dist.get_rank(), world, device)
    except RuntimeError as exc:
        if isinstance(exc, QincoError) or not _is_collective_failure(exc):
            raise
        _leave()
        raise RankLostError(f"rank {rank} of {world}: {_describe(exc)}: another rank stopped or cannot be "
                            "reached, so this one stops too (with --resume CKPT, the same command "
                            "continues from the last completed epoch)") from None
