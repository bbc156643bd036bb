"""An exporter with its gateway in a process of its own, under a low open-file limit it cannot raise, and idle
sockets to flood it with: shared by the flood test and bench/gateway_flood.py."""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port
from tests.helpers import wait_for

# The exporter as `singularity-ops exporter` runs it, less the database (the flood is about sockets).
SCRIPT = """
import asyncio, json, sys
from singularity_ops.config import load_config
from singularity_ops.exporter.app import Exporter, serve
from singularity_ops.logs import setup_logging
setup_logging("info")
config = load_config(flags=json.loads(sys.argv[1]), environ={"OLLAMA_HOST": sys.argv[2]})
asyncio.run(serve(Exporter.build(config, with_database=False, with_gateway=True)))
"""


@dataclass
class Limited:
    gateway: str  # host:port
    metrics: str
    log: Path
    process: subprocess.Popen[bytes]


@contextmanager
def limited_exporter(ollama_host: str, log: Path, file_limit: int = 1024, **flags: Any) -> Iterator[Limited]:
    """The exporter with RLIMIT_NOFILE soft = hard = ``file_limit`` (as under ``ulimit -n``, unraisable)."""
    gateway, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    flags = {"gateway.listen": gateway, "exporter.metrics_listen": metrics, **flags}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", SCRIPT, json.dumps(flags), ollama_host], stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (file_limit, file_limit)))
    try:
        wait_for(lambda: process.poll() is not None or answers(f"http://{gateway}/api/version"), timeout=30,
                 interval=0.1, what="the exporter starting")
        assert process.poll() is None, log.read_text()
        yield Limited(gateway, metrics, log, process)
    finally:
        process.terminate()
        process.wait(15)


def answers(url: str, source: str = "127.0.0.1") -> bool:
    try:
        with httpx.Client(transport=httpx.HTTPTransport(local_address=source)) as client:
            return client.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def raise_own_file_limit(needed: int) -> bool:
    """This process needs ``needed`` descriptors for its idle sockets; False when the hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        return False
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else needed, hard))
    return True


def open_idle(address: str, count: int, source: str = "127.0.0.1") -> list[socket.socket]:
    """``count`` connections that never send a byte. Those the server refuses are closed on its side only."""
    host, port = address.rsplit(":", 1)
    sockets = []
    for _ in range(count):
        sock = socket.create_connection((host, int(port)), timeout=10, source_address=(source, 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sockets.append(sock)
    return sockets


def timed_gets(url: str, rounds: int, source: str) -> list[float]:
    """Seconds per request of a client at ``source`` opening a new connection each time (as a new client does):
    connect, send, read to the end. Plain sockets, so that what is timed is the server, not an HTTP library."""
    host_port, _, path = url.removeprefix("http://").partition("/")
    host, port = host_port.rsplit(":", 1)
    request = f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nConnection: close\r\n\r\n".encode()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        with socket.create_connection((host, int(port)), timeout=30, source_address=(source, 0)) as sock:
            sock.sendall(request)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        times.append(time.perf_counter() - started)
        assert received.startswith(b"HTTP/1.1 200"), received[:200]
    return times
