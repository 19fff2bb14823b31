"""Progress bars on stderr (rate and ETA), silenced by quiet=True or when nothing is to be shown."""
import sys

from tqdm.auto import tqdm


def bar(total=None, desc="", unit="it", quiet=False, **kwargs):
    """A tqdm bar writing to stderr; a disabled one when quiet."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=quiet, dynamic_ncols=True,
                unit_scale=unit not in ("it", "epoch"), leave=True, **kwargs)


def note(message, quiet=False):
    """A one-line message on stderr (warnings, summaries) unless quiet."""
    if not quiet:
        print(message, file=sys.stderr, flush=True)
