"""The model runner processes Ollama starts, found with psutil, and their real resident memory.

Ollama runs each loaded model in a child process whose command line names the weights blob:
``ollama runner [--ollama-engine] --model /…/blobs/sha256-<hex> … --port N`` (0.2–0.3 used a separate
``ollama_llama_server --model …`` binary). RSS is what the kernel says the runner holds, mapped weights
included, not Ollama's estimate.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import psutil

RUNNER_BINARIES = ("ollama", "ollama.exe")
LEGACY_RUNNER_PREFIX = "ollama_llama_server"


def runner_blob(cmdline: list[str]) -> str | None:
    """The ``--model`` argument of an Ollama runner command line, else None."""
    if not cmdline:
        return None
    binary = os.path.basename(cmdline[0])
    if not (binary.startswith(LEGACY_RUNNER_PREFIX) or (binary in RUNNER_BINARIES and "runner" in cmdline[1:3])):
        return None
    for index, arg in enumerate(cmdline):
        if arg == "--model" and index + 1 < len(cmdline):
            return cmdline[index + 1]
        if arg.startswith("--model="):
            return arg.split("=", 1)[1]
    return None


def blob_key(path: str) -> str:
    """Blobs are matched by file name (``sha256-<hex>``) so a different mount point elsewhere still maps."""
    return os.path.basename(path.replace("\\", "/"))


def find_runner_rss(processes: Iterable[psutil.Process] | None = None) -> dict[str, int]:
    """Blob file name → summed RSS bytes of the runners serving it."""
    result: dict[str, int] = {}
    if processes is None:
        processes = psutil.process_iter(["cmdline", "memory_info"])
    for process in processes:
        info = getattr(process, "info", None) or {}
        try:
            cmdline = info.get("cmdline") if "cmdline" in info else process.cmdline()
            blob = runner_blob(cmdline or [])
            if blob is None:
                continue
            memory = info.get("memory_info") or process.memory_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if memory is None:
            continue
        key = blob_key(blob)
        result[key] = result.get(key, 0) + memory.rss
    return result
