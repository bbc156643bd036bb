"""One typed configuration object.

Precedence, highest first: command-line flags > environment variables > the YAML file named by
``SINGULARITY_CONFIG`` (or ``--config``) > defaults. Every key is documented in docs/CONFIGURATION.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from singularity_ops.errors import ConfigError
from singularity_ops.ollama_host import parse_ollama_host

DEFAULT_HOME = "~/.local/share/singularity-ops"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class OllamaConfig(_Section):
    host: str = "http://127.0.0.1:11434"
    timeout_seconds: float = Field(5.0, gt=0)
    # How long one read of Ollama's state is shared between concurrent scrapes.
    cache_seconds: float = Field(1.0, ge=0)

    @field_validator("host")
    @classmethod
    def _normalise_host(cls, value: str) -> str:
        return parse_ollama_host(value)


class MemoryConfig(_Section):
    # RAM + swap of the machine Ollama runs on; None = measured here (cgroup limit, else host).
    ollama_memory_bytes: int | None = Field(None, gt=0)
    reserve_bytes: int = Field(0, ge=0)
    overhead_bytes: int = Field(256 * 2**20, ge=0)  # runtime, buffers; see docs/MEMORY.md
    context_length: int = Field(4096, gt=0)
    num_parallel: int = Field(1, gt=0)
    kv_cache_type: Literal["f16", "q8_0", "q4_0"] = "f16"


class DatabaseConfig(_Section):
    url: SecretStr | None = None
    pool_min_size: int = Field(1, ge=0)
    pool_max_size: int = Field(4, gt=0)
    connect_timeout_seconds: float = Field(5.0, gt=0)


class ExporterConfig(_Section):
    metrics_listen: str = "127.0.0.1:9777"
    collector_timeout_seconds: float = Field(3.0, gt=0)

    @field_validator("metrics_listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_listen(value)
        return value


class LoggingConfig(_Section):
    # None: "info" for the long-running commands (run, exporter), "error" for one-shot commands whose
    # own output already says what went wrong.
    level: Literal["debug", "info", "warning", "error"] | None = None


class Config(_Section):
    home: Path = Path(DEFAULT_HOME)
    ollama: OllamaConfig = Field(default_factory=OllamaConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    exporter: ExporterConfig = Field(default_factory=ExporterConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @field_validator("home")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return Path(os.path.expanduser(str(value)))


# Environment variable → dotted config key. Ollama's own variables are honoured where they mean the same.
ENVIRONMENT: dict[str, str] = {
    "OLLAMA_HOST": "ollama.host",
    "SINGULARITY_HOME": "home",
    "SINGULARITY_DATABASE_URL": "database.url",
    "SINGULARITY_OLLAMA_MEMORY_BYTES": "memory.ollama_memory_bytes",
    "OLLAMA_CONTEXT_LENGTH": "memory.context_length",
    "OLLAMA_NUM_PARALLEL": "memory.num_parallel",
    "OLLAMA_KV_CACHE_TYPE": "memory.kv_cache_type",
    "SINGULARITY_METRICS_LISTEN": "exporter.metrics_listen",
    "SINGULARITY_LOG_LEVEL": "logging.level",
}


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:port`` for IPv6) → (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[leaf] = value


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}; fix SINGULARITY_CONFIG") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path}{where} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of sections, got {type(data).__name__}")
    return data


def _describe(error: ValidationError, provenance: dict[str, str], file_source: str | None) -> str:
    problems = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            problems.append(f"unknown key '{key}' (see docs/CONFIGURATION.md for the keys)")
            continue
        origin = next((where for dotted, where in provenance.items() if key.startswith(dotted)), file_source)
        problems.append(f"'{key}'{f' (from {origin})' if origin else ''}: {item['msg']}")
    where = f" in {file_source}" if file_source else ""
    return f"invalid configuration{where}: " + "; ".join(problems)


def load_config(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> Config:
    """Build the effective config. ``flags`` maps dotted keys to values given on the command line."""
    environ = os.environ if environ is None else environ
    path = config_file or environ.get("SINGULARITY_CONFIG")
    tree: dict[str, Any] = _read_yaml(Path(path).expanduser()) if path else {}
    provenance: dict[str, str] = {}
    for variable, dotted in ENVIRONMENT.items():
        value = environ.get(variable)
        if value not in (None, ""):
            _set_dotted(tree, dotted, value)
            provenance[dotted] = variable
    for dotted, value in (flags or {}).items():
        if value is not None:
            _set_dotted(tree, dotted, value)
            provenance[dotted] = "--" + dotted.rpartition(".")[2].replace("_", "-")
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, provenance, str(path) if path else None)) from None
