"""The keys file: hashed keys with scopes, read by the gateway and edited by ``singularity-ops keys``."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from singularity_ops.errors import ConfigError
from singularity_ops.exporter.gateway.guard.keys import (
    ADMIN,
    INFERENCE,
    ApiKeys,
    add_key,
    new_key_line,
    read_keys,
    revoke_key,
)

HEX = "ab" * 32


def test_keys_are_stored_as_sha256_and_identify_their_client(tmp_path: Path) -> None:
    key, line = new_key_line("open-webui")
    assert key not in line and hashlib.sha256(key.encode()).hexdigest() in line
    path = tmp_path / "keys"
    path.write_text(f"# id  hash\n\n{line}   # the chat UI\nbatch sha256:{'AB' * 32}\n")
    keys = ApiKeys.load(path)
    found = keys.identify(key)
    assert found is not None and found.id == "open-webui"
    assert keys.identify(key + "x") is None and keys.identify(None) is None and keys.identify("") is None
    assert keys.by_hash[HEX].id == "batch"  # hex in either case
    assert key not in repr(found) and found.digest not in repr(found)


def test_a_line_without_scopes_is_inference_only_and_scopes_name_what_else_a_key_may_do(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"chat sha256:{'01' * 32}\n"
                    f"ops sha256:{'02' * 32} scopes=inference,admin  # the model manager\n"
                    f"deployer sha256:{'03' * 32}\tscopes=admin\n")
    chat, ops, deployer = read_keys(path)
    assert (chat.id, chat.scopes, chat.admin) == ("chat", {INFERENCE}, False)
    assert (ops.id, ops.scopes, ops.admin) == ("ops", {INFERENCE, ADMIN}, True)
    assert (deployer.scopes, deployer.admin) == ({ADMIN}, True)


@pytest.mark.parametrize(("line", "says"), [
    ("plain-text-key-here", "expected 'ID sha256:"),
    (f"ops sha256:{HEX} scopes=inference,root", "unknown scope root"),
    (f"ops sha256:{HEX} scopes=", "expected 'ID sha256:"),
    (f"ops sha256:{HEX} admin", "expected 'ID sha256:"),
    (f"ops sha256:{HEX[:-2]}", "expected 'ID sha256:"),
])
def test_a_malformed_keys_file_names_the_line_and_the_problem(tmp_path: Path, line: str, says: str) -> None:
    path = tmp_path / "keys"
    path.write_text(f"ok sha256:{'0' * 64}\n{line}\n")
    with pytest.raises(ConfigError, match="line 2") as error:
        ApiKeys.load(path)
    assert says in str(error.value)


def test_a_missing_keys_file_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read gateway\.api_keys_file"):
        ApiKeys.load(tmp_path / "missing")


def test_a_rewritten_keys_file_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(new_key_line("a")[1] + "\n")
    keys = ApiKeys.load(path)
    assert not keys.changed()
    path.write_text(new_key_line("a")[1] + "\n" + new_key_line("b")[1] + "\n")
    os.utime(path, ns=(keys.stamp[0] + 10**9, keys.stamp[0] + 10**9))
    assert keys.changed()


def test_add_appends_a_line_to_a_new_private_file_and_returns_the_key_once(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "keys"
    key, added = add_key(path, "ops", (INFERENCE, ADMIN))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert key not in text and text == f"ops sha256:{hashlib.sha256(key.encode()).hexdigest()} scopes=inference,admin\n"
    chat_key, _ = add_key(path, "chat", (INFERENCE,))
    found = ApiKeys.load(path)
    assert found.identify(key) == added and found.identify(chat_key).scopes == {INFERENCE}
    assert path.read_text().splitlines()[1].endswith(hashlib.sha256(chat_key.encode()).hexdigest())  # no field


def test_add_refuses_a_duplicate_or_malformed_id_and_completes_an_unterminated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# hand-written\nold sha256:{HEX}")  # no newline at the end
    add_key(path, "new", (INFERENCE,))
    assert [k.id for k in read_keys(path)] == ["old", "new"]
    with pytest.raises(ConfigError, match="already has a key 'old'"):
        add_key(path, "old", (INFERENCE,))
    with pytest.raises(ConfigError, match="key id"):
        add_key(path, "two words", (INFERENCE,))


def test_revoke_removes_every_line_of_the_id_and_keeps_comments_other_keys_and_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# team keys\nchat sha256:{'01' * 32}\nops sha256:{'02' * 32} scopes=inference,admin\n"
                    f"chat sha256:{'03' * 32}  # rotated\n")
    path.chmod(0o640)
    assert revoke_key(path, "chat") == 2
    assert path.read_text() == f"# team keys\nops sha256:{'02' * 32} scopes=inference,admin\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert revoke_key(path, "chat") == 0
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
