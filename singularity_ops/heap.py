"""Keeping a long-running process's resident memory near what it uses, on glibc (a no-op elsewhere).

glibc gives each thread that allocates its own malloc arena (up to 8 per core) and keeps freed memory in them
rather than returning it to the system. The exporter runs a dozen threads (collectors, history, executor), so on a
2 GB server that is megabytes of RSS holding nothing. ``limit_arenas`` caps the arenas (as ``MALLOC_ARENA_MAX``
would) and must run before the threads start; ``trim`` hands free pages back (``malloc_trim``), cheap enough to call
every scrape interval (exporter/app.py: every 15 s). bench/scrape.py measures the effect.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_ARENA_MAX = -8  # glibc's mallopt parameter number

_libc: ctypes.CDLL | bool | None = False  # False: not looked up yet; None: not glibc


def _glibc() -> ctypes.CDLL | None:
    global _libc
    if _libc is False:
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
            _libc = libc if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
        except OSError:
            _libc = None
    return _libc  # type: ignore[return-value]


def limit_arenas(count: int = 2) -> bool:
    libc = _glibc()
    return bool(libc is not None and libc.mallopt(M_ARENA_MAX, count))


def trim() -> bool:
    """Return free heap pages to the system; True when glibc released any."""
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0))
