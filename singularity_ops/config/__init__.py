"""One typed configuration object: ``schema`` (the sections and their checks), ``loading`` (flags > environment >
YAML > defaults), ``fields`` (secrets and checked fields). Import from here."""

from singularity_ops.config.fields import DEFAULT_HOME, Secret, parse_listen, setting, setting_table
from singularity_ops.config.loading import ENVIRONMENT, load_config
from singularity_ops.config.schema import (
    AlertsConfig,
    BackupConfig,
    BreakerConfig,
    Config,
    CostConfig,
    DatabaseConfig,
    ExporterConfig,
    GatewayConfig,
    GuardConfig,
    GuardInjectionConfig,
    HistoryConfig,
    LoggingConfig,
    MemoryConfig,
    ModelManagerConfig,
    OllamaConfig,
    PriceConfig,
    ProfileConfig,
)

__all__ = [
    "DEFAULT_HOME", "ENVIRONMENT", "AlertsConfig", "BackupConfig", "BreakerConfig", "Config", "CostConfig",
    "DatabaseConfig", "ExporterConfig", "GatewayConfig", "GuardConfig", "GuardInjectionConfig", "HistoryConfig",
    "LoggingConfig", "MemoryConfig", "ModelManagerConfig", "OllamaConfig", "PriceConfig", "ProfileConfig", "Secret",
    "load_config", "parse_listen", "setting", "setting_table",
]
