"""Exact-length reads from a binary file object, seekable or a pipe, with a running count of the
bytes read (so callers can measure how much of a file a partial decode touched).

On a seekable file every read is checked against the file size before anything is allocated.
On a pipe the size is unknown, so reads are done in pieces of at most 1 MiB: memory grows only
with bytes that actually arrive, whatever length the file declares.
"""
from .errors import QncFormatError

PIPE_PIECE = 1 << 20


def _is_seekable(f):
    try:
        return bool(f.seekable())
    except (AttributeError, OSError, ValueError):
        return False


class ByteSource:
    """A cursor over a binary file object; positions are relative to where the file object was
    when the source was created."""

    def __init__(self, f):
        self._f = f
        self.seekable = _is_seekable(f)
        self.position = 0
        self.bytes_read = 0
        self.size = None
        if self.seekable:
            self._base = f.tell()
            self.size = f.seek(0, 2) - self._base
            f.seek(self._base)

    def seek(self, position):
        """Move to `position` (seekable sources only)."""
        if position != self.position:
            self._f.seek(self._base + position)
            self.position = position

    def read(self, count, what):
        """Exactly `count` bytes, or QncFormatError naming `what` if the file ends first."""
        start = self.position
        if self.size is not None and start + count > self.size:
            raise QncFormatError(f"truncated file: {what} needs bytes [{start}, {start + count}) "
                                 f"but the file has only {self.size} bytes")
        data = self.read_at_most(count)
        if len(data) < count:
            raise QncFormatError(f"truncated file: {what} needs {count} bytes at offset {start}, "
                                 f"only {len(data)} remain")
        return data

    def read_at_most(self, count):
        """Up to `count` bytes: fewer only where the file ends."""
        piece_limit = count if self.seekable else PIPE_PIECE
        pieces, remaining = [], count
        while remaining:
            piece = self._f.read(min(remaining, piece_limit))
            if not piece:
                break
            pieces.append(piece)
            remaining -= len(piece)
        data = b"".join(pieces)
        self.position += len(data)
        self.bytes_read += len(data)
        return data

    def skip(self, count, what):
        """Move past `count` bytes; a pipe has to read (and count) them."""
        if self.seekable:
            if self.position + count > self.size:
                raise QncFormatError(f"truncated file: {what} ends at {self.position + count} but "
                                     f"the file has only {self.size} bytes")
            self.seek(self.position + count)
            return
        while count:
            step = min(count, PIPE_PIECE)
            self.read(step, what)
            count -= step

    def at_end(self):
        """True when no byte follows the current position (reads one byte on a pipe)."""
        if self.seekable:
            return self.position == self.size
        extra = self._f.read(1)
        self.bytes_read += len(extra)
        return not extra
