"""A real Prometheus server (the `prometheus` binary from PATH) on a free loopback port, for tests."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.conftest import free_port

JOB = "singularity"


class PrometheusError(AssertionError):
    """Prometheus refused a query (a parse or evaluation error): the message is Prometheus' own."""


class Prometheus:
    """Scrapes ``target`` every second and evaluates ``rule_files`` every second; data under ``workdir``."""

    def __init__(self, workdir: Path, target: str, rule_files: list[Path] | None = None) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("the prometheus binary is needed: apt-get install prometheus (scripts/test does it)")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files or []],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
        }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log_path = workdir / "prometheus.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Prometheus:
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [self.binary, f"--config.file={self.config_path}", f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(self.url + "/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError("prometheus did not become ready in 30 s")

    def __exit__(self, *exc: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        response = httpx.get(self.url + path, params=params, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query at now: the vector's samples, or a scalar as one sample without labels."""
        data = self._get("/api/v1/query", {"query": expr})
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        if data["resultType"] == "matrix":
            return [{"metric": s["metric"], "value": s["values"][-1]} for s in data["result"] if s["values"]]
        return list(data["result"])

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> list[dict[str, Any]]:
        """Range query, as Grafana runs a time series panel: ``[{"metric": labels, "values": [[t, v], …]}]``."""
        data = self._get("/api/v1/query_range", {"query": expr, "start": start, "end": end, "step": step})
        return list(data["result"])

    def label_values(self, selector: str | None, label: str) -> list[str]:
        """What Grafana's ``label_values(selector, label)`` lists."""
        params: dict[str, Any] = {"match[]": selector} if selector else {}
        return sorted(self._get(f"/api/v1/label/{label}/values", params))

    def last_scrape(self) -> float:
        """Unix time of the latest scrape of the exporter (0 before the first). timestamp() must be applied to
        the selector itself: on the result of an operator (``up == 1``) it gives the evaluation time."""
        samples = self.query(f'timestamp(up{{job="{JOB}"}})')
        return max((float(s["value"][1]) for s in samples), default=0.0)

    def wait_for_scrape(self, after: float, timeout: float = 10) -> None:
        """Return once Prometheus has scraped the exporter at a time later than ``after`` (Unix seconds)."""
        deadline = time.monotonic() + timeout
        while self.last_scrape() <= after:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no scrape after {after} within {timeout} s")
            time.sleep(0.1)
