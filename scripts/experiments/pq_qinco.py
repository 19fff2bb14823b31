"""PQ-QINCo: independent QINCo models on contiguous sub-vectors, codes concatenated.

The paper's product variant, kept beside ablations.py for its "pq2" row: an experiment, not part
of the package and not a .qnc model type. nsub models, each seeing dim/nsub coordinates and
spending bytes/nsub bytes per vector. Decoding concatenates the sub-reconstructions. No OPQ
rotation is applied (the paper optionally rotates first).
"""
import numpy as np

from qinco_codec.errors import InputError
from qinco_codec.training import train


class PQQinco:
    """nsub trained QincoModels over contiguous slices of the dimensions."""

    def __init__(self, models, bounds):
        self.models, self.bounds = models, bounds

    @classmethod
    def train(cls, x, nsub, bytes, **train_kwargs):
        """Train one model per sub-vector; train_kwargs go to qinco_codec.train (a max_minutes
        budget is split evenly between the sub-models)."""
        dim = x.shape[1]
        if nsub < 1 or dim % nsub or bytes % nsub:
            raise InputError(f"nsub={nsub} must divide both dim={dim} and bytes={bytes}")
        if train_kwargs.get("max_minutes"):
            train_kwargs = dict(train_kwargs, max_minutes=train_kwargs["max_minutes"] / nsub)
        step = dim // nsub
        bounds = [(i * step, (i + 1) * step) for i in range(nsub)]
        models = [train(np.ascontiguousarray(x[:, a:b]), steps=bytes // nsub, **train_kwargs)
                  for a, b in bounds]
        return cls(models, bounds)

    def encode(self, x, **kwargs):
        return np.concatenate([m.encode(np.ascontiguousarray(x[:, a:b]), **kwargs)
                               for m, (a, b) in zip(self.models, self.bounds)], axis=1)

    def decode(self, codes, **kwargs):
        widths = [m.M for m in self.models]
        starts = np.cumsum([0] + widths)
        return np.concatenate([m.decode(codes[:, s:s + w], **kwargs)
                               for m, s, w in zip(self.models, starts, widths)], axis=1)

    def num_parameters(self, decoding_only=False):
        return sum(m.num_parameters(decoding_only) for m in self.models)
