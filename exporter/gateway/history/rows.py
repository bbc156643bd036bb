"""The history tables as the writer sees them: which columns a caller may set, how a row is checked, encoded for
the spool and decoded again, and how a batch is written to PostgreSQL.

``write_rows`` writes a batch with COPY in one transaction. A batch whose commit outcome was lost with the connection
is sent again through a session temp table and ``INSERT … SELECT … ON CONFLICT``: ``requests.id`` and
``circuit_breaker_events.event_id`` (migration 0003) are made by the client, so rows already there are skipped;
``real_time_metrics`` is always upserted on its key. Batches never sent before go straight into their tables (a third
faster), falling back to the safe way should an id be there already.

Spool line: ``{"table": "requests", "row": {...}, "types": {"id": "uuid", "at": "datetime"}}``; ``types`` names
the columns whose values are not JSON-native (uuid, datetime with its UTC offset, date, Decimal) so they decode
to the same values.
"""

from __future__ import annotations

import json
import uuid
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import sql

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
PRUNE_CHUNK_ROWS = 10_000

_NATIVE = frozenset({type(None), bool, int, float, str})
_ENCODE: dict[type, tuple[str, Callable[[Any], Any]]] = {
    uuid.UUID: ("uuid", str), datetime: ("datetime", datetime.isoformat), date: ("date", date.isoformat),
    Decimal: ("decimal", str),
}
_DECODE: dict[str, Callable[[Any], Any]] = {
    "uuid": uuid.UUID, "datetime": datetime.fromisoformat, "date": date.fromisoformat, "decimal": Decimal,
}

Row = tuple[str, dict[str, Any]]


def encode_row(table: str, row: dict[str, Any]) -> str:
    """One spool line (with its newline)."""
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
    """A copy of ``row`` fit to queue; raises for what the database or the spool could never take."""
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
