"""One acting replica per controller: a PostgreSQL advisory lock held across ticks (model manager, validator,
prompt optimiser each use their own key)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import psycopg

log = logging.getLogger(__name__)


class LeaderLock:
    """``pg_try_advisory_lock`` on a dedicated connection, held across ticks while this replica acts. If that
    connection dies, PostgreSQL releases the lock and another replica takes over at its next tick."""

    def __init__(self, connect: Callable[[], psycopg.Connection], key: int) -> None:
        self._connect = connect
        self.key = key
        self._conn: psycopg.Connection | None = None
        self.held = False
        self._standby = False

    def acquire(self) -> bool:
        """True when this replica holds the lock (now or still); checks the connection each time."""
        try:
            if self._conn is None:
                self._conn = self._connect()
                self._conn.autocommit = True
            if self.held:
                self._conn.execute("SELECT 1")
            else:
                row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
                self.held = bool(row and row[0])
        except psycopg.Error:
            self._drop()
            raise
        return self.held

    def acting(self, who: str) -> bool:
        """``acquire``, saying once when this replica goes on standby (another holds the lock) and once when it
        acts again: the one place the controllers' "who acts" log lines come from."""
        if not self.acquire():
            if not self._standby:
                log.info("%s on standby: another replica holds the lock and acts", who)
                self._standby = True
            return False
        if self._standby:
            log.info("%s acting: this replica holds the lock now", who)
            self._standby = False
        return True

    def release(self) -> None:
        if self._conn is not None and self.held:
            try:
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            except psycopg.Error as exc:
                log.debug("advisory unlock failed: %s", exc)
        self._drop()

    def _drop(self) -> None:
        self.held = False
        if self._conn is not None:
            self._conn.close()
            self._conn = None
