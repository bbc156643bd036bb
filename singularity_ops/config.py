"""One typed configuration object.

Precedence, highest first: command-line flags > environment variables > the YAML file named by
``SINGULARITY_CONFIG`` (or ``--config``) > defaults. Every key is documented in docs/CONFIGURATION.md.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from singularity_ops.errors import ConfigError
from singularity_ops.ollama_host import parse_ollama_host

# Plain dataclasses checked by _build below rather than pydantic: the exporter must stay small on a
# 2 GB server, and pydantic's import and schemas cost ~7 MB of its RSS for a dozen keys.

DEFAULT_HOME = "~/.local/share/singularity-ops"


class Secret:
    """A string that never shows itself in repr(), str() or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def setting(default: Any, *, gt: float | None = None, ge: float | None = None,
            check: typing.Callable[[Any], Any] | None = None) -> Any:
    """A field with bounds and/or a ``check`` that normalises the value or raises ValueError."""
    metadata = {k: v for k, v in (("gt", gt), ("ge", ge), ("check", check)) if v is not None}
    return field(default=default, metadata=metadata)


def setting_table(*, gt: float | None = None, ge: float | None = None) -> Any:
    """A ``{name: value}`` table (empty by default) whose values are checked against the bounds."""
    metadata = {k: v for k, v in (("gt", gt), ("ge", ge)) if v is not None}
    return field(default_factory=dict, metadata=metadata)


def _at_most(value: float, limit: float) -> float:
    if value > limit:
        raise ValueError(f"must be at most {limit}, got {value}")
    return value


def _listen(value: str) -> str:
    parse_listen(value)
    return value


def _expand(value: Path) -> Path:
    return Path(os.path.expanduser(str(value)))


@dataclass
class OllamaConfig:
    host: str = setting("http://127.0.0.1:11434", check=parse_ollama_host)
    timeout_seconds: float = setting(5.0, gt=0)
    # How long one read of Ollama's state is shared between concurrent scrapes.
    cache_seconds: float = setting(1.0, ge=0)


@dataclass
class MemoryConfig:
    # RAM + swap of the machine Ollama runs on; None = measured here (cgroup limit, else host).
    ollama_memory_bytes: int | None = setting(None, gt=0)
    reserve_bytes: int = setting(0, ge=0)
    overhead_bytes: int = setting(256 * 2**20, ge=0)  # runtime, buffers; see docs/MEMORY.md
    context_length: int = setting(4096, gt=0)
    num_parallel: int = setting(1, gt=0)
    kv_cache_type: Literal["f16", "q8_0", "q4_0"] = "f16"


@dataclass
class DatabaseConfig:
    url: Secret | None = None
    pool_min_size: int = setting(1, ge=0)
    pool_max_size: int = setting(4, gt=0)
    connect_timeout_seconds: float = setting(5.0, gt=0)


@dataclass
class ExporterConfig:
    metrics_listen: str = setting("127.0.0.1:9777", check=_listen)
    collector_timeout_seconds: float = setting(3.0, gt=0)


@dataclass
class BreakerConfig:
    window_seconds: float = setting(60.0, gt=0)
    failure_rate_threshold: float = setting(0.5, gt=0, check=lambda v: _at_most(v, 1.0))
    minimum_calls: int = setting(5, gt=0)
    open_seconds: float = setting(30.0, gt=0)
    half_open_calls: int = setting(3, gt=0)


@dataclass
class GatewayConfig:
    listen: str = setting("127.0.0.1:11435", check=_listen)
    max_body_bytes: int = setting(32 * 2**20, gt=0)
    connect_timeout_seconds: float = setting(5.0, gt=0)
    # Longest silence allowed between two chunks from Ollama (a cold model load can take minutes).
    read_timeout_seconds: float = setting(300.0, gt=0)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    # Prompt-token budget per model for /api/chat and /v1/chat/completions; "*" applies to every model.
    context_budgets: dict[str, int] = setting_table(gt=0)
    # An installed model that summarises the turns compression drops, instead of losing them.
    summariser_model: str | None = None


@dataclass
class HistoryConfig:
    store_text: bool = True
    retention_days: int = setting(30, gt=0)
    memory_rows: int = setting(20_000, gt=0)
    spill_max_bytes: int = setting(512 * 2**20, gt=0)


@dataclass
class PriceConfig:
    input_per_million: float = setting(0.0, ge=0)
    output_per_million: float = setting(0.0, ge=0)


@dataclass
class CostConfig:
    currency: str = "USD"
    # Per model (or "*"): what a million tokens would cost — e.g. a hosted API's list price.
    prices: dict[str, PriceConfig] = field(default_factory=dict)
    # Energy: GPU power from NVML when a GPU is present, else this wattage, for the request's duration.
    host_watts: float = setting(0.0, ge=0)
    energy_price_per_kwh: float = setting(0.0, ge=0)


@dataclass
class AlertsConfig:
    # Alert name -> threshold, published as singularity_alert_threshold{alert=...}; the rules use their
    # documented default for any alert not listed (docs/ALERTS.md).
    thresholds: dict[str, float] = setting_table()
    # Where controllers push alerts for events that are not metrics (Alertmanager's v2 API).
    alertmanager_url: str = "http://127.0.0.1:9093"


@dataclass
class LoggingConfig:
    # None: "info" for the long-running commands (run, exporter), "error" for one-shot commands whose
    # own output already says what went wrong.
    level: Literal["debug", "info", "warning", "error"] | None = None


@dataclass
class Config:
    home: Path = setting(_expand(Path(DEFAULT_HOME)), check=_expand)
    ollama: OllamaConfig = field(default_factory=OllamaConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    exporter: ExporterConfig = field(default_factory=ExporterConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


_BOOLEANS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


class _Invalid(ValueError):
    pass


def _coerce(value: Any, kind: Any) -> Any:
    """``value`` (from YAML, or a string from the environment or a flag) as the annotated type."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option)
            except _Invalid as exc:
                errors.append(str(exc))
        raise _Invalid(" or ".join(errors))
    if origin is Literal:
        choices = typing.get_args(kind)
        if value not in choices:
            raise _Invalid(f"expected one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOLEANS:
            return _BOOLEANS[value.strip().lower()]
        raise _Invalid(f"expected true or false, got {value!r}")
    if isinstance(value, bool):
        raise _Invalid(f"expected {getattr(kind, '__name__', kind)}, got {value!r}")
    if kind is int:
        if isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
            return int(value)
        raise _Invalid(f"expected an integer, got {value!r}")
    if kind is float:
        try:
            if isinstance(value, int | float | str):
                return float(value)
        except ValueError:
            pass
        raise _Invalid(f"expected a number, got {value!r}")
    if kind in (str, Path, Secret):
        if not isinstance(value, str | int | float):
            raise _Invalid(f"expected a string, got {type(value).__name__}")
        return kind(str(value))
    raise _Invalid(f"unsupported type {kind!r}")  # pragma: no cover - a programming error


def _build(cls: type, data: Any, path: str, problems: list[str], provenance: dict[str, str]) -> Any:
    if not isinstance(data, dict):
        problems.append(f"'{path.rstrip('.')}' must be a mapping, got {type(data).__name__}")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for unknown in sorted(set(data) - set(fields)):
        problems.append(f"unknown key '{path}{unknown}' (see docs/CONFIGURATION.md for the keys)")
    values = {}
    for name, spec in fields.items():
        if name not in data:
            continue
        key, kind, raw = f"{path}{name}", hints[name], data[name]
        if dataclasses.is_dataclass(kind):
            values[name] = _build(kind, raw, f"{key}.", problems, provenance)
        elif typing.get_origin(kind) is dict:  # per-model tables: {model name: value or section}
            if not isinstance(raw, dict):
                problems.append(f"'{key}' must be a mapping, got {type(raw).__name__}")
                continue
            item_kind = typing.get_args(kind)[1]
            table = {}
            for item, item_raw in raw.items():
                if dataclasses.is_dataclass(item_kind):
                    table[str(item)] = _build(item_kind, item_raw, f"{key}.{item}.", problems, provenance)
                else:
                    table[str(item)] = _checked(item_raw, item_kind, spec, f"{key}.{item}", problems, provenance)
            values[name] = table
        else:
            value = _checked(raw, kind, spec, key, problems, provenance)
            if value is not _INVALID:
                values[name] = value
    return cls(**values)


_INVALID = object()


def _checked(raw: Any, kind: Any, spec: dataclasses.Field, key: str, problems: list[str],
             provenance: dict[str, str]) -> Any:
    try:
        value = _coerce(raw, kind)
        if value is not None and "gt" in spec.metadata and not value > spec.metadata["gt"]:
            raise _Invalid(f"must be greater than {spec.metadata['gt']}, got {value}")
        if value is not None and "ge" in spec.metadata and not value >= spec.metadata["ge"]:
            raise _Invalid(f"must be at least {spec.metadata['ge']}, got {value}")
        if value is not None and "check" in spec.metadata:
            value = spec.metadata["check"](value)
        return value
    except (_Invalid, ValueError) as exc:
        origin = f" (from {provenance[key]})" if key in provenance else ""
        problems.append(f"'{key}'{origin}: {exc}")
        return _INVALID


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
    "SINGULARITY_GATEWAY_LISTEN": "gateway.listen",
    "SINGULARITY_ALERTMANAGER_URL": "alerts.alertmanager_url",
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
    import yaml

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
    problems: list[str] = []
    config = _build(Config, tree, "", problems, provenance)
    if problems:
        where = f" in {path}" if path else ""
        raise ConfigError(f"invalid configuration{where}: " + "; ".join(problems))
    return config
