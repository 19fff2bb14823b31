"""Which model encodes or decodes a .qnc file, and the checks that it is the right one.

A file names its model by the SHA-256 of the model file. The model that decodes it is the one
embedded in the file, else the one the caller gives (a path or a QincoModel), else the one with
that id in the model store; whichever it is must hash to the file's id and fit the file's header:
same dim, same K, and the file's M (the stored prefix) at most the model's M.

A model path may name a .qnc file instead of a model file: its embedded model (the bytes as
stored, so the same model id) is the model.

A QincoModel the caller passes is never used (and so never moved to another device) itself:
decoding uses a copy.
"""
import os
from typing import NamedTuple

from .errors import InputError, ModelMismatchError


class ModelFile(NamedTuple):
    """A model file read once: the model, the file's bytes and their SHA-256 (the model id).
    Pass it where a model path is accepted to use it without reading the file again."""

    model: object
    data: bytes
    sha256: str

    @classmethod
    def read(cls, path):
        """Read a model file, or the model embedded in a .qnc file (see read_model_path)."""
        return cls(*read_model_path(path))


def is_qnc_file(path):
    """True when `path` is a regular file that starts with the .qnc magic number."""
    from .formats.layout import MAGIC

    try:
        if not os.path.isfile(path):  # never open a pipe or a device to look
            return False
        fd = os.open(path, os.O_RDONLY)  # a peek at 8 bytes, not a read of the file
        try:
            return os.read(fd, len(MAGIC)) == MAGIC
        finally:
            os.close(fd)
    except OSError:
        return False


def embedded_model_bytes(path):
    """The model embedded in the .qnc file `path`, exactly as stored (checked against the
    file's model id); InputError when the file only names its model."""
    from .formats import QncReader

    with QncReader(path) as reader:
        data = reader.model_bytes()
        if data is None:
            raise InputError(f"{os.fspath(path)} does not embed its model "
                             f"({reader.header.model_sha256.hex()}); give the model file itself")
    return data


def read_model_path(path):
    """(QincoModel, bytes, SHA-256 hex) of a model file or of the model a .qnc file embeds. The
    model has `.sha256` set."""
    from .serialize import model_from_bytes, read_model_file, sha256_hex

    if is_qnc_file(path):
        data = embedded_model_bytes(path)
        model, sha = model_from_bytes(data, source=f"{os.fspath(path)} (embedded model)"), \
            sha256_hex(data)
    else:
        model, data, sha = read_model_file(path)
    model.sha256 = sha
    return model, data, sha


def model_file_size(path):
    """Size in bytes of the model a path names: the file, or the model a .qnc embeds."""
    if is_qnc_file(path):
        from .formats import QncReader
        with QncReader(path) as reader:
            return reader.model_size
    return os.path.getsize(path)


def load_model_arg(model):
    """(QincoModel, its safetensors bytes, SHA-256 hex) for a model path, a ModelFile or a
    QincoModel. A path is read once; a QincoModel is serialised (float32 weights), not moved."""
    from .serialize import model_to_bytes, sha256_hex

    if isinstance(model, ModelFile):
        return tuple(model)
    if isinstance(model, (str, os.PathLike)):
        return tuple(ModelFile.read(model))
    data = model_to_bytes(model)
    return model, data, sha256_hex(data)


def check_model_fits(model, header, where="the model"):
    """Raise ModelMismatchError unless `model` can decode a file with this header: the same dim
    and K, and header.M (the steps stored) at most model.M."""
    problems = []
    if model.dim != header.dim:
        problems.append(f"dim {model.dim} != {header.dim}")
    if model.K != header.K:
        problems.append(f"K {model.K} != {header.K}")
    if model.M < header.M:
        problems.append(f"M {model.M} < {header.M} (the file stores {header.M} steps)")
    if problems:
        raise ModelMismatchError(
            f"{where} (dim={model.dim}, K={model.K}, M={model.M}) cannot decode this file "
            f"(dim={header.dim}, K={header.K}, M={header.M}): {', '.join(problems)}; a model "
            f"decodes a .qnc when dim and K are equal and the file's M is at most the model's")


def own_copy(model):
    """A copy of a QincoModel with its own tensors (on the CPU), so that decoding it on any
    device leaves the caller's model where it is."""
    twin = type(model)(model.config)  # the config is frozen: sharing it is safe
    twin.load_state_dict(model.state_dict())
    return twin


def _given_model(model_arg, want):
    """(model, where) from what the caller gave, after checking its id against `want`."""
    from .serialize import model_to_bytes, sha256_hex

    if isinstance(model_arg, (str, os.PathLike)):
        model, _, got = read_model_path(model_arg)
        where = os.fspath(model_arg)
    elif isinstance(model_arg, ModelFile):
        model, where, got = own_copy(model_arg.model), "the given model file", model_arg.sha256
    else:
        got = getattr(model_arg, "sha256", None) or sha256_hex(model_to_bytes(model_arg))
        model, where = own_copy(model_arg), "the given model"
    if got != want:
        raise ModelMismatchError(f"wrong model: the file was written with model {want}, "
                                 f"{where} is {got}")
    return model, where


def resolve_model(reader, model_arg=None):
    """The QincoModel that decodes the file `reader` (a formats.QncReader) reads: embedded
    (when no model is given), given (`model_arg`: a path, a ModelFile or a QincoModel), or from the model
    store; checked against the file's id and header (see check_model_fits)."""
    from . import model_store
    from .serialize import model_from_bytes, read_model_file

    header = reader.header
    want = header.model_sha256.hex()
    if model_arg is None and header.has_embedded_model:
        model, where = model_from_bytes(reader.model_bytes(), source="embedded model"), \
            "the embedded model"
    elif model_arg is not None:
        model, where = _given_model(model_arg, want)
    else:
        path = model_store.find(want)
        if path is None:
            raise InputError(f"the file does not embed its model {want}; pass it with --model "
                             f"PATH (model=...) or put it in the model store "
                             f"({model_store.store_dir()})")
        model, _, got = read_model_file(path)
        if got != want:
            raise ModelMismatchError(f"model store file {path} does not hash to {want}")
        where = f"model store file {path}"
    check_model_fits(model, header, where)
    return model
