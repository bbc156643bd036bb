"""Who a request comes from: an API key's id, else the client's address (X-Forwarded-For only from trusted proxies).

Keys file (``gateway.api_keys_file``), one key a line, ``#`` starts a comment::

    # id         sha256 of the key (hex)
    open-webui   sha256:4c2a9c4b0c0d…64 hex digits
    batch-jobs   sha256:9f86d081884c…

Make a key and its line with ``singularity_ops.exporter.gateway.guard.identity.new_key_line("open-webui")``, or by
hand: ``KEY=sk-$(openssl rand -hex 24); printf %s "$KEY" | sha256sum``. Only the hash is stored: keys are long random
tokens, so one SHA-256 is enough (a slow password hash protects guessable passwords and would cost milliseconds
on every request). Clients send the key as ``Authorization: Bearer KEY`` (OpenAI SDKs' ``api_key``, the ollama
clients' ``headers=``) or ``X-API-Key: KEY``.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from singularity_ops.errors import ConfigError

_LINE = re.compile(r"^([A-Za-z0-9_.@:-]{1,64})\s+sha256:([0-9a-fA-F]{64})$")
# Paths a health check or a client's probe reaches without a key: they say only that the gateway is up.
OPEN_PATHS = frozenset({"/", "/api/version"})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key_line(key_id: str) -> tuple[str, str]:
    """A fresh key for ``key_id`` and the line to put in the keys file for it."""
    key = "sk-" + secrets.token_urlsafe(32)
    return key, f"{key_id} sha256:{hash_key(key)}"


@dataclass(frozen=True)
class ApiKeys:
    """Key hashes to key ids, read from the keys file; ``changed()`` tells when the file was rewritten."""

    path: Path
    ids_by_hash: Mapping[str, str]
    stamp: tuple[int, int]

    @classmethod
    def load(cls, path: Path) -> ApiKeys:
        try:
            stat = path.stat()
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read gateway.api_keys_file {path}: {exc.strerror}") from None
        ids: dict[str, str] = {}
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            match = _LINE.match(line)
            if not match:
                raise ConfigError(f"{path} line {number}: expected 'ID sha256:<64 hex digits>' (docs/"
                                  "ANOMALY_DETECTION.md#api-keys)")
            ids[match[2].lower()] = match[1]
        return cls(path, ids, (stat.st_mtime_ns, stat.st_size))

    def changed(self) -> bool:
        try:
            stat = os.stat(self.path)
        except OSError:
            return False  # keep the keys we have; a file being replaced comes back
        return (stat.st_mtime_ns, stat.st_size) != self.stamp

    def identify(self, key: str | None) -> str | None:
        """The key's id, or None for a missing or unknown key."""
        if not key:
            return None
        return self.ids_by_hash.get(hash_key(key))


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
