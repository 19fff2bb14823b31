"""qinco-codec: learned compression of embedding vectors (QINCo / QINCo2) in a prefix-decodable
.qnc container.

Importing the package is cheap and does not import torch: the container reader
(`qinco_codec.open(...).codes()`) works without it. Names that need torch are loaded on first use.

Importing it also sets OMP_WAIT_POLICY=PASSIVE unless the environment chose a policy, before torch
starts its OpenMP thread pool (see `qinco_codec.threads`: spinning threads make encoding many
times slower on a busy machine).
"""
from importlib import import_module

from . import threads as _threads
from ._version import __version__
from .errors import InputError, ModelFormatError, ModelMismatchError, QincoError, QncFormatError

_threads.apply_wait_policy()  # before anything imports torch

# public name -> module that defines it (imported lazily, PEP 562)
_LAZY = {
    "QincoModel": ".model",
    "PRESETS": ".presets",
    "train": ".training",
    "load_model": ".serialize",
    "evaluate": ".evaluation",
    "compress": ".compressor",
    "add_ivf": ".ivf_file",
    "compress_sharded": ".sharded",
    "merge": ".merging",
    "open": ".qncfile",
    "QncFile": ".qncfile",
    "to_faiss": ".faiss_interop",
    "datasets": None,
    "readers": None,
}

__all__ = ["__version__", "QincoError", "InputError", "ModelFormatError", "ModelMismatchError",
           "QncFormatError", *_LAZY]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'qinco_codec' has no attribute {name!r}")
    module_name = _LAZY[name]
    if module_name is None:
        value = import_module(f".{name}", __name__)
    else:
        value = getattr(import_module(module_name, __name__), name)
    globals()[name] = value
    return value
