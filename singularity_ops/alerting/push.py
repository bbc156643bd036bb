"""Alerts for events that are not metrics (a backup finished, a model was demoted), pushed to Alertmanager.

Controllers call ``push``; it only queues. A background thread posts to Alertmanager's v2 API
(``POST /api/v2/alerts``) with the same label scheme as the Prometheus rules (``alertname``, ``severity``,
``instance``, and ``summary``/``description``/``runbook_url`` annotations), so routing, grouping,
inhibition and the Telegram template treat them like any other alert. With no Alertmanager reachable it
logs once and retries with backoff; it never blocks its caller, and the queue is bounded.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)
RUNBOOK_BASE = "https://github.com/singularity-ops/singularity-ops/blob/main/docs/ALERTS.md#"


@dataclass(frozen=True)
class PushedAlert:
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"labels": self.labels, "annotations": self.annotations,
                                "startsAt": self.starts_at.isoformat()}
        if self.ends_at is not None:
            body["endsAt"] = self.ends_at.isoformat()
        return body


@dataclass
class AlertPusher(Collector):
    url: str
    instance: str = field(default_factory=socket.gethostname)
    timeout_seconds: float = 5.0
    max_queued: int = 1000
    retry_seconds: float = 1.0
    max_retry_seconds: float = 60.0
    # Injected in tests: the wall clock stamped on alerts, and the wait between retries (default: the stop event's,
    # so stop() cuts a backoff short).
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC), repr=False)
    backoff: Callable[[float], object] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._queue: deque[PushedAlert] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="alert-push", daemon=True)
        self.sent = 0
        self.dropped = 0
        self.failures = 0
        self._down = False

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("singularity_alerts_pushed", "Alerts accepted by Alertmanager", value=self.sent)
        yield CounterMetricFamily("singularity_alerts_push_failures", "Failed posts to Alertmanager",
                                  value=self.failures)
        yield CounterMetricFamily("singularity_alerts_dropped", "Alerts dropped from a full queue", value=self.dropped)
        yield GaugeMetricFamily("singularity_alerts_queued", "Alerts waiting for Alertmanager", value=len(self._queue))

    def start(self) -> AlertPusher:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def push(self, alertname: str, severity: str, summary: str, description: str = "",
             labels: Mapping[str, str] | None = None, *, resolved: bool = False,
             lasts: timedelta = timedelta(hours=1)) -> None:
        """Queue one alert. ``lasts``: when Alertmanager should consider it resolved if not pushed again (the
        events pushed here have no natural end); ``resolved``: end it now."""
        now = self.clock()
        alert = PushedAlert(
            labels={"alertname": alertname, "severity": severity, "instance": self.instance, **(labels or {})},
            annotations={"summary": summary, "description": description or summary,
                         "runbook_url": RUNBOOK_BASE + alertname.lower()},
            starts_at=now, ends_at=now if resolved else now + lasts,
        )
        with self._lock:
            if len(self._queue) >= self.max_queued:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(alert)
        self._wake.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the queue is empty (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue and time.monotonic() < deadline:
            self._stop.wait(0.02)
        return not self._queue

    def _post(self, alerts: list[PushedAlert]) -> None:
        request = urllib.request.Request(
            self.url.rstrip("/") + "/api/v2/alerts", method="POST",
            data=json.dumps([a.as_json() for a in alerts]).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
            response.read()

    def _loop(self) -> None:
        delay = self.retry_seconds
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            while self._queue and not self._stop.is_set():
                with self._lock:
                    batch = list(self._queue)
                try:
                    self._post(batch)
                except (urllib.error.URLError, OSError, ValueError) as exc:
                    self.failures += 1
                    if not self._down:
                        log.warning("cannot push alerts to Alertmanager at %s (%s); retrying in the background",
                                    self.url, getattr(exc, "reason", exc))
                        self._down = True
                    (self.backoff or self._stop.wait)(delay)
                    delay = min(delay * 2, self.max_retry_seconds)
                    continue
                with self._lock:  # a full queue may have dropped some of the batch meanwhile
                    posted = {id(alert) for alert in batch}
                    while self._queue and id(self._queue[0]) in posted:
                        self._queue.popleft()
                self.sent += len(batch)
                if self._down:
                    log.info("alerts reach Alertmanager at %s again", self.url)
                    self._down = False
                delay = self.retry_seconds
