"""The embedded PostgreSQL: what a killed process leaves behind never blocks the next start, and the long-running
commands start the server again when it dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from singularity_ops.embedded_postgres import EmbeddedSupervisor, clear_stale_files, pgdata_of, running_postmaster
from tests.conftest import free_port
from tests.helpers import series, wait_for

CLI = [sys.executable, "-m", "singularity_ops.cli"]
# A process that starts the embedded server, prints its URL and holds it until killed.
HOLD = ("import sys; from pathlib import Path; from singularity_ops.store import start_embedded; "
        "print(start_embedded(Path(sys.argv[1])), flush=True); sys.stdin.read()")


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A live process that is not PostgreSQL: what a reused pid points at."""
    process = subprocess.Popen(["sleep", "60"], cwd=tmp_path)
    yield process
    process.kill()
    process.wait()


def lock_file(pid: int | str, pgdata: Path) -> str:
    return f"{pid}\n{pgdata}\n1700000000\n5432\n{pgdata}\n\n  5432001         0\nready   \n"


def environment(**variables: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SINGULARITY_", "OLLAMA_"))}
    return {**base, **variables}


# --- what a killed process leaves behind (no server needed) ------------------------------------------------------

@pytest.fixture
def pgdata(tmp_path: Path) -> Path:
    folder = (tmp_path / "postgres").resolve()
    folder.mkdir()
    return folder


def test_a_postmaster_pid_naming_a_dead_process_is_removed(pgdata: Path) -> None:
    pid = dead_pid()
    (pgdata / "postmaster.pid").write_text(lock_file(pid, pgdata))
    assert clear_stale_files(pgdata) == [f"removed postmaster.pid left by pid {pid} (not running this server)"]
    assert not (pgdata / "postmaster.pid").exists()


def test_a_postmaster_pid_whose_pid_was_reused_by_another_program_is_removed(
        pgdata: Path, sleeper: subprocess.Popen[bytes]) -> None:
    (pgdata / "postmaster.pid").write_text(lock_file(sleeper.pid, pgdata))
    (pgdata / ".s.PGSQL.5432.lock").write_text(lock_file(sleeper.pid, pgdata))
    assert len(clear_stale_files(pgdata, runtime=pgdata.parent / "runtime")) == 2
    assert not (pgdata / "postmaster.pid").exists()
    assert not (pgdata / ".s.PGSQL.5432.lock").exists()


def test_a_postmaster_pid_cut_short_is_removed(pgdata: Path) -> None:
    (pgdata / "postmaster.pid").write_text("")
    assert clear_stale_files(pgdata) == ["removed unreadable postmaster.pid"]


def test_the_postmaster_pid_of_a_live_server_of_this_directory_is_kept(pgdata: Path) -> None:
    server = subprocess.Popen(["sleep", "60"], cwd=pgdata)  # works in the data directory, as a postmaster does
    try:
        (pgdata / "postmaster.pid").write_text(lock_file(server.pid, pgdata))
        assert clear_stale_files(pgdata) == []
        assert running_postmaster(pgdata) == server.pid
    finally:
        server.kill()
        server.wait()
    assert running_postmaster(pgdata) is None


def test_dead_users_are_dropped_from_the_handle_file_and_an_unreadable_one_is_reset(pgdata: Path) -> None:
    pid = dead_pid()
    handles = pgdata / ".handle_pids.json"
    handles.write_text(json.dumps([os.getpid(), pid]))
    assert clear_stale_files(pgdata) == [f"dropped dead pids [{pid}] from .handle_pids.json"]
    assert json.loads(handles.read_text()) == [os.getpid()]
    handles.write_text("[12")  # killed in the middle of pgserver's write
    assert clear_stale_files(pgdata) == ["reset unreadable .handle_pids.json"]
    assert json.loads(handles.read_text()) == []


# --- the supervisor's decisions -----------------------------------------------------------------------------------

class Script:
    """``wait`` for the supervisor's loop: records each delay and stops after ``rounds``."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> bool:
        self.delays.append(seconds)
        return len(self.delays) > self.rounds


def test_a_dead_server_is_started_again_with_growing_waits_between_failed_attempts(tmp_path: Path) -> None:
    outcomes = iter([RuntimeError("shared memory still in use")] * 3 + [None])
    started = []

    def restart() -> None:
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome
        started.append(True)

    supervisor = EmbeddedSupervisor(tmp_path, check_seconds=2.0, alive=lambda: bool(started), restart=restart)
    script = Script(rounds=6)
    supervisor.run(wait=script)

    assert script.delays == [2.0, 1.0, 2.0, 4.0, 2.0, 2.0, 2.0]  # check, back off 1-2-4 s, then checks again
    assert supervisor.restarts == 1
    assert supervisor.failures == 0


def test_the_wait_between_failed_attempts_stops_growing_at_its_limit(tmp_path: Path) -> None:
    def fail() -> None:
        raise RuntimeError("no")

    supervisor = EmbeddedSupervisor(tmp_path, backoff=(1.0, 5.0), alive=lambda: False, restart=fail)
    script = Script(rounds=6)
    supervisor.run(wait=script)
    assert script.delays[1:] == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert supervisor.restarts == 0


# --- a real server ------------------------------------------------------------------------------------------------

def postmaster(home: Path) -> psutil.Process:
    return psutil.Process(int((pgdata_of(home) / "postmaster.pid").read_text().split()[0]))


def kill_server(home: Path) -> int:
    """kill -9 the postmaster (as the OOM killer would) and wait until its children are gone too."""
    process = postmaster(home)
    children = process.children()
    process.send_signal(signal.SIGKILL)
    psutil.wait_procs([process, *children], timeout=30)
    return process.pid


@pytest.mark.slow
@pytest.mark.parametrize("left", ["as killed", "pid reused", "files cut short"])
def test_what_a_killed_server_and_its_user_left_never_blocks_the_next_start(
        left: str, tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    home = tmp_path / "home"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(home)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              env=environment())
    assert holder.stdout is not None and holder.stdout.readline()  # started
    pgdata = pgdata_of(home)
    killed = kill_server(home)
    holder.kill()  # the whole box went down: the server's user too, so pgserver's handle file names a dead pid
    holder.wait()
    if left == "pid reused":
        (pgdata / "postmaster.pid").write_text((pgdata / "postmaster.pid").read_text().replace(
            str(killed), str(sleeper.pid), 1))
    elif left == "files cut short":
        (pgdata / "postmaster.pid").write_text(f"{killed}\n{pgdata}\n")
        (pgdata / ".handle_pids.json").write_text("[")

    result = subprocess.run([*CLI, "migrate"], env=environment(SINGULARITY_HOME=str(home)), capture_output=True,
                            text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert running_postmaster(pgdata) is None  # migrate was the server's last user: it stopped it on exit
    assert json.loads((pgdata / ".handle_pids.json").read_text()) == []


@pytest.mark.slow
def test_the_exporter_starts_a_killed_embedded_server_again_and_counts_it(ollama, tmp_path: Path) -> None:
    home, port = tmp_path / "home", free_port()
    exporter = subprocess.Popen([*CLI, "exporter", "--metrics-listen", f"127.0.0.1:{port}",
                                 "--gateway-listen", f"127.0.0.1:{free_port()}"],
                                env=environment(OLLAMA_HOST=ollama.host, SINGULARITY_HOME=str(home)),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def restarts() -> float | None:
        assert exporter.poll() is None, "the exporter exited"
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except httpx.HTTPError:
            return None
        return series(text, "singularity_database_restarts_total").get("")

    try:
        wait_for(lambda: restarts() is not None, timeout=120, what="the exporter serving")
        assert restarts() == 0.0
        url = f"postgresql://postgres:@/singularity_ops?host={pgdata_of(home)}"
        killed = kill_server(home)

        wait_for(lambda: restarts() == 1.0, timeout=90, what="the embedded server started again")

        assert postmaster(home).pid != killed
        with psycopg.connect(url) as conn:  # the same URL as before: the exporter's users reconnect to it
            assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] > 0
    finally:
        exporter.send_signal(signal.SIGTERM)
        _, stderr = exporter.communicate(timeout=60)
    assert "is not running; starting it again" in stderr and "running again (restart 1)" in stderr
    assert running_postmaster(pgdata_of(home)) is None  # stopped with the exporter, its last user
