"""``singularity-ops security``'s parser (the database side is in test_guard_gateway.py)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import pytest

from singularity_ops.cli.security import add_parser, parse_since


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="singularity-ops")
    commands = top.add_subparsers(dest="command", required=True)
    add_parser(commands, lambda p: p.add_argument("--home"))
    return top


def test_the_subcommands_parse_as_documented() -> None:
    args = parser().parse_args(["security", "events", "--since", "2h", "--json", "--home", "/tmp/h"])
    assert (args.command, args.security_command, args.json, args.home) == ("security", "events", True, "/tmp/h")
    assert abs(datetime.now(UTC) - timedelta(hours=2) - args.since) < timedelta(seconds=5)
    assert parser().parse_args(["security", "bans", "list"]).bans_command == "list"
    unban = parser().parse_args(["security", "bans", "unban", "203.0.113.9"])
    assert (unban.bans_command, unban.client) == ("unban", "203.0.113.9")
    with pytest.raises(SystemExit):
        parser().parse_args(["security", "bans"])


def test_since_takes_durations_and_timestamps() -> None:
    now = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("1w", now) == now - timedelta(days=7)
    assert parse_since("2026-01-01T08:00:00", now) == datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
    with pytest.raises(argparse.ArgumentTypeError, match="duration"):
        parse_since("yesterday", now)
