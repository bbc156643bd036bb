"""``singularity-ops security``'s parser (its database side: tests/exporter/gateway/guard/test_anomaly_detector.py),
and ``singularity-ops keys`` as a user runs it."""

from __future__ import annotations

import argparse
import json
import logging
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from singularity_ops.cli.main import main
from singularity_ops.cli.security import add_parser, parse_since
from singularity_ops.exporter.gateway.guard.keys import ApiKeys


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


# --- keys -----------------------------------------------------------------------------------------------------


@pytest.fixture
def keys_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None) -> Path:
    """A configuration naming a keys file that does not exist yet, as the environment gives it."""
    config = tmp_path / "config.yaml"
    config.write_text(f"gateway:\n  api_keys_file: {tmp_path / 'keys'}\n")
    monkeypatch.setenv("SINGULARITY_CONFIG", str(config))
    monkeypatch.setenv("SINGULARITY_HOME", str(tmp_path / "home"))
    return tmp_path / "keys"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The command in this process; its logging set-up (a handler on this test's stderr) is undone after it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        code = main(list(argv))
    finally:
        root.handlers[:], root.level = handlers, level
    out, err = capsys.readouterr()
    return code, out, err


def test_keys_add_prints_the_key_once_and_the_file_keeps_its_hash(keys_config: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "keys", "add", "open-webui")
    assert code == 0
    (key,) = out.splitlines()  # stdout is the key alone: KEY=$(singularity-ops keys add ID)
    assert key.startswith("sk-") and len(key) > 40
    assert "shown only now" in err and key not in err
    assert key not in keys_config.read_text() and stat.S_IMODE(keys_config.stat().st_mode) == 0o600
    found = ApiKeys.load(keys_config).identify(key)
    assert found is not None and (found.id, found.scopes) == ("open-webui", {"inference"})
    code, out, _ = cli(capsys, "keys", "add", "ops", "--scope", "admin", "--json")
    added = json.loads(out)
    assert (added["id"], added["scopes"]) == ("ops", ["inference", "admin"])
    assert ApiKeys.load(keys_config).identify(added["key"]).admin
    assert keys_config.read_text().splitlines()[1].endswith(" scopes=inference,admin")


def test_keys_list_shows_ids_and_scopes_never_keys(keys_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "no keys in" in cli(capsys, "keys", "list")[1]
    _, chat, _ = cli(capsys, "keys", "add", "chat")
    _, ops, _ = cli(capsys, "keys", "add", "ops", "--scope", "admin")
    code, table, _ = cli(capsys, "keys", "list")
    assert code == 0 and chat.strip() not in table and ops.strip() not in table
    rows = [line.split() for line in table.splitlines()]
    assert rows[0] == ["ID", "SCOPES", "SHA256"]
    assert [row[:2] for row in rows[1:]] == [["chat", "inference"], ["ops", "inference,admin"]]
    listed = json.loads(cli(capsys, "keys", "list", "--json")[1])["keys"]
    assert [(k["id"], k["scopes"]) for k in listed] == [("chat", ["inference"]), ("ops", ["admin", "inference"])]


def test_keys_revoke_removes_the_key_and_a_second_revoke_is_a_one_line_error(
        keys_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, key, _ = cli(capsys, "keys", "add", "chat")
    cli(capsys, "keys", "add", "ops")
    code, out, _ = cli(capsys, "keys", "revoke", "chat")
    assert code == 0 and "revoked key 'chat'" in out
    assert ApiKeys.load(keys_config).identify(key.strip()) is None
    assert [k.id for k in ApiKeys.load(keys_config).by_hash.values()] == ["ops"]
    code, out, err = cli(capsys, "keys", "revoke", "chat")
    assert code == 2 and out == ""
    assert err.strip() == (f"singularity-ops keys revoke: error: no key 'chat' in {keys_config}; "
                           "`singularity-ops keys list` shows the ids")


def test_keys_without_a_keys_file_configured_says_which_setting_to_set(
        tmp_path: Path, clean_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "keys", "add", "chat", "--home", str(tmp_path))
    assert code == 2 and "gateway.api_keys_file" in err and len(err.strip().splitlines()) == 1
    code, out, _ = cli(capsys, "keys", "add", "chat", "--file", str(tmp_path / "other"), "--home", str(tmp_path))
    assert code == 0 and ApiKeys.load(tmp_path / "other").identify(out.strip()).id == "chat"
    code, _, err = cli(capsys, "keys", "add", "chat", "--file", str(tmp_path / "other"), "--home", str(tmp_path))
    assert code == 2 and "already has a key 'chat'" in err
