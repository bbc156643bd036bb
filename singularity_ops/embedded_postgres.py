"""The embedded PostgreSQL (the ``pgserver`` wheel) under ``SINGULARITY_HOME/postgres``: started so that nothing a
killed process left behind blocks the start, and kept running by the long-lived commands (`run`, `exporter`).

What a process killed with -9 (or a machine that lost power) leaves, and what the start does with it:

* ``postmaster.pid`` naming a dead process, a zombie, or a live process that is not this data directory's
  postmaster (pids are reused, in containers almost at once), or cut short: PostgreSQL refuses to start while the
  pid in it is alive, and pgserver cannot read a short file. Such a file is removed; so are the socket lock files
  (``.s.PGSQL.*.lock``) in the same state. A file naming a live postmaster of this directory is kept, and that
  server used. Removing the file gives up none of PostgreSQL's own protection: it still refuses to start while
  children of the old postmaster hold its shared memory (they exit within moments of its death).
* pgserver's ``.handle_pids.json``, the pids of processes using the server: the last one to exit stops the server,
  so a dead pid left in it keeps the server running forever, and a file cut short fails every start. Dead pids are
  dropped, an unreadable file is reset.

The supervisor checks every ``check_seconds`` that the postmaster lives and, when not, starts it again, waiting 1,
2, 4 … up to 60 s between failed attempts. Each restart is logged and counted::

    singularity_database_restarts_total 1.0

Check by hand: ``head -1 ~/.local/share/singularity-ops/postgres/postmaster.pid`` names a running ``postgres``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from singularity_ops.errors import DatabaseError

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "singularity_ops"
BACKOFF_SECONDS = (1.0, 60.0)  # first wait after a failed start, and the most
# pgserver's lock is an fcntl lock: it keeps other processes out, not other threads of this one (the supervisor,
# the exporter's database handle, the controllers of `run`), so they take this one first.
_STARTING = threading.Lock()


def _pgserver() -> Any:
    try:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset (services, CI)
            warnings.simplefilter("ignore")
            import pgserver
            import pgserver.postgres_server
    except ImportError:  # pragma: no cover - pgserver is a hard dependency
        raise DatabaseError(
            "the embedded PostgreSQL needs the 'pgserver' package; install it or set SINGULARITY_DATABASE_URL"
        ) from None
    return pgserver


def pgdata_of(home: Path) -> Path:
    return (home / "postgres").expanduser().resolve()


def _lock_file_pid(path: Path) -> tuple[bool, int | None]:
    """Whether a lock file is there, and the pid on its first line (None when that is not a pid)."""
    try:
        first = path.read_text(errors="replace").partition("\n")[0].strip()
    except FileNotFoundError:
        return False, None
    return True, int(first) if first.isdigit() else None


def is_postmaster_of(pid: int, pgdata: Path) -> bool:
    """Whether ``pid`` is a running (not zombie) PostgreSQL working in ``pgdata`` (a postmaster changes into its
    data directory). A process we may not inspect counts as one: PostgreSQL itself will then decide."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return Path(process.cwd()).resolve() == pgdata
    except (psutil.NoSuchProcess, FileNotFoundError):
        return False
    except psutil.AccessDenied:
        return True


def running_postmaster(pgdata: Path) -> int | None:
    """The pid of this data directory's live postmaster, if there is one."""
    _, pid = _lock_file_pid(pgdata / "postmaster.pid")
    return pid if pid is not None and is_postmaster_of(pid, pgdata) else None


def _socket_dirs(pgdata: Path, runtime: Path) -> list[Path]:
    """Where pgserver may put the server's socket: the data directory, or (when that path is too long for a
    socket) a folder named by a hash of it under its runtime directory (pgserver.utils.find_suitable_socket_dir)."""
    digest = hashlib.sha256(f"{pgdata}-{pgdata.stat().st_ino}".encode()).hexdigest()[:10]
    return [pgdata, runtime / digest]


def clear_stale_files(pgdata: Path, runtime: Path | None = None) -> list[str]:
    """Remove what a dead server or a killed user of it left behind (see the module's docstring); return what was
    done, one phrase each. Call under pgserver's lock."""
    done = []
    lock_files = [pgdata / "postmaster.pid"]
    if runtime is not None:
        for folder in _socket_dirs(pgdata, runtime):
            lock_files += sorted(folder.glob(".s.PGSQL.*.lock")) if folder.is_dir() else []
    for path in lock_files:
        exists, pid = _lock_file_pid(path)
        if not exists or (pid is not None and is_postmaster_of(pid, pgdata)):
            continue
        path.unlink(missing_ok=True)
        done.append(f"removed {path.name} left by pid {pid} (not running this server)" if pid is not None
                    else f"removed unreadable {path.name}")
    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except FileNotFoundError:
        return done
    except ValueError:
        pids = None
    if isinstance(pids, list) and all(isinstance(pid, int) for pid in pids):
        live = [pid for pid in pids if psutil.pid_exists(pid)]
        if live == pids:
            return done
        done.append(f"dropped dead pids {sorted(set(pids) - set(live))} from {handles.name}")
    else:
        live = []
        done.append(f"reset unreadable {handles.name}")
    temporary = handles.with_suffix(".tmp")
    temporary.write_text(json.dumps(live))
    os.replace(temporary, handles)
    return done


def start(home: Path) -> str:
    """Start (or attach to) the embedded PostgreSQL under ``home`` and return a URL to its database."""
    pgserver = _pgserver()
    server_class = pgserver.postgres_server.PostgresServer
    pgdata = pgdata_of(home)
    try:
        pgdata.mkdir(parents=True, exist_ok=True)
        with _STARTING:
            with server_class._lock:  # pgserver's own: no other process starts this server meanwhile
                for what in clear_stale_files(pgdata, server_class.runtime_path):
                    log.warning("embedded PostgreSQL: %s", what)
            server = pgserver.get_server(pgdata, cleanup_mode="stop")
            with server_class._lock:  # one this process started before may have died since
                for what in clear_stale_files(pgdata, server_class.runtime_path):
                    log.warning("embedded PostgreSQL: %s", what)
                server.ensure_postgres_running()
    except Exception as exc:  # pgserver raises plain exceptions (CalledProcessError, AssertionError…)
        raise DatabaseError(
            f"cannot start the embedded PostgreSQL in {pgdata}: {exc or type(exc).__name__}; see {pgdata / 'log'} "
            "or set SINGULARITY_DATABASE_URL to an external server"
        ) from None
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DATABASE,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{EMBEDDED_DATABASE}"')
            log.info("created embedded database %s in %s", EMBEDDED_DATABASE, pgdata)
    return str(server.get_uri(EMBEDDED_DATABASE))


class EmbeddedSupervisor(Collector):
    """Starts the embedded server again whenever it has died; a Prometheus collector of its restarts."""

    def __init__(self, home: Path, *, check_seconds: float = 2.0, backoff: tuple[float, float] = BACKOFF_SECONDS,
                 alive: Callable[[], bool] | None = None, restart: Callable[[], object] | None = None) -> None:
        self.pgdata = pgdata_of(home)
        self.check_seconds = check_seconds
        self.backoff = backoff
        self._alive = alive or (lambda: running_postmaster(self.pgdata) is not None)
        self._restart = restart or (lambda: start(home))
        self.restarts = 0
        self.failures = 0  # failed starts in a row
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> float:
        """Look once, start the server if it is not running; return the seconds to wait before the next look."""
        if self._alive():
            self.failures = 0
            return self.check_seconds
        if self.failures == 0:
            log.warning("the embedded PostgreSQL in %s is not running; starting it again", self.pgdata)
        try:
            self._restart()
        except Exception as exc:  # DatabaseError, or whatever pgserver raised: try again later
            self.failures += 1
            wait = min(self.backoff[1], self.backoff[0] * 2 ** (self.failures - 1))
            log.error("embedded PostgreSQL: start attempt %d failed (%s); next in %g s", self.failures, exc, wait)
            return wait
        self.restarts += 1
        self.failures = 0
        log.warning("the embedded PostgreSQL in %s is running again (restart %d)", self.pgdata, self.restarts)
        return self.check_seconds

    def run(self, wait: Callable[[float], bool] | None = None) -> None:
        """Check until stopped; ``wait(seconds)`` returns True to stop (the stop event's wait by default)."""
        wait = wait or self._stop.wait
        delay = self.check_seconds
        while not wait(delay):
            delay = self.check()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self.run, name="embedded-postgres", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            with contextlib.suppress(RuntimeError):
                self._thread.join(5)

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("singularity_database_restarts",
                                  "Times the embedded PostgreSQL was found dead and started again",
                                  value=self.restarts)
