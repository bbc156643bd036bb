"""What every controller shares: the tick contract and the loop that runs it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)


class Controller(Protocol):
    name: str
    interval_seconds: float

    def tick(self) -> None:
        """One round of work. It may raise: the loop logs the error and tries again next interval."""

    def close(self) -> None:
        """Release what the controller holds (connections, locks)."""


def run_forever(controller: Controller, stop: threading.Event, *, clock: Callable[[], float] = time.monotonic,
                wait: Callable[[float], object] | None = None) -> None:
    """Tick every ``interval_seconds`` until ``stop`` is set; an error is a log line, never the end of the loop.
    ``clock`` and ``wait`` (default: ``stop.wait``, so a stop cuts the wait short) are injected by tests."""
    wait = wait or stop.wait
    failing = False
    while not stop.is_set():
        started = clock()
        try:
            controller.tick()
            if failing:
                log.info("controller %s recovered", controller.name)
            failing = False
        except Exception as exc:
            if not failing:
                log.warning("controller %s failed: %s: %s (retrying every %g s)", controller.name,
                            type(exc).__name__, exc, controller.interval_seconds)
            failing = True
        wait(max(0.0, controller.interval_seconds - (clock() - started)))
    controller.close()
