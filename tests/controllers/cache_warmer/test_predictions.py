"""The warmer's predictions with an injected clock: what the history says of the next window (hours of the week
with decay, recent frequency), what the calendar adds, and the model-state and budget rules before it queues."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from singularity_ops.controllers.cache_warmer.controller import CacheWarmer
from singularity_ops.controllers.cache_warmer.predict import seasonal
from singularity_ops.store import Database
from tests.controllers.cache_warmer.support import MODEL, MONDAY, asked, cache_config, warms

WEEK = timedelta(days=7)
BRIEFING = {"name": "morning briefing", "cron": "55 8 * * 1-5", "model": MODEL,
            "prompts": ["Summarise the overnight alerts.", "What is on today's change calendar?"]}


@pytest.fixture
def make(tmp_path: Path, ollama, vector_database_url: str):
    made: list[CacheWarmer] = []

    def build(at: datetime = MONDAY, **sections) -> CacheWarmer:
        config = cache_config(tmp_path, ollama.host, vector_database_url, **sections)
        warmer = CacheWarmer(config, database=Database(vector_database_url), clock=lambda: at)
        made.append(warmer)
        return warmer

    yield build
    for warmer in made:
        warmer.close()


def test_a_question_asked_every_monday_at_nine_is_predicted_for_monday_morning_and_not_for_tuesday(
        make, vector_database_url: str) -> None:
    rush = MONDAY.replace(minute=5, hour=9)
    asked(vector_database_url, "What broke over the weekend?", *(rush - k * WEEK for k in (1, 2, 3)))
    asked(vector_database_url, "A one-off question", MONDAY + timedelta(days=1) - 2 * WEEK)
    window, predictions = make().preview()
    assert window.end - window.start == timedelta(minutes=30)
    assert [(p.prompt, p.reason, round(p.expected_requests, 2)) for p in predictions] == [
        ("What broke over the weekend?", "history", 1.0)]
    assert predictions[0].cached is False
    _, tuesday = make(at=MONDAY + timedelta(days=1)).preview()
    assert tuesday == []  # once, two weeks ago: 0.32 expected, under min_expected_requests


def test_older_weeks_weigh_less_and_weeks_before_the_record_do_not_count_as_zeros() -> None:
    assert seasonal({1: 4, 2: 0}, 2, 14.0) == pytest.approx(4 * 0.5 ** 0.5 / (0.5 ** 0.5 + 0.5))
    assert seasonal({1: 2}, 1, 14.0) == 2.0
    assert seasonal({}, 0, 14.0) == 0.0


def test_a_question_asked_often_just_now_is_predicted_for_the_next_window(make, vector_database_url: str) -> None:
    asked(vector_database_url, "Is the deploy green?", *(MONDAY - timedelta(minutes=5 * i) for i in range(1, 7)))
    asked(vector_database_url, "Asked once an hour ago", MONDAY - timedelta(hours=1))
    _, predictions = make().preview()
    assert [p.prompt for p in predictions] == ["Is the deploy green?"]
    assert predictions[0].expected_requests == pytest.approx(6 * 0.5 / 2 * 0.5)


def test_the_calendar_predicts_its_prompts_when_its_cron_fires_inside_the_window(make) -> None:
    _, monday = make(warmer={"calendar": [BRIEFING]}).preview()
    assert [(p.prompt, p.reason, p.expected_requests) for p in monday] == [
        ("Summarise the overnight alerts.", "calendar", 1.0), ("What is on today's change calendar?", "calendar", 1.0)]
    assert "fires at 2026-03-02T08:55:00+00:00" in monday[0].detail
    _, saturday = make(at=MONDAY + timedelta(days=5), warmer={"calendar": [BRIEFING]}).preview()
    assert saturday == []
    _, after = make(at=MONDAY + timedelta(minutes=10), warmer={"calendar": [BRIEFING]}).preview()
    assert after == []


def test_a_model_that_is_not_loaded_is_not_warmed_unless_the_model_manager_loads_it_then_and_it_fits(
        make, ollama, vector_database_url: str) -> None:
    calendar = {"warmer": {"calendar": [{**BRIEFING, "prompts": ["Summarise the overnight alerts."]}]}}
    assert make(**calendar).queue(MONDAY) == [] and warms(vector_database_url) == []
    morning = {"name": "morning", "hours": "08:00-12:00", "models": [MODEL]}
    queued = make(**calendar, model_manager={"profiles": [morning]}).queue(MONDAY)
    assert [p.ready for p in queued] == ["planned"]
    assert [(w["prompt"], w["planned"], w["status"]) for w in warms(vector_database_url)] == [
        ("Summarise the overnight alerts.", True, "queued")]


def test_a_loaded_model_is_warmed_once_per_key_however_often_the_warmer_ticks(make, ollama,
                                                                                vector_database_url: str) -> None:
    ollama.load(MODEL)
    warmer = make(warmer={"calendar": [BRIEFING]})
    assert len(warmer.queue(MONDAY)) == 2
    assert warmer.queue(MONDAY + timedelta(minutes=1)) == []
    assert [(w["reason"], w["planned"]) for w in warms(vector_database_url)] == [("calendar", False)] * 2


def test_nothing_is_queued_once_the_hourly_token_budget_is_spent(make, ollama, vector_database_url: str) -> None:
    ollama.load(MODEL)
    with psycopg.connect(vector_database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO cache_warms (model, key, prompt, material, reason, expected_requests, window_start, "
                     "window_end, status, tokens, finished_at) VALUES ('m', 'k', 'p', '{}', 'history', 1, %s, %s, "
                     "'warmed', 500, %s)", (MONDAY, MONDAY, MONDAY - timedelta(minutes=20)))
    assert make(warmer={"calendar": [BRIEFING], "budget_tokens_per_hour": 500}).queue(MONDAY) == []
    assert len(make(at=MONDAY + timedelta(minutes=41), warmer={"calendar": [BRIEFING],
                                                                 "budget_tokens_per_hour": 500}).queue(
        MONDAY + timedelta(minutes=41))) == 0  # 08:55 is behind the window by then
    assert len(make(warmer={"calendar": [BRIEFING], "budget_tokens_per_hour": 501}).queue(MONDAY)) == 2


def test_an_entry_that_outlives_the_window_is_not_warmed_again(make, ollama, vector_database_url: str) -> None:
    ollama.load(MODEL)
    warmer = make(warmer={"calendar": [BRIEFING]})
    _, predictions = warmer.preview()
    with psycopg.connect(vector_database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO cache_entries (key, scope, model, digest, kind, prompt, answer, expires_at) "
                     "VALUES (%s, 's', %s, 'd', 'chat', 'p', '{}', %s)",
                     (predictions[0].key, MODEL, MONDAY + timedelta(hours=2)))
    _, again = warmer.preview()
    assert [p.cached for p in again] == [True, False]
    assert [p.prompt for p in warmer.queue(MONDAY)] == ["What is on today's change calendar?"]
