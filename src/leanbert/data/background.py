"""One background-thread prefetcher for the data pipeline: ``data prepare`` overlaps its
Python stages with the tokenizer's Rust code (GIL released), and the shard loader reads the
next batches while the model trains (numpy releases the GIL)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any


def in_background(items: Iterator[Any], depth: int = 2, name: str = "leanbert-background") -> Iterator[Any]:
    """Yield ``items`` as produced by a daemon thread running ``depth`` items ahead.

    Errors raised while producing reach the consumer at the point they occurred; a consumer
    that stops early (``close()``, garbage collection, an exception) stops the thread, which
    is joined before this generator finishes."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(done)
        except BaseException as e:  # hand the error to the consumer
            put(e)

    thread = threading.Thread(target=work, daemon=True, name=name)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # drain, so that a producer blocked on a full queue sees stop
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
