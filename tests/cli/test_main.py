"""The command line as a user meets it: real processes, real exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

GiB = 2**30
CLI = [sys.executable, "-m", "singularity_ops.cli"]
MIGRATIONS = sorted(p.name for p in (Path(__file__).resolve().parents[2] / "migrations").glob("*.sql"))


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SINGULARITY_", "OLLAMA_"))}
    return subprocess.run([*CLI, *args], env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_help_lists_the_commands() -> None:
    result = run("--help")
    for command in ("run", "exporter", "migrate", "check-memory"):
        assert command in result.stdout


def test_check_memory_table_reads_right_for_the_seed_case(ollama) -> None:
    result = run("check-memory", env={"OLLAMA_HOST": ollama.host,
                                      "SINGULARITY_OLLAMA_MEMORY_BYTES": str(int(1.9 * GiB))})
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()[1:]
    assert header.split() == ["MODEL", "SIZE", "NEEDS", "LOADED", "RSS", "FITS", "WHY"]
    phi4 = next(row for row in rows if row.startswith("phi4:14b"))
    assert " no " in phi4 and "at most 1.9 GiB can be made available" in phi4
    qwen = next(row for row in rows if row.startswith("qwen2.5-coder:1.5b"))
    assert " yes " in qwen


def test_check_memory_json_and_fail_on_misfit(ollama) -> None:
    env = {"OLLAMA_HOST": ollama.host, "SINGULARITY_OLLAMA_MEMORY_BYTES": str(int(1.9 * GiB))}
    result = run("check-memory", "--json", "--fail-on-misfit", env=env)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["memory"]["source"] == "configured"
    assert report["memory"]["capacity_bytes"] == int(1.9 * GiB)
    by_name = {m["model"]: m for m in report["models"]}
    assert by_name["phi4:14b"]["fits"] is False
    assert by_name["phi4:14b"]["required_bytes"] == sum(
        v for k, v in by_name["phi4:14b"]["required"].items() if k.endswith("_bytes"))
    assert by_name["qwen2.5-coder:1.5b"]["fits"] is True

    only_small = run("check-memory", "--json", "--fail-on-misfit", "--model", "qwen2.5-coder:1.5b", env=env)
    assert only_small.returncode == 0
    assert [m["model"] for m in json.loads(only_small.stdout)["models"]] == ["qwen2.5-coder:1.5b"]


def test_check_memory_shows_loaded_size(ollama) -> None:
    ollama.load("llama3.2:3b", size=3 * GiB)
    result = run("check-memory", "--json", "--model", "llama3.2:3b", env={"OLLAMA_HOST": ollama.host})
    (model,) = json.loads(result.stdout)["models"]
    assert model["loaded"] is True and model["loaded_bytes"] == 3 * GiB
    assert json.loads(result.stdout)["memory"]["loaded_bytes"] == 3 * GiB


def test_check_memory_unknown_model_is_a_clear_error(ollama) -> None:
    assert_one_line_error(run("check-memory", "--model", "nope:1b", env={"OLLAMA_HOST": ollama.host}),
                          "model 'nope:1b' is not installed", "ollama pull nope:1b")


def test_check_memory_with_ollama_down_is_one_line(ollama) -> None:
    host = ollama.host
    ollama.stop()
    assert_one_line_error(run("check-memory", env={"OLLAMA_HOST": host}), "cannot reach Ollama", "OLLAMA_HOST")


def test_check_memory_with_garbage_from_ollama_is_one_line(ollama) -> None:
    ollama.fault = "garbage"
    assert_one_line_error(run("check-memory", env={"OLLAMA_HOST": ollama.host}), "not JSON")


def test_unknown_config_key_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("exporter:\n  listen: 1\n")
    assert_one_line_error(run("check-memory", env={"SINGULARITY_CONFIG": str(config)}),
                          "unknown key 'exporter.listen'")


def test_wrong_type_in_config_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("memory:\n  reserve_bytes: lots\n")
    assert_one_line_error(run("migrate", "--config", str(config)), "'memory.reserve_bytes'")


def test_unreachable_database_is_one_line_and_hides_the_password() -> None:
    url = f"postgresql://app:hunter2@127.0.0.1:{free_port()}/x"
    result = run("migrate", env={"SINGULARITY_DATABASE_URL": url})
    assert_one_line_error(result, "cannot connect to PostgreSQL", "SINGULARITY_DATABASE_URL")
    assert "hunter2" not in result.stderr


def test_migrate_against_an_external_server_is_idempotent(database_url: str) -> None:
    env = {"SINGULARITY_DATABASE_URL": database_url}
    first = run("migrate", "--json", env=env)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["applied"] == MIGRATIONS
    assert json.loads(run("migrate", "--json", env=env).stdout)["applied"] == []


@pytest.mark.slow
def test_migrate_starts_the_embedded_server_under_home_and_reuses_it(tmp_path: Path) -> None:
    env = {"SINGULARITY_HOME": str(tmp_path / "home")}
    first = run("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [f"applied {name}" for name in MIGRATIONS]
    assert (tmp_path / "home" / "postgres" / "PG_VERSION").exists()
    second = run("migrate", env=env)
    assert second.returncode == 0 and second.stdout.startswith("up to date")


def _wait_for(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(process.communicate()[1])
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("exporter did not start")


@pytest.mark.slow
@pytest.mark.parametrize("command", ["exporter", "run"])
def test_exporter_serves_metrics_migrates_and_stops_on_sigterm(command: str, ollama, database_url: str,
                                                                tmp_path: Path) -> None:
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SINGULARITY_", "OLLAMA_"))}
    env = {**base, "OLLAMA_HOST": ollama.host, "SINGULARITY_DATABASE_URL": database_url,
           "SINGULARITY_HOME": str(tmp_path / "home")}
    process = subprocess.Popen([*CLI, command, "--metrics-listen", f"127.0.0.1:{port}",
                                "--gateway-listen", f"127.0.0.1:{free_port()}"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(f"http://127.0.0.1:{port}/healthz", process)
        deadline = time.monotonic() + 10
        while "singularity_database_up 1.0" not in (text := httpx.get(f"http://127.0.0.1:{port}/metrics").text):
            assert time.monotonic() < deadline, text
            time.sleep(0.1)
        assert "ollama_up 1.0" in text
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    # A first start on a fresh home is not an error (issue 16): backups set themselves up with a warning.
    assert " ERROR " not in stderr, stderr
    if command == "run":
        assert (tmp_path / "home" / "backup.key").exists() and "backup.key" in stderr
    import psycopg

    with psycopg.connect(database_url) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM models WHERE removed_at IS NULL")}
    assert names == {"llama3.2:3b", "qwen2.5-coder:1.5b", "phi4:14b"}


def test_exporter_keeps_serving_when_the_database_is_unreachable(ollama) -> None:
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SINGULARITY_", "OLLAMA_"))}
    env = {**base, "OLLAMA_HOST": ollama.host,
           "SINGULARITY_DATABASE_URL": f"postgresql://x@127.0.0.1:{free_port()}/x"}
    process = subprocess.Popen([*CLI, "exporter", "--metrics-listen", f"127.0.0.1:{port}",
                                "--gateway-listen", f"127.0.0.1:{free_port()}"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(f"http://127.0.0.1:{port}/healthz", process)
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert "singularity_database_up 0.0" in text
        assert "ollama_up 1.0" in text
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0
    assert "Traceback" not in stderr


def test_port_in_use_is_one_line(ollama) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("exporter", "--metrics-listen", f"127.0.0.1:{port}",
                     "--gateway-listen", f"127.0.0.1:{free_port()}",
                     env={"OLLAMA_HOST": ollama.host, "SINGULARITY_DATABASE_URL": "postgresql://x@127.0.0.1:1/x"})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr.strip().splitlines()[-1]
