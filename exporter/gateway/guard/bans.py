"""Brute force and bans: fail2ban's maxretry / findtime / bantime, growing for repeat offenders (recidive).

A ban is a per-client circuit breaker held open: while it lasts every request of that client is refused before
any upstream work, ``Retry-After`` says when it ends, and it closes by itself when ``until`` passes (looked at
lazily, as the model breakers turn half-open: no timer). Why not the model breakers' ``CircuitBreaker``: it opens
on a failure rate of upstream outcomes and waits a fixed ``open_seconds``, and its metrics are labelled by breaker
name, which would put client ids into labels. A ban opens on a detector's verdict, for a time that grows with the
client's strikes, is persisted, and is counted in ``singularity_security_banned_clients`` without naming anyone.

Bans live in ``security_bans`` (migration 0006) and in memory. The guard writes new bans through the history
writer and re-reads the active ones every ``guard.sync_seconds``: that is how a restart keeps them, how several
gateways on one database share them, and how ``singularity-ops security bans unban`` reaches a running gateway.
"""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg


@dataclass
class Ban:
    client: str
    kind: str
    reason: str
    at: float  # Unix seconds
    until: float
    strikes: int
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    persisted: bool = False  # seen in the database: a later sync without it means it was lifted

    def row(self) -> dict[str, Any]:
        return {"id": self.id, "client": self.client, "kind": self.kind, "reason": self.reason,
                "at": datetime.fromtimestamp(self.at, UTC), "until": datetime.fromtimestamp(self.until, UTC),
                "strikes": self.strikes}


# Ban times go through PostgreSQL's timestamptz (microseconds), so a ban read back may end a fraction of a microsecond
# later than the one that was written: a ban counts as over once less than this is left of it.
SLACK_SECONDS = 1e-3


def time_left(ban: Ban, now: float) -> float:
    """Seconds the ban still runs, less that slack: above 0 while it is in force (and what Retry-After rounds up)."""
    return ban.until - now - SLACK_SECONDS


def in_force(ban: Ban, now: float) -> bool:
    return time_left(ban, now) > 0


def bantime(strikes: int, base: float, factor: float, maximum: float) -> float:
    """fail2ban's ``bantime.increment``: base × factor^(strikes − 1), at most ``maximum``."""
    return min(maximum, base * factor ** min(strikes - 1, 64))


class Failures:
    """Failed authentications of one client: at most ``maxretry`` timestamps, newest last."""

    __slots__ = ("times",)

    def __init__(self, maxretry: int) -> None:
        self.times: deque[float] = deque(maxlen=maxretry)

    def add(self, now: float, findtime: float) -> bool:
        """Record one failure; True when ``maxretry`` of them fell within ``findtime``."""
        self.times.append(now)
        return len(self.times) == self.times.maxlen and now - self.times[0] <= findtime


class BanList:
    """The bans this gateway knows, active and recent (recent ones give repeat offenders their strikes).

    Bounded: past ``max_clients`` the ban that ended longest ago goes first, active ones last.
    """

    def __init__(self, max_clients: int, recidive_seconds: float) -> None:
        self.max_clients = max_clients
        self.recidive_seconds = recidive_seconds
        self.bans: dict[str, Ban] = {}

    def active(self, client: str, now: float) -> Ban | None:
        ban = self.bans.get(client)
        return ban if ban is not None and in_force(ban, now) else None

    def count_active(self, now: float) -> int:
        return sum(1 for ban in list(self.bans.values()) if in_force(ban, now))

    def strikes(self, client: str, now: float) -> int:
        """This client's strike count if it were banned now."""
        previous = self.bans.get(client)
        if previous is not None and now - previous.until <= self.recidive_seconds:
            return previous.strikes + 1
        return 1

    def add(self, ban: Ban, now: float) -> None:
        self.bans.pop(ban.client, None)
        self.bans[ban.client] = ban
        self._bound(now)

    def _bound(self, now: float) -> None:
        excess = len(self.bans) - self.max_clients
        if excess <= 0:
            return
        forgotten = now - self.recidive_seconds
        for client in [c for c, b in self.bans.items() if b.until < forgotten]:
            del self.bans[client]
        excess = len(self.bans) - self.max_clients
        if excess > 0:
            for ban in sorted(self.bans.values(), key=lambda b: b.until)[:excess]:
                del self.bans[ban.client]

    def merge(self, rows: list[tuple[Ban, bool]], now: float) -> list[str]:
        """Take the database's view (each client's newest ban within the recidive window, and whether it was lifted):
        add what is new, drop what was lifted, keep bans made here that are not written yet. Returns the clients whose
        ban was lifted."""
        found = {ban.client: (ban, lifted) for ban, lifted in rows}
        lifted_clients = []
        merged: dict[str, Ban] = {}
        for client, ban in self.bans.items():
            other, lifted = found.pop(client, (None, False))
            if other is not None and (other.id == ban.id or other.at >= ban.at):
                if lifted:
                    if in_force(ban, now):
                        lifted_clients.append(client)
                    continue
                other.persisted = True
                merged[client] = other
            elif not ban.persisted:
                merged[client] = ban  # made here, on its way to the database
            elif in_force(ban, now):
                lifted_clients.append(client)  # gone from the database while active
        for client, (ban, lifted) in found.items():
            if not lifted:
                ban.persisted = True
                merged[client] = ban
        self.bans = merged
        self._bound(now)
        return lifted_clients


LOAD_QUERY = """
SELECT DISTINCT ON (client) id, client, kind, reason, extract(epoch FROM at), extract(epoch FROM until), strikes,
       lifted_at IS NOT NULL
FROM security_bans
WHERE until > now() - make_interval(secs => %s)
ORDER BY client, at DESC
LIMIT %s
"""


def load_bans(conn: psycopg.Connection, recidive_seconds: float, limit: int) -> list[tuple[Ban, bool]]:
    """Each client's newest ban that is active or ended within the recidive window, and whether it was lifted."""
    rows = conn.execute(LOAD_QUERY, (recidive_seconds, limit)).fetchall()
    return [(Ban(client, kind, reason, float(at), float(until), strikes, id=ban_id, persisted=True), lifted)
            for ban_id, client, kind, reason, at, until, strikes, lifted in rows]


def lift(conn: psycopg.Connection, client: str, by: str) -> int:
    """End the client's active bans now; the number lifted."""
    with conn.transaction():
        return conn.execute("UPDATE security_bans SET lifted_at = now(), lifted_by = %s "
                            "WHERE client = %s AND lifted_at IS NULL AND until > now()", (by, client)).rowcount
