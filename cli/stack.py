"""``singularity-ops stack``: Prometheus and Alertmanager from PATH with this repository's rules and configs.

For laptops and tests, the compose stack without Docker: both on loopback, their data and the effective
configs (rendered with the exporter's address and ``metrics.auth``, the chosen intervals and the Telegram secrets,
mode 0600) under ``SINGULARITY_HOME/stack``. Ctrl-C (or SIGTERM) stops both. They get a scrubbed environment:
what they need is in those files, so ``TELEGRAM_BOT_TOKEN`` and every other secret of ours stays with us.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from singularity_ops.config import Config
from singularity_ops.errors import ConfigError, SingularityError

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
# The variables a Go program may want (locale, time zone, temp dir, proxies and CAs for reaching Telegram, Go's
# runtime knobs); everything else (TELEGRAM_BOT_TOKEN, SINGULARITY_DATABASE_URL, cloud credentials) stays here.
CHILD_VARIABLES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "GOMAXPROCS", "GOMEMLIMIT", "GOGC", "GODEBUG"})
BINARIES = {  # what to look for on PATH, and the Debian package that has it
    "prometheus": (("prometheus",), "prometheus"),
    "alertmanager": (("prometheus-alertmanager", "alertmanager"), "prometheus-alertmanager"),
}


@dataclass(frozen=True)
class StackOptions:
    prometheus_listen: str = "127.0.0.1:9090"
    alertmanager_listen: str = "127.0.0.1:9093"
    scrape_interval: str = "15s"
    evaluation_interval: str = "15s"
    config_dir: Path = REPO
    # Alertmanager's grouping timers, when not the config file's (tests, or a user who wants faster news).
    group_wait: str | None = None
    group_interval: str | None = None


def find_binary(name: str) -> str:
    candidates, package = BINARIES[name]
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return found
    raise SingularityError(f"{name} is not on PATH; install it with: sudo apt-get install {package}")


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in environ.items() if k in CHILD_VARIABLES or k.startswith("LC_")}


def _scrape_auth(config: Config) -> dict[str, object]:
    """metrics.auth as a Prometheus scrape config says it (``authorization`` or ``basic_auth``)."""
    auth = config.metrics.auth
    if auth.bearer_token is not None:
        return {"authorization": {"type": "Bearer", "credentials": auth.bearer_token.get_secret_value()}}
    if auth.username is not None and auth.password is not None:
        return {"basic_auth": {"username": auth.username, "password": auth.password.get_secret_value()}}
    return {}


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def render_prometheus(config: Config, options: StackOptions, out: Path) -> Path:
    source = options.config_dir / "prometheus" / "prometheus.yml"
    try:
        document = yaml.safe_load(source.read_text())
    except OSError:
        raise ConfigError(f"{source} is missing: the stack needs this repository's prometheus/ folder "
                          "(run from a checkout, or pass --config-dir)") from None
    document.setdefault("global", {})
    document["global"]["scrape_interval"] = options.scrape_interval
    document["global"]["evaluation_interval"] = options.evaluation_interval
    rules = source.parent
    document["rule_files"] = [str(rules / pattern) for pattern in document.get("rule_files", [])]
    document["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [options.alertmanager_listen]}]}]}
    for job in document.get("scrape_configs", []):
        job["scrape_interval"] = options.scrape_interval
        job["static_configs"] = [{"targets": [config.exporter.metrics_listen]}]
        job.update(_scrape_auth(config))
    _write_private(out, yaml.safe_dump(document, sort_keys=False))
    return out


def render_alertmanager(options: StackOptions, out: Path, environ: Mapping[str, str]) -> tuple[Path, bool]:
    """The effective Alertmanager config; (path, True) with Telegram, (path, False) without its secrets, when
    alerts are kept in Alertmanager (its UI and API) but sent nowhere."""
    from singularity_ops.alerting.alertmanager_config import render_config

    template = options.config_dir / "alertmanager" / "alertmanager.yml"
    if not template.exists():
        raise ConfigError(f"{template} is missing: the stack needs this repository's alertmanager/ folder "
                          "(run from a checkout, or pass --config-dir)")
    telegram = any(environ.get(v) for v in ("TELEGRAM_BOT_TOKEN", "TELEGRAM_BOT_TOKEN_FILE", "TELEGRAM_CHAT_ID"))
    if telegram:
        document = yaml.safe_load(render_config(template, out, environ).read_text())
    else:
        document = yaml.safe_load(template.read_text())
        for receiver in document.get("receivers", []):
            receiver.pop("telegram_configs", None)
        document.pop("templates", None)
    routes = [document.get("route", {})]
    while routes:
        route = routes.pop()
        for key, value in (("group_wait", options.group_wait), ("group_interval", options.group_interval)):
            if value and (key in route or route is document.get("route")):
                route[key] = value
        routes.extend(route.get("routes", []))
    _write_private(out, yaml.safe_dump(document, sort_keys=False))
    return out, telegram


def _ready(url: str, process: subprocess.Popen[bytes], name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SingularityError(f"{name} exited with status {process.returncode} while starting; "
                                   f"see its log under the stack directory")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise SingularityError(f"{name} did not become ready at {url} within {timeout:g} s")


class Stack:
    def __init__(self, config: Config, options: StackOptions, environ: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.options = options
        self.environ = os.environ if environ is None else environ
        self.directory = config.home / "stack"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.telegram = False

    def start(self) -> Stack:
        binaries = {name: find_binary(name) for name in BINARIES}
        prometheus_config = render_prometheus(self.config, self.options, self.directory / "prometheus.yml")
        alertmanager_config, self.telegram = render_alertmanager(self.options, self.directory / "alertmanager.yml",
                                                                 self.environ)
        commands = {
            "alertmanager": [binaries["alertmanager"], f"--config.file={alertmanager_config}",
                             f"--storage.path={self.directory / 'alertmanager-data'}",
                             f"--web.listen-address={self.options.alertmanager_listen}", "--cluster.listen-address="],
            "prometheus": [binaries["prometheus"], f"--config.file={prometheus_config}",
                           f"--storage.tsdb.path={self.directory / 'prometheus-data'}",
                           f"--web.listen-address={self.options.prometheus_listen}", "--web.enable-lifecycle"],
        }
        try:
            for name, command in commands.items():
                log_file = (self.directory / f"{name}.log").open("ab")
                self.processes[name] = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                                        env=child_environment(self.environ), start_new_session=True)
                listen = self.options.alertmanager_listen if name == "alertmanager" else self.options.prometheus_listen
                _ready(f"http://{listen}/-/ready", self.processes[name], name)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def wait(self, stop: threading.Event) -> str | None:
        """Until ``stop`` is set (None) or one of them exits (its name)."""
        while not stop.wait(0.5):
            for name, process in self.processes.items():
                if process.poll() is not None:
                    return name
        return None


def run_stack(config: Config, options: StackOptions) -> int:
    stop = threading.Event()  # before anything starts: a SIGTERM during start-up still stops cleanly
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stack = Stack(config, options).start()
    print(f"Prometheus:   http://{options.prometheus_listen}  (scraping the exporter at "
          f"{config.exporter.metrics_listen})")
    print(f"Alertmanager: http://{options.alertmanager_listen}  (Telegram: "
          f"{'on' if stack.telegram else 'off, set TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_ID'})")
    print(f"data and logs: {stack.directory}; Ctrl-C stops both", flush=True)
    try:
        exited = stack.wait(stop)
    finally:
        stack.stop()
    if exited:
        raise SingularityError(f"{exited} stopped unexpectedly; see {stack.directory / (exited + '.log')}")
    return 0
