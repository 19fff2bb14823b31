"""Run an iterator one step ahead in a background thread, so that reading and decompressing the
next chunk of a file overlaps with decoding the current one.

Memory stays bounded: at most `depth` items wait in the queue. Exceptions raised by the source
reach the consumer at the point where the item would have come; closing the consumer's generator
stops the thread.
"""
import queue
import threading
import time

_DONE = object()


class TimedIterator:
    """Iterate over `source` in turn (no thread), adding up in `busy_seconds` the time spent
    inside its next(). `close()` does nothing; it is there so both readers close alike."""

    def __init__(self, source):
        self._it = iter(source)
        self.busy_seconds = 0.0

    def __iter__(self):
        return self

    def __next__(self):
        t0 = time.perf_counter()
        try:
            return next(self._it)
        finally:
            self.busy_seconds += time.perf_counter() - t0

    def close(self):
        pass


class Prefetcher:
    """Iterate over `source` in a daemon thread, `depth` items ahead. `busy_seconds` is the
    time the thread spent inside the source's next() (reading, checking, decompressing)."""

    def __init__(self, source, depth=2):
        self._queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._timed = TimedIterator(source)
        self._thread = threading.Thread(target=self._run, args=(self._timed,), daemon=True,
                                        name="qinco-prefetch")
        self._thread.start()

    @property
    def busy_seconds(self):
        return self._timed.busy_seconds

    def _put(self, item):
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, it):
        try:
            while not self._stop.is_set():
                item = next(it, _DONE)
                if item is _DONE:
                    break
                if not self._put((True, item)):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put((False, exc))
            return
        self._put((True, _DONE))

    def __iter__(self):
        try:
            while True:
                ok, item = self._queue.get()
                if not ok:
                    raise item
                if item is _DONE:
                    return
                yield item
        finally:
            self.close()

    def close(self):
        self._stop.set()
        self._thread.join()
