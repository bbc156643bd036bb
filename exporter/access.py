"""Who may read /metrics and the exporter's own routes (/breakers, /): ``metrics.auth``, a bearer token or a user
and password, exactly what a Prometheus scrape config sends with ``authorization`` or ``basic_auth``.
/healthz stays open for liveness probes. Unset, every route is open, and binding beyond loopback says so."""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from singularity_ops.config import parse_listen
from singularity_ops.config.schema import MetricsAuthConfig
from singularity_ops.errors import ConfigError

log = logging.getLogger(__name__)
OPEN_PATHS = frozenset({"/healthz"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(address: str) -> bool:
    host, _ = parse_listen(address)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def check(auth: MetricsAuthConfig) -> None:
    """A half-configured basic auth would lock everyone out or nobody: one line naming the missing key."""
    if (auth.username is None) != (auth.password is None):
        missing = "metrics.auth.password" if auth.password is None else "metrics.auth.username"
        raise ConfigError(f"metrics.auth: basic auth needs both a user and a password; set {missing}")
    if auth.bearer_token is not None and not auth.bearer_token.get_secret_value():
        raise ConfigError("metrics.auth.bearer_token is empty; set a token or remove the key")


def enabled(auth: MetricsAuthConfig) -> bool:
    return auth.bearer_token is not None or auth.username is not None


def _same(given: str, wanted: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), wanted.encode("utf-8", "surrogateescape"))


def authorised(header: str | None, auth: MetricsAuthConfig) -> bool:
    scheme, _, credentials = (header or "").strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and auth.bearer_token is not None:
        return _same(credentials, auth.bearer_token.get_secret_value())
    if scheme.lower() == "basic" and auth.username is not None and auth.password is not None:
        try:
            user, sep, password = base64.b64decode(credentials, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, ValueError):
            return False
        # Both compared whatever the first gives: the time taken says nothing about which one was wrong.
        return bool(sep) & _same(user, auth.username) & _same(password, auth.password.get_secret_value())
    return False


def middleware(auth: MetricsAuthConfig) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    challenge = ", ".join((['Bearer realm="singularity-ops"'] if auth.bearer_token is not None else [])
                          + (['Basic realm="singularity-ops"'] if auth.username is not None else []))

    @web.middleware
    async def require_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS or authorised(request.headers.get("Authorization"), auth):
            return await handler(request)
        return web.json_response({"error": "unauthorized: this exporter needs the credentials in metrics.auth"},
                                 status=401, headers={"WWW-Authenticate": challenge})

    return require_auth


def warn_if_open(auth: MetricsAuthConfig, metrics_listen: str) -> None:
    if not enabled(auth) and not is_loopback(metrics_listen):
        log.warning("/metrics and /breakers on %s are readable by anyone who can reach it: set metrics.auth "
                    "(a bearer token or basic auth, as in Prometheus' scrape config) or listen on loopback",
                    metrics_listen)


def client_header(auth: MetricsAuthConfig) -> dict[str, str]:
    """The header a client of this exporter (``singularity-ops breakers``) sends: the token, else basic auth."""
    if auth.bearer_token is not None:
        return {"Authorization": f"Bearer {auth.bearer_token.get_secret_value()}"}
    if auth.username is not None and auth.password is not None:
        pair = f"{auth.username}:{auth.password.get_secret_value()}".encode()
        return {"Authorization": f"Basic {base64.b64encode(pair).decode()}"}
    return {}
