"""The controller loop: ticks on its interval, survives errors, stops when asked, closes what it holds."""

from __future__ import annotations

import logging
import threading
import time

from singularity_ops.controllers.base import run_forever


class Counting:
    name = "counting"
    interval_seconds = 0.05

    def __init__(self, fail_first: int = 0) -> None:
        self.ticks = 0
        self.fail_first = fail_first
        self.closed = False

    def tick(self) -> None:
        self.ticks += 1
        if self.ticks <= self.fail_first:
            raise RuntimeError("not yet")

    def close(self) -> None:
        self.closed = True


def run_for(controller: Counting, seconds: float) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=run_forever, args=(controller, stop))
    thread.start()
    time.sleep(seconds)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()


def test_ticks_on_its_interval_and_closes_when_stopped() -> None:
    controller = Counting()
    run_for(controller, 0.5)
    assert 5 <= controller.ticks <= 12
    assert controller.closed


def test_an_error_is_logged_once_and_the_loop_goes_on(caplog) -> None:
    caplog.set_level(logging.INFO)
    controller = Counting(fail_first=3)
    run_for(controller, 0.4)
    assert controller.ticks > 3
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    recoveries = [r for r in caplog.records if "recovered" in r.getMessage()]
    assert len(failures) == 1 and len(recoveries) == 1


def test_unknown_controller_name_is_a_one_line_error() -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "singularity_ops.cli", "controller", "nope"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "no controller named 'nope'" in result.stderr and "Traceback" not in result.stderr
