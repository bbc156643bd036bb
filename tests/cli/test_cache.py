"""`singularity-ops cache stats | clear | warm`, through the parser they are wired with, on a real database and
the Ollama stand-in."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from singularity_ops.cli import cache as cache_cli
from singularity_ops.cli.main import _common, build_parser
from singularity_ops.config import Config
from tests.controllers.cache_warmer.support import MODEL, asked, cache_config
from tests.exporter.gateway.cache.conftest import with_pgvector


def cache(config: Config, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="singularity-ops")
    cache_cli.add_parser(parser.add_subparsers(dest="command", required=True), _common)
    return cache_cli.run(config, parser.parse_args(["cache", *argv]))


def briefing(at: datetime) -> dict:
    fires = at + timedelta(minutes=5)
    return {"name": "briefing", "cron": f"{fires.minute} {fires.hour} * * *", "model": MODEL,
            "prompts": ["Summarise the overnight alerts."]}


@pytest.fixture
def vector_database_url(database_url: str) -> str:
    return with_pgvector(database_url)


@pytest.fixture
def config(tmp_path: Path, ollama, vector_database_url: str) -> Config:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return cache_config(tmp_path, ollama.host, vector_database_url,
                        cache={"shared": True}, warmer={"calendar": [briefing(now)]})


def test_the_commands_are_listed_by_the_main_parser() -> None:
    args = build_parser().parse_args(["cache", "warm", "--dry-run", "--at", "2026-03-02T08:50", "--json"])
    assert (args.command, args.cache_command, args.dry_run, args.at) == ("cache", "warm", True, "2026-03-02T08:50")


def test_stats_counts_entries_hits_and_misses_per_model(config: Config, vector_database_url: str, capsys) -> None:
    key = asked(vector_database_url, "Why?", datetime.now(UTC))
    with psycopg.connect(vector_database_url, autocommit=True) as conn:
        conn.execute("UPDATE cache_requests SET result = 'hit'")
        asked(vector_database_url, "Why?", datetime.now(UTC))
        conn.execute("INSERT INTO cache_entries (key, scope, model, digest, kind, prompt, answer, expires_at, origin) "
                     "VALUES (%s, 's', %s, 'd', 'chat', 'Why?', '{}', now() + interval '1 day', 'warmer')",
                     (key, MODEL))
    assert cache(config, "stats", "--json") == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["models"][MODEL] == {"entries": 1, "warmer_entries": 1, "entry_hits": 0, "hits": 1,
                                        "semantic_hits": 0, "misses": 1, "hit_ratio": 0.5}
    assert figures["total"]["hit_ratio"] == 0.5
    assert cache(config, "stats") == 0
    assert "50.0%" in capsys.readouterr().out


def test_clear_deletes_one_models_entries_or_all(config: Config, vector_database_url: str, capsys) -> None:
    with psycopg.connect(vector_database_url, autocommit=True) as conn:
        for key, model in (("a", MODEL), ("b", "qwen2.5-coder:1.5b")):
            conn.execute("INSERT INTO cache_entries (key, scope, model, digest, kind, prompt, answer, expires_at) "
                         "VALUES (%s, 's', %s, 'd', 'chat', 'p', '{}', now() + interval '1 day')", (key, model))
        assert cache(config, "clear", "--model", "qwen2.5-coder:1.5b") == 0
        assert capsys.readouterr().out == "deleted 1 entry of qwen2.5-coder:1.5b\n"
        assert [r[0] for r in conn.execute("SELECT model FROM cache_entries").fetchall()] == [MODEL]
        assert cache(config, "clear") == 0
        assert conn.execute("SELECT count(*) FROM cache_entries").fetchone()[0] == 0


def test_warm_dry_run_prints_the_window_and_its_predictions_and_warms_nothing(config: Config, ollama, capsys,
                                                                             vector_database_url: str) -> None:
    at = datetime.now(UTC).replace(second=0, microsecond=0)
    assert cache(config, "warm", "--dry-run", "--at", at.isoformat(), "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["window"] == {"start": at.isoformat(), "end": (at + timedelta(minutes=30)).isoformat()}
    assert [{k: p[k] for k in ("model", "prompt", "expected_requests", "reason", "cached")}
            for p in printed["predictions"]] == [{"model": MODEL, "prompt": "Summarise the overnight alerts.",
                                                   "expected_requests": 1.0, "reason": "calendar", "cached": False}]
    assert ollama.calls["/api/chat"] == 0
    with psycopg.connect(vector_database_url) as conn:
        assert conn.execute("SELECT count(*) FROM cache_warms").fetchone()[0] == 0


def test_warm_runs_a_loaded_models_predictions_now_and_never_a_model_that_is_not_loaded(
        config: Config, ollama, capsys, vector_database_url: str) -> None:
    assert cache(config, "warm", "--json") == 0
    first = json.loads(capsys.readouterr().out)["predictions"]
    assert [p["outcome"] for p in first] == ["not run: not loaded, and no model manager profile loads it in the window"]
    assert ollama.calls["/api/chat"] == 0
    ollama.load(MODEL)
    assert cache(config, "warm", "--json") == 0
    second = json.loads(capsys.readouterr().out)["predictions"]
    assert [p["outcome"] for p in second] == ["warmed"]
    with psycopg.connect(vector_database_url) as conn:
        assert conn.execute("SELECT origin, prompt FROM cache_entries").fetchall() == [
            ("warmer", "Summarise the overnight alerts.")]
    assert cache(config, "warm", "--dry-run", "--json") == 0
    assert [p["cached"] for p in json.loads(capsys.readouterr().out)["predictions"]] == [True]
