"""Training checkpoints: everything needed to resume a run exactly, in one safetensors file.

Tensors: the current weights (`model.*`), the best weights so far (`best.*`) and the optimizer
moments (`opt.<param>.<name>`). Metadata (JSON): the model config, the run counters, the optimizer's
hyper-parameters, a fingerprint of the training data, and a SHA-256 over all tensor bytes, so a
truncated or bit-flipped checkpoint, or one from another run, is refused instead of silently reused.
"""
import hashlib
import json
import os

import numpy as np
import torch
from safetensors.torch import load as st_load_bytes

from . import safetensors_io
from .formats.atomic import write_bytes_atomic
from .errors import ModelFormatError

FORMAT_NAME = "qinco-codec-checkpoint"


def data_fingerprint(x, seed):
    """Identifies the training data and seed without hashing all of it."""
    h = hashlib.sha256(f"{x.shape}|{seed}".encode())
    rows = np.unique(np.linspace(0, len(x) - 1, num=min(len(x), 4096)).astype(np.int64))
    h.update(np.ascontiguousarray(x[rows]).tobytes())
    return h.hexdigest()


def _tensor_digest(tensors):
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if tensors[k].numel()
                 else b"")
    return h.hexdigest()


# Config keys that do not identify a run (provenance written by some releases and not others).
INFORMATIONAL_KEYS = ("trained", "version")


class Checkpoint:
    """The checkpoint file of one training run (identified by config, data and seed)."""

    def __init__(self, path, config, xtrain, seed):
        self.path = os.fspath(path)
        config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        self.config = {k: v for k, v in config.items() if k not in INFORMATIONAL_KEYS}
        self.fingerprint = data_fingerprint(xtrain, seed)

    def save(self, model, optimizer, best_state, run):
        tensors = {f"model.{k}": v.detach().cpu().clone() for k, v in model.state_dict().items()}
        tensors.update({f"best.{k}": v.detach().cpu().clone() for k, v in best_state.items()})
        opt = optimizer.state_dict()
        for pid, st in opt["state"].items():
            for name, v in st.items():
                tensors[f"opt.{pid}.{name}"] = torch.as_tensor(v).detach().cpu().clone()
        meta = {"format": FORMAT_NAME, "config": json.dumps(self.config, sort_keys=True),
                "fingerprint": self.fingerprint, "run": json.dumps(run),
                "param_groups": json.dumps(opt["param_groups"]), "digest": _tensor_digest(tensors)}
        write_bytes_atomic(self.path, safetensors_io.encode(tensors, meta))

    def load(self):
        """The saved state, or None when no checkpoint exists yet; refuses corrupt or foreign files."""
        if not os.path.exists(self.path):
            return None
        with open(self.path, "rb") as f:
            data = f.read()
        try:
            tensors = st_load_bytes(data)
            meta = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])["__metadata__"]
            config, run = json.loads(meta["config"]), json.loads(meta["run"])
            groups = json.loads(meta["param_groups"])
        except Exception as exc:
            raise ModelFormatError(f"{self.path}: corrupt checkpoint ({type(exc).__name__}: {exc}); "
                                   "delete it to start over") from None
        if meta.get("format") != FORMAT_NAME or meta.get("digest") != _tensor_digest(tensors):
            raise ModelFormatError(f"{self.path}: corrupt checkpoint (tensor checksum mismatch); "
                                   "delete it to start over")
        config = {k: v for k, v in config.items() if k not in INFORMATIONAL_KEYS} \
            if isinstance(config, dict) else config
        if config != json.loads(json.dumps(self.config, sort_keys=True)):
            raise ModelFormatError(f"{self.path}: checkpoint is for another model configuration "
                                   f"({config}), not {self.config}")
        if meta.get("fingerprint") != self.fingerprint:
            raise ModelFormatError(f"{self.path}: checkpoint was made with other training data or seed")
        state = {"model": {}, "best": {}, "opt": {}}
        for k, v in tensors.items():
            kind, rest = k.split(".", 1)
            state[kind][rest] = v
        opt_state = {}
        for k, v in state["opt"].items():
            pid, name = k.split(".", 1)
            opt_state.setdefault(int(pid), {})[name] = v
        return {"model": state["model"], "best": state["best"], "run": run,
                "optimizer": {"state": opt_state, "param_groups": groups}}
