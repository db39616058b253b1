"""Minibatches built ahead in a background thread, so that reading counts from disk overlaps with training.

:class:`Prefetcher` wraps the iterator of a data loader that runs in the main process (``num_workers=0``). The first
batch is built in the calling thread, so everything the sampler draws from torch's random state (the batch order of an
epoch) is drawn there, exactly as without prefetching; a daemon thread then builds the next ``depth`` batches (the
collate: k-hop subgraph and feature rows, decompressed from a zarr store for a table opened with
:func:`sslspatial.io.read_backed`) while the model trains on the current one. The collate draws no random numbers, so
the batches, and the training run, are the same with and without prefetching. Memory is bounded: at most ``depth``
finished batches wait in the queue, plus the one being built. Under DDP each process iterates its own loader, whose
sampler holds only that process's shard, so each process prefetches only its own rows.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

_END = object()


class _Raised:
    """An exception raised while building a batch in the background, re-raised in the consumer's thread."""

    def __init__(self, error: BaseException):
        self.error = error


def _put(items: queue.Queue, stop: threading.Event, item: Any) -> bool:
    """Put ``item`` unless ``stop`` is set first; whether it was put."""
    while not stop.is_set():
        try:
            items.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _produce(source: Iterator, items: queue.Queue, stop: threading.Event) -> None:
    """Thread body: move batches from ``source`` to ``items`` until the end, an error or ``stop``.

    It holds no reference to the :class:`Prefetcher`, so an abandoned prefetcher is collected and stops the thread.
    """
    try:
        for batch in source:
            if not _put(items, stop, batch):
                return
        _put(items, stop, _END)
    except BaseException as error:  # noqa: BLE001 - handed to the consumer, which re-raises it
        _put(items, stop, _Raised(error))


class Prefetcher:
    """Iterate ``source`` with the next ``depth`` items built ahead in a background thread.

    Parameters
    ----------
    source
        An iterator (a data loader's); its first item is taken in the calling thread.
    depth
        Finished items kept ready (the memory bound).

    Examples
    --------
    >>> list(Prefetcher(iter(range(5)), depth=2))
    [0, 1, 2, 3, 4]
    """

    def __init__(self, source: Iterator, depth: int = 2):
        self._first = next(source, _END)  # the sampler's random draws happen here, in the caller's thread
        self._items: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
        self._stop = threading.Event()
        self._done = self._first is _END
        if not self._done:
            self._thread = threading.Thread(
                target=_produce, args=(source, self._items, self._stop), name="sslspatial-prefetch", daemon=True
            )
            self._thread.start()

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> Any:
        if self._first is not _END:
            first, self._first = self._first, _END
            return first
        if self._done:
            raise StopIteration
        item = self._items.get()
        if item is _END or isinstance(item, _Raised):
            self._done = True
            if isinstance(item, _Raised):
                raise item.error
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the background thread (it ends after the batch it is building)."""
        self._stop.set()
        self._done = True

    def __del__(self):
        self._stop.set()
