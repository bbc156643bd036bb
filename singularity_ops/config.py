"""One typed configuration object.

Precedence, highest first: command-line flags > environment variables > the YAML file named by
``SINGULARITY_CONFIG`` (or ``--config``) > defaults. Every key is documented in docs/CONFIGURATION.md.
"""

from __future__ import annotations

import dataclasses
import os
import re
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


def _networks(value: str) -> str:
    """A comma-separated list of IP addresses or networks (CIDR), checked here so a typo stops the start."""
    import ipaddress

    for item in filter(None, (part.strip() for part in value.split(","))):
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
    return value


@dataclass
class GuardRateConfig:
    # Per client, a token bucket: this many requests a minute on average, bursts of `burst`.
    requests_per_minute: float = setting(300.0, gt=0)
    burst: int = setting(60, gt=0)


@dataclass
class GuardSpikeConfig:
    enabled: bool = True
    interval_seconds: float = setting(10.0, gt=0)
    baseline_intervals: int = setting(60, check=lambda v: _at_least(v, 6))
    # Robust z-score (median/MAD of the baseline) at which the global request rate is a spike.
    threshold: float = setting(6.0, gt=0)
    min_requests_per_second: float = setting(5.0, ge=0)
    # Per-client rate and burst are multiplied by this while a spike lasts.
    rate_factor: float = setting(0.5, gt=0, check=lambda v: _at_most(v, 1.0))


@dataclass
class GuardBruteForceConfig:
    # fail2ban's maxretry / findtime / bantime, with its bantime.increment for repeat offenders (recidive).
    maxretry: int = setting(5, gt=0)
    findtime_seconds: float = setting(600.0, gt=0)
    bantime_seconds: float = setting(600.0, gt=0)
    bantime_factor: float = setting(2.0, ge=1)
    max_bantime_seconds: float = setting(604800.0, gt=0)
    recidive_seconds: float = setting(86400.0, gt=0)


@dataclass
class GuardRepeatConfig:
    max_repeats: int = setting(10, gt=0)
    window_seconds: float = setting(60.0, gt=0)
    action: Literal["flag", "throttle", "block"] = "throttle"


@dataclass
class GuardInjectionConfig:
    action: Literal["off", "flag", "block"] = "flag"
    threshold: float = setting(0.5, gt=0, check=lambda v: _at_most(v, 1.0))
    max_scan_chars: int = setting(131072, gt=0)
    # "module:factory" of an optional classifier (docs/ANOMALY_DETECTION.md); None = the fast scorer alone.
    classifier: str | None = None
    classifier_min_score: float = setting(0.2, ge=0, check=lambda v: _at_most(v, 1.0))


@dataclass
class GuardConfig:
    enabled: bool = True
    # Per-client state (buckets, failures, repeats) is an LRU of at most this many clients; bans too.
    max_clients: int = setting(10_000, gt=0)
    # Clients at these addresses are never rate-limited, throttled for repeats or banned (auth and the
    # injection scorer still apply); key-identified clients are never exempt.
    exempt_networks: str = setting("127.0.0.0/8,::1", check=_networks)
    # One security_events row per client, kind and action at most this often (the metric counts all).
    event_interval_seconds: float = setting(60.0, ge=0)
    # How often the gateway reads bans from the database (other gateways', lifted ones).
    sync_seconds: float = setting(5.0, gt=0)
    rate: GuardRateConfig = field(default_factory=GuardRateConfig)
    spike: GuardSpikeConfig = field(default_factory=GuardSpikeConfig)
    brute_force: GuardBruteForceConfig = field(default_factory=GuardBruteForceConfig)
    repeat: GuardRepeatConfig = field(default_factory=GuardRepeatConfig)
    injection: GuardInjectionConfig = field(default_factory=GuardInjectionConfig)


def _at_least(value: int, limit: int) -> int:
    if value < limit:
        raise ValueError(f"must be at least {limit}, got {value}")
    return value


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
    # Client API keys, hashed (docs/ANOMALY_DETECTION.md); unset = no key needed.
    api_keys_file: Path | None = setting(None, check=_expand)
    # Comma-separated addresses/networks whose X-Forwarded-For is believed (a reverse proxy in front).
    trusted_proxies: str = setting("", check=_networks)


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


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_MINUTES, _WEEK_MINUTES = 24 * 60, 7 * 24 * 60
_GO_DURATION = re.compile(r"^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+$")


def _clock(text: str, whole: str) -> int:
    hours, sep, minutes = text.strip().partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ValueError(f"bad time {text.strip()!r} in {whole!r}; write HH:MM-HH:MM, e.g. 07:00-12:00")
    value = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or value > _DAY_MINUTES:
        raise ValueError(f"bad time {text.strip()!r} in {whole!r}; hours run 00:00 to 24:00")
    return value


def parse_hours(text: str) -> tuple[int, int]:
    """``"HH:MM-HH:MM"`` → (start, end) in minutes after midnight; an end at or before the start wraps past
    midnight (``"23:00-07:00"``)."""
    start, sep, end = text.partition("-")
    if not sep:
        raise ValueError(f"expected HH:MM-HH:MM, got {text!r}")
    first, last = _clock(start, text), _clock(end, text)
    if first == _DAY_MINUTES:
        raise ValueError(f"bad time '24:00' in {text!r}; a range starts at 23:59 at the latest")
    if first == last:
        raise ValueError(f"{text!r} is an empty range; use 00:00-24:00 for the whole day")
    return first, last


def _hours(value: str) -> str:
    parse_hours(value)
    return value.strip()


def _days(value: list[str]) -> list[str]:
    days = []
    for day in value:
        short = day.strip().lower()[:3]
        if short not in WEEKDAYS or day.strip().lower() not in (short, _FULL_DAYS[short]):
            raise ValueError(f"unknown day {day!r}; use {', '.join(WEEKDAYS)}")
        if short not in days:
            days.append(short)
    if not days:
        raise ValueError("is empty; leave 'days' out for every day")
    return days


_FULL_DAYS = dict(zip(WEEKDAYS, ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
                      strict=True))


def _timezone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Moscow") from None
    return value


def _keep_alive(value: str) -> str:
    text = value.strip()
    if not (_GO_DURATION.match(text) or text.lstrip("-").isdigit()):
        raise ValueError(f"expected a duration such as 30m, 1h30m or -1 (forever), got {value!r}")
    return text


@dataclass
class ProfileConfig:
    name: str = ""
    hours: str = setting("00:00-24:00", check=_hours)
    days: list[str] = field(default_factory=lambda: list(WEEKDAYS), metadata={"check": _days})
    models: list[str] = field(default_factory=list)  # in priority order
    exclusive: bool = False  # unload every model not listed


def profile_windows(profile: ProfileConfig) -> list[tuple[int, int]]:
    """The minutes of the week (Monday 00:00 = 0) the profile covers, as [start, end) ranges. The part of a
    range that wraps past midnight belongs to the day it started on: ``23:00-07:00`` on ``fri`` ends Saturday 07:00."""
    start, end = parse_hours(profile.hours)
    length = (end - start) % _DAY_MINUTES or _DAY_MINUTES
    windows = []
    for day in profile.days:
        first = WEEKDAYS.index(day) * _DAY_MINUTES + start
        last = first + length
        windows.append((first, min(last, _WEEK_MINUTES)))
        if last > _WEEK_MINUTES:  # Sunday night into Monday morning
            windows.append((0, last - _WEEK_MINUTES))
    return windows


def _span(minute: int) -> str:
    day, rest = divmod(minute % _WEEK_MINUTES, _DAY_MINUTES)
    return f"{WEEKDAYS[day]} {rest // 60:02d}:{rest % 60:02d}"


def _profiles(value: list[ProfileConfig]) -> list[ProfileConfig]:
    seen: dict[str, int] = {}
    for index, profile in enumerate(value):
        if not profile.name.strip():
            raise ValueError(f"profile [{index}] has no name; give each profile a 'name'")
        if profile.name in seen:
            raise ValueError(f"profiles [{seen[profile.name]}] and [{index}] are both named {profile.name!r}; "
                             "rename one")
        seen[profile.name] = index
    for index, profile in enumerate(value):
        for other in value[:index]:
            for a_start, a_end in profile_windows(other):
                for b_start, b_end in profile_windows(profile):
                    if a_start < b_end and b_start < a_end:
                        raise ValueError(
                            f"profiles {other.name!r} ({other.hours}) and {profile.name!r} ({profile.hours}) overlap "
                            f"from {_span(max(a_start, b_start))} to {_span(min(a_end, b_end))}; change the hours "
                            "or days of one")
    return value


@dataclass
class ModelManagerConfig:
    enabled: bool = True
    timezone: str | None = setting(None, check=_timezone)  # None: the host's
    interval_seconds: float = setting(30.0, gt=0)
    reserve_bytes: int = setting(256 * 2**20, ge=0)  # never plan to use the last this-many bytes
    keep_alive: str = setting("30m", check=_keep_alive)  # sent with every load
    demand_minutes: int = setting(15, ge=0)  # models requested through the gateway this recently are preloaded
    load_timeout_seconds: float = setting(300.0, gt=0)  # a cold load of a big model from disk takes minutes
    dry_run: bool = False  # plan and log, never act
    profiles: list[ProfileConfig] = field(default_factory=list, metadata={"check": _profiles})


def _cron(value: str) -> str:
    from singularity_ops.cron import check_cron

    return check_cron(value)


@dataclass
class BackupConfig:
    enabled: bool = True  # the backup controller's schedule; the `backup` commands work either way
    key_file: Path | None = setting(None, check=_expand)  # none: backups refuse to run (never unencrypted)
    directory: Path | None = setting(None, check=_expand)  # None: home/backups
    # Cron expressions (minute hour day month weekday) in `timezone`; null turns that kind off.
    daily: str | None = setting("0 3 * * *", check=_cron)
    weekly: str | None = setting("0 4 * * 0", check=_cron)
    timezone: str | None = setting(None, check=_timezone)  # None: the host's
    keep: int = setting(7, gt=0)  # per kind; the newest verified backup of a kind is kept beyond this
    # Files or folders (relative to home, or absolute) copied into every backup beside the dump and config file.
    include: list[str] = field(default_factory=list)
    # gzip 0-9; 1 measured ~4x faster than 6 on history-like text for ~25 % more bytes (docs/BACKUPS.md)
    compression_level: int = setting(1, ge=0, check=lambda v: _at_most(v, 9))
    # Folder of pg_dump/pg_restore; None: the first of PATH, /usr/lib/postgresql/N/bin, pgserver's whose
    # major version is the server's.
    pg_bin_dir: Path | None = setting(None, check=_expand)


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
    guard: GuardConfig = field(default_factory=GuardConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    model_manager: ModelManagerConfig = field(default_factory=ModelManagerConfig)
    backup: BackupConfig = field(default_factory=BackupConfig)


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
        elif typing.get_origin(kind) is list:  # e.g. model_manager.profiles: sections or values, then one check
            items = _build_list(raw, typing.get_args(kind)[0], spec, key, problems, provenance)
            if items is not _INVALID:
                values[name] = items
        else:
            value = _checked(raw, kind, spec, key, problems, provenance)
            if value is not _INVALID:
                values[name] = value
    return cls(**values)


_INVALID = object()


def _build_list(raw: Any, item_kind: Any, spec: dataclasses.Field, key: str, problems: list[str],
                provenance: dict[str, str]) -> Any:
    if not isinstance(raw, list):
        problems.append(f"'{key}' must be a list, got {type(raw).__name__}")
        return _INVALID
    before = len(problems)
    items = []
    for index, item_raw in enumerate(raw):
        if dataclasses.is_dataclass(item_kind):
            items.append(_build(item_kind, item_raw, f"{key}[{index}].", problems, provenance))
        else:
            items.append(_checked(item_raw, item_kind, dataclasses.field(), f"{key}[{index}]", problems, provenance))
    if len(problems) > before:
        return _INVALID
    try:
        return spec.metadata["check"](items) if "check" in spec.metadata else items
    except ValueError as exc:
        problems.append(f"'{key}': {exc}")
        return _INVALID


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
    "SINGULARITY_BACKUP_KEY_FILE": "backup.key_file",
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
