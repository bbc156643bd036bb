"""`migrate`: numbered SQL files applied in order, once each, recorded, and never silently rewritten."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest

from singularity_ops.errors import MigrationError
from singularity_ops.migrate import load_migrations, migrate

REPO_MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


@pytest.fixture
def migrations_dir(tmp_path: Path) -> Path:
    target = tmp_path / "migrations"
    target.mkdir()
    (target / "0001_first.sql").write_text("CREATE TABLE first (id int PRIMARY KEY);")
    (target / "0002_second.sql").write_text("CREATE TABLE second (id int REFERENCES first (id));")
    return target


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {row[0] for row in rows}


def test_applies_in_order_and_records_name_checksum_and_time(database_url: str, migrations_dir: Path) -> None:
    with psycopg.connect(database_url) as conn:
        assert migrate(conn, migrations_dir) == ["0001_first.sql", "0002_second.sql"]
        rows = conn.execute("SELECT name, checksum, applied_at FROM schema_migrations ORDER BY name").fetchall()
    assert [r[0] for r in rows] == ["0001_first.sql", "0002_second.sql"]
    assert all(len(r[1]) == 64 and r[2] is not None for r in rows)
    assert {"first", "second", "schema_migrations"} <= tables(database_url)


def test_second_run_applies_nothing(database_url: str, migrations_dir: Path) -> None:
    with psycopg.connect(database_url) as conn:
        migrate(conn, migrations_dir)
        assert migrate(conn, migrations_dir) == []
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (2,)


def test_new_file_is_applied_on_the_next_run(database_url: str, migrations_dir: Path) -> None:
    with psycopg.connect(database_url) as conn:
        migrate(conn, migrations_dir)
        (migrations_dir / "0003_third.sql").write_text("CREATE TABLE third (x int);")
        assert migrate(conn, migrations_dir) == ["0003_third.sql"]


def test_changed_applied_file_is_refused(database_url: str, migrations_dir: Path) -> None:
    with psycopg.connect(database_url) as conn:
        migrate(conn, migrations_dir)
        (migrations_dir / "0001_first.sql").write_text("CREATE TABLE first (id bigint PRIMARY KEY);")
        with pytest.raises(MigrationError, match=r"0001_first\.sql was changed after it was applied"):
            migrate(conn, migrations_dir)


def test_failing_file_leaves_nothing_half_applied(database_url: str, migrations_dir: Path) -> None:
    (migrations_dir / "0003_broken.sql").write_text("CREATE TABLE third (x int); SELECT no_such_function();")
    with psycopg.connect(database_url) as conn:
        with pytest.raises(MigrationError, match=r"0003_broken\.sql failed and was rolled back"):
            migrate(conn, migrations_dir)
        names = [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY name")]
    assert names == ["0001_first.sql", "0002_second.sql"]
    assert "third" not in tables(database_url)


def test_database_newer_than_the_code_is_refused(database_url: str, migrations_dir: Path) -> None:
    with psycopg.connect(database_url) as conn:
        migrate(conn, migrations_dir)
        (migrations_dir / "0002_second.sql").unlink()
        with pytest.raises(MigrationError, match="does not know"):
            migrate(conn, migrations_dir)


def test_badly_named_or_duplicate_numbers_are_refused(tmp_path: Path) -> None:
    (tmp_path / "1_x.sql").write_text("")
    with pytest.raises(MigrationError, match="NNNN_lowercase_name"):
        load_migrations(tmp_path)
    (tmp_path / "1_x.sql").unlink()
    (tmp_path / "0001_a.sql").write_text("")
    (tmp_path / "0001_b.sql").write_text("")
    with pytest.raises(MigrationError, match="share a number"):
        load_migrations(tmp_path)


def test_concurrent_migrators_apply_each_file_once(database_url: str, migrations_dir: Path) -> None:
    results: list[list[str]] = []

    def run() -> None:
        with psycopg.connect(database_url) as conn:
            results.append(migrate(conn, migrations_dir))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(name for applied in results for name in applied) == ["0001_first.sql", "0002_second.sql"]


def test_packaged_migrations_are_the_repository_files(database_url: str) -> None:
    packaged = {m.name: m.checksum for m in load_migrations()}
    from_repo = {m.name: m.checksum for m in load_migrations(REPO_MIGRATIONS)}
    assert packaged == from_repo and packaged
    with psycopg.connect(database_url) as conn:
        assert migrate(conn) == sorted(packaged)
    assert "models" in tables(database_url)
