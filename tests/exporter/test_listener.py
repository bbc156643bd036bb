"""Both listeners (the gateway and /metrics) against clients that do not play fair: parse errors answered in JSON
without echo or server name, a deadline for the request head, idle keep-alives closed, caps on connections per
address and in total enforced at accept, and refusals summed in one log line instead of one per connection."""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from singularity_ops.config import load_config
from singularity_ops.exporter.app import Exporter
from singularity_ops.exporter.connections import AcceptErrors, Tally, client_key, fit_to_file_limit
from tests.conftest import DEFAULT_MODELS, free_port
from tests.helpers import FakeClock, Running, series, wait_for
from tests.standins.models import REAL_MODELS
from tests.standins.ollama import OllamaStandIn


class Served(Running):
    def address(self, listener: str) -> tuple[str, int]:
        config = self.exporter.config
        host, port = (config.gateway.listen if listener == "gateway" else config.exporter.metrics_listen).split(":")
        return host, int(port)

    def value(self, name: str, labels: str) -> float:
        return series(self.scrape(), name).get(labels, 0.0)

    def quiet(self, listener: str = "gateway") -> None:
        """Until the listener counts no connection from 127.0.0.1 open (those of start-up checks have ended). Asked
        from 127.0.0.3, whose own connection to /metrics counts against another address's cap."""
        own = 1 if listener == "metrics" else 0
        metrics = f"http://{self.exporter.config.exporter.metrics_listen}/metrics"

        def open_now() -> float:
            with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.3")) as client:
                text = client.get(metrics).text
            return series(text, "singularity_http_connections")[f'{{listener="{listener}"}}']

        wait_for(lambda: open_now() == own, what=f"no connection from 127.0.0.1 open on the {listener} listener")


@pytest.fixture
def serve(clean_env) -> Iterator[Callable[..., Served]]:
    with ExitStack() as stack:
        ollama = stack.enter_context(OllamaStandIn(models=[REAL_MODELS[name] for name in DEFAULT_MODELS]))

        def start(**flags: Any) -> Served:
            config = load_config(flags={"gateway.listen": f"127.0.0.1:{free_port()}",
                                        "exporter.metrics_listen": f"127.0.0.1:{free_port()}", **flags},
                                 environ={"OLLAMA_HOST": ollama.host})
            served = stack.enter_context(Served(Exporter.build(config, with_database=False, with_gateway=True)))
            wait_for(lambda: answers(served.address("gateway")), what="the gateway answering")
            return served

        yield start


def answers(address: tuple[str, int], source: str = "127.0.0.1") -> bool:
    try:
        with httpx.Client(transport=httpx.HTTPTransport(local_address=source)) as client:
            return client.get(f"http://{address[0]}:{address[1]}/api/version", timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def connect(address: tuple[str, int], source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(address, timeout=5, source_address=(source, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # close: no TIME_WAIT
    return sock


def closed_by_server(sock: socket.socket, within: float = 5.0) -> bool:
    """True when the server closes ``sock`` (EOF or reset) within ``within`` seconds without answering."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def raw_exchange(address: tuple[str, int], raw: bytes) -> bytes:
    with connect(address) as sock:
        sock.sendall(raw)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


@pytest.mark.parametrize("listener", ["gateway", "metrics"])
@pytest.mark.parametrize(("raw", "status", "message"), [
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"<script>" * 1200 + b"\r\n\r\n", 431, "too long"),
    (b"GARBAGE<script> / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "malformed request line"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03<script>\r\n\r\n", 400, "malformed request line"),  # TLS hello
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nExpect: <script>\r\n\r\n", 417, "unsupported Expect"),
], ids=["9kB-header", "bad-request-line", "tls-hello", "bad-expect"])
def test_a_parse_error_is_json_without_echo_or_server_name(serve, caplog, listener: str, raw: bytes, status: int,
                                                           message: str) -> None:
    served = serve()
    reply = raw_exchange(served.address(listener), raw)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == str(status).encode()
    assert message in body.decode()
    assert b"<script>" not in reply  # nothing of the request comes back
    assert b"server:" not in head.lower() and b"aiohttp" not in reply and b"Python" not in reply
    assert b"application/json" in head
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


def test_no_answer_of_either_listener_names_the_server(serve) -> None:
    served = serve()
    gateway, metrics = (f"http://{h}:{p}" for h, p in (served.address("gateway"), served.address("metrics")))
    replies = [httpx.get(gateway + "/api/tags"), httpx.post(gateway + "/api/generate", content=b"{"),
               httpx.get(metrics + "/metrics"), httpx.get(metrics + "/healthz"), httpx.get(metrics + "/nope"),
               httpx.post(metrics + "/metrics")]
    assert [r.status_code for r in replies] == [200, 400, 200, 200, 404, 405]
    assert not [r.headers["server"] for r in replies if "server" in r.headers]


@pytest.mark.parametrize("listener", ["gateway", "metrics"])
def test_a_client_that_sends_no_request_head_in_time_is_closed(serve, listener: str) -> None:
    served = serve(**{"gateway.header_timeout_seconds": 0.3})
    address = served.address(listener)
    with connect(address) as silent, connect(address) as slowloris:
        slowloris.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        started = time.monotonic()
        assert closed_by_server(silent) and closed_by_server(slowloris)
        assert time.monotonic() - started < 3
    assert served.value("singularity_http_header_timeouts_total", f'{{listener="{listener}"}}') == 2


def test_a_slow_body_after_a_prompt_head_is_not_cut_off(serve) -> None:
    served = serve(**{"gateway.header_timeout_seconds": 0.3})
    body = b'{"model": "llama3.2:3b", "prompt": "hi", "stream": false}'
    with connect(served.address("gateway")) as sock:
        sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
                     % len(body))
        for start in range(0, len(body), 12):  # the body takes ~1 s, over three header timeouts
            time.sleep(0.2)
            sock.sendall(body[start:start + 12])
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")


def test_an_idle_keep_alive_lives_its_idle_timeout_then_is_closed(serve) -> None:
    served = serve(**{"gateway.header_timeout_seconds": 0.2, "gateway.idle_timeout_seconds": 1.0})
    request = b"GET /api/version HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(served.address("gateway")) as sock:
        sock.sendall(request)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        time.sleep(0.5)  # idle past the header timeout, within the idle timeout: the connection is still good
        sock.sendall(request)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert closed_by_server(sock)
        assert 0.5 < time.monotonic() - started < 3


def test_connections_over_the_per_client_cap_are_closed_at_accept_and_others_still_served(serve, caplog) -> None:
    caplog.set_level(logging.INFO)
    served = serve(**{"gateway.max_connections_per_client": 4})
    address = served.address("gateway")
    served.quiet()
    with ExitStack() as held:
        idle = [held.enter_context(connect(address)) for _ in range(4)]
        refused = [held.enter_context(connect(address)) for _ in range(40)]
        assert all(closed_by_server(sock) for sock in refused)
        assert not closed_by_server(idle[0], within=0.2)
        assert answers(address, source="127.0.0.2")  # another address is served
        assert not answers(address)  # this one is at its cap
    assert served.value("singularity_http_connections_refused_total", '{listener="gateway",reason="per_client"}') >= 40
    wait_for(lambda: answers(address), what="the client served again once its connections closed")
    lines = [r.getMessage() for r in caplog.records if "closed connections at accept" in r.getMessage()]
    assert len(lines) == 1 and "from 127.0.0.1 (over 4 per client)" in lines[0]


def test_the_total_cap_holds_across_addresses_and_trusted_proxies_count_in_it_only(serve) -> None:
    served = serve(**{"gateway.max_connections": 6, "gateway.max_connections_per_client": 2,
                      "gateway.trusted_proxies": "127.0.0.3"})
    address = served.address("gateway")
    served.quiet()
    with ExitStack() as held:
        for source in ("127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.3", "127.0.0.3"):
            sock = held.enter_context(connect(address, source))
            assert not closed_by_server(sock, within=0.2), source  # the proxy's third is not over a per-client cap
        assert closed_by_server(held.enter_context(connect(address, "127.0.0.4")))
    assert served.value("singularity_http_connections_refused_total", '{listener="gateway",reason="total"}') == 1
    assert served.value("singularity_http_connections_limit", '{listener="gateway",scope="total"}') == 6


def test_the_metrics_listener_has_its_own_caps(serve) -> None:
    served = serve()
    metrics = served.address("metrics")
    served.quiet("metrics")
    with ExitStack() as held:
        for _ in range(16):
            held.enter_context(connect(metrics))
        assert closed_by_server(held.enter_context(connect(metrics)))
        assert answers(served.address("gateway"))
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as other:
            assert other.get(f"http://{metrics[0]}:{metrics[1]}/healthz").status_code == 200


def test_caps_fit_within_the_file_limit() -> None:
    assert fit_to_file_limit(1024, 4096, 256) == (416, 208)  # (1024 - 128 reserved - 64 metrics) / 2, half each
    assert fit_to_file_limit(1_048_576, 4096, 256) == (4096, 256)
    assert fit_to_file_limit(64, 4096, 256) == (2, 1)


def test_a_cap_counts_an_ipv6_client_by_its_64() -> None:
    assert client_key(("2001:db8::1", 5, 0, 0)) == client_key(("2001:db8::ffff", 6, 0, 0)) == "2001:db8::/64"
    assert client_key(("::ffff:192.0.2.7", 5, 0, 0)) == "192.0.2.7"
    assert client_key(("192.0.2.7", 5)) == "192.0.2.7"


def test_a_tally_logs_the_first_event_then_one_sum_per_interval(caplog) -> None:
    clock = FakeClock()
    lines: list[str] = []

    def describe(pending: Counter[str], since: float) -> str:
        lines.append(f"{sum(pending.values())} in {since:.0f} s")
        return lines[-1]

    tally = Tally(describe, interval=60, clock=clock)
    for _ in range(1000):
        tally.add("x")
    clock.advance(61)
    tally.add("x")
    tally.close()
    assert lines == ["1 in 0 s", "1000 in 61 s"]


def test_accept_errors_are_counted_and_logged_once_without_a_traceback(caplog) -> None:
    passed_on: list[dict] = []
    errors = AcceptErrors(file_limit=1024, clock=FakeClock())
    errors._previous = lambda loop, context: passed_on.append(context)
    emfile = OSError(24, "Too many open files")
    for _ in range(3000):
        errors._handle(None, {"message": "socket.accept() out of system resource", "exception": emfile})  # type: ignore[arg-type]
    errors._handle(None, {"message": "something else"})  # type: ignore[arg-type]
    errors.tally.close()
    assert errors.count == 3000
    assert passed_on == [{"message": "something else"}]
    lines = [r for r in caplog.records if "accepting connections failed" in r.getMessage()]
    assert [r.getMessage().split(": ", 1)[1][:14] for r in lines] == ["1 × EMFILE (op", "2999 × EMFILE "]
    assert not [r for r in caplog.records if r.exc_info]


def test_the_soft_file_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    code = ("import resource; from singularity_ops.exporter.connections import raise_file_limit; "
            "print(raise_file_limit(), *resource.getrlimit(resource.RLIMIT_NOFILE))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)))
    limit, new_soft, new_hard = map(int, result.stdout.split())
    expected = hard if hard != resource.RLIM_INFINITY else 1 << 20
    assert limit == new_soft == expected and new_hard == hard
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)


def test_running_out_of_descriptors_at_accept_pauses_briefly_and_is_counted_not_logged_each_time(caplog) -> None:
    from aiohttp import web

    from singularity_ops.exporter.connections import ConnectionBook, Limits
    from singularity_ops.exporter.listener import ACCEPT_RETRY_SECONDS, Listener

    class Exhausted:
        def accept(self) -> tuple:
            raise OSError(24, "Too many open files")

    async def scenario() -> tuple[int, bool]:
        async def ok(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/", ok)
        errors = AcceptErrors(file_limit=1024)
        listener = Listener(app, ConnectionBook(Limits("gateway", 8, 4, 5.0, 5.0)), errors)
        port = free_port()
        await listener.start(f"127.0.0.1:{port}", "--gateway-listen")
        try:
            for _ in range(500):
                listener._accept(Exhausted())  # type: ignore[arg-type]
            loop = asyncio.get_running_loop()
            started = loop.time()
            while loop.time() - started < ACCEPT_RETRY_SECONDS * 20:  # accepting again soon after
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                served = (await reader.read()).endswith(b"ok")
                writer.close()
                if served:
                    return errors.count, True
            return errors.count, False
        finally:
            await listener.close()
            errors.tally.close()

    count, served = asyncio.run(scenario())
    assert count == 500 and served
    lines = [r for r in caplog.records if "accepting connections failed" in r.getMessage()]
    assert 1 <= len(lines) <= 2 and not [r for r in caplog.records if r.exc_info]
