"""The byte layer's exception types. They are the base of the package's error hierarchy
(`qinco_codec.errors` re-exports them and adds the model errors), defined here so that
`qinco_codec.formats` imports nothing above itself."""


class QincoError(Exception):
    """Base class for every error qinco-codec raises on purpose."""


class InputError(QincoError, ValueError):
    """Bad user input: wrong shape, dtype, non-finite values, unknown file type, missing file."""


class QncFormatError(QincoError, ValueError):
    """A .qnc container that is malformed, truncated, corrupted or of an unsupported version."""
