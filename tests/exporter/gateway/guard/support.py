"""What the guard's unit tests share: a guard built from flags, a recorder for the rows it writes, one check."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from singularity_ops.config import load_config
from singularity_ops.exporter.gateway.endpoints import INFERENCE
from singularity_ops.exporter.gateway.guard.detector import Guard
from tests.helpers import FakeClock

GENERATE = INFERENCE["/api/generate"]


class Recorder:
    """Stands in for the history writer: the rows the guard submits, by table."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, table: str, row: dict[str, Any]) -> None:
        self.rows.append((table, row))

    def table(self, name: str) -> list[dict[str, Any]]:
        return [row for table, row in self.rows if table == name]


def make(clock: FakeClock | None = None, history: Recorder | None = None, alert: Any = None,
         **flags: Any) -> Guard:
    """A guard with no exempt addresses unless the flags name some, on a clock the test moves."""
    config = load_config(environ={}, flags={"guard.exempt_networks": "", **flags})
    return Guard(config, history, alert=alert, clock=clock or FakeClock(1_700_000_000.0))


def check(guard: Guard, client: str = "203.0.113.7", path: str = "/api/generate", headers: dict | None = None,
          endpoint: Any = GENERATE, payload: dict | None = None) -> tuple[str, Any]:
    if endpoint is not None and payload is None:
        payload = {"model": "llama3.2:3b", "prompt": f"hello {random.random()}"}
    return asyncio.run(guard.check(client, path, headers or {}, endpoint, payload))


def refused(result: tuple[str, Any]) -> Any:
    return result[1]
