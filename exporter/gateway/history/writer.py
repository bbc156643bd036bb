"""The gateway's history (``requests``, ``real_time_metrics``, ``circuit_breaker_events``), written in batches
off the request path, surviving database outages.

``submit`` checks the row and appends it to an in-memory queue under a lock held for the append only: no I/O,
so the event loop never waits on PostgreSQL or on the disk. Two daemon threads do the rest with psycopg's sync API:

* the writer takes up to ``batch_rows`` rows, oldest first, and writes them with COPY in one transaction. A batch
  whose commit outcome was lost with the connection is sent again through a session temp table and
  ``INSERT … SELECT … ON CONFLICT``: ``requests.id`` and ``circuit_breaker_events.event_id`` (migration 0003) are
  made by the client, so rows already there are skipped; ``real_time_metrics`` is always upserted on its key.
  Batches never sent before go straight into their tables (a third faster), falling back to the safe way should
  an id be there already. Rows the database refuses (a CHECK, a bad value) are written one by one, the refused
  ones dropped and counted, so one bad row never blocks the queue. ``requests`` older than ``retention_days`` are
  pruned on start and daily.
* the spiller keeps memory bounded: past ``memory_rows`` waiting rows it moves the oldest into JSON-lines segment
  files under ``spill_dir``, one per batch, named by the sequence numbers of their first and last row. The writer
  drains segments before memory, so rows reach the database in submission order, and a new writer replays what an
  earlier one left on disk before anything newer. Past ``spill_max_bytes`` (or when a write fails) rows are dropped
  and counted.

Threads rather than an asyncio task: spilling is blocking file I/O and batch encoding is CPU work, neither belongs
on the gateway's loop; a connect hanging on a black-holed server stalls neither the loop nor the spiller; and
``submit`` works alike from the loop, from other threads and from plain tests. One writer per ``spill_dir``
(an flock enforces it). Call ``stop`` on shutdown: rows still in memory then go to disk for the next start.

Spill line: ``{"table": "requests", "row": {...}, "types": {"id": "uuid", "at": "datetime"}}``; ``types`` names
the columns whose values are not JSON-native (uuid, datetime with its UTC offset, date, Decimal) so they decode
to the same values.

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

import bisect
import contextlib
import fcntl
import json
import logging
import os
import re
import threading
import time
import uuid
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg import sql

log = logging.getLogger(__name__)

# What a caller may set, per table (migrations 0002 and 0003); columns left out take the table's defaults.
COLUMNS: dict[str, frozenset[str]] = {
    "requests": frozenset({
        "id", "at", "model", "endpoint", "status", "client_hash", "input_tokens", "output_tokens", "ttft_seconds",
        "duration_seconds", "tokens_per_second", "cost", "currency", "energy_joules", "compression_ratio",
        "cache_hit", "prompt_hash", "prompt_text", "response_text", "error",
    }),
    "real_time_metrics": frozenset({
        "minute", "model", "requests", "tokens_per_second", "cost_per_response", "currency",
        "cpu_temperature_celsius", "gpu_temperature_celsius", "compression_ratio",
    }),
    "circuit_breaker_events": frozenset({
        "event_id", "at", "breaker", "from_state", "to_state", "reason", "failure_rate", "window_calls",
    }),
    # The threat detector's (migration 0006); ids made by the guard.
    "security_events": frozenset({
        "id", "at", "client", "kind", "action", "score", "reason", "prompt_hash", "excerpt",
    }),
    "security_bans": frozenset({
        "id", "client", "kind", "reason", "at", "until", "strikes", "lifted_at", "lifted_by",
    }),
}
KEYS: dict[str, tuple[str, ...]] = {
    "requests": ("id",), "real_time_metrics": ("minute", "model"), "circuit_breaker_events": ("event_id",),
    "security_events": ("id",), "security_bans": ("id",),
}
DROP_REASONS = ("spill_limit", "spill_error", "rejected")
PRUNE_INTERVAL_SECONDS = 86_400.0
PRUNE_CHUNK_ROWS = 10_000

_NATIVE = frozenset({type(None), bool, int, float, str})
_ENCODE: dict[type, tuple[str, Callable[[Any], Any]]] = {
    uuid.UUID: ("uuid", str), datetime: ("datetime", datetime.isoformat), date: ("date", date.isoformat),
    Decimal: ("decimal", str),
}
_DECODE: dict[str, Callable[[Any], Any]] = {
    "uuid": uuid.UUID, "datetime": datetime.fromisoformat, "date": date.fromisoformat, "decimal": Decimal,
}
_SEGMENT = re.compile(r"^(\d{20})-(\d{20})\.jsonl$")

Row = tuple[str, dict[str, Any]]
Queued = tuple[int, str, dict[str, Any]]  # (sequence number, table, row)


def encode_row(table: str, row: dict[str, Any]) -> str:
    """One spill line (with its newline)."""
    values: dict[str, Any] = {}
    types: dict[str, str] = {}
    for column, value in row.items():
        codec = _ENCODE.get(type(value))
        if codec is None:
            values[column] = value
        else:
            types[column] = codec[0]
            values[column] = codec[1](value)
    line: dict[str, Any] = {"table": table, "row": values}
    if types:
        line["types"] = types
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n"


def decode_row(line: str) -> Row:
    data = json.loads(line)
    row = data["row"]
    for column, kind in data.get("types", {}).items():
        row[column] = _DECODE[kind](row[column])
    if data["table"] not in COLUMNS:
        raise ValueError(f"unknown history table {data['table']!r}")
    return data["table"], row


def check_row(table: str, row: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``row`` fit to queue; raises for what the database or the spill file could never take."""
    columns = COLUMNS.get(table)
    if columns is None:
        raise ValueError(f"unknown history table {table!r}; one of {', '.join(sorted(COLUMNS))}")
    row = dict(row)
    if not row.keys() <= columns:
        raise ValueError(f"{table} has no column(s) {', '.join(sorted(row.keys() - columns))}")
    for column, value in row.items():
        kind = type(value)
        if kind in _NATIVE:
            continue
        if kind not in _ENCODE:
            raise TypeError(f"{table}.{column}: cannot store a {kind.__name__}")
        if kind is datetime and value.tzinfo is None:
            raise ValueError(f"{table}.{column}: datetime must be timezone-aware")
    if table == "circuit_breaker_events" and "event_id" not in row:
        row["event_id"] = uuid.uuid4()
    missing = [key for key in KEYS[table] if row.get(key) is None]
    if missing:
        raise ValueError(f"{table} row needs {', '.join(missing)}")
    return row


_prepared: weakref.WeakSet[psycopg.Connection] = weakref.WeakSet()


def _staging(table: str) -> sql.Identifier:
    return sql.Identifier(f"history_staging_{table}")


@lru_cache(maxsize=64)
def _statements(table: str, columns: tuple[str, ...], staged: bool) -> tuple[sql.Composed, sql.Composed]:
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    copy = sql.SQL("COPY {} ({}) FROM STDIN").format(_staging(table) if staged else sql.Identifier(table), names)
    if table == "real_time_metrics":
        updates = [c for c in columns if c not in KEYS[table]]
        conflict = sql.SQL("ON CONFLICT (minute, model) DO ") + (sql.SQL("UPDATE SET ") + sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in updates) if updates else
            sql.SQL("NOTHING"))
    else:
        conflict = sql.SQL("ON CONFLICT ({}) DO NOTHING").format(sql.Identifier(KEYS[table][0]))
    insert = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} {}").format(
        sql.Identifier(table), names, names, _staging(table), conflict)
    return copy, insert


def write_rows(conn: psycopg.Connection, rows: Sequence[Row], *, first_attempt: bool = False) -> Counter[str]:
    """Write ``rows`` in one transaction and return rows inserted or updated per table.

    Safe to repeat with the same rows: one already written is skipped (requests, breaker events) or overwritten
    with the same values (real_time_metrics). With ``first_attempt`` (rows never sent before), requests and
    breaker events are copied straight into their tables, about a third faster than through the staging table;
    should one turn out to be there already, the batch is written again the safe way.
    """
    groups: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
    for table, row in rows:
        groups.setdefault((table, tuple(row)), []).append(row)
    if first_attempt:
        try:
            return _write_groups(conn, groups, direct=True)
        except psycopg.errors.UniqueViolation:
            if conn.broken or conn.closed:
                raise
    return _write_groups(conn, groups, direct=False)


def _write_groups(conn: psycopg.Connection, groups: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]], *,
                  direct: bool) -> Counter[str]:
    written: Counter[str] = Counter()
    fresh = conn not in _prepared
    with conn.transaction(), conn.cursor() as cursor:
        if fresh:
            for table in COLUMNS:
                cursor.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} AS SELECT * FROM {} WITH NO DATA")
                               .format(_staging(table), sql.Identifier(table)))
        for (table, columns), group in groups.items():
            if table == "real_time_metrics":  # ON CONFLICT cannot update one row twice in a statement: last wins
                group = list({(row["minute"], row["model"]): row for row in group}.values())
            staged = not direct or table == "real_time_metrics"  # an upsert needs the staging table every time
            copy_sql, insert_sql = _statements(table, columns, staged)
            with cursor.copy(copy_sql) as copy:
                for row in group:
                    copy.write_row(tuple(row.values()))
            if staged:
                cursor.execute(insert_sql)
                written[table] += max(cursor.rowcount, 0)
                cursor.execute(sql.SQL("TRUNCATE {}").format(_staging(table)))
            else:
                written[table] += len(group)
    if fresh:
        _prepared.add(conn)
    return written


def prune(conn: psycopg.Connection, retention_days: int) -> int:
    """Delete ``requests`` older than ``retention_days``, in chunks so no lock is held long; return rows deleted."""
    deleted = 0
    while True:
        with conn.transaction():
            count = conn.execute(
                "DELETE FROM requests WHERE id IN (SELECT id FROM requests WHERE at < now() - make_interval("
                "days => %s) LIMIT %s)", (retention_days, PRUNE_CHUNK_ROWS)).rowcount
        deleted += count
        if count < PRUNE_CHUNK_ROWS:
            return deleted


@dataclass(order=True)
class _Segment:
    first: int
    last: int
    path: Path = field(compare=False)
    size: int = field(compare=False)

    @property
    def rows(self) -> int:
        return self.last - self.first + 1


@dataclass
class _Work:
    rows: list[Row]
    segment: _Segment | None = None
    tried: bool = False  # sent before: the commit may have happened, so write it the idempotent way


def _lock_directory(directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(f"{directory} is in use by another history writer") from None
    return fd


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class HistoryWriter(Collector):
    def __init__(self, connect: Callable[[], psycopg.Connection], spill_dir: Path, *, batch_rows: int = 500,
                 flush_seconds: float = 0.5, memory_rows: int = 20_000, spill_max_bytes: int = 512 * 2**20,
                 retention_days: int | None = 30, retry_seconds: float = 1.0) -> None:
        if batch_rows < 1 or memory_rows < 1:
            raise ValueError("batch_rows and memory_rows must be positive")
        self._connect = connect
        self.spill_dir = Path(spill_dir)
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.memory_rows = memory_rows
        self.spill_max_bytes = spill_max_bytes
        self.retention_days = retention_days
        self.retry_seconds = retry_seconds
        self.up: bool | None = None  # did the last attempt to reach the database succeed (None: none made yet)
        self.written: Counter[str] = Counter(dict.fromkeys(COLUMNS, 0))
        self.dropped: Counter[str] = Counter(dict.fromkeys(DROP_REASONS, 0))
        self.batches = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)
        self._order = threading.Lock()  # held while rows move from memory to disk or to the writer: keeps the order
        self._memory: deque[Queued] = deque()
        self._oldest_at = 0.0  # monotonic time the oldest row in memory was queued (about)
        self._inflight: list[Queued] = []  # memory rows the writer holds
        self._spilling: list[Queued] = []  # memory rows on their way to a segment
        self._eager = 0  # flush() callers waiting: write partial batches at once
        self._stopping = threading.Event()
        self._wake_writer = threading.Event()
        self._wake_spiller = threading.Event()
        self._threads: list[threading.Thread] = []
        self._next_prune = 0.0
        self._last_drop_log = -1e9
        self._lock_fd: int | None = _lock_directory(self.spill_dir)
        self._segments = self._scan()
        self._segment_rows = sum(s.rows for s in self._segments)
        self._spill_bytes = sum(s.size for s in self._segments)
        self._next_seq = max((s.last for s in self._segments), default=-1) + 1

    def _scan(self) -> list[_Segment]:
        segments = []
        for path in self.spill_dir.iterdir():
            match = _SEGMENT.match(path.name)
            if match:
                segments.append(_Segment(int(match[1]), int(match[2]), path, path.stat().st_size))
        if segments:
            log.info("history: replaying %d rows spilled to %s by an earlier run",
                     sum(s.rows for s in segments), self.spill_dir)
        return sorted(segments)

    def start(self) -> None:
        if self._threads:
            return
        self._threads = [threading.Thread(target=self._write_loop, name="history-writer", daemon=True),
                         threading.Thread(target=self._spill_loop, name="history-spill", daemon=True)]
        for thread in self._threads:
            thread.start()

    def submit(self, table: str, row: dict[str, Any]) -> None:
        """Queue one row; raises ValueError/TypeError for a row no table could take, never waits on I/O."""
        row = check_row(table, row)
        with self._lock:
            seq = self._next_seq
            self._next_seq = seq + 1
            if not self._memory:
                self._oldest_at = time.monotonic()
            self._memory.append((seq, table, row))
            waiting = len(self._memory)
        if waiting >= self.batch_rows and not self._wake_writer.is_set():
            self._wake_writer.set()
        if waiting > self.memory_rows and not self._wake_spiller.is_set():
            self._wake_spiller.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every row submitted so far is written (or dropped); False when ``timeout`` ran out first."""
        return self._wait_written(time.monotonic() + timeout, give_up_when_down=False)

    def stop(self, timeout: float = 10.0) -> None:
        """Write what can be written within ``timeout`` while the database answers; spill the rest for next start."""
        deadline = time.monotonic() + timeout
        if self._threads:
            self._wait_written(deadline, give_up_when_down=True)
        self._stopping.set()
        self._wake_writer.set()
        self._wake_spiller.set()
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        with self._order:
            with self._lock:
                held = self._inflight  # a writer stuck mid-write may still commit these: resending is safe
                memory = list(self._memory)
                self._memory.clear()
                self._inflight = []
            for chunk in [held, *(memory[i:i + self.batch_rows] for i in range(0, len(memory), self.batch_rows))]:
                if chunk:
                    self._write_segment(chunk)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            waiting = len(self._memory) + len(self._inflight) + len(self._spilling) + self._segment_rows
            spill_bytes = self._spill_bytes
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

    # --- waiting ---------------------------------------------------------------------------------------------

    def _first_pending(self) -> float:
        """The smallest sequence number not yet written; call with the lock held."""
        heads = [rows[0][0] for rows in (self._inflight, self._spilling) if rows]
        if self._segments:
            heads.append(self._segments[0].first)
        if self._memory:
            heads.append(self._memory[0][0])
        return min(heads, default=float("inf"))

    def _wait_written(self, deadline: float, *, give_up_when_down: bool) -> bool:
        with self._lock:
            target = self._next_seq - 1
            if not self._threads:
                return self._first_pending() > target
            self._eager += 1
        self._wake_writer.set()
        try:
            with self._progress:
                while self._first_pending() <= target:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or (give_up_when_down and self.up is False):
                        return False
                    self._progress.wait(remaining)
                return True
        finally:
            with self._lock:
                self._eager -= 1

    # --- spilling --------------------------------------------------------------------------------------------

    def _spill_loop(self) -> None:
        keep = self.memory_rows // 2  # spill down to half, so a full queue spills in batches, not row by row
        while not self._stopping.is_set():
            self._wake_spiller.wait(1.0)
            self._wake_spiller.clear()
            if len(self._memory) <= self.memory_rows:
                continue
            while not self._stopping.is_set() and len(self._memory) > keep:
                self._spill_chunk(min(self.batch_rows, len(self._memory) - keep))

    def _spill_chunk(self, count: int) -> None:
        with self._order:
            with self._lock:
                rows = [self._memory.popleft() for _ in range(min(count, len(self._memory)))]
                if self._memory:
                    self._oldest_at = time.monotonic()
                self._spilling = rows
            if rows:
                self._write_segment(rows)

    def _write_segment(self, rows: list[Queued]) -> None:
        """Put ``rows`` (consecutive sequence numbers) in a segment file, or drop them; hold ``_order``."""
        data = "".join(encode_row(table, row) for _, table, row in rows).encode()
        path = self.spill_dir / f"{rows[0][0]:020d}-{rows[-1][0]:020d}.jsonl"
        reason = None
        if self._spill_bytes + len(data) > self.spill_max_bytes:
            reason = "spill_limit"
            why = f"spill files would pass spill_max_bytes ({self.spill_max_bytes} bytes)"
        else:
            try:
                with open(path, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
            except OSError as exc:
                reason, why = "spill_error", f"cannot write {path}: {exc}"
                path.unlink(missing_ok=True)
        with self._lock:
            self._spilling = []
            if reason is None:
                bisect.insort(self._segments, _Segment(rows[0][0], rows[-1][0], path, len(data)))
                self._segment_rows += len(rows)
                self._spill_bytes += len(data)
            else:
                self.dropped[reason] += len(rows)
            self._progress.notify_all()
        if reason is not None and time.monotonic() - self._last_drop_log > 60:
            self._last_drop_log = time.monotonic()
            log.error("history: dropped %d rows: %s", len(rows), why)

    def _load(self, segment: _Segment) -> list[Row]:
        rows, bad = [], 0
        try:
            text = segment.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            log.error("history: cannot read spill file %s (%s); its %d rows are lost", segment.path, exc, segment.rows)
            with self._lock:
                self.dropped["spill_error"] += segment.rows
            return []
        for line in text.splitlines():
            try:
                rows.append(decode_row(line))
            except (ValueError, KeyError, TypeError):
                bad += 1  # a line cut short by a crash mid-write
        if bad:
            log.error("history: %d unreadable lines in %s skipped", bad, segment.path)
            with self._lock:
                self.dropped["spill_error"] += bad
        return rows

    # --- writing ---------------------------------------------------------------------------------------------

    def _take(self) -> _Work | None:
        with self._order, self._lock:
            if self._segments:
                segment = self._segments[0]
            elif self._memory and (self._eager or len(self._memory) >= self.batch_rows
                                   or time.monotonic() - self._oldest_at >= self.flush_seconds):
                self._inflight = [self._memory.popleft() for _ in range(min(self.batch_rows, len(self._memory)))]
                if self._memory:
                    self._oldest_at = time.monotonic()
                return _Work([(table, row) for _, table, row in self._inflight])
            else:
                return None
        return _Work(self._load(segment), segment, tried=True)  # a stuck writer may have sent these

    def _idle_seconds(self) -> float:
        if self._memory:
            return max(0.005, self.flush_seconds - (time.monotonic() - self._oldest_at))
        return self.flush_seconds

    def _write_loop(self) -> None:
        conn: psycopg.Connection | None = None
        work: _Work | None = None
        try:
            while not self._stopping.is_set():
                prune_due = self.retention_days is not None and time.monotonic() >= self._next_prune
                if work is None and not prune_due:
                    work = self._take()
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
                    if work is not None:
                        work.tried = True
                    self._failed(exc)
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn.close()
                        conn = None
                    self._stopping.wait(self.retry_seconds)
                    continue
                if self.up is False:
                    with self._lock:
                        waiting = len(self._memory) + len(self._inflight) + self._segment_rows
                    log.info("history: database reachable again; writing %d waiting rows", waiting)
                self.up = True
                if work is not None:
                    self._finish(work, written, rejected)
                    work = None
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def _write(self, conn: psycopg.Connection, work: _Work) -> tuple[Counter[str], int]:
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

    def _finish(self, work: _Work, written: Counter[str], rejected: int) -> None:
        if work.segment is not None:
            try:
                work.segment.path.unlink()
            except OSError as exc:  # replayed again next start: harmless, the write is idempotent
                log.warning("history: cannot remove written spill file %s: %s", work.segment.path, exc)
        with self._lock:
            self.written.update(written)
            self.dropped["rejected"] += rejected
            self.batches += 1
            if work.segment is None:
                self._inflight = []
            elif work.segment in self._segments:
                self._segments.remove(work.segment)
                self._segment_rows -= work.segment.rows
                self._spill_bytes -= work.segment.size
            self._progress.notify_all()

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self.errors += 1
            waiting = len(self._memory) + len(self._inflight) + self._segment_rows
            was_up, self.up = self.up, False
            self._progress.notify_all()
        if was_up is not False:
            log.warning("history: database unavailable (%s); %d rows waiting, retrying every %g s",
                        _reason(exc), waiting, self.retry_seconds)
