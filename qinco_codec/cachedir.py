"""Where qinco-codec keeps its caches (the GloVe ground truth, the model store): one convention,
the XDG base-directory one, for all of them."""
import os
from pathlib import Path


def cache_root():
    """`$XDG_CACHE_HOME/qinco-codec`, else `~/.cache/qinco-codec`. As the XDG specification
    says, a relative XDG_CACHE_HOME is ignored. Each cache may also have its own override
    variable (QINCO_CACHE_DIR, QINCO_MODEL_DIR)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "qinco-codec"
