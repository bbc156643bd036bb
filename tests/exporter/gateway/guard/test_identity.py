"""Client identity: hashed API keys from a file, and X-Forwarded-For believed only from trusted proxies."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from singularity_ops.errors import ConfigError
from singularity_ops.exporter.gateway.guard.identity import (
    ApiKeys,
    Networks,
    client_address,
    new_key_line,
    parse_networks,
    presented_key,
)


def test_keys_are_stored_as_sha256_and_identify_their_client(tmp_path: Path) -> None:
    key, line = new_key_line("open-webui")
    assert key not in line and hashlib.sha256(key.encode()).hexdigest() in line
    path = tmp_path / "keys"
    path.write_text(f"# id  hash\n\n{line}   # the chat UI\nbatch sha256:{'AB' * 32}\n")
    keys = ApiKeys.load(path)
    assert keys.identify(key) == "open-webui"
    assert keys.identify(key + "x") is None and keys.identify(None) is None and keys.identify("") is None
    assert keys.ids_by_hash["ab" * 32] == "batch"  # hex in either case


def test_a_malformed_keys_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("ok sha256:" + "0" * 64 + "\nplain-text-key-here\n")
    with pytest.raises(ConfigError, match="line 2"):
        ApiKeys.load(path)
    with pytest.raises(ConfigError, match="cannot read"):
        ApiKeys.load(tmp_path / "missing")


def test_a_rewritten_keys_file_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(new_key_line("a")[1] + "\n")
    keys = ApiKeys.load(path)
    assert not keys.changed()
    path.write_text(new_key_line("a")[1] + "\n" + new_key_line("b")[1] + "\n")
    os.utime(path, ns=(keys.stamp[0] + 10**9, keys.stamp[0] + 10**9))
    assert keys.changed()


def test_the_key_comes_as_a_bearer_token_or_x_api_key() -> None:
    assert presented_key({"Authorization": "Bearer sk-1"}) == "sk-1"
    assert presented_key({"Authorization": "bearer  sk-2 "}) == "sk-2"
    assert presented_key({"X-API-Key": "sk-3"}) == "sk-3"
    assert presented_key({"Authorization": "Basic dXNlcjpwYXNz"}) is None
    assert presented_key({}) is None


TRUSTED = Networks(parse_networks("127.0.0.1, 10.0.0.0/8"))


@pytest.mark.parametrize(("peer", "forwarded", "client"), [
    ("203.0.113.5", "198.51.100.1", "203.0.113.5"),  # not a proxy: its header is not believed
    ("127.0.0.1", "198.51.100.1", "198.51.100.1"),
    ("127.0.0.1", "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # the left hop could be made up by the client
    ("127.0.0.1", "198.51.100.1, 10.1.2.3", "198.51.100.1"),  # through two proxies
    ("127.0.0.1", "10.1.2.3, 10.4.5.6", "10.1.2.3"),  # all trusted: the leftmost
    ("127.0.0.1", "not-an-ip", "127.0.0.1"),
    ("127.0.0.1", "198.51.100.1, garbage", "127.0.0.1"),
    ("127.0.0.1", "2001:db8::1", "2001:db8::1"),
    ("::ffff:127.0.0.1", "198.51.100.1", "198.51.100.1"),  # IPv4-mapped
    ("127.0.0.1", None, "127.0.0.1"),
])
def test_x_forwarded_for_is_read_from_the_right_and_only_from_trusted_proxies(peer: str, forwarded: str | None,
                                                                             client: str) -> None:
    assert client_address(peer, forwarded, TRUSTED) == client


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert client_address("127.0.0.1", "198.51.100.1", Networks(())) == "127.0.0.1"
