"""Long blocking steps a cancel need not wait for: they finish in their own thread for later.

Building a base and converting it to TFLite are single calls into TensorFlow that cannot be
interrupted, and on a loaded server they take minutes. Run through `unless_stopped`, the
caller polls should_stop() while the step runs in a background thread, so a cancel lands
within a poll; the step itself finishes, and what it leaves (a cached file, a built base) is
ready for the next run, which joins a step still in flight instead of starting it again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from core.errors import Cancelled

log = logging.getLogger(__name__)

T = TypeVar("T")

POLL_SECONDS = 0.1

_in_flight: dict[str, Future] = {}
_lock = threading.Lock()


def unless_stopped(key: str, work: Callable[[], T],
                   should_stop: Callable[[], bool] | None, *,
                   poll_seconds: float = POLL_SECONDS) -> T:
    """work()'s result, unless should_stop() turns True first.

    Args:
        key: Names the step (e.g. the file it writes); a caller with the same key while the
            step runs waits for that step instead of starting a second one.
        work: The step. Its result should be safe to share between callers with one key
            (a path, an immutable or lock-protected object).
        should_stop: Polled every poll_seconds; None runs work() here, in this thread.
        poll_seconds: How often should_stop is asked.

    Raises:
        Cancelled: should_stop() returned True; the step goes on in the background.
        Exception: What work() raised.
    """
    if should_stop is None:
        return work()
    if should_stop():
        raise Cancelled()
    with _lock:
        future = _in_flight.get(key)
        if future is None:
            future = Future()
            _in_flight[key] = future
            threading.Thread(target=_run, args=(key, work, future), daemon=True,
                             name=f"tl-background-{key[-40:]}").start()
    while True:
        try:
            return future.result(timeout=poll_seconds)
        except TimeoutError:
            if should_stop():
                log.info("Stopped waiting for %s; it finishes in the background", key)
                raise Cancelled() from None


def _run(key: str, work: Callable[[], T], future: Future) -> None:
    try:
        result = work()
    except BaseException as exc:  # handed to every waiting caller
        _forget(key, future)
        future.set_exception(exc)
    else:
        _forget(key, future)  # before the result: a caller then sees no step in flight
        future.set_result(result)


def _forget(key: str, future: Future) -> None:
    with _lock:
        if _in_flight.get(key) is future:
            del _in_flight[key]


def in_flight() -> list[str]:
    """Keys of the steps running now (for tests and diagnostics)."""
    with _lock:
        return sorted(_in_flight)
