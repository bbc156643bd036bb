"""History ingest: the batched HistoryWriter against one INSERT per row with autocommit (the baseline), and what
``submit()`` costs the caller (the gateway's request path) while the database is up and while it is away.

Run: ``.venv/bin/python bench/history.py`` (from the repository root). Starts an embedded PostgreSQL (pgserver) in a
temporary directory; both ways write the same kind of ``requests`` rows into the same empty table, interleaved over
two rounds after a warm-up, and the best round of each is printed. Goal (history issue): batched ≥ 10x baseline.

Request path: rows submitted at a steady ``PACED_RATE`` per second from one thread, as the gateway's loop does,
each call timed; once with the database up (the baseline) and once with it unreachable, when the writer's
background thread puts every row on disk within its spool interval (issue 15). "late" is how much later than asked
the submitting thread woke from its pacing sleep: the time it waited for the GIL, which the background thread's
encoding and writing take from the request path. Goal: away ≈ up (the disk write stays off the hop).
"""

from __future__ import annotations

import socket
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from singularity_ops.exporter.gateway.history.writer import HistoryWriter
from singularity_ops.migrate import migrate

BATCHED_ROWS, BASELINE_ROWS, ROUNDS = 20_000, 3_000, 2
PACED_RATE, PACED_SECONDS = 2_000, 3.0
T0 = datetime.now(UTC)


def request_row(n: int) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(), "at": T0 + timedelta(milliseconds=n), "model": "llama3.2:3b", "endpoint": "/api/chat",
        "status": 200, "client_hash": f"{n:064x}", "input_tokens": 180, "output_tokens": 350, "ttft_seconds": 0.21,
        "duration_seconds": 9.8, "tokens_per_second": 38.5, "cost": 0.00042, "currency": "EUR",
        "energy_joules": 610.0, "compression_ratio": 1.0, "cache_hit": False, "prompt_hash": f"{n:064x}",
        "prompt_text": "Summarise the following incident report in three bullet points. " * 3,
        "response_text": "- The disk filled up.\n- Backups stopped.\n- Alerts fired late.\n" * 4, "error": None,
    }


def baseline(url: str, rows: list[dict[str, Any]]) -> float:
    columns = list(rows[0])
    insert = f"INSERT INTO requests ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        for row in rows:
            conn.execute(insert, tuple(row.values()))
        return time.perf_counter() - started


def batched(url: str, rows: list[dict[str, Any]], spill_dir: Path) -> tuple[float, float]:
    writer = HistoryWriter(lambda: psycopg.connect(url), spill_dir, retention_days=None)
    writer.start()
    try:
        assert writer.flush(30)  # connected and idle
        started = time.perf_counter()
        for row in rows:
            writer.submit("requests", row)
        submitted = time.perf_counter() - started
        assert writer.flush(60), "the writer did not catch up"
        return time.perf_counter() - started, submitted
    finally:
        writer.stop()


def unreachable_url() -> str:
    with socket.socket() as sock:  # a port nobody listens on: every connect is refused at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"postgresql://postgres@127.0.0.1:{port}/away"


def paced(url: str, spill_dir: Path, *, up: bool) -> tuple[list[float], list[float]]:
    """Per-call submit() time and pacing-sleep lateness (seconds) at PACED_RATE rows/s."""
    writer = HistoryWriter(lambda: psycopg.connect(url, connect_timeout=1), spill_dir, retention_days=None)
    writer.start()
    try:
        if up:
            assert writer.flush(30)
        else:
            writer.submit("requests", request_row(-1))  # something to write, so the writer tries
            deadline = time.monotonic() + 10
            while writer.up is not False:  # the writer has found the database away
                assert time.monotonic() < deadline
                time.sleep(0.01)
        rows = [request_row(n) for n in range(int(PACED_RATE * PACED_SECONDS))]
        costs, late = [], []
        started = time.perf_counter()
        for n, row in enumerate(rows):
            due = started + n / PACED_RATE
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
                late.append(max(0.0, time.perf_counter() - due))
            before = time.perf_counter()
            writer.submit("requests", row)
            costs.append(time.perf_counter() - before)
        return costs, late
    finally:
        writer.stop(timeout=30 if up else 0.5)


def quantiles(values: list[float]) -> str:
    cuts = statistics.quantiles(values, n=100)
    return f"p50 {cuts[49] * 1e6:6.1f} us  p99 {cuts[98] * 1e6:7.1f} us  max {max(values) * 1e6:8.1f} us"


def truncate(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE requests")
        conn.execute("VACUUM ANALYZE requests")


def main() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    with tempfile.TemporaryDirectory(prefix="bench-history-") as home:
        server = pgserver.get_server(Path(home) / "pg", cleanup_mode="delete")
        try:
            with psycopg.connect(server.get_uri(), autocommit=True) as conn:
                conn.execute("CREATE DATABASE bench")
            url = server.get_uri("bench")
            with psycopg.connect(url) as conn:
                migrate(conn, Path(__file__).resolve().parents[1] / "migrations")
            spill_dir = Path(home) / "spill"
            baseline(url, [request_row(n) for n in range(300)])  # warm-up
            batched(url, [request_row(n) for n in range(2_000)], spill_dir)
            base_rates, batch_rates, submit_costs = [], [], []
            for _ in range(ROUNDS):
                truncate(url)
                base_rates.append(BASELINE_ROWS / baseline(url, [request_row(n) for n in range(BASELINE_ROWS)]))
                truncate(url)
                elapsed, submitted = batched(url, [request_row(n) for n in range(BATCHED_ROWS)], spill_dir)
                batch_rates.append(BATCHED_ROWS / elapsed)
                submit_costs.append(submitted / BATCHED_ROWS)
            truncate(url)
            up_costs, up_late = paced(url, Path(home) / "spill-up", up=True)
            away_costs, away_late = paced(unreachable_url(), Path(home) / "spill-away", up=False)
        finally:
            server.cleanup()
    base, batch = max(base_rates), max(batch_rates)
    print(f"one INSERT per row, autocommit (baseline): {base:9,.0f} rows/s  ({BASELINE_ROWS:,} rows, best of "
          f"{ROUNDS}: {', '.join(f'{r:,.0f}' for r in base_rates)})")
    print(f"HistoryWriter, batched COPY:               {batch:9,.0f} rows/s  ({BATCHED_ROWS:,} rows submit -> "
          f"flushed, best of {ROUNDS}: {', '.join(f'{r:,.0f}' for r in batch_rates)})")
    print(f"ratio {batch / base:.1f}x (goal >= 10x); submit() cost {min(submit_costs) * 1e6:.1f} us/row "
          "on the caller's thread")
    print(f"request path at {PACED_RATE:,} rows/s for {PACED_SECONDS:g} s, submit() per call:")
    print(f"  database up (baseline):    {quantiles(up_costs)}   late {quantiles(up_late)}")
    print(f"  database away (spooling):  {quantiles(away_costs)}   late {quantiles(away_late)}")
    up_p99, away_p99 = statistics.quantiles(up_costs, n=100)[98], statistics.quantiles(away_costs, n=100)[98]
    print(f"  ratio away/up, submit p99: {away_p99 / up_p99:.2f}x")


if __name__ == "__main__":
    main()
