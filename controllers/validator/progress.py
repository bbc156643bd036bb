"""How far a run is: a bar redrawn in place on a terminal (cases done / total, current model, elapsed), one plain
line per case otherwise (a log, CI, a pipe). Written to stderr, so that ``--json`` output stays clean."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 24


def clock_text(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{rest:02d}" if hours else f"{minutes}:{rest:02d}"


class Progress:
    """The runner's observer; the base class shows nothing (the controller's runs)."""

    def start(self, total: int) -> None: ...

    def model(self, name: str) -> None: ...

    def case(self, model: str, case_id: str, passed: bool | None, error: str | None = None) -> None: ...

    def skip(self, model: str, cases: int, reason: str) -> None: ...

    def note(self, text: str) -> None: ...

    def finish(self) -> None: ...


class ConsoleProgress(Progress):
    def __init__(self, stream: TextIO | None = None, tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.clock = clock
        self.total = 0
        self.done = 0
        self.current = ""
        self.started = clock()
        self._drawn = False

    def start(self, total: int) -> None:
        self.total, self.done, self.started = total, 0, self.clock()
        self._draw()

    def model(self, name: str) -> None:
        self.current = name
        if not self.tty:
            self._line(f"{name}: started")
        self._draw()

    def case(self, model: str, case_id: str, passed: bool | None, error: str | None = None) -> None:
        self.done += 1
        if not self.tty:
            outcome = "error: " + error if error else "answered" if passed is None else "pass" if passed else "fail"
            self._line(f"{self.done}/{self.total} {model} {case_id} {outcome}")
        self._draw()

    def skip(self, model: str, cases: int, reason: str) -> None:
        self.total = max(self.done, self.total - cases)
        self._line(f"{model}: skipped: {reason}")
        self._draw()

    def note(self, text: str) -> None:
        self._line(text)
        self._draw()

    def finish(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def elapsed(self) -> str:
        return clock_text(self.clock() - self.started)

    def bar(self) -> str:
        filled = BAR_WIDTH * self.done // self.total if self.total else BAR_WIDTH
        return (f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {self.done}/{self.total} cases  "
                f"{self.current or '-'}  {self.elapsed()}")

    def _draw(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K" + self.bar())
            self.stream.flush()
            self._drawn = True

    def _line(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K" + text + "\n")
        else:
            self.stream.write(f"[{self.elapsed()}] {text}\n")
        self.stream.flush()
