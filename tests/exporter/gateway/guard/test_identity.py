"""Client identity: the presented key, and X-Forwarded-For believed only from trusted proxies (the keys file:
test_keys.py)."""

from __future__ import annotations

import pytest

from singularity_ops.exporter.gateway.guard.identity import (
    Networks,
    carries_forwarding,
    client_address,
    is_loopback,
    parse_networks,
    presented_key,
)


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


@pytest.mark.parametrize(("address", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("10.0.0.1", False), ("0.0.0.0", False), ("::", False), ("2001:db8::1", False), ("", False), (None, False),
    ("localhost", False),  # a peer is an address, never a name
])
def test_loopback_peers(address: str | None, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_a_request_says_it_was_forwarded_with_either_header() -> None:
    assert carries_forwarding({"X-Forwarded-For": "198.51.100.1"})
    assert carries_forwarding({"Forwarded": "for=198.51.100.1;proto=https"})
    assert not carries_forwarding({"X-Real-Host": "x", "Authorization": "Bearer k"})
