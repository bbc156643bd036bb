"""The building blocks of the config schema: secrets, checked fields and the checks shared by several sections."""

from __future__ import annotations

import os
import re
import typing
from dataclasses import field
from pathlib import Path
from typing import Any

from singularity_ops.cron import check_cron

DEFAULT_HOME = "~/.local/share/singularity-ops"


class Secret:
    """A string that never shows itself in repr(), str() or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def setting(default: Any, *, gt: float | None = None, ge: float | None = None,
            check: typing.Callable[[Any], Any] | None = None) -> Any:
    """A field with bounds and/or a ``check`` that normalises the value or raises ValueError."""
    metadata = {k: v for k, v in (("gt", gt), ("ge", ge), ("check", check)) if v is not None}
    return field(default=default, metadata=metadata)


def setting_table(*, gt: float | None = None, ge: float | None = None,
                  check: typing.Callable[[Any], Any] | None = None,
                  key_check: typing.Callable[[str], str] | None = None) -> Any:
    """A ``{name: value}`` table (empty by default) whose values are checked against the bounds and ``check``, and
    whose names against ``key_check``; each raises ValueError with a message that does not repeat the value."""
    metadata = {k: v for k, v in (("gt", gt), ("ge", ge), ("check", check), ("key_check", key_check))
                if v is not None}
    return field(default_factory=dict, metadata=metadata)


def _at_most(value: float, limit: float) -> float:
    if value > limit:
        raise ValueError(f"must be at most {limit}, got {value}")
    return value


def _listen(value: str) -> str:
    parse_listen(value)
    return value


def _expand(value: Path) -> Path:
    return Path(os.path.expanduser(str(value)))




def _at_least(value: int, limit: int) -> int:
    if value < limit:
        raise ValueError(f"must be at least {limit}, got {value}")
    return value


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:port`` for IPv6) → (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _networks(value: str) -> str:
    """A comma-separated list of IP addresses or networks (CIDR), checked here so a typo stops the start."""
    import ipaddress

    for item in filter(None, (part.strip() for part in value.split(","))):
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
    return value



_GO_DURATION = re.compile(r"^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+$")


def _timezone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Moscow") from None
    return value


def _keep_alive(value: str) -> str:
    text = value.strip()
    if not (_GO_DURATION.match(text) or text.lstrip("-").isdigit()):
        raise ValueError(f"expected a duration such as 30m, 1h30m or -1 (forever), got {value!r}")
    return text


def _cron(value: str) -> str:
    return check_cron(value)
