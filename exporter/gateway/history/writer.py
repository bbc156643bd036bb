"""The gateway's history (``requests``, ``real_time_metrics``, ``circuit_breaker_events``, the guard's security
rows), written in batches off the request path, surviving database outages and a crash during one.

``submit`` checks the row and appends it to an in-memory queue under a lock held for the append only: no I/O,
so the event loop never waits on PostgreSQL or on the disk. Two daemon threads do the rest:

* the writer takes up to ``batch_rows`` rows, oldest first, and writes them in one transaction (rows.py):
  spooled segments before memory, so rows reach the database in submission order, and a new writer replays what
  an earlier one left on disk before anything newer, idempotently. Rows the database refuses (a CHECK, a bad
  value) are written one by one, the refused ones dropped and counted, so one bad row never blocks the queue.
  ``requests`` older than ``retention_days`` are pruned on start and daily. When a write fails, the rows it held
  go to disk at once.
* the spooler moves rows from memory to the on-disk spool (spool.py) whenever they cannot go to the database
  now: while it is away, every ``spool_seconds`` (or every ``batch_rows`` rows), appended and fsynced in one go,
  so a process killed during an outage loses at most the rows of one spool interval; rows that waited more than
  ``flush_seconds`` + ``STALL_SECONDS`` (a connect hanging on a black-holed server, a database that cannot keep
  up, the backlog of an outage being replayed); and past ``memory_rows`` waiting rows. Past ``spill_max_bytes``
  (or when a write fails) rows are dropped and counted. While the database answers, a row waits in memory at
  most about ``flush_seconds`` before its batch is written.

Threads rather than an asyncio task: spooling is blocking file I/O and batch encoding is CPU work, neither belongs
on the gateway's loop; a connect hanging on a black-holed server stalls neither the loop nor the spooler; and
``submit`` works alike from the loop, from other threads and from plain tests. One writer per ``spill_dir``
(backlog.py keeps the rows in order between memory and disk). Call ``stop`` on shutdown: rows still in memory then
go to disk for the next start.

Sample exposition::

    singularity_history_queue_rows 0.0
    singularity_history_spill_bytes 0.0
    singularity_history_written_total{table="requests"} 1250.0
    singularity_history_batches_total 7.0
    singularity_history_write_errors_total 0.0
    singularity_history_dropped_total{reason="spill_limit"} 0.0

Check by hand: ``SELECT count(*), max(at) FROM requests WHERE at > now() - interval '5 minutes'``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from singularity_ops.exporter.gateway.history.backlog import Backlog, Work
from singularity_ops.exporter.gateway.history.rows import COLUMNS, check_row, prune, write_rows

log = logging.getLogger(__name__)

PRUNE_INTERVAL_SECONDS = 86_400.0
STALL_SECONDS = 1.0  # rows waiting this long past flush_seconds go to disk even while the database seems up


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class HistoryWriter(Collector):
    def __init__(self, connect: Callable[[], psycopg.Connection], spill_dir: Path, *, batch_rows: int = 500,
                 flush_seconds: float = 0.5, memory_rows: int = 20_000, spill_max_bytes: int = 512 * 2**20,
                 retention_days: int | None = 30, retry_seconds: float = 1.0, spool_seconds: float = 0.1) -> None:
        if batch_rows < 1 or memory_rows < 1 or spool_seconds <= 0:
            raise ValueError("batch_rows, memory_rows and spool_seconds must be positive")
        self._connect = connect
        self.spill_dir = Path(spill_dir)
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.memory_rows = memory_rows
        self.retention_days = retention_days
        self.retry_seconds = retry_seconds
        self.spool_seconds = spool_seconds
        self.up: bool | None = None  # did the last attempt to reach the database succeed (None: none made yet)
        self.written: Counter[str] = Counter(dict.fromkeys(COLUMNS, 0))
        self.batches = 0
        self.errors = 0
        self._backlog = Backlog(self.spill_dir, batch_rows=batch_rows, spill_max_bytes=spill_max_bytes)
        self._lock = self._backlog.lock
        self._eager = 0  # flush() callers waiting: write partial batches at once
        self._stopping = threading.Event()
        self._wake_writer = threading.Event()
        self._wake_spooler = threading.Event()
        self._threads: list[threading.Thread] = []
        self._next_prune = 0.0

    @property
    def dropped(self) -> Counter[str]:
        return self._backlog.dropped

    def start(self) -> None:
        if self._threads:
            return
        self._threads = [threading.Thread(target=self._write_loop, name="history-writer", daemon=True),
                         threading.Thread(target=self._spool_loop, name="history-spool", daemon=True)]
        for thread in self._threads:
            thread.start()

    def submit(self, table: str, row: dict[str, Any]) -> None:
        """Queue one row; raises ValueError/TypeError for a row no table could take, never waits on I/O."""
        waiting = self._backlog.put(table, check_row(table, row))
        if waiting >= self.batch_rows and not self._wake_writer.is_set():
            self._wake_writer.set()
        if (waiting > self.memory_rows or (waiting >= self.batch_rows and self.up is False)) \
                and not self._wake_spooler.is_set():
            self._wake_spooler.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every row submitted so far is written (or dropped); False when ``timeout`` ran out first."""
        return self._wait_written(time.monotonic() + timeout, give_up_when_down=False)

    def stop(self, timeout: float = 10.0) -> None:
        """Write what can be written within ``timeout`` while the database answers; spool the rest for next start."""
        deadline = time.monotonic() + timeout
        if self._threads:
            self._wait_written(deadline, give_up_when_down=True)
        self._stopping.set()
        self._wake_writer.set()
        self._wake_spooler.set()
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        self._backlog.close()

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            waiting = self._backlog.waiting()
            spill_bytes = self._backlog.spill_bytes
            written, dropped = dict(self.written), dict(self.dropped)
        yield GaugeMetricFamily("singularity_history_queue_rows",
                                "History rows waiting to be written, in memory and spilled to disk", value=waiting)
        yield GaugeMetricFamily("singularity_history_spill_bytes",
                                "Bytes of history rows spilled to disk while the database was behind or away",
                                value=spill_bytes)
        family = CounterMetricFamily("singularity_history_written", "History rows written to the database",
                                     labels=["table"])
        for table, count in sorted(written.items()):
            family.add_metric([table], count)
        yield family
        yield CounterMetricFamily("singularity_history_batches", "History write transactions committed",
                                  value=self.batches)
        yield CounterMetricFamily("singularity_history_write_errors",
                                  "Failed attempts to connect or write history (each is retried)", value=self.errors)
        family = CounterMetricFamily("singularity_history_dropped",
                                     "History rows lost: spill over its size limit, spill write failed, or the "
                                     "database refused the row", labels=["reason"])
        for reason, count in sorted(dropped.items()):
            family.add_metric([reason], count)
        yield family

    def _wait_written(self, deadline: float, *, give_up_when_down: bool) -> bool:
        backlog = self._backlog
        with self._lock:
            target = backlog.next_seq - 1
            if not self._threads:
                return backlog.first_pending() > target
            self._eager += 1
        self._wake_writer.set()
        try:
            with backlog.progress:
                while backlog.first_pending() <= target:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or (give_up_when_down and self.up is False):
                        return False
                    backlog.progress.wait(remaining)
                return True
        finally:
            with self._lock:
                self._eager -= 1

    def _spool_loop(self) -> None:
        """Rows to disk whenever they cannot go to the database now, appended and fsynced once per round."""
        backlog, keep = self._backlog, self.memory_rows // 2  # past memory_rows, down to half: in batches
        round_at = time.monotonic()
        while not self._stopping.is_set():
            # Rounds start every spool_seconds, however long the last one's fsync took.
            interval = self.spool_seconds if backlog.memory or self.up is False else 1.0
            self._wake_spooler.wait(max(0.0, round_at + interval - time.monotonic()))
            self._wake_spooler.clear()
            round_at = time.monotonic()
            waiting = len(backlog.memory)
            if waiting > self.memory_rows:
                count = waiting - keep
            elif waiting and (self.up is False
                              or time.monotonic() - backlog.oldest_at > self.flush_seconds + STALL_SECONDS):
                count = waiting
            else:
                count = 0
            try:
                while count > 0 and not self._stopping.is_set():
                    moved = backlog.spool(count)
                    count = count - moved if moved else 0
                backlog.sync()
            except Exception:  # a bug must not end the spooling for good
                log.exception("history: spooling failed")

    def _idle_seconds(self) -> float:
        if self._backlog.memory:
            return max(0.005, self.flush_seconds - (time.monotonic() - self._backlog.oldest_at))
        return self.flush_seconds

    def _write_loop(self) -> None:
        conn: psycopg.Connection | None = None
        work: Work | None = None
        try:
            while not self._stopping.is_set():
                prune_due = self.retention_days is not None and time.monotonic() >= self._next_prune
                if work is None and not prune_due:
                    work = self._backlog.take(eager=self._eager > 0, flush_seconds=self.flush_seconds)
                    if work is None:
                        self._wake_writer.wait(self._idle_seconds())
                        self._wake_writer.clear()
                        continue
                try:
                    if conn is None:
                        conn = self._connect()
                        conn.autocommit = True
                    if prune_due and self.retention_days is not None:
                        deleted = prune(conn, self.retention_days)
                        self._next_prune = time.monotonic() + PRUNE_INTERVAL_SECONDS
                        if deleted:
                            log.info("history: pruned %d requests older than %d days", deleted, self.retention_days)
                    written, rejected = self._write(conn, work) if work is not None else (Counter(), 0)
                except Exception as exc:  # whatever it is, the thread lives on and the rows stay queued
                    self._failed(exc)
                    if work is not None and work.segment is None:  # held in memory only: to disk now
                        self._backlog.spool_inflight()
                        work = None
                    elif work is not None:
                        work.tried = True
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn.close()
                        conn = None
                    self._stopping.wait(self.retry_seconds)
                    continue
                if self.up is False:
                    with self._lock:
                        waiting = self._backlog.waiting()
                    log.info("history: database reachable again; writing %d waiting rows", waiting)
                self.up = True
                if work is not None:
                    self._finish(work, written, rejected)
                    work = None
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def _write(self, conn: psycopg.Connection, work: Work) -> tuple[Counter[str], int]:
        rows = work.rows
        if not rows:  # a spill file that could not be read
            return Counter(), 0
        try:
            return write_rows(conn, rows, first_attempt=not work.tried), 0
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            if conn.broken or conn.closed:
                raise
            log.warning("history: a batch of %d rows was refused (%s); writing them one by one", len(rows),
                        _reason(exc))
        written: Counter[str] = Counter()
        rejected = 0
        for row in rows:
            try:
                written.update(write_rows(conn, [row]))
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                if conn.broken or conn.closed:
                    raise
                rejected += 1
                log.warning("history: %s row refused and dropped: %s", row[0], _reason(exc))
        return written, rejected

    def _finish(self, work: Work, written: Counter[str], rejected: int) -> None:
        self._backlog.remove(work)
        with self._lock:
            self.written.update(written)
            self.dropped["rejected"] += rejected
            self.batches += 1
            self._backlog.done(work)

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self.errors += 1
            waiting = self._backlog.waiting()
            was_up, self.up = self.up, False
            self._backlog.progress.notify_all()
        self._wake_spooler.set()  # what waits in memory goes to disk now
        if was_up is not False:
            log.warning("history: database unavailable (%s); %d rows waiting, retrying every %g s",
                        _reason(exc), waiting, self.retry_seconds)
