"""What every controller shares: the tick contract and the loop that runs it."""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

log = logging.getLogger(__name__)


class Controller(Protocol):
    name: str
    interval_seconds: float

    def tick(self) -> None:
        """One round of work. It may raise: the loop logs the error and tries again next interval."""

    def close(self) -> None:
        """Release what the controller holds (connections, locks)."""


def run_forever(controller: Controller, stop: threading.Event) -> None:
    """Tick every ``interval_seconds`` until ``stop`` is set; an error is a log line, never the end of the loop."""
    failing = False
    while not stop.is_set():
        started = time.monotonic()
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
        stop.wait(max(0.0, controller.interval_seconds - (time.monotonic() - started)))
    controller.close()
