"""Optional dependencies, imported on first use: a missing one is a one-line InputError that says
how to install it, not an ImportError traceback. faiss (the `[bench]` extra) is needed only by
`qinco-bench` and `qinco_codec.to_faiss`."""
from .errors import InputError

FAISS_INSTALL = "pip install qinco-codec[bench] (faiss-cpu >= 1.9)"


def require_faiss(feature=None):
    """The faiss module, or an InputError saying how to install it. With `feature` (an attribute
    such as 'IndexQINCo'): also an InputError when this faiss lacks it."""
    try:
        import faiss
    except ImportError as exc:
        raise InputError(f"faiss is not installed: {FAISS_INSTALL} ({exc})") from None
    if feature is not None and not hasattr(faiss, feature):
        raise InputError(f"faiss {getattr(faiss, '__version__', '?')} has no {feature}: faiss >= "
                         "1.9 is needed (pip install -U qinco-codec[bench])")
    return faiss
