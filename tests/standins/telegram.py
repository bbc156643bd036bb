"""A stand-in for Telegram's Bot API, which cannot be reached from here: it records what would be sent.

Faithful to https://core.telegram.org/bots/api where Alertmanager's Telegram notifier touches it:
``POST {api_url}/bot<token>/<method>`` with JSON or form parameters; answers ``{"ok": true, "result": ...}``,
errors ``{"ok": false, "error_code": N, "description": "..."}`` (401 "Unauthorized" for a wrong token,
400 "Bad Request: chat not found", 400 "Bad Request: message text is empty"); ``getMe`` and ``sendMessage``
with a Message object as the result.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BOT_ID = 7000000001


@dataclass
class SentMessage:
    chat_id: int
    text: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class TelegramStandIn:
    def __init__(self, token: str = f"{BOT_ID}:AAH-stand-in-token-0123456789abcdef", chat_id: int = 424242) -> None:
        self.token = token
        self.chat_id = chat_id
        self.messages: list[SentMessage] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> TelegramStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def sent(self) -> list[SentMessage]:
        with self._lock:
            return list(self.messages)

    def _answer(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if method == "getMe":
            return 200, {"ok": True, "result": {"id": BOT_ID, "is_bot": True, "first_name": "Singularity Ops",
                                                "username": "singularity_ops_bot"}}
        if method != "sendMessage":
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
        try:
            chat_id = int(params.get("chat_id"))
        except (TypeError, ValueError):
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}
        if chat_id != self.chat_id:
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"}
        if len(text) > 4096:
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message is too long"}
        with self._lock:
            self.messages.append(SentMessage(chat_id, text, params))
            message_id = len(self.messages)
        return 200, {"ok": True, "result": {
            "message_id": message_id, "date": int(time.time()), "text": text,
            "from": {"id": BOT_ID, "is_bot": True, "first_name": "Singularity Ops", "username": "singularity_ops_bot"},
            "chat": {"id": chat_id, "type": "private"}}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _params(self) -> dict[str, Any]:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                kind = self.headers.get("Content-Type", "")
                if kind.startswith("application/json"):
                    value = json.loads(raw or b"{}")
                    return value if isinstance(value, dict) else {}
                query = urllib.parse.urlsplit(self.path).query
                pairs = urllib.parse.parse_qsl(raw.decode() + ("&" + query if query else ""))
                return dict(pairs)

            def _serve(self) -> None:
                path = urllib.parse.urlsplit(self.path).path
                prefix = f"/bot{outer.token}/"
                if not path.startswith(prefix):
                    status, body = 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
                else:
                    status, body = outer._answer(path[len(prefix):], self._params())
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

            def log_message(self, *args: object) -> None:
                pass

        return Handler
