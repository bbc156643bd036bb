"""The history writer's on-disk spool: rows that could not go to PostgreSQL yet, in JSON-lines segment files.

A segment holds rows with consecutive sequence numbers and is named by its first and last:
``00000000000000000120-00000000000000000619.jsonl``. Rows are appended to one open segment, the journal
(``<first>-open.jsonl``), whose writes the writer's background thread batches and fsyncs (every spool interval);
it is sealed (fsynced, renamed to its range) once it holds a batch, or when the writer wants its rows. A process
killed at any moment therefore leaves complete lines on disk up to its last append; the next one seals the journal
it finds (cutting a line left half-written) and replays every segment in order. Segments written whole (rows a
failed write held, memory at shutdown) skip the journal.

The files hold prompt and answer text: they are created 0600 in a 0700 directory, and a directory or file left
looser by an older version is tightened on open. One spool per directory: an flock on ``.lock`` enforces it.

Not thread-safe: the writer calls it under its own lock that keeps rows in order.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from singularity_ops.exporter.gateway.history.rows import Row, decode_row, encode_row

log = logging.getLogger(__name__)

SEGMENT = re.compile(r"^(\d{20})-(\d{20})\.jsonl$")
JOURNAL = re.compile(r"^(\d{20})-open\.jsonl$")
FILE_MODE, DIRECTORY_MODE = 0o600, 0o700

Queued = tuple[int, str, dict[str, Any]]  # (sequence number, table, row)


@dataclass(order=True)
class Segment:
    first: int
    last: int
    path: Path = field(compare=False)
    size: int = field(compare=False)

    @property
    def rows(self) -> int:
        return self.last - self.first + 1


def segment_name(first: int, last: int | None) -> str:
    return f"{first:020d}-{'open' if last is None else f'{last:020d}'}.jsonl"


def encode(rows: Sequence[Queued]) -> bytes:
    return "".join(encode_row(table, row) for _, table, row in rows).encode()


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
        os.chmod(self.directory, DIRECTORY_MODE)
        self._lock_fd: int | None = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise RuntimeError(f"{self.directory} is in use by another history writer") from None
        self.journal: Segment | None = None  # the open segment; ``last`` is its last row so far
        self._journal_fd: int | None = None
        self._dirty = False
        self.cut_lines = 0  # lines an earlier process left half-written in its journal (lost rows)
        self.found = self._scan()

    # --- start ------------------------------------------------------------------------------------------------

    def _scan(self) -> list[Segment]:
        segments = []
        for path in self.directory.iterdir():
            if match := JOURNAL.match(path.name):
                path = self._seal_left_journal(path, int(match[1]))
                if path is None:
                    continue
                match = SEGMENT.match(path.name)
            elif match := SEGMENT.match(path.name):
                os.chmod(path, FILE_MODE)
            if match:
                segments.append(Segment(int(match[1]), int(match[2]), path, path.stat().st_size))
        if segments:
            log.info("history: replaying %d rows spooled to %s by an earlier run",
                     sum(s.rows for s in segments), self.directory)
        return sorted(segments)

    def _seal_left_journal(self, path: Path, first: int) -> Path | None:
        """The journal of a process that died: keep its complete lines under their range's name."""
        data = path.read_bytes()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):
            self.cut_lines += 1
            log.warning("history: %s ends in a line cut short by a crash; that row is lost", path)
        lines = data.count(b"\n", 0, complete)
        if lines == 0:
            path.unlink()
            return None
        with open(path, "r+b") as file:
            file.truncate(complete)
            os.fsync(file.fileno())
        os.chmod(path, FILE_MODE)
        sealed = path.with_name(segment_name(first, first + lines - 1))
        os.replace(path, sealed)
        self._sync_directory()
        return sealed

    # --- writing ----------------------------------------------------------------------------------------------

    def append(self, rows: Sequence[Queued], data: bytes) -> Segment:
        """Append ``rows`` (encoded as ``data``) to the journal, opening one if none is; no fsync (see ``sync``).
        Returns the journal as it now stands; on OSError the journal is left as it was."""
        if self.journal is None:
            path = self.directory / segment_name(rows[0][0], None)
            self._journal_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, FILE_MODE)
            self.journal = Segment(rows[0][0], rows[0][0] - 1, path, 0)
            self._sync_directory()
        assert self._journal_fd is not None and rows[0][0] == self.journal.last + 1, "spool rows out of order"
        try:
            written = 0
            while written < len(data):
                written += os.write(self._journal_fd, data[written:])
        except OSError:
            with contextlib.suppress(OSError):  # no half line for the next append to glue onto
                os.ftruncate(self._journal_fd, self.journal.size)
            if self.journal.size == 0:  # a journal that never held a row: gone
                os.close(self._journal_fd)
                self.journal.path.unlink(missing_ok=True)
                self.journal, self._journal_fd = None, None
            raise
        self._dirty = True
        self.journal = Segment(self.journal.first, rows[-1][0], self.journal.path, self.journal.size + len(data))
        return self.journal

    def sync(self) -> None:
        if self._dirty and self._journal_fd is not None:
            os.fsync(self._journal_fd)
            self._dirty = False

    def seal(self) -> Segment | None:
        """Close the journal under its range's name and return it as a segment (None when there is none)."""
        journal, fd = self.journal, self._journal_fd
        if journal is None or fd is None:
            return None
        self.journal, self._journal_fd, self._dirty = None, None, False
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        sealed = Segment(journal.first, journal.last, journal.path.with_name(segment_name(journal.first, journal.last)),
                         journal.size)
        os.replace(journal.path, sealed.path)
        self._sync_directory()
        return sealed

    def write_segment(self, rows: Sequence[Queued], data: bytes) -> Segment:
        """A whole segment at once, fsynced; raises OSError (and leaves no file) when it cannot be written."""
        path = self.directory / segment_name(rows[0][0], rows[-1][0])
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            try:
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            path.unlink(missing_ok=True)
            raise
        return Segment(rows[0][0], rows[-1][0], path, len(data))

    # --- reading ----------------------------------------------------------------------------------------------

    @staticmethod
    def load(segment: Segment) -> tuple[list[Row], int]:
        """The rows of a segment and the number of lines that could not be read; raises OSError or
        UnicodeDecodeError when the file cannot be read at all."""
        rows, bad = [], 0
        for line in segment.path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(decode_row(line))
            except (ValueError, KeyError, TypeError):
                bad += 1
        return rows, bad

    @staticmethod
    def remove(segment: Segment) -> None:
        segment.path.unlink()

    def close(self) -> None:
        """Seal the journal and let another writer have the directory."""
        with contextlib.suppress(OSError):
            self.seal()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _sync_directory(self) -> None:
        """Make a created or renamed file's name durable too (a power cut, not only a killed process)."""
        with contextlib.suppress(OSError):
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
