"""A stand-in for a pipe in tests: a non-seekable binary stream that returns short reads."""
import io


class Pipe(io.RawIOBase):
    """A non-seekable stream with short reads (at most 97 bytes each)."""

    def __init__(self, data):
        self._data = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, buffer):
        piece = self._data.read(min(len(buffer), 97))
        buffer[:len(piece)] = piece
        return len(piece)
