"""Who may do what at the gateway: the admin routes and the key scope they need, the loopback rule, the refusal to
serve beyond loopback without keys, and the warning about forwarded requests from an untrusted (exempt) peer.

Admin routes change what Ollama holds: pulling, pushing, creating, copying and deleting models, and blob uploads
(``ollama create`` sends the weights as blobs). They answer 403 unless the request's key has the ``admin`` scope,
or ``gateway.admin_from_loopback`` is on (the default when the gateway listens on loopback only) and the request
comes from this machine itself: a loopback peer that does not say it forwards for someone else. Exempt addresses
(``guard.exempt_networks``) get no pass: exemption is about limits, not permissions.
"""

from __future__ import annotations

import functools
import logging
import posixpath
import socket
from dataclasses import dataclass

from singularity_ops.config import Config, parse_listen
from singularity_ops.errors import ConfigError
from singularity_ops.exporter.gateway.guard.identity import is_loopback
from singularity_ops.exporter.gateway.guard.keys import ADMIN, INFERENCE, Key

log = logging.getLogger(__name__)

ADMIN_PATHS = frozenset({"/api/pull", "/api/push", "/api/create", "/api/copy", "/api/delete"})
ADMIN_PREFIX = "/api/blobs/"
FORWARDED_WARNING_SECONDS = 600.0


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str  # singularity_gateway_rejected_requests_total{reason} and the operation's error_type
    message: str
    retry_after: int | None = None
    scope: str | None = None  # the key scope that was missing (403 insufficient_scope)

    @property
    def headers(self) -> dict[str, str] | None:
        if self.status == 401:
            return {"WWW-Authenticate": 'Bearer realm="singularity-ops"'}
        if self.scope is not None:  # RFC 6750's error code for a valid key without the right to do this
            return {"WWW-Authenticate": f'Bearer realm="singularity-ops", error="insufficient_scope", '
                                        f'scope="{self.scope}"'}
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None


@functools.lru_cache(maxsize=256)  # the same few paths again and again; a flood of odd ones just misses
def is_admin_route(path: str) -> bool:
    """Compared on the normalised path (``//api/./pull/`` is ``/api/pull``), case-insensitively: a path that Ollama
    might route to an admin handler never slips past as something else."""
    clean = posixpath.normpath("/" + path).lower()
    clean = "/" + clean.lstrip("/")
    return clean in ADMIN_PATHS or clean.startswith(ADMIN_PREFIX) or clean + "/" == ADMIN_PREFIX


def listens_on_loopback(listen: str) -> bool:
    """``host:port`` binds loopback only: a loopback address, ``localhost``, or a name that resolves to loopback
    only. ``0.0.0.0``, ``::``, an empty host and a name that does not resolve count as beyond loopback."""
    host, _ = parse_listen(listen)
    if host == "localhost" or host.endswith(".localhost"):
        return True
    if is_loopback(host):
        return True
    try:
        found = {info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except (OSError, UnicodeError):
        return False
    return bool(found) and all(is_loopback(str(address)) for address in found)


def admin_from_loopback(config: Config) -> bool:
    """``gateway.admin_from_loopback``; unset: on exactly when the gateway listens on loopback only."""
    value = config.gateway.admin_from_loopback
    return listens_on_loopback(config.gateway.listen) if value is None else value


def check_exposure(config: Config) -> None:
    """Refuse to serve beyond loopback without API keys, unless the operator said so."""
    gateway = config.gateway
    if gateway.api_keys_file is None and not gateway.allow_unauthenticated and \
            not listens_on_loopback(gateway.listen):
        raise ConfigError(f"refusing to serve the gateway on {gateway.listen} without API keys: anyone who can reach "
                          f"it could use and delete models; set gateway.api_keys_file (singularity-ops keys add ID), "
                          f"listen on 127.0.0.1, or set gateway.allow_unauthenticated: true")


@dataclass(frozen=True)
class AdminDecision:
    allowed: bool
    reason: str


def decide_admin(path: str, key: Key | None, peer: str | None, forwarded: bool, from_loopback: bool) -> AdminDecision:
    if key is not None and key.admin:
        return AdminDecision(True, f"admin route {path}: key {key.id!r} has scope admin")
    if from_loopback and is_loopback(peer) and not forwarded:
        return AdminDecision(True, f"admin route {path}: from loopback (gateway.admin_from_loopback)")
    why = f"key {key.id!r} lacks scope admin" if key is not None else "no key with scope admin"
    if from_loopback and is_loopback(peer):
        why += " (a forwarded request is not from this machine)"
    return AdminDecision(False, f"admin route {path}: {why}")


def admin_refusal(path: str) -> Refusal:
    return Refusal(403, "insufficient_scope", f"{path} changes the models Ollama holds: it needs an API key with "
                                              f"scope admin (singularity-ops keys add ID --scope admin)", scope=ADMIN)


def inference_refusal(key: Key) -> Refusal:
    return Refusal(403, "insufficient_scope", f"key {key.id!r} has no scope inference (its scopes: "
                                              f"{', '.join(sorted(key.scopes))})", scope=INFERENCE)


class ForwardedWatch:
    """Requests from an exempt address that carry ``X-Forwarded-For`` or ``Forwarded`` while the peer is not a
    trusted proxy: most likely a reverse proxy on this machine, whose clients then all share its exemption. Counted
    (``singularity_untrusted_forwarded_requests_total``) and logged once every ``FORWARDED_WARNING_SECONDS``."""

    def __init__(self, interval: float = FORWARDED_WARNING_SECONDS) -> None:
        self.interval = interval
        self.total = 0
        self._since_warning = 0
        self._warned_at: float | None = None

    def note(self, peer: str, now: float) -> None:
        self.total += 1
        self._since_warning += 1
        if self._warned_at is not None and now - self._warned_at < self.interval:
            return
        log.warning("guard: %d request(s) from %s carried X-Forwarded-For or Forwarded, but %s is not in "
                    "gateway.trusted_proxies and is exempt from limits and bans (guard.exempt_networks): every client "
                    "of a reverse proxy there is unlimited; set gateway.trusted_proxies to the proxy's address "
                    "(docs/ANOMALY_DETECTION.md#behind-a-reverse-proxy)", self._since_warning, peer, peer)
        self._warned_at, self._since_warning = now, 0
