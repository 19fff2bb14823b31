"""Progress on stderr: bars with rate and ETA, silenced by quiet=True; one-line notes."""
import sys

from tqdm.auto import tqdm


def bar(total=None, desc="", unit="it", quiet=False, **kwargs):
    """A tqdm bar writing to stderr; a disabled one when quiet."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=quiet, dynamic_ncols=True,
                unit_scale=unit not in ("it", "epoch"), leave=True, **kwargs)


def counted(batches, total, desc, quiet=False):
    """Pass batches of vectors through, advancing a bar of `total` vectors by their row counts."""
    with bar(total=total, desc=desc, unit="vec", quiet=quiet) as pbar:
        for batch in batches:
            yield batch
            pbar.update(len(batch))


def duration(seconds):
    """A duration for people: '0.4 s', '12 s', '3 min 05 s', '2 h 10 min'."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def note(message, quiet=False):
    """A one-line message on stderr (warnings, summaries) unless quiet."""
    if not quiet:
        print(message, file=sys.stderr, flush=True)
