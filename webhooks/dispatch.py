"""Hands stored events to Celery without making the provider wait for the broker.

The stored row is the outbox. After the INSERT commits, the request only puts the event id on an
in-process queue; a daemon thread publishes whatever has gathered as one batch message. Under load
batches grow, so the broker's per-message cost is paid once per batch instead of once per request.
If the process dies or the broker is down, the ids are lost from memory but the rows are not: the
periodic sweep (`webhook_events_dispatch`) publishes every event still `received` after a delay.
"""

import logging
import os
import queue
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)


class BatchDispatcher:
    def __init__(self, publish: Callable[[list[str]], None], *, batch_size: int):
        self._publish = publish
        self._batch_size = batch_size
        self._queue: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def submit(self, event_id: str) -> None:
        self._thread_ensure()
        self._queue.put(event_id)

    def _thread_ensure(self) -> None:
        # gunicorn forks after import: a thread started in the master does not exist in a worker.
        if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._pid != os.getpid() or self._thread is None or not self._thread.is_alive():
                if self._pid != os.getpid():
                    self._queue = queue.SimpleQueue()
                self._thread = threading.Thread(target=self._run, name="payhook-dispatch", daemon=True)
                self._pid = os.getpid()
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self._batch_size:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._publish(batch)
            except Exception as exc:  # the broker is down or slow: the sweep will publish these
                logger.warning(
                    "dispatch of %d stored events failed (%s); the sweep will retry them", len(batch), type(exc).__name__
                )

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until the queue is empty (tests and graceful shutdown)."""
        import time

        deadline = time.monotonic() + timeout
        while not self._queue.empty():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True
