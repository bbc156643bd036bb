"""Where history rows wait for the database, oldest first: spooled segments on disk, then the spool's open journal,
then memory. Every row has a sequence number given on arrival; rows leave in that order, so they reach the
database in submission order, and whatever is on disk at a crash is replayed before anything newer.

Two locks: ``lock`` guards the bookkeeping and is held for list operations only (``put`` runs on the gateway's
loop); ``order`` is held by whoever moves rows out of memory (to disk or to the writer), so a later row can never
overtake an earlier one on its way. File I/O happens under ``order`` alone.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from singularity_ops.exporter.gateway.history.rows import Row
from singularity_ops.exporter.gateway.history.spool import Queued, Segment, Spool, encode

log = logging.getLogger(__name__)

DROP_REASONS = ("spill_limit", "spill_error", "rejected")


@dataclass
class Work:
    rows: list[Row]
    segment: Segment | None = None
    tried: bool = False  # sent before: the commit may have happened, so write it the idempotent way


class Backlog:
    def __init__(self, spill_dir: Path, *, batch_rows: int, spill_max_bytes: int) -> None:
        self.spill_dir = Path(spill_dir)
        self.batch_rows = batch_rows
        self.spill_max_bytes = spill_max_bytes
        self.dropped: Counter[str] = Counter(dict.fromkeys(DROP_REASONS, 0))
        self.lock = threading.Lock()
        self.progress = threading.Condition(self.lock)  # notified whenever rows are written, spooled or dropped
        self.order = threading.Lock()
        self.memory: deque[Queued] = deque()
        self.oldest_at = 0.0  # monotonic time the oldest row in memory was queued (about)
        self._inflight: list[Queued] = []  # memory rows the writer holds
        self._spilling: list[Queued] = []  # memory rows on their way to disk
        self._spool = Spool(self.spill_dir)
        self._segments = self._spool.found  # sealed, oldest first
        self._journal: Segment | None = None
        self.segment_rows = sum(s.rows for s in self._segments)  # sealed and journal
        self.spill_bytes = sum(s.size for s in self._segments)
        self.next_seq = max((s.last for s in self._segments), default=-1) + 1
        self.dropped["spill_error"] += self._spool.cut_lines
        self._last_drop_log = -1e9

    def put(self, table: str, row: dict[str, Any]) -> int:
        """Queue a checked row; return how many rows wait in memory."""
        with self.lock:
            seq = self.next_seq
            self.next_seq = seq + 1
            if not self.memory:
                self.oldest_at = time.monotonic()
            self.memory.append((seq, table, row))
            return len(self.memory)

    def waiting(self) -> int:
        """Rows not yet written, wherever they are; call with ``lock`` held."""
        return len(self.memory) + len(self._inflight) + len(self._spilling) + self.segment_rows

    def first_pending(self) -> float:
        """The smallest sequence number not yet written; call with ``lock`` held."""
        heads = [rows[0][0] for rows in (self._inflight, self._spilling) if rows]
        heads += [segment.first for segment in (*self._segments[:1], self._journal) if segment is not None]
        if self.memory:
            heads.append(self.memory[0][0])
        return min(heads, default=float("inf"))

    # --- to the writer ---------------------------------------------------------------------------------------

    def take(self, *, eager: bool, flush_seconds: float) -> Work | None:
        """The next batch: a segment from disk if there is one, else up to ``batch_rows`` from memory once the
        batch is full, its oldest row has waited ``flush_seconds``, or at once when ``eager``."""
        with self.order:
            with self.lock:
                if not self._segments and self._journal is None:
                    due = eager or len(self.memory) >= self.batch_rows or \
                        time.monotonic() - self.oldest_at >= flush_seconds
                    if not self.memory or not due:
                        return None
                    self._inflight = [self.memory.popleft() for _ in range(min(self.batch_rows, len(self.memory)))]
                    if self.memory:
                        self.oldest_at = time.monotonic()
                    return Work([(table, row) for _, table, row in self._inflight])
            segment = self._segments[0] if self._segments else self._seal_journal()
        if segment is None:
            return None
        return Work(self._load(segment), segment, tried=True)  # a stuck writer may have sent these

    def done(self, work: Work) -> None:
        """``work`` is written; call with ``lock`` held, after ``remove``."""
        if work.segment is None:
            self._inflight = []
        elif work.segment in self._segments:
            self._segments.remove(work.segment)
            self.segment_rows -= work.segment.rows
            self.spill_bytes -= work.segment.size
        self.progress.notify_all()

    def remove(self, work: Work) -> None:
        if work.segment is not None:
            try:
                self._spool.remove(work.segment)
            except OSError as exc:  # replayed again next start: harmless, the write is idempotent
                log.warning("history: cannot remove written spill file %s: %s", work.segment.path, exc)

    def _load(self, segment: Segment) -> list[Row]:
        try:
            rows, bad = self._spool.load(segment)
        except (OSError, UnicodeDecodeError) as exc:
            log.error("history: cannot read spill file %s (%s); its %d rows are lost", segment.path, exc, segment.rows)
            rows, bad = [], segment.rows
        else:
            if bad:
                log.error("history: %d unreadable lines in %s skipped", bad, segment.path)
        if bad:
            with self.lock:
                self.dropped["spill_error"] += bad
        return rows

    # --- to disk ---------------------------------------------------------------------------------------------

    def spool(self, count: int) -> int:
        """Append up to ``count`` of the oldest rows in memory to the journal; return how many left memory."""
        with self.order:
            with self.lock:
                room = self.batch_rows - (self._journal.rows if self._journal is not None else 0)
                rows = [self.memory.popleft() for _ in range(min(count, room, len(self.memory)))]
                if self.memory:
                    self.oldest_at = time.monotonic()
                self._spilling = rows
            if not rows:
                return 0
            if self._journal is not None and rows[0][0] != self._journal.last + 1:
                self._seal_journal()  # not expected (see take): a journal holds consecutive rows only
            data = encode(rows)
            journal, (reason, why) = None, self._over_limit(len(data))
            if reason is None:
                try:
                    journal = self._spool.append(rows, data)
                except OSError as exc:
                    reason, why = "spill_error", f"cannot write to {self.spill_dir}: {exc}"
            with self.lock:
                self._spilling = []
                if journal is not None:
                    self._journal = journal
                    self.segment_rows += len(rows)
                    self.spill_bytes += len(data)
                elif reason is not None:
                    self.dropped[reason] += len(rows)
                self.progress.notify_all()
            if journal is None:
                self._log_drop(f"dropped {len(rows)} rows: {why}")
            if journal is None or journal.rows >= self.batch_rows:  # a journal holds consecutive rows only
                self._seal_journal()
        return len(rows)

    def sync(self) -> None:
        with self.order:
            try:
                self._spool.sync()
            except OSError as exc:  # the lines stay in the page cache: lost only if the machine goes down too
                self._log_drop(f"cannot fsync the spool journal: {exc}")

    def spool_inflight(self) -> None:
        """The rows of a failed write from memory go to disk now, not after the outage."""
        with self.order:
            with self.lock:
                rows, self._inflight = self._inflight, []
                self._spilling = rows
            if rows:
                self._write_segment(rows)

    def close(self) -> None:
        """Everything still in memory (and whatever a stuck writer holds) to disk, for the next start."""
        with self.order:
            with self.lock:
                held = self._inflight  # a writer stuck mid-write may still commit these: resending is safe
                memory = list(self.memory)
                self.memory.clear()
                self._inflight = []
            self._seal_journal()
            for chunk in [held, *(memory[i:i + self.batch_rows] for i in range(0, len(memory), self.batch_rows))]:
                if chunk:
                    self._write_segment(chunk)
            self._spool.close()

    def _over_limit(self, size: int) -> tuple[str | None, str]:
        if self.spill_bytes + size > self.spill_max_bytes:
            return "spill_limit", f"spill files would pass spill_max_bytes ({self.spill_max_bytes} bytes)"
        return None, ""

    def _seal_journal(self) -> Segment | None:
        """Turn the journal into a segment the writer can take; hold ``order``."""
        try:
            segment = self._spool.seal()
        except OSError as exc:
            with self.lock:
                journal, self._journal = self._journal, None
                if journal is not None:
                    self.segment_rows -= journal.rows
                    self.spill_bytes -= journal.size
                    self.dropped["spill_error"] += journal.rows
                self.progress.notify_all()
            self._log_drop(f"cannot close the spool journal in {self.spill_dir}: {exc}")
            return None
        with self.lock:
            self._journal = None
            if segment is not None:
                bisect.insort(self._segments, segment)
        return segment

    def _write_segment(self, rows: list[Queued]) -> None:
        """Put ``rows`` (consecutive sequence numbers) in a segment file of their own, or drop them; hold
        ``order``."""
        data = encode(rows)
        segment, (reason, why) = None, self._over_limit(len(data))
        if reason is None:
            try:
                segment = self._spool.write_segment(rows, data)
            except OSError as exc:
                reason, why = "spill_error", f"cannot write to {self.spill_dir}: {exc}"
        with self.lock:
            self._spilling = []
            if segment is not None:
                bisect.insort(self._segments, segment)
                self.segment_rows += len(rows)
                self.spill_bytes += len(data)
            elif reason is not None:
                self.dropped[reason] += len(rows)
            self.progress.notify_all()
        if segment is None:
            self._log_drop(f"dropped {len(rows)} rows: {why}")

    def _log_drop(self, message: str) -> None:
        if time.monotonic() - self._last_drop_log > 60:
            self._last_drop_log = time.monotonic()
            log.error("history: %s", message)
