"""One line per event, ``key=value`` pairs, secrets redacted before anything is written."""

from __future__ import annotations

import logging
import re
import sys

# Passwords in URLs, bearer/bot tokens and key=value secrets. Applied to the whole formatted line.
_SECRET_PATTERNS = [
    (re.compile(r"(?P<keep>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]*(?=@)", re.I), r"\g<keep>***"),
    (re.compile(r"(?P<keep>\bbot)\d+:[A-Za-z0-9_-]{20,}"), r"\g<keep>***"),
    (re.compile(r"(?P<keep>\b(?:authorization|bearer)[=: ]+(?:bearer )?)\S+", re.I), r"\g<keep>***"),
    (
        re.compile(r"(?P<keep>\b(?:password|passwd|token|api_key|apikey|secret|key)=)[^\s&]+", re.I),
        r"\g<keep>***",
    ),
]


def redact(text: str) -> str:
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class OneLineFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S%z")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        return redact(line.replace("\r", "\\r").replace("\n", "\\n"))


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries that log every request at INFO would drown the events that matter.
    for noisy in ("httpx", "httpcore", "aiohttp.access", "pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
