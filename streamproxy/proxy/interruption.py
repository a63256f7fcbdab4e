"""Stopping the current task's work when another task finishes, without a task for the work.

Running work in a task of its own beside its watchers costs a task and an ``asyncio.wait`` per
request on the hot path; the proxy runs the work in the task it is already in instead, and lets
a watcher (a client's disconnect, the writer of a stream) cancel that task when it finishes.
``StopWhenDone`` keeps the books that make this safe: only a cancellation it asked for ends the
block quietly, one asked for by anyone else too still propagates, and a cancellation the work
swallowed is taken back so it does not stay pending on the task.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

__all__ = ["StopWhenDone"]


class StopWhenDone:
    """``with StopWhenDone(*watchers) as stop:`` cancels the current task when one of
    ``watchers`` finishes (not cancelled) inside the block; that cancellation ends the block
    without an error, ``stop.is_stopped`` is then True and ``stop.stopped_by`` names the watcher.
    """

    def __init__(self, *watchers: asyncio.Future[Any]) -> None:
        self._watchers = watchers
        self._task: asyncio.Task[Any] | None = None
        self._is_watching = False
        self._is_cancel_pending = False  # asked for, and not yet taken back
        self.stopped_by: asyncio.Future[Any] | None = None
        """The watcher that finished first inside the block."""
        self.is_stopped = False
        """The block ended because of that watcher (its cancellation was suppressed)."""

    def __enter__(self) -> StopWhenDone:
        self._task = asyncio.current_task()
        assert self._task is not None, "StopWhenDone runs inside a task"
        self._is_watching = True
        for watcher in self._watchers:
            watcher.add_done_callback(self._stop)
        return self

    def _stop(self, watcher: asyncio.Future[Any]) -> None:
        # a done callback may already be scheduled when the block ends: then it does nothing
        if not self._is_watching or self.stopped_by is not None or watcher.cancelled():
            return
        assert self._task is not None
        self.stopped_by = watcher
        self._is_cancel_pending = True
        self._task.cancel()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        self._is_watching = False
        for watcher in self._watchers:
            watcher.remove_done_callback(self._stop)
        if not self._is_cancel_pending:
            return False
        self._is_cancel_pending = False
        assert self._task is not None
        remaining = self._task.uncancel()  # also when the work swallowed the cancellation
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            self.is_stopped = remaining == 0  # no one else cancelled this task
            return self.is_stopped
        return False
