"""A process that looks to psutil like one of Ollama's model runners: its command line and real RSS.

Ollama (llm/server.go ``StartRunner``, 0.12) starts each model as ``<ollama binary> runner
[--ollama-engine] --model <blob> --port <port>``, with the remaining options sent over HTTP; 0.2–0.3
started a separate ``…/runners/cpu_avx2/ollama_llama_server --model <blob> --ctx-size … --port …``.

The stand-in is a Python child that rewrites its own argv memory (as setproctitle does) and its comm,
so ``cmdline()`` and ``name()`` read exactly like the real runner's; only ``exe()`` still shows Python.
It touches ``rss_bytes`` of memory, prints a ready line, and exits on SIGTERM or when its parent dies.
Linux only (it reads ``/proc/self/stat``). This file doubles as the child's script.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

OLLAMA_BINARY = "/usr/local/bin/ollama"
LEGACY_BINARY = "/tmp/ollama/runners/cpu_avx2/ollama_llama_server"
READY = "fake-runner ready"
PAGE = 4096
PR_SET_NAME = 15


def runner_cmdline(
    blob_path: str, port: int, binary: str = OLLAMA_BINARY, ollama_engine: bool = False
) -> list[str]:
    """The runner's argv as Ollama builds it; the legacy binary gets 0.3's flags (from its server logs)."""
    if os.path.basename(binary).startswith("ollama_llama_server"):
        legacy_flags = [
            "--ctx-size",
            "8192",
            "--batch-size",
            "512",
            "--embedding",
            "--log-disable",
            "--parallel",
            "4",
        ]
        return [binary, "--model", blob_path, *legacy_flags, "--port", str(port)]
    engine = ["--ollama-engine"] if ollama_engine else []
    return [binary, "runner", *engine, "--model", blob_path, "--port", str(port)]


def _free_port() -> int:
    """As Ollama picks the runner's port: bind port 0, read it, close."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _argv_bytes(argv: list[str]) -> int:
    return sum(len(arg.encode()) + 1 for arg in argv)


def start_fake_runner(
    blob_path: str,
    rss_bytes: int = 64 * 2**20,
    port: int = 0,
    binary: str = OLLAMA_BINARY,
    ollama_engine: bool = False,
    timeout: float = 10.0,
) -> subprocess.Popen[str]:
    """Start the fake runner and return once its memory is resident; stop it with ``terminate()``."""
    argv = runner_cmdline(blob_path, port or _free_port(), binary, ollama_engine)
    workdir = tempfile.mkdtemp(prefix="fake-ollama-runner-")
    try:
        shutil.copyfile(__file__, os.path.join(workdir, "r"))
        # Python runs ./r; the filler makes the original argv exactly as long as the one the child writes.
        launch = [argv[0], "r"]
        filler = _argv_bytes(argv) - _argv_bytes(launch) - 1
        if filler < 0:
            raise ValueError(f"command line too short to stand in for: {argv}")
        env = dict(os.environ, FAKE_RUNNER_ARGV=json.dumps(argv), FAKE_RUNNER_RSS=str(rss_bytes))
        # argv[0] is not Python, so it cannot find its standard library from there: say where it is.
        env["PYTHONHOME"] = f"{sys.base_prefix}:{sys.base_exec_prefix}"
        process = subprocess.Popen(
            [*launch, "x" * filler],
            executable=sys.executable,
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _await_ready(process, timeout)
        except BaseException:
            stop_fake_runner(process)
            raise
        return process
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _await_ready(process: subprocess.Popen[str], timeout: float) -> None:
    assert process.stdout is not None and process.stderr is not None
    readable, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if readable else ""
    if line.strip() != READY:
        process.kill()
        raise RuntimeError(
            f"fake runner did not become ready in {timeout}s: {line!r} {process.stderr.read()!r}"
        )


def stop_fake_runner(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


@contextlib.contextmanager
def fake_runner(
    blob_path: str,
    rss_bytes: int = 64 * 2**20,
    port: int = 0,
    binary: str = OLLAMA_BINARY,
    ollama_engine: bool = False,
) -> Iterator[subprocess.Popen[str]]:
    """``start_fake_runner`` that terminates the runner on exit."""
    process = start_fake_runner(blob_path, rss_bytes, port, binary, ollama_engine)
    try:
        yield process
    finally:
        stop_fake_runner(process)


# --- the child ------------------------------------------------------------------------------------


def _rewrite_cmdline(argv: list[str]) -> None:
    """Overwrite [arg_start, arg_end) — what /proc/<pid>/cmdline reads — with the wanted argv."""
    with open("/proc/self/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    arg_start, arg_end = int(fields[45]), int(fields[46])  # fields 48 and 49; fields[0] is field 3
    payload = b"\0".join(arg.encode() for arg in argv) + b"\0"
    if len(payload) != arg_end - arg_start:
        raise RuntimeError(f"argv area is {arg_end - arg_start} bytes, wanted {len(payload)}")
    ctypes.memmove(arg_start, payload, len(payload))
    ctypes.CDLL(None).prctl(PR_SET_NAME, os.path.basename(argv[0]).encode()[:15], 0, 0, 0)


def _child_main() -> None:
    argv = json.loads(os.environ["FAKE_RUNNER_ARGV"])
    rss_bytes = int(os.environ["FAKE_RUNNER_RSS"])
    parent = os.getppid()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _rewrite_cmdline(argv)
    memory = bytearray(rss_bytes)
    memory[::PAGE] = b"\1" * len(range(0, rss_bytes, PAGE))  # touch every page so it is resident
    print(READY, flush=True)
    while os.getppid() == parent:
        time.sleep(0.1)


if __name__ == "__main__":
    _child_main()
