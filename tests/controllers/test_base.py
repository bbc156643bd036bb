"""The controller loop: ticks on its interval, survives errors, stops when asked, closes what it holds."""

from __future__ import annotations

import logging
import threading

from singularity_ops.controllers.base import run_forever
from tests.helpers import FakeClock, wait_for


class Counting:
    """A controller whose tick takes ``tick_seconds`` of the fake clock and stops the loop after ``ticks_wanted``."""

    name = "counting"
    interval_seconds = 30.0

    def __init__(self, clock: FakeClock, stop: threading.Event, *, ticks_wanted: int = 5, fail_first: int = 0,
                 tick_seconds: float = 2.0) -> None:
        self.clock, self.stop = clock, stop
        self.ticks_wanted, self.fail_first, self.tick_seconds = ticks_wanted, fail_first, tick_seconds
        self.ticks: list[float] = []
        self.closed = False

    def tick(self) -> None:
        self.ticks.append(self.clock())
        self.clock.advance(self.tick_seconds)
        if len(self.ticks) >= self.ticks_wanted:
            self.stop.set()
        if len(self.ticks) <= self.fail_first:
            raise RuntimeError("not yet")

    def close(self) -> None:
        self.closed = True


def run(controller: Counting) -> list[float]:
    """Run the loop on the fake clock until the controller stops it; the waits it asked for."""
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        controller.clock.advance(seconds)

    run_forever(controller, controller.stop, clock=controller.clock, wait=wait)
    return waits


def test_ticks_on_its_interval_counting_the_time_a_tick_takes_and_closes_when_stopped() -> None:
    clock, stop = FakeClock(), threading.Event()
    controller = Counting(clock, stop, ticks_wanted=4, tick_seconds=2.0)
    waits = run(controller)
    assert waits == [28.0, 28.0, 28.0, 28.0]  # 30 s interval less the 2 s each tick took
    assert [t - controller.ticks[0] for t in controller.ticks] == [0.0, 30.0, 60.0, 90.0]
    assert controller.closed


def test_a_tick_longer_than_the_interval_is_followed_at_once() -> None:
    clock, stop = FakeClock(), threading.Event()
    waits = run(Counting(clock, stop, ticks_wanted=2, tick_seconds=45.0))
    assert waits == [0.0, 0.0]


def test_an_error_is_logged_once_and_the_loop_goes_on(caplog) -> None:
    caplog.set_level(logging.INFO)
    clock, stop = FakeClock(), threading.Event()
    controller = Counting(clock, stop, ticks_wanted=6, fail_first=3)
    run(controller)
    assert len(controller.ticks) == 6
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    recoveries = [r for r in caplog.records if "recovered" in r.getMessage()]
    assert len(failures) == 1 and len(recoveries) == 1


def test_a_stop_cuts_the_wait_short_on_the_real_clock() -> None:
    stop = threading.Event()
    controller = Counting(FakeClock(), stop, ticks_wanted=10**9, tick_seconds=0.0)  # 30 s interval
    thread = threading.Thread(target=run_forever, args=(controller, stop))
    thread.start()
    wait_for(lambda: controller.ticks, what="the first tick")
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and controller.closed


def test_unknown_controller_name_is_a_one_line_error() -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "singularity_ops.cli", "controller", "nope"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "no controller named 'nope'" in result.stderr and "Traceback" not in result.stderr
