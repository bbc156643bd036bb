"""HistoryWriter: batched, ordered, idempotent history writes that survive real database outages."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from psycopg.rows import dict_row

from singularity_ops.exporter.gateway.history.rows import decode_row, encode_row, write_rows
from singularity_ops.exporter.gateway.history.writer import HistoryWriter
from singularity_ops.migrate import migrate
from tests.conftest import REPO, free_port

REPO_MIGRATIONS = REPO / "migrations"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def history_url(database_url: str) -> str:
    with psycopg.connect(database_url) as conn:
        migrate(conn, REPO_MIGRATIONS)
    return database_url


@pytest.fixture
def make_writer(tmp_path: Path) -> Iterator[Callable[..., HistoryWriter]]:
    writers: list[HistoryWriter] = []

    def make(url: str, spill_dir: Path | None = None, **options: Any) -> HistoryWriter:
        options = {"flush_seconds": 0.05, "retry_seconds": 0.05, "retention_days": None, **options}
        writer = HistoryWriter(lambda: psycopg.connect(url, connect_timeout=2), spill_dir or tmp_path / "spill",
                               **options)
        writers.append(writer)
        return writer

    yield make
    for writer in writers:
        writer.stop(timeout=2)


def request_row(n: int, **changes: Any) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(), "at": T0 + timedelta(milliseconds=n), "model": "llama3.2:3b", "endpoint": "/api/chat",
        "status": 200, "client_hash": "c" * 64, "input_tokens": 12, "output_tokens": 40 + n % 7,
        "ttft_seconds": 0.125, "duration_seconds": 1.5, "tokens_per_second": 31.25, "cost": 0.000125,
        "currency": "EUR", "energy_joules": 42.5, "compression_ratio": 1.0, "cache_hit": n % 2 == 0,
        "prompt_hash": "p" * 64, "prompt_text": f"prompt {n} — ünïcödé", "response_text": "reply\nwith\tlines",
        "error": None, **changes,
    }


def sample(writer: HistoryWriter, name: str, **labels: str) -> float:
    registry = CollectorRegistry()
    registry.register(writer)
    value = registry.get_sample_value(name, labels)
    assert value is not None, name
    return value


def fetch(url: str, query: str) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(query).fetchall()


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def take_away(admin_url: str, database: str) -> None:
    """A real outage: the database refuses new connections and the open ones are cut."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))


def bring_back(admin_url: str, database: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')


def spill_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.jsonl"))


def spooled_rows(directory: Path) -> int:
    """Lines on disk now (a journal may be renamed to its sealed name while we count)."""
    count = 0
    for path in spill_files(directory):
        try:
            count += len(path.read_bytes().splitlines())
        except FileNotFoundError:
            return -1
    return count


def test_rows_are_stored_exactly_as_submitted(history_url: str, make_writer: Callable[..., HistoryWriter]) -> None:
    writer = make_writer(history_url)
    writer.start()
    berlin = ZoneInfo("Europe/Berlin")
    requests = [request_row(0, at=datetime(2025, 3, 1, 13, 0, 0, 123456, tzinfo=berlin)),
                request_row(1, input_tokens=None, output_tokens=None, cost=None, currency=None, error="timeout",
                            status=504, prompt_text=None, response_text=None),
                {"id": uuid.uuid4(), "at": T0, "model": "other", "endpoint": "/v1/chat/completions", "status": 200,
                 "duration_seconds": 0.25}]  # the rest left out: NULLs and cache_hit's default
    metrics = {"minute": T0, "model": "llama3.2:3b", "requests": 3, "tokens_per_second": 31.5,
               "cost_per_response": 0.0001, "currency": "EUR", "cpu_temperature_celsius": 61.0,
               "gpu_temperature_celsius": None, "compression_ratio": 0.75}
    event_id = uuid.uuid4()
    event = {"event_id": event_id, "at": T0, "breaker": "ollama", "from_state": "closed", "to_state": "open",
             "reason": "failure rate 0.6 over 20 calls", "failure_rate": 0.6, "window_calls": 20}
    for row in requests:
        writer.submit("requests", row)
    writer.submit("real_time_metrics", metrics)
    writer.submit("circuit_breaker_events", event)

    assert writer.flush(5)

    stored = {row["id"]: row for row in fetch(history_url, "SELECT * FROM requests")}
    assert stored[requests[0]["id"]] == requests[0]
    assert stored[requests[0]["id"]]["at"] == datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert stored[requests[1]["id"]] == requests[1]
    assert stored[requests[2]["id"]] == {**{c: None for c in requests[0]}, **requests[2], "cache_hit": False}
    assert fetch(history_url, "SELECT * FROM real_time_metrics") == [metrics]
    [stored_event] = fetch(history_url, "SELECT * FROM circuit_breaker_events")
    assert isinstance(stored_event.pop("id"), int)
    assert stored_event == event
    assert sample(writer, "singularity_history_written_total", table="requests") == 3
    assert sample(writer, "singularity_history_queue_rows") == 0


def test_a_thousand_rows_go_in_a_few_transactions(history_url: str,
                                                  make_writer: Callable[..., HistoryWriter]) -> None:
    writer = make_writer(history_url, batch_rows=500, flush_seconds=5)
    writer.start()
    for n in range(1000):
        writer.submit("requests", request_row(n))

    assert writer.flush(5)

    [counts] = fetch(history_url, "SELECT count(*) AS rows, count(DISTINCT xmin::text) AS transactions FROM requests")
    assert counts["rows"] == 1000
    assert counts["transactions"] <= 3  # rows inserted by one transaction share its xmin
    assert sample(writer, "singularity_history_written_total", table="requests") == 1000
    assert sample(writer, "singularity_history_batches_total") <= 3


def test_an_outage_loses_nothing_and_keeps_the_order(history_url: str, postgres_server_url: str,
                                                     make_writer: Callable[..., HistoryWriter],
                                                     tmp_path: Path) -> None:
    database = psycopg.conninfo.conninfo_to_dict(history_url)["dbname"]
    writer = make_writer(history_url, batch_rows=100, memory_rows=300)
    writer.start()
    submitted = [request_row(n) for n in range(2200)]
    for row in submitted[:200]:
        writer.submit("requests", row)
    assert writer.flush(5)

    take_away(postgres_server_url, database)
    try:
        for row in submitted[200:]:  # well past memory_rows: most of these go to disk
            writer.submit("requests", row)
        wait_for(lambda: sample(writer, "singularity_history_write_errors_total") >= 3)
        assert sample(writer, "singularity_history_queue_rows") == 2000
        wait_for(lambda: spooled_rows(tmp_path / "spill") == 2000)  # all on disk, the failed batch's rows too
        assert not writer.flush(0.3)
    finally:
        bring_back(postgres_server_url, database)

    assert writer.flush(10)

    stored = fetch(history_url, "SELECT id, xmin::text::bigint AS tx FROM requests ORDER BY at")
    assert [row["id"] for row in stored] == [row["id"] for row in submitted]  # each once, none missing
    transactions = [row["tx"] for row in stored]
    assert transactions == sorted(transactions)  # written in the order submitted
    assert sample(writer, "singularity_history_queue_rows") == 0
    assert sample(writer, "singularity_history_spill_bytes") == 0
    assert sum(sample(writer, "singularity_history_dropped_total", reason=r)
               for r in ("spill_limit", "spill_error", "rejected")) == 0
    assert spill_files(tmp_path / "spill") == []


def test_rows_spilled_by_a_stopped_writer_are_replayed_by_the_next(history_url: str, tmp_path: Path,
                                                                   make_writer: Callable[..., HistoryWriter]) -> None:
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    first = make_writer(unreachable, batch_rows=100, memory_rows=1000)
    first.start()
    submitted = [request_row(n, at=datetime(2025, 3, 1, 13, n // 60, n % 60, tzinfo=timezone(timedelta(hours=5))))
                 for n in range(250)]
    for row in submitted:
        first.submit("requests", row)
    started = time.monotonic()
    first.stop(timeout=10)
    assert time.monotonic() - started < 2  # the database is away: no point waiting for it
    assert spill_files(tmp_path / "spill")

    second = make_writer(history_url, batch_rows=100)
    assert sample(second, "singularity_history_queue_rows") == 250
    second.start()
    assert second.flush(5)

    stored = {row["id"]: row for row in fetch(history_url, "SELECT * FROM requests")}
    assert stored == {row["id"]: row for row in submitted}
    assert spill_files(tmp_path / "spill") == []


def test_a_second_writer_cannot_share_a_spill_directory(tmp_path: Path) -> None:
    first = HistoryWriter(lambda: psycopg.connect("postgresql://nowhere"), tmp_path)
    with pytest.raises(RuntimeError, match="in use by another history writer"):
        HistoryWriter(lambda: psycopg.connect("postgresql://nowhere"), tmp_path)
    first.stop()
    HistoryWriter(lambda: psycopg.connect("postgresql://nowhere"), tmp_path).stop()


def test_writing_the_same_batch_twice_stores_each_row_once(history_url: str) -> None:
    batch = [("requests", request_row(n)) for n in range(5)]
    batch += [("real_time_metrics", {"minute": T0, "model": "llama3.2:3b", "requests": 5, "tokens_per_second": 30.0}),
              ("circuit_breaker_events", {"event_id": uuid.uuid4(), "at": T0, "breaker": "ollama",
                                          "from_state": "closed", "to_state": "open", "reason": "failures"})]
    with psycopg.connect(history_url, autocommit=True) as conn:
        first = write_rows(conn, batch, first_attempt=True)
        again = write_rows(conn, batch)  # as after a commit whose answer was lost with the connection
        mistaken = write_rows(conn, batch, first_attempt=True)  # the fast path finds them there: the safe way

    assert first == {"requests": 5, "real_time_metrics": 1, "circuit_breaker_events": 1}
    assert again["requests"] == again["circuit_breaker_events"] == 0
    assert mistaken["requests"] == mistaken["circuit_breaker_events"] == 0
    [counts] = fetch(history_url, "SELECT (SELECT count(DISTINCT id) FROM requests) AS requests, "
                                  "(SELECT count(*) FROM requests) AS rows, "
                                  "(SELECT count(*) FROM real_time_metrics) AS metrics, "
                                  "(SELECT count(*) FROM circuit_breaker_events) AS events")
    assert counts == {"requests": 5, "rows": 5, "metrics": 1, "events": 1}


def test_a_later_rollup_of_the_same_minute_replaces_the_earlier(history_url: str) -> None:
    row = {"minute": T0, "model": "llama3.2:3b", "requests": 1, "tokens_per_second": 30.0}
    with psycopg.connect(history_url, autocommit=True) as conn:
        write_rows(conn, [("real_time_metrics", row), ("real_time_metrics", {**row, "requests": 2})])
        write_rows(conn, [("real_time_metrics", {**row, "requests": 3})])
    assert fetch(history_url, "SELECT requests FROM real_time_metrics") == [{"requests": 3}]


def test_a_row_the_database_refuses_is_dropped_and_counted_without_blocking_the_rest(
        history_url: str, make_writer: Callable[..., HistoryWriter]) -> None:
    writer = make_writer(history_url)
    writer.start()
    writer.submit("requests", request_row(0))
    writer.submit("circuit_breaker_events", {"at": T0, "breaker": "ollama", "from_state": "closed",
                                             "to_state": "melted", "reason": "not a state"})
    writer.submit("requests", request_row(1))

    assert writer.flush(5)

    assert fetch(history_url, "SELECT count(*) AS n FROM requests") == [{"n": 2}]
    assert sample(writer, "singularity_history_dropped_total", reason="rejected") == 1
    assert sample(writer, "singularity_history_queue_rows") == 0


def test_retention_prunes_only_old_requests(history_url: str, make_writer: Callable[..., HistoryWriter]) -> None:
    now = datetime.now(UTC)
    old, recent = request_row(0, at=now - timedelta(days=31)), request_row(1, at=now - timedelta(days=29))
    with psycopg.connect(history_url, autocommit=True) as conn:
        write_rows(conn, [("requests", old), ("requests", recent)])
    writer = make_writer(history_url, retention_days=30)
    writer.start()
    new = request_row(2, at=now)
    writer.submit("requests", new)

    assert writer.flush(5)  # the first write comes after the prune on start

    assert {row["id"] for row in fetch(history_url, "SELECT id FROM requests")} == {recent["id"], new["id"]}


def test_submit_never_waits_for_an_unreachable_database(make_writer: Callable[..., HistoryWriter],
                                                        tmp_path: Path) -> None:
    writer = make_writer(f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere", memory_rows=1000)
    writer.start()
    rows = [request_row(n) for n in range(10_000)]

    started = time.perf_counter()
    for row in rows:
        writer.submit("requests", row)
    elapsed = time.perf_counter() - started

    assert elapsed < 1.0
    wait_for(lambda: spooled_rows(tmp_path / "spill") == 10_000)  # the database is away: every row goes to disk
    assert sample(writer, "singularity_history_queue_rows") == 10_000


def test_memory_stays_bounded_while_the_writer_hangs_connecting(history_url: str, tmp_path: Path) -> None:
    released = threading.Event()

    def black_hole() -> psycopg.Connection:  # a connect to a server whose packets vanish, until they don't
        released.wait(10)
        return psycopg.connect(history_url)

    writer = HistoryWriter(black_hole, tmp_path, batch_rows=250, memory_rows=1000, flush_seconds=0.05,
                           retention_days=None)
    writer.start()
    try:
        for n in range(5000):
            writer.submit("requests", request_row(n))
        wait_for(lambda: spooled_rows(tmp_path) >= 4000)
        assert sample(writer, "singularity_history_queue_rows") == 5000
        released.set()
        assert writer.flush(10)
        assert fetch(history_url, "SELECT count(DISTINCT id) AS n FROM requests") == [{"n": 5000}]
    finally:
        released.set()
        writer.stop(2)


def test_submit_refuses_rows_no_table_could_take(tmp_path: Path) -> None:
    writer = HistoryWriter(lambda: psycopg.connect("postgresql://nowhere"), tmp_path)
    with pytest.raises(ValueError, match="unknown history table 'responses'"):
        writer.submit("responses", request_row(0))
    with pytest.raises(ValueError, match="no column"):
        writer.submit("requests", request_row(0, colour="blue"))
    with pytest.raises(ValueError, match="timezone-aware"):
        writer.submit("requests", request_row(0, at=datetime(2025, 3, 1, 12, 0)))
    with pytest.raises(TypeError, match="cannot store a list"):
        writer.submit("requests", request_row(0, error=["a"]))
    with pytest.raises(ValueError, match="needs id"):
        writer.submit("requests", request_row(0, id=None))
    writer.stop()


def test_spill_lines_round_trip_every_value_exactly() -> None:
    row = {"id": uuid.uuid4(), "at": datetime(2025, 3, 1, 13, 0, 0, 1, tzinfo=ZoneInfo("Europe/Berlin")),
           "day": date(2025, 3, 1), "price": Decimal("0.000123456789"), "n": 7, "x": 0.1, "inf": float("inf"),
           "flag": True, "text": "line\nnext \"quoted\" ✓", "none": None}
    table, decoded = decode_row(encode_row("requests", row))
    assert table == "requests"
    assert decoded == row
    assert {k: type(v) for k, v in decoded.items()} == {k: type(v) for k, v in row.items()}
    assert decoded["at"].utcoffset() == timedelta(hours=1)


def test_while_the_database_is_away_rows_reach_the_disk_within_a_spool_interval(
        make_writer: Callable[..., HistoryWriter], tmp_path: Path) -> None:
    writer = make_writer(f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere", spool_seconds=0.05)
    writer.start()
    writer.submit("requests", request_row(0))
    wait_for(lambda: writer.up is False)

    for n in range(1, 31):  # far below memory_rows: today they would have stayed in memory
        writer.submit("requests", request_row(n))

    wait_for(lambda: spooled_rows(tmp_path / "spill") == 31, timeout=2)
    assert sample(writer, "singularity_history_queue_rows") == 31


def test_spool_files_are_readable_by_their_owner_only(make_writer: Callable[..., HistoryWriter],
                                                      tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    spill.mkdir(mode=0o755)
    left = spill / f"{7:020d}-{7:020d}.jsonl"  # a segment an older version left world-readable
    left.write_text(encode_row("requests", request_row(7)))
    left.chmod(0o644)
    writer = make_writer(f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere", spool_seconds=0.05)
    writer.start()
    writer.submit("requests", request_row(8))
    wait_for(lambda: spooled_rows(spill) == 2)
    writer.stop(timeout=0.5)

    assert spill.stat().st_mode & 0o777 == 0o700
    modes = {path.name: path.stat().st_mode & 0o777 for path in spill.iterdir()}
    assert len(modes) >= 3 and set(modes.values()) == {0o600}, modes  # .lock and both segments


def test_a_journal_left_by_a_killed_process_is_replayed_in_order(history_url: str, tmp_path: Path,
                                                                 make_writer: Callable[..., HistoryWriter]) -> None:
    spill = tmp_path / "spill"
    spill.mkdir()
    rows = [request_row(n) for n in range(6)]
    (spill / f"{0:020d}-{1:020d}.jsonl").write_text("".join(encode_row("requests", r) for r in rows[:2]))
    cut = encode_row("requests", rows[5])[:40]  # the process died in the middle of this line
    (spill / f"{2:020d}-open.jsonl").write_text("".join(encode_row("requests", r) for r in rows[2:5]) + cut)

    writer = make_writer(history_url)
    assert sample(writer, "singularity_history_queue_rows") == 5
    assert sample(writer, "singularity_history_dropped_total", reason="spill_error") == 1
    writer.start()
    writer.submit("requests", request_row(6))
    assert writer.flush(5)

    stored = fetch(history_url, "SELECT id, xmin::text::bigint AS tx FROM requests ORDER BY at")
    assert [row["id"] for row in stored] == [row["id"] for row in rows[:5]] + [stored[-1]["id"]]
    assert [row["tx"] for row in stored] == sorted(row["tx"] for row in stored)
    assert spill_files(spill) == []


def test_a_disk_that_hangs_never_holds_up_submit(make_writer: Callable[..., HistoryWriter],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from singularity_ops.exporter.gateway.history.spool import Spool

    disk = threading.Event()
    original = Spool.append

    def hanging_append(self: Spool, rows: Any, data: bytes) -> Any:
        disk.wait(10)
        return original(self, rows, data)

    monkeypatch.setattr(Spool, "append", hanging_append)
    writer = make_writer(f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere", spool_seconds=0.01)
    writer.start()
    writer.submit("requests", request_row(0))
    wait_for(lambda: writer.up is False)
    submitter = threading.Thread(target=lambda: [writer.submit("requests", request_row(n)) for n in range(1, 2001)])
    try:
        submitter.start()
        submitter.join(5)
        assert not submitter.is_alive()  # every submit returned while the spooler sat in a write
        assert sample(writer, "singularity_history_queue_rows") == 2001
    finally:
        disk.set()
    wait_for(lambda: spooled_rows(writer.spill_dir) == 2001)
