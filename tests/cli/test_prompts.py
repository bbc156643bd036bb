"""`singularity-ops prompts` as an operator sees it: tables and lines, one-line errors with exit status 2."""

from __future__ import annotations

import psycopg
import pytest

from singularity_ops.cli.main import main
from singularity_ops.config import load_config
from singularity_ops.store import Database

SYSTEM = "You are the support assistant of Example Ltd."


@pytest.fixture
def db(database_url: str, tmp_path, monkeypatch: pytest.MonkeyPatch, clean_env) -> str:
    monkeypatch.setenv("SINGULARITY_DATABASE_URL", database_url)
    monkeypatch.setenv("SINGULARITY_HOME", str(tmp_path))
    Database.open_migrated(load_config().database, tmp_path).close()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO prompts (id, first_seen, last_seen, request_count, models, preview) "
                     "VALUES ('c48d839cfd8a0000', now(), now(), 12, '{llama3.2:3b}', %s)", (SYSTEM[:20],))
    return database_url


def test_list_enable_show_disable_read_as_lines_and_tables(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prompts", "list"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["ID", "NAME", "ENABLED", "REQUESTS", "MODELS", "LAST", "SEEN", "EXPERIMENT", "PREVIEW"]
    assert row.split()[:5] == ["c48d839cfd8a", "-", "no", "12", "llama3.2:3b"] and SYSTEM[:20].strip() in row
    assert main(["prompts", "enable", "c48d", "--name", "support"]) == 0
    assert "enabled as support" in capsys.readouterr().out
    assert main(["prompts", "show", "support"]) == 0
    shown = capsys.readouterr().out
    assert "name support  enabled yes  requests 12" in shown and "(text not seen since enabled)" in shown
    assert "enabled" in shown.splitlines()[-1]  # the log
    assert main(["prompts", "disable", "support"]) == 0
    assert "disabled" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["enable", "ffff", "--name", "x"], "singularity-ops prompts enable: error: no prompt 'ffff'"),
    (["enable", "c48d", "--name", "bad name"], "letters, digits"),
    (["approve", "c48d"], "no experiment of c48d839cfd8a is waiting for approval"),
    (["experiment", "start", "c48d"], "is not enabled"),
    (["rollback", "c48d"], "nothing to roll back"),
])
def test_mistakes_are_one_line_and_exit_2(db: str, capsys: pytest.CaptureFixture[str], args: list[str],
                                          message: str) -> None:
    assert main(["prompts", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
