"""The effective Alertmanager configuration: the repository's template with the Telegram secrets filled in.

Alertmanager 0.25 (Debian's) takes the bot token only inline (``bot_token``; ``bot_token_file`` came in 0.26)
and wants an integer ``chat_id``, so the secret has to be in the file Alertmanager reads. ``render_config``
writes that file itself: created with mode 0600 (never readable by others, not even for a moment), outside
the repository (the caller picks the path, normally under ``SINGULARITY_HOME``), and the token never appears
in an error message, a log line or a repr.

Environment (docs/ALERTS.md#telegram):

| variable | meaning |
|---|---|
| ``TELEGRAM_BOT_TOKEN`` | the bot's token from @BotFather |
| ``TELEGRAM_BOT_TOKEN_FILE`` | a file holding it instead (a Docker/systemd secret); surrounding whitespace is ignored |
| ``TELEGRAM_CHAT_ID`` | the chat to write to: an integer (negative for groups and channels) |
| ``TELEGRAM_API_URL`` | the Bot API, ``https://api.telegram.org`` by default (a stand-in in tests) |

Check the result by hand: ``amtool check-config ~/.local/share/singularity-ops/stack/alertmanager.yml``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from singularity_ops.config import Secret
from singularity_ops.errors import ConfigError

log = logging.getLogger(__name__)

TOKEN = "TELEGRAM_BOT_TOKEN"
TOKEN_FILE = "TELEGRAM_BOT_TOKEN_FILE"
CHAT_ID = "TELEGRAM_CHAT_ID"
API_URL = "TELEGRAM_API_URL"
DEFAULT_API_URL = "https://api.telegram.org"

# The token goes into the Bot API's URL path (/bot<token>/sendMessage): whitespace, control characters or a
# slash there mean a copy-and-paste accident, never a token.
_TOKEN_SHAPE = re.compile(r"[^\s/\x00-\x1f\x7f]+")
_CHAT_ID_SHAPE = re.compile(r"-?[0-9]+")
# No error message repeats a variable's value: a token pasted into the wrong variable must not reach a log.

HEADER = ("# Rendered by singularity-ops from {template}: holds the Telegram bot token; do not edit, do not share.\n"
          "# Render it again after changing the template or the TELEGRAM_* variables.\n")


@dataclass(frozen=True)
class TelegramSettings:
    """What the environment says about the Telegram channel; ``repr`` shows no token."""

    bot_token: Secret
    chat_id: int
    api_url: str


def telegram_settings(environ: Mapping[str, str]) -> TelegramSettings:
    """Read and check the ``TELEGRAM_*`` variables; a ``ConfigError`` names the variable, never its secret."""
    return TelegramSettings(bot_token=_bot_token(environ), chat_id=_chat_id(environ), api_url=_api_url(environ))


def _bot_token(environ: Mapping[str, str]) -> Secret:
    inline, path = environ.get(TOKEN, "").strip(), environ.get(TOKEN_FILE, "").strip()
    if inline and path:
        raise ConfigError(f"both {TOKEN} and {TOKEN_FILE} are set; set only one of them")
    token, source = (_read_token_file(path), TOKEN_FILE) if path else (inline, TOKEN)
    if not token:
        raise ConfigError(f"{TOKEN_FILE} names an empty file: it should hold the bot's token from @BotFather" if path
                          else f"{TOKEN} (or {TOKEN_FILE}) is not set: the Telegram bot's token from @BotFather")
    if not _TOKEN_SHAPE.fullmatch(token):
        raise ConfigError(f"{source} does not hold a bot token (whitespace, a slash or control characters in it); "
                          "copy it again from @BotFather")
    return Secret(token)


def _read_token_file(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else "not text"
        # A value without a slash may be the token itself, set in the wrong variable: then it is not repeated.
        shown = f"={path}" if "/" in path else " (is that the token itself? then set TELEGRAM_BOT_TOKEN)"
        raise ConfigError(f"{TOKEN_FILE}{shown} cannot be read: {reason}") from None


def _chat_id(environ: Mapping[str, str]) -> int:
    value = environ.get(CHAT_ID, "").strip()
    if not value:
        raise ConfigError(f"{CHAT_ID} is not set: the chat to send alerts to, an integer (docs/ALERTS.md#telegram)")
    if not _CHAT_ID_SHAPE.fullmatch(value) or int(value) == 0:
        raise ConfigError(f"{CHAT_ID} must be a non-zero integer (a user id, or -100… for a group or channel); "
                          "a @username does not work in Alertmanager")
    return int(value)


def _api_url(environ: Mapping[str, str]) -> str:
    value = environ.get(API_URL, "").strip() or DEFAULT_API_URL
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise ConfigError(f"{API_URL} must be an http(s) URL such as {DEFAULT_API_URL}")
    return value.rstrip("/")


def default_template() -> Path:
    """``alertmanager/alertmanager.yml`` of the checkout this package runs from.

    A wheel does not carry the repository's ``alertmanager/`` folder: then this raises ``ConfigError``.
    """
    package_root = Path(__file__).resolve().parents[2]
    template = package_root / "alertmanager" / "alertmanager.yml"
    if not template.is_file():
        raise ConfigError(f"no Alertmanager template at {template}: it ships with the repository, not with an "
                          "installed wheel; run from a checkout or pass the template's path")
    return template


def render_config(template_path: Path, out_path: Path, environ: Mapping[str, str]) -> Path:
    """Write the effective Alertmanager config to ``out_path`` (mode 0600) and return that path.

    Every ``telegram_configs`` entry gets the token, chat id and API URL from ``environ``; every ``templates``
    entry becomes an absolute path (relative ones are relative to the template's folder, as in Alertmanager).
    Raises ``ConfigError`` when a variable is missing or wrong, or the template is not a usable config.
    """
    settings = telegram_settings(environ)
    document = _load(template_path)
    receivers = document.get("receivers") or []
    entries = [entry for receiver in receivers for entry in receiver.get("telegram_configs") or []]
    if not entries:
        raise ConfigError(f"{template_path} has no telegram_configs receiver to fill in")
    for entry in entries:
        entry["bot_token"] = settings.bot_token.get_secret_value()
        entry["chat_id"] = settings.chat_id
        entry["api_url"] = settings.api_url
    base = template_path.resolve().parent
    document["templates"] = [str(base / pattern) for pattern in document.get("templates") or []]
    text = HEADER.format(template=template_path.resolve()) + yaml.safe_dump(document, sort_keys=False,
                                                                           allow_unicode=True)
    _write_private(out_path, text)
    log.info("wrote the Alertmanager config for Telegram chat %s to %s", settings.chat_id, out_path)
    return out_path


def _load(template_path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(template_path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read the Alertmanager template {template_path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        reason = " ".join(str(error).split())  # one line
        raise ConfigError(f"the Alertmanager template {template_path} is not YAML: {reason}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"the Alertmanager template {template_path} is not a YAML mapping")
    return document


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` through a temporary file created 0600 beside it, then renamed over it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)  # exactly 0600, whatever the umask
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
