"""Progress events: what a long run is doing, for whoever listens.

The stages call :func:`emit` at the points a person watching would care about
(an extraction batch done, a search candidate scored, a head or fine-tuning
epoch finished); nothing listens by default and ``emit`` then costs one
attribute read. A front end (``edgetl studio``'s worker) listens with
:func:`listening` and forwards each event, a plain JSON-able dict with an
``event`` key, to its client.

Listeners are process-wide (not per thread): extraction emits from the main
thread while its decoding threads run, and a process trains one run at a
time. A listener that raises is dropped from that event (logged once), never
the run."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Callable, Iterator

log = logging.getLogger(__name__)

Listener = Callable[[dict], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def emit(event: str, **fields) -> None:
    """Send ``{"event": event, **fields}`` to every listener (none: a no-op)."""
    if not _listeners:
        return
    record = {"event": event, **fields}
    for listener in list(_listeners):
        try:
            listener(record)
        except Exception:  # a broken front end must not end the run
            log.debug("progress listener failed on %s", event, exc_info=True)


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Call ``listener(record)`` for every event emitted inside the block."""
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)


class Rate:
    """Items done out of a total, with the rate and the time left: the
    ``extract`` event's figures (``rate`` in items/s, ``eta_s``), emitted at
    most every ``every_s`` seconds and always at the end."""

    def __init__(self, event: str, total: int, every_s: float = 0.5, **fields):
        self.event, self.total, self.every_s, self.fields = event, int(total), every_s, fields
        self.done = 0
        self._start = self._last = time.monotonic()
        emit(event, done=0, total=self.total, rate=None, eta_s=None, **fields)

    def add(self, n: int, total: int | None = None) -> None:
        if total is not None:
            self.total = int(total)
        self.done += int(n)
        now = time.monotonic()
        if _listeners and (now - self._last >= self.every_s or self.done >= self.total):
            self._last = now
            elapsed = max(now - self._start, 1e-9)
            rate = self.done / elapsed
            eta = (self.total - self.done) / rate if rate > 0 else None
            emit(self.event, done=self.done, total=self.total, rate=round(rate, 2),
                 eta_s=None if eta is None else round(max(eta, 0.0), 1), **self.fields)
