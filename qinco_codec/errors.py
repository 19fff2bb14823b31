"""Exception types: every failure a user can cause maps to one of these, with a message
that names the file or argument, what was expected and what was found."""
from .formats.errors import InputError, QincoError, QncFormatError

__all__ = ["QincoError", "InputError", "QncFormatError", "ModelFormatError", "ModelMismatchError"]


class ModelFormatError(QincoError, ValueError):
    """A model file (safetensors) or checkpoint that is malformed, hostile or inconsistent."""


class ModelMismatchError(QincoError, ValueError):
    """A model whose SHA-256 is not the one a container was written with."""
