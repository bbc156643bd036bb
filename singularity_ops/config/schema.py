"""The configuration schema: one dataclass per section, each field with its default and checks.

Every key is documented in docs/CONFIGURATION.md (a test enforces it); ``loading`` builds these from YAML,
the environment and flags.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from singularity_ops.config.cache import CacheConfig
from singularity_ops.config.fields import (
    DEFAULT_HOME,
    Secret,
    _at_least,
    _at_most,
    _cron,
    _expand,
    _keep_alive,
    _listen,
    _networks,
    _timezone,
    setting,
    setting_table,
)
from singularity_ops.config.prompt_optimizer import PromptOptimizerConfig
from singularity_ops.http_headers import one_line, upstream_header_name
from singularity_ops.ollama_host import parse_ollama_host
from singularity_ops.schedule import WEEKDAYS, check_hours, parse_days, week_overlap


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
    # The learned stage (guard/classifier.py): "builtin" (the model shipped in the package), "off" (the patterns
    # alone), or the path of a manifest written by scripts/train_injection_model.py.
    model: str = "builtin"


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


def _route_candidates(value: list[str]) -> list[str]:
    names = [name.strip() for name in value]
    if not names or not all(names):
        raise ValueError("a route needs one or more candidate model names")
    if len(set(names)) != len(names):
        raise ValueError(f"a candidate is listed twice in {names}")
    return names


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
    # Virtual model names → candidate models, e.g. {coder: [qwen2.5-coder:7b, qwen2.5-coder:1.5b]}: a request for the
    # name goes to the best candidate by validation score that is not demoted (docs/MODEL_VALIDATION.md).
    routes: dict[str, list[str]] = field(default_factory=dict, metadata={"check": _route_candidates})
    # A loaded candidate is preferred over a better-scored one that is not loaded when their quality scores differ
    # by at most this much.
    route_loaded_margin: float = setting(0.05, ge=0, check=lambda v: _at_most(v, 1.0))
    # Client API keys, hashed (docs/ANOMALY_DETECTION.md); unset = no key needed.
    api_keys_file: Path | None = setting(None, check=_expand)
    # Comma-separated addresses/networks whose X-Forwarded-For is believed (a reverse proxy in front).
    trusted_proxies: str = setting("", check=_networks)
    # Serve beyond loopback without api_keys_file (refused otherwise: anyone reaching it could delete models).
    allow_unauthenticated: bool = False
    # Admin routes (pull, push, create, copy, delete, blobs) from this machine without an admin key;
    # None = true exactly when `listen` is a loopback address.
    admin_from_loopback: bool | None = None
    # A client has this long from connecting (or from the first byte after an idle keep-alive) to send its whole
    # request line and headers; then the connection is closed (slowloris).
    header_timeout_seconds: float = setting(10.0, gt=0)
    # A keep-alive connection with no request for this long is closed.
    idle_timeout_seconds: float = setting(60.0, gt=0)
    # Open client connections at most, in total and per client address (IPv6: per /64; trusted proxies count in
    # the total only). Both are lowered to fit the process's file limit; connections beyond are closed at accept.
    max_connections: int = setting(4096, gt=0)
    max_connections_per_client: int = setting(256, gt=0)


@dataclass
class UpstreamConfig:
    # Headers added to every request to OLLAMA_HOST (an auth proxy's token, say): the gateway's forwarded ones and
    # the collectors', controllers' and commands' own (ollama_api.client_for). The client's own Authorization and
    # X-API-Key are the gateway's and never reach Ollama. Values are secrets.
    headers: dict[str, Secret] = setting_table(check=one_line, key_check=upstream_header_name)


@dataclass
class MetricsAuthConfig:
    # What /metrics and the exporter's own routes (/breakers, /) require, as a Prometheus scrape config sends
    # it: a bearer token (`authorization`), or a user and password (`basic_auth`). /healthz stays open.
    bearer_token: Secret | None = None
    username: str | None = None
    password: Secret | None = None


@dataclass
class MetricsConfig:
    auth: MetricsAuthConfig = field(default_factory=MetricsAuthConfig)


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
    # own output already says what went wrong (a backup key file others can read is still a warning).
    level: Literal["debug", "info", "warning", "error"] | None = None



@dataclass
class ProfileConfig:
    name: str = ""
    hours: str = setting("00:00-24:00", check=check_hours)
    days: list[str] = field(default_factory=lambda: list(WEEKDAYS), metadata={"check": parse_days})
    models: list[str] = field(default_factory=list)  # in priority order
    exclusive: bool = False  # unload every model not listed


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
            overlap = week_overlap((other.hours, other.days), (profile.hours, profile.days))
            if overlap:
                raise ValueError(
                    f"profiles {other.name!r} ({other.hours}) and {profile.name!r} ({profile.hours}) overlap "
                    f"from {overlap[0]} to {overlap[1]}; change the hours or days of one")
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



def _age_recipients(value: list[str]) -> list[str]:
    keys = [key.strip() for key in value]
    for key in keys:  # the shape only; the backup itself checks the checksum (keys.py)
        if not re.fullmatch(r"age1[02-9ac-hj-np-z]{58}", key):
            raise ValueError(f"{key[:12]!r}… is not an age public key (age1… as `age-keygen -y KEYFILE` prints it)")
    return keys


@dataclass
class BackupConfig:
    enabled: bool = True  # the backup controller's schedule; the `backup` commands work either way
    key_file: Path | None = setting(None, check=_expand)  # None: home/backup.key if it exists; never unencrypted
    # No key (neither key_file nor home/backup.key): the backup controller writes home/backup.key on its first run.
    # false: it does not, and scheduled backups stay off (a warning, singularity_backup_configured 0).
    auto_keygen: bool = True
    directory: Path | None = setting(None, check=_expand)  # None: home/backups
    # Cron expressions (minute hour day month weekday) in `timezone`; null turns that kind off.
    daily: str | None = setting("0 3 * * *", check=_cron)
    weekly: str | None = setting("0 4 * * 0", check=_cron)
    timezone: str | None = setting(None, check=_timezone)  # None: the host's
    keep: int = setting(7, gt=0)  # per kind; the newest verified backup of a kind is kept beyond this
    # Files or folders (relative to home, or absolute) copied into every backup beside the dump and config file.
    include: list[str] = field(default_factory=list)
    # age public keys (age1…) every new backup is also encrypted to, e.g. one whose identity never lives here.
    recipients: list[str] = field(default_factory=list, metadata={"check": _age_recipients})
    # gzip 0-9; 1 measured ~4x faster than 6 on history-like text for ~25 % more bytes (docs/BACKUPS.md)
    compression_level: int = setting(1, ge=0, check=lambda v: _at_most(v, 9))
    # Folder of pg_dump/pg_restore; None: the first of PATH, /usr/lib/postgresql/N/bin, pgserver's whose
    # major version is the server's.
    pg_bin_dir: Path | None = setting(None, check=_expand)


@dataclass
class ValidatorConfig:
    enabled: bool = True  # the `validator` controller's schedule and digest trigger; `validate` works either way
    # Cron expression (minute hour day month weekday) in `timezone`; null: only on digest changes and by hand.
    schedule: str | None = setting("0 3 * * 6", check=_cron)
    timezone: str | None = setting(None, check=_timezone)  # None: the host's
    interval_seconds: float = setting(60.0, gt=0)  # how often the controller looks at the schedule and digests
    on_digest_change: bool = True  # validate a model again when its digest changes (re-pulled)
    suite: Path | None = setting(None, check=_expand)  # None: the shipped default suite
    models: list[str] = field(default_factory=list)  # empty: every installed model that generates text
    min_accuracy: float = setting(0.8, ge=0, check=lambda v: _at_most(v, 1.0))  # below: demoted
    promote_margin: float = setting(0.05, ge=0, check=lambda v: _at_most(v, 1.0))  # promoted at min + margin
    judge_model: str | None = None  # grades `judge` cases
    embedding_model: str | None = None  # embeds `similar` cases
    case_timeout_seconds: float = setting(300.0, gt=0)  # one answer on a slow CPU can take minutes
    keep_alive: str = setting("5m", check=_keep_alive)  # sent with each case
    retention_days: int = setting(180, gt=0)
    answer_excerpt_chars: int = setting(500, gt=0)


@dataclass
class Config:
    home: Path = setting(_expand(Path(DEFAULT_HOME)), check=_expand)
    ollama: OllamaConfig = field(default_factory=OllamaConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    exporter: ExporterConfig = field(default_factory=ExporterConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    model_manager: ModelManagerConfig = field(default_factory=ModelManagerConfig)
    backup: BackupConfig = field(default_factory=BackupConfig)
    validator: ValidatorConfig = field(default_factory=ValidatorConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    prompt_optimizer: PromptOptimizerConfig = field(default_factory=PromptOptimizerConfig)


