"""Who a request comes from: an API key's id (keys.py), else the client's address, with X-Forwarded-For believed only
from ``gateway.trusted_proxies``.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping

# Paths a health check or a client's probe reaches without a key: they say only that the gateway is up.
OPEN_PATHS = frozenset({"/", "/api/version"})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def presented_key(headers: Mapping[str, str]) -> str | None:
    authorization = headers.get("Authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return headers.get("X-API-Key") or None


def parse_networks(value: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False)
                 for item in filter(None, (part.strip() for part in value.split(","))))


class Networks:
    """Membership of an address in a list of networks, cached: the same few addresses ask again and again."""

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(networks)
        self.contains = functools.lru_cache(maxsize=4096)(self._contains)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def _contains(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)


def _valid(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def client_address(peer: str | None, forwarded_for: str | None, trusted: Networks) -> str:
    """The peer's address, or, when the peer is a trusted proxy, the nearest untrusted hop of X-Forwarded-For
    read from the right (nginx's ``real_ip_recursive on``): hops left of it could be made up by the client."""
    address = peer or ""
    if not forwarded_for or not trusted or not trusted.contains(address):
        return address
    for hop in reversed(forwarded_for.split(",")):
        hop = hop.strip()
        if not _valid(hop):
            break
        address = hop
        if not trusted.contains(hop):
            break
    return address


def is_loopback(address: str | None) -> bool:
    """127.0.0.0/8, ::1, or either written IPv4-mapped."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def carries_forwarding(headers: Mapping[str, str]) -> bool:
    """The request says it was forwarded for someone else (a reverse proxy's ``X-Forwarded-For`` or RFC 7239's
    ``Forwarded``)."""
    return "X-Forwarded-For" in headers or "Forwarded" in headers
