"""Exception types: every failure a user can cause maps to one of these, with a message
that names the file or argument, what was expected and what was found."""


class QincoError(Exception):
    """Base class for every error qinco-codec raises on purpose."""


class InputError(QincoError, ValueError):
    """Bad user input: wrong shape, dtype, non-finite values, unknown file type, missing file."""


class ModelFormatError(QincoError, ValueError):
    """A model file (safetensors) or checkpoint that is malformed, hostile or inconsistent."""


class QncFormatError(QincoError, ValueError):
    """A .qnc container that is malformed, truncated, corrupted or of an unsupported version."""


class ModelMismatchError(QincoError, ValueError):
    """A model whose SHA-256 is not the one a container was written with."""
