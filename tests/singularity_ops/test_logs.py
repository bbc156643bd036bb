"""Log lines: one per event, secrets never written."""

import logging

from singularity_ops.logs import OneLineFormatter, redact


def test_passwords_in_urls_and_tokens_are_redacted() -> None:
    line = redact("db postgresql://app:s3cret@db:5432/x "
                  "bot https://api.telegram.org/bot123456:AAHk-abcdefghijklmnopqrstu "
                  "Authorization: Bearer sk-live-999 api_key=abc123&x=1")
    for secret in ("s3cret", "AAHk-abcdefghijklmnopqrstu", "sk-live-999", "abc123"):
        assert secret not in line
    assert "postgresql://app:***@db:5432/x" in line


def test_a_multi_line_message_stays_on_one_line() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "first\nsecond", None, None)
    assert "\n" not in OneLineFormatter().format(record)
