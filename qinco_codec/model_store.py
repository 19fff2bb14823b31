"""The model store: a directory of model files named by their SHA-256, so that containers
written with --no-embed-model can find their model by the id in their header."""
import os

from .cachedir import cache_root
from .formats.atomic import write_bytes_atomic


def store_dir():
    """$QINCO_MODEL_DIR, else `cachedir.cache_root()`/models ($XDG_CACHE_HOME/qinco-codec/models,
    else ~/.cache/qinco-codec/models)."""
    return os.environ.get("QINCO_MODEL_DIR") or str(cache_root() / "models")


def store_path(sha256_hex):
    return os.path.join(store_dir(), f"{sha256_hex}.safetensors")


def find(sha256_hex):
    """Path of the stored model with this id, or None."""
    path = store_path(sha256_hex)
    return path if os.path.isfile(path) else None


def put(model_bytes, sha256_hex):
    """Store model bytes under their id (idempotent); returns the path."""
    path = store_path(sha256_hex)
    if not os.path.isfile(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_bytes_atomic(path, model_bytes)
    return path
