"""Both HTTP listeners (the gateway's and /metrics') as a hostile network sees them.

aiohttp's ``TCPSite`` (asyncio's ``create_server``) accepts up to a whole backlog of connections before any
protocol sees one, waits an hour for a request line, answers its own parse errors in plain text that echoes the
request bytes (with ``Server: Python/… aiohttp/…``), and logs a traceback for each; on EMFILE asyncio logs a
traceback and stops accepting for a second. Here the listener accepts itself: each connection is counted against
a cap per client address and a total cap, both below the process's file limit, and one over a cap is closed
right after ``accept()``, before asyncio or aiohttp spend anything on it. A client then has
``gateway.header_timeout_seconds`` to send its whole request head, and an idle keep-alive connection lives
``gateway.idle_timeout_seconds``. Parse errors answer ``{"error": ...}`` without echo, server name or traceback.
What is refused, timed out or failed to accept (EMFILE) is counted in metrics and logged once a minute as a sum.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import Any

from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler

from singularity_ops.config import parse_listen
from singularity_ops.errors import SingularityError
from singularity_ops.exporter.connections import RESOURCE_ERRNOS, AcceptErrors, ConnectionBook, client_key

log = logging.getLogger(__name__)
BACKLOG = 1024  # the kernel's queue of connections not yet accepted (capped by net.core.somaxconn)
ACCEPT_BATCH = 256  # accepted per wake-up at most, so that a flood cannot hold the event loop
ACCEPT_RETRY_SECONDS = 0.1  # after EMFILE: the queued connections wait, the loop stays free


class _BareResponse(web.Response):
    """A response without aiohttp's ``Server`` header, for answers given before routing (no on_response_prepare)."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self.headers.popall("Server", None)


def _describe(status: int, exc: BaseException | None) -> tuple[int, str]:
    """A fixed text per kind of parse error: never the parser's message, which quotes the request bytes."""
    if isinstance(exc, http_exceptions.LineTooLong):
        return 431, "request line or a header is too long (8190 bytes at most)"
    if isinstance(exc, http_exceptions.BadHttpMethod | http_exceptions.BadStatusLine):
        return 400, "malformed request line"
    if isinstance(exc, http_exceptions.InvalidURLError):
        return 400, "malformed URL"
    if isinstance(exc, http_exceptions.InvalidHeader):
        return 400, "malformed header"
    if isinstance(exc, http_exceptions.TransferEncodingError | http_exceptions.ContentLengthError):
        return 400, "malformed body framing (Content-Length or Transfer-Encoding)"
    if isinstance(exc, http_exceptions.BadHttpMessage) or 400 <= status < 500:
        return (status if 400 <= status < 500 else 400), "malformed HTTP request"
    if status == 504:
        return 504, "timed out"
    return 500, "internal error; the exporter's log has the details"


class GuardedHandler(RequestHandler):
    """aiohttp's connection handler, with the header timeout, JSON parse errors, and its place under the caps
    (taken by the listener at accept) given back when the connection ends.

    The header timer uses three fields aiohttp keeps per connection (``_waiter``: set while waiting for a request,
    ``_messages``: parsed requests not yet handled, ``_request_count``: requests parsed so far); the listener
    tests catch an aiohttp release that changes them."""

    def __init__(self, manager: Any, book: ConnectionBook, client: str, **options: Any) -> None:
        super().__init__(manager, **options)
        self._book = book
        self._client: str | None = client  # admitted by the listener; released once, when the connection ends
        self._head_since: float | None = None  # when the request head now awaited started (None: not awaited)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._await_head()

    def data_received(self, data: bytes) -> None:
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:
            self._head_since = None  # a whole head arrived
        elif data and self._head_since is None and self._idle():
            self._await_head()  # the first byte of a request after an idle keep-alive

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self.release()
        super().connection_lost(exc)

    def release(self) -> None:
        """The connection no longer counts against the caps (once, however often called)."""
        if self._client is not None:
            self._book.release(self._client)
            self._client = None

    def _idle(self) -> bool:
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._messages

    def _await_head(self) -> None:
        self._head_since = self._loop.time()
        if self._head_timer is None:
            self._head_timer = self._loop.call_at(self._head_since + self._book.limits.header_timeout_seconds,
                                                  self._head_deadline)

    def _head_deadline(self) -> None:
        self._head_timer = None
        if self._head_since is None or self.transport is None:
            return
        deadline = self._head_since + self._book.limits.header_timeout_seconds
        if self._loop.time() < deadline:  # a later head than the one the timer was set for
            self._head_timer = self._loop.call_at(deadline, self._head_deadline)
        elif self._idle() or self._request_count == 0:
            self._book.header_timeouts += 1
            self.force_close()

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status == 500:  # a handler raised: a bug, whose traceback is wanted
            self.log_exception("error handling a request from %s", request.remote, exc_info=exc)
        else:
            self._book.bad_requests += 1
            log.debug("bad request from %s: %s", request.remote, type(exc).__name__ if exc else status)
        if request.writer.output_size > 0:
            raise ConnectionError("the response had started; it cannot become an error response")
        status, text = _describe(status, exc)
        response = _BareResponse(status=status, text=json.dumps({"error": text}), content_type="application/json")
        response.force_close()
        return response


class Listener:
    """One listening address serving an aiohttp app through GuardedHandler, accepting connections itself."""

    def __init__(self, app: web.Application, book: ConnectionBook, accept_errors: AcceptErrors,
                 **options: Any) -> None:
        self.app = app
        self.book = book
        self.accept_errors = accept_errors
        self.options = options
        self.runner: web.AppRunner | None = None
        self.sockets: list[socket.socket] = []
        self._handovers: set[asyncio.Task[Any]] = set()
        self._retry: asyncio.TimerHandle | None = None

    async def start(self, address: str, flag: str) -> None:
        handler_cancellation = bool(self.options.pop("handler_cancellation", False))
        self.runner = web.AppRunner(self.app, access_log=None, handler_cancellation=handler_cancellation)
        await self.runner.setup()
        self._loop = asyncio.get_running_loop()
        # logger: what aiohttp logs for a connection (a handler's bug) is ours, under singularity_ops.*
        self._options = {"loop": self._loop, "keepalive_timeout": self.book.limits.idle_timeout_seconds,
                         "access_log": None, "logger": log, **self.options}
        try:
            self.sockets = _bind(*parse_listen(address))
        except OSError as exc:
            await self.close()
            raise SingularityError(f"cannot listen on {address}: {exc.strerror or exc}; is another exporter "
                                   f"running there? choose another address with {flag}") from None
        self._resume()

    def _resume(self) -> None:
        self._retry = None
        for sock in self.sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, listening: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, peer = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno not in RESOURCE_ERRNOS:  # that connection failed (aborted, a network error): next
                    log.debug("accept failed: %s", exc)
                    continue
                self.accept_errors.note(exc)  # EMFILE and kin: pause, count, log a sum now and then
                for sock in self.sockets:
                    self._loop.remove_reader(sock.fileno())
                self._retry = self._loop.call_later(ACCEPT_RETRY_SECONDS, self._resume)
                return
            client = client_key(peer)
            if not self.book.admit(client):
                conn.close()  # over a cap: the descriptor is free again before the next accept
                continue
            conn.setblocking(False)
            task = self._loop.create_task(self._hand_over(conn, client))
            self._handovers.add(task)
            task.add_done_callback(self._handovers.discard)

    async def _hand_over(self, conn: socket.socket, client: str) -> None:
        assert self.runner is not None and self.runner.server is not None
        handler = GuardedHandler(self.runner.server, self.book, client, **self._options)
        try:
            await self._loop.connect_accepted_socket(lambda: handler, conn)
        except Exception as exc:  # the client left before its transport existed, say
            log.debug("connection from %s lost while being set up: %s", client, exc)
            handler.release()
            conn.close()

    async def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
            sock.close()
        self.sockets = []
        if self.runner is not None:
            await self.runner.cleanup()
        self.book.refusals.close()


def _bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address ``host`` resolves to, as asyncio's create_server makes them."""
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                                  flags=socket.AI_PASSIVE):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def drop_server_header(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: no ``Server: Python/… aiohttp/…`` (Go's net/http, which Ollama uses, sends none)."""
    response.headers.popall("Server", None)


async def expect(request: web.Request) -> web.StreamResponse | None:
    """``Expect`` as Go's net/http treats it: ``100-continue`` is answered; any other expectation is a 417 that,
    unlike aiohttp's, does not echo the header (nor fail on one that is not UTF-8)."""
    if request.headers.get("Expect", "").strip().lower() == "100-continue":
        if request.version >= (1, 1):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # as aiohttp does: the response proper has not started
        return None
    refusal = web.json_response({"error": "unsupported Expect header; only 100-continue is"}, status=417)
    refusal.force_close()  # the body it announced is never read
    return refusal
