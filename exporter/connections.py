"""Counting connections for the listeners (exporter/listener.py): the caps per client address and in total, fitted
to the process's file limit; refusals, header timeouts and accept failures counted for metrics and logged at
most once a minute as a sum, never a line (or a traceback) per event."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

LOG_INTERVAL_SECONDS = 60.0
# File descriptors kept for everything but client connections: the database, the spool, logs, NVML, /proc.
RESERVED_FILES = 128
# The /metrics listener serves Prometheus, Grafana and a human or two: small fixed caps, kept out of the gateway's.
METRICS_MAX_CONNECTIONS = 64
METRICS_MAX_PER_CLIENT = 16
RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def raise_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (as nginx's worker_rlimit_nofile would); the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else target
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
        return soft
    return target


@dataclass(frozen=True)
class Limits:
    listener: str  # "gateway" or "metrics": the metrics label
    max_connections: int
    max_per_client: int
    header_timeout_seconds: float
    idle_timeout_seconds: float
    exempt: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()  # no per-client cap (trusted proxies)


def fit_to_file_limit(file_limit: int, max_connections: int, max_per_client: int) -> tuple[int, int]:
    """The gateway's caps within ``file_limit``: each proxied request holds a second socket (to Ollama), and the
    metrics listener and RESERVED_FILES come first. One client never gets more than half of the total."""
    budget = (file_limit - RESERVED_FILES - METRICS_MAX_CONNECTIONS) // 2
    total = max(2, min(max_connections, budget))
    return total, max(1, min(max_per_client, total // 2))


def client_key(peer: Any) -> str:
    """The address a cap counts by: an IPv4 address, or the /64 of an IPv6 one (one host can hold a whole /64)."""
    host = peer[0] if isinstance(peer, tuple) and peer else str(peer)
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class Tally:
    """Events counted always and logged at most once per interval: the first at once, the rest as one sum line."""

    def __init__(self, describe: Callable[[Counter[str], float], str], interval: float = LOG_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.describe = describe
        self.interval = interval
        self.clock = clock
        self.pending: Counter[str] = Counter()
        self.logged_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    def add(self, key: str) -> None:
        self.pending[key] += 1
        if self.logged_at is None or self.clock() - self.logged_at >= self.interval:
            self.flush()
        elif self._timer is None:
            with contextlib.suppress(RuntimeError):  # no event loop (unit tests): the next add() or close() logs
                self._timer = asyncio.get_running_loop().call_later(
                    self.logged_at + self.interval - self.clock(), self.flush)

    def flush(self) -> None:
        self._timer = None
        if self.pending:
            since = self.clock() - self.logged_at if self.logged_at is not None else 0.0
            log.warning(self.describe(self.pending, since))
            self.pending = Counter()
            self.logged_at = self.clock()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.flush()


class ConnectionBook:
    """Open connections per client and in total for one listener, and what was refused or timed out."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.open = 0
        self.by_client: dict[str, int] = {}
        self.refused: Counter[str] = Counter({"per_client": 0, "total": 0})
        self.header_timeouts = 0
        self.bad_requests = 0
        self.refusals = Tally(self._describe_refusals, clock=clock)

    def _exempt(self, client: str) -> bool:
        try:
            address = ipaddress.ip_network(client, strict=False)
        except ValueError:
            return False
        return any(address.version == n.version and address.subnet_of(n) for n in self.limits.exempt)  # type: ignore[arg-type]

    def admit(self, client: str) -> bool:
        limits = self.limits
        if self.open >= limits.max_connections:
            reason = "total"
        elif self.by_client.get(client, 0) >= limits.max_per_client and not self._exempt(client):
            reason = "per_client"
        else:
            self.open += 1
            self.by_client[client] = self.by_client.get(client, 0) + 1
            return True
        self.refused[reason] += 1
        self.refusals.add(f"{reason} {client}")
        return False

    def release(self, client: str) -> None:
        self.open -= 1
        left = self.by_client[client] - 1
        if left:
            self.by_client[client] = left
        else:
            del self.by_client[client]

    def _describe_refusals(self, pending: Counter[str], since: float) -> str:
        limits = self.limits
        parts = []
        for key, count in pending.most_common(5):
            reason, client = key.split(" ", 1)
            cap = limits.max_per_client if reason == "per_client" else limits.max_connections
            what = f"from {client} (over {cap} per client)" if reason == "per_client" else f"(over {cap} in all)"
            parts.append(f"{count} {what}")
        more = len(pending) - 5
        window = f" in the last {since:.0f} s" if since else ""
        return (f"{limits.listener} listener closed connections at accept{window}: {', '.join(parts)}"
                f"{f' and {more} more clients' if more > 0 else ''}; counted in "
                f"singularity_http_connections_refused_total")


class AcceptErrors:
    """accept() failing for want of descriptors (EMFILE and kin), from the listeners or reported by the event loop
    (``socket.accept() out of system resource``, which asyncio logs with a traceback each time): counted, and
    logged once per interval."""

    def __init__(self, file_limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.file_limit = file_limit
        self.count = 0
        self.tally = Tally(self._describe, clock=clock)
        self._previous: Any = None

    def _describe(self, pending: Counter[str], since: float) -> str:
        window = f" in the last {since:.0f} s" if since else ""
        errors = ", ".join(f"{count} × {name}" for name, count in pending.items())
        return (f"accepting connections failed{window}: {errors} (open-file limit {self.file_limit}); "
                "new connections wait until descriptors free up")

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        self._previous = loop.get_exception_handler()
        loop.set_exception_handler(self._handle)

    def uninstall(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.set_exception_handler(self._previous)
        self.tally.close()

    def note(self, exc: OSError) -> None:
        self.count += 1
        self.tally.add(errno.errorcode.get(exc.errno or 0, str(exc.errno)))

    def _handle(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:  # from a server that is not a Listener
            self.note(exc)
        elif self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)


class ConnectionMetrics(Collector):
    """``singularity_http_*``: per listener, the connections open, the caps, what was refused or timed out."""

    def __init__(self) -> None:
        self.books: list[ConnectionBook] = []
        self.accept_errors: AcceptErrors | None = None

    def collect(self) -> Iterator[Any]:
        open_ = GaugeMetricFamily("singularity_http_connections", "Client connections open now", labels=["listener"])
        cap = GaugeMetricFamily("singularity_http_connections_limit", "The cap on open client connections",
                                labels=["listener", "scope"])
        refused = CounterMetricFamily("singularity_http_connections_refused",
                                      "Connections closed at accept: over a cap", labels=["listener", "reason"])
        timeouts = CounterMetricFamily("singularity_http_header_timeouts",
                                       "Connections closed for not sending a request head in time",
                                       labels=["listener"])
        bad = CounterMetricFamily("singularity_http_bad_requests", "Requests that were not valid HTTP (4xx)",
                                  labels=["listener"])
        for book in self.books:
            name = book.limits.listener
            open_.add_metric([name], book.open)
            cap.add_metric([name, "total"], book.limits.max_connections)
            cap.add_metric([name, "per_client"], book.limits.max_per_client)
            for reason, count in book.refused.items():
                refused.add_metric([name, reason], count)
            timeouts.add_metric([name], book.header_timeouts)
            bad.add_metric([name], book.bad_requests)
        yield from (open_, cap, refused, timeouts, bad)
        if self.accept_errors is not None:
            yield CounterMetricFamily("singularity_http_accept_errors", "accept() failures (out of descriptors)",
                                      value=self.accept_errors.count)
