"""Device and thread selection shared by encoding, decoding and training."""
import torch

from .errors import InputError
from .threads import available_cores  # noqa: F401 (defined there, torch-free)


def resolve_device(device="auto"):
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is a clear error."""
    if isinstance(device, torch.device):
        device = str(device)
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested but no CUDA device is available (use 'cpu' or 'auto')")
    if not (device == "cpu" or device.startswith("cuda")):
        raise InputError(f"unknown device {device!r}; expected 'auto', 'cpu' or 'cuda'")
    return torch.device(device)


def use_threads(n=None):
    """Set torch's CPU threads to n, or to the cores this process may run on; returns the count.
    (torch's own default counts the machine's cores, not the ones taskset or a cgroup allow.)"""
    n = int(n) if n else available_cores()
    if n < 1:
        raise InputError(f"threads must be at least 1, got {n}")
    torch.set_num_threads(n)
    return n
