"""The validation collector: each model's latest validation in a finished run, demotions, and the last run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
from prometheus_client import CollectorRegistry, generate_latest

from singularity_ops.exporter.collectors.validation import ValidationCollector
from singularity_ops.migrate import migrate
from tests.helpers import series

T0 = datetime(2025, 6, 7, 3, 0, tzinfo=UTC)


def insert_run(conn: psycopg.Connection, started: datetime, status: str, results: list[tuple]) -> None:
    (run_id,) = conn.execute(
        "INSERT INTO validation_runs (started_at, finished_at, trigger, suite_name, suite_hash, status, demote) "
        "VALUES (%s, %s, 'schedule', 'default', 'h', %s, true) RETURNING id",
        (started, started + timedelta(minutes=5), status)).fetchone()
    for model, row_status, accuracy, quality, p50, p95, speed in results:
        conn.execute(
            "INSERT INTO model_validation_results (run_id, at, model, suite_hash, status, accuracy, cases, passed, "
            "latency_p50_seconds, latency_p95_seconds, tokens_per_second, quality_score) "
            "VALUES (%s, %s, %s, 'h', %s, %s, 33, 30, %s, %s, %s, %s)",
            (run_id, started + timedelta(minutes=2), model, row_status, accuracy, p50, p95, speed, quality))


def scrape(database_url: str) -> str:
    registry = CollectorRegistry(auto_describe=False)
    collector = ValidationCollector(lambda: psycopg.connect(database_url))
    registry.register(collector)
    try:
        return generate_latest(registry).decode()
    finally:
        collector.close()


def test_each_models_latest_finished_validation_is_exposed(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrate(conn)
        insert_run(conn, T0, "ok", [("qwen2.5-coder:1.5b", "ok", 0.9, 0.81, 1.2, 3.4, 18.0),
                                    ("tinyllama:1.1b", "demoted", 0.4, 0.4, 0.8, 1.0, 25.0)])
        # a week later: qwen again, tinyllama skipped (does not count), phi4 failed (does not count)
        insert_run(conn, T0 + timedelta(days=7), "ok", [("qwen2.5-coder:1.5b", "ok", 1.0, 0.9, 1.0, 2.0, 20.0),
                                                        ("tinyllama:1.1b", "skipped", None, None, None, None, None),
                                                        ("phi4:14b", "failed", 0.1, 0.1, 9.0, 9.0, 1.0)])
        # a run that failed half-way counts for nothing but the last-run series
        insert_run(conn, T0 + timedelta(days=8), "failed", [("qwen2.5-coder:1.5b", "failed", 0.2, 0.2, 1, 1, 1)])
        conn.execute("INSERT INTO model_status (model, status, reason) VALUES ('tinyllama:1.1b', 'demoted', 'v'), "
                     "('qwen2.5-coder:1.5b', 'active', 'promoted')")
    text = scrape(database_url)
    assert series(text, "singularity_model_quality_score") == {
        '{model="qwen2.5-coder:1.5b"}': 0.9, '{model="tinyllama:1.1b"}': 0.4}
    assert series(text, "singularity_model_validation_accuracy") == {
        '{model="qwen2.5-coder:1.5b"}': 1.0, '{model="tinyllama:1.1b"}': 0.4}
    assert series(text, "singularity_model_validation_latency_seconds") == {
        '{model="qwen2.5-coder:1.5b",quantile="0.5"}': 1.0, '{model="qwen2.5-coder:1.5b",quantile="0.95"}': 2.0,
        '{model="tinyllama:1.1b",quantile="0.5"}': 0.8, '{model="tinyllama:1.1b",quantile="0.95"}': 1.0}
    assert series(text, "singularity_model_validation_tokens_per_second")['{model="qwen2.5-coder:1.5b"}'] == 20.0
    assert series(text, "singularity_model_validation_timestamp_seconds")['{model="tinyllama:1.1b"}'] == \
        (T0 + timedelta(minutes=2)).timestamp()
    assert series(text, "singularity_model_demoted") == {
        '{model="qwen2.5-coder:1.5b"}': 0.0, '{model="tinyllama:1.1b"}': 1.0}
    assert series(text, "singularity_model_validation_last_run_timestamp_seconds") == {
        "": (T0 + timedelta(days=8, minutes=5)).timestamp()}
    assert series(text, "singularity_model_validation_last_run_success") == {"": 0.0}


def test_before_any_run_there_are_no_model_series(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrate(conn)
    text = scrape(database_url)
    assert series(text, "singularity_model_quality_score") == {}
    assert series(text, "singularity_model_validation_last_run_success") == {}
