"""What the backup tests share: a configuration on a real database, data worth backing up, table checksums."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import yaml

from singularity_ops.config import Config, load_config
from singularity_ops.controllers.backup.keys import write_new_key
from singularity_ops.controllers.backup.pg import with_database
from singularity_ops.controllers.backup.store import Backups
from singularity_ops.migrate import migrate
from singularity_ops.store import Database

PART_BYTES = 16 << 10  # the dump in 16 KiB parts, so that a small backup has several


def backup_config(tmp_path: Path, database_url: str, *, key: bool = True, **backup: Any) -> Config:
    """A config whose ``backup`` section is ``backup`` (a YAML file, so that ``weekly=None`` turns weekly off)."""
    key_file = tmp_path / "backup.key"
    if key and not key_file.exists():
        write_new_key(key_file)
    if key and "key_file" not in backup:
        backup["key_file"] = str(key_file)
    config_file = tmp_path / f"config-{uuid.uuid4().hex[:6]}.yaml"
    config_file.write_text(yaml.safe_dump({"backup": backup}))
    environ = {"SINGULARITY_HOME": str(tmp_path / "home"), "SINGULARITY_DATABASE_URL": database_url}
    return load_config(environ=environ, config_file=config_file)


def open_backups(config: Config, **options: Any) -> Backups:
    database = Database.open(config.database, config.home)
    with database.connect() as conn:
        migrate(conn)
    return Backups(config, database, dump_part_bytes=PART_BYTES, **options)


def fill(url: str, rows: int = 2000) -> None:
    """Tables of many types, NULLs, an odd name in a second schema, a sequence in use."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("""
            CREATE TABLE people (id int PRIMARY KEY, name text, born date, score numeric(10, 3), tags text[],
                                 data jsonb, photo bytea, note text)""")
        conn.execute("""
            INSERT INTO people
            SELECT g, 'person ' || g, date '1970-01-01' + g, g / 7.0, ARRAY['a' || g, 'b'],
                   jsonb_build_object('n', g, 'even', g %% 2 = 0), decode(md5(g::text), 'hex'),
                   CASE WHEN g %% 5 = 0 THEN NULL ELSE repeat('note ', g %% 40) END
            FROM generate_series(1, %s) g""", (rows,))
        conn.execute('CREATE SCHEMA extra')
        conn.execute('CREATE TABLE extra."Odd.Name" (id bigserial PRIMARY KEY, at timestamptz, value float8)')
        conn.execute("""INSERT INTO extra."Odd.Name" (at, value)
                        SELECT timestamptz '2025-01-01 00:00+00' + g * interval '1 minute', sqrt(g)
                        FROM generate_series(1, %s) g""", (rows // 4,))


AGE_SEGMENT = (64 << 10) + 16  # an age payload chunk: 64 KiB of content and its tag


def age_payload(data: bytes) -> int:
    """Where an age file's chunks start: after its text header (ending with the ``---`` MAC line) and the 16-byte
    nonce."""
    mac = data.index(b"\n---") + 1
    return data.index(b"\n", mac) + 1 + 16


def public_key(key_file: Path) -> str:
    from singularity_ops.controllers.backup.keys import load_keys

    [public] = load_keys(key_file).public_keys
    return public


def incompressible(tmp_path: Path, size: int = 300_000) -> str:
    """A ``backup.include`` entry of random bytes, so that a backup spans several age chunks."""
    folder = tmp_path / "home" / "state"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "random.bin").write_bytes(os.urandom(size))
    return "state"


def flip(data: bytes, offset: int) -> bytes:
    """``data`` with one bit of the byte at ``offset`` changed."""
    changed = bytearray(data)
    changed[offset] ^= 0x20
    return bytes(changed)


def checksums(url: str, tables: tuple[str, ...] = ("public.people", 'extra."Odd.Name"')) -> dict[str, tuple]:
    with psycopg.connect(url) as conn:
        return {table: conn.execute(f"SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) "
                                    f"FROM {table} t").fetchone() for table in tables}


def relations(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'").fetchall()]


@contextmanager
def empty_database(server_url: str) -> Iterator[str]:
    name = f"target_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def scratch_databases(server_url: str) -> list[str]:
    with psycopg.connect(server_url) as conn:
        return [row[0] for row in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'singularity_verify_%'").fetchall()]


def catalogue(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT id, kind, status, error FROM backups ORDER BY started").fetchall()


class AlertSink:
    """Alertmanager's POST /api/v2/alerts, recording what arrives."""

    def __init__(self) -> None:
        self.alerts: list[dict] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                sink.alerts += json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self) -> AlertSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
