"""HTTP header names a proxy manages itself, and the check on the headers a user adds to every call to Ollama
(``upstream.headers``), made once when the configuration is read."""

from __future__ import annotations

import re

from singularity_ops.config.fields import Secret

# Per hop, or set by whoever sends the body: never copied from one side of the gateway to the other.
HOP_BY_HOP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
    "Transfer-Encoding", "Upgrade", "Host", "Content-Length", "Accept-Encoding"))
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def upstream_header_name(name: str) -> str:
    """An HTTP token, and not a header the gateway sets itself (``Host`` may be set: a virtual host's name)."""
    if not _TOKEN.match(name) or (name.lower() in HOP_BY_HOP and name.lower() != "host"):
        raise ValueError("cannot be set: not a header name, or one the gateway sets itself")
    return name


def one_line(value: Secret) -> Secret:
    """A header value: one line (the error never shows it)."""
    if any(ch in value.get_secret_value() for ch in "\r\n\0"):
        raise ValueError("the value must be one line")
    return value
