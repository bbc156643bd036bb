"""Building the effective config: precedence, highest first, command-line flags > environment variables > the
YAML file named by ``SINGULARITY_CONFIG`` (or ``--config``) > defaults. A wrong key, type or value is one
``ConfigError`` line naming the key and where it came from."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from singularity_ops.config.fields import Secret
from singularity_ops.config.schema import Config
from singularity_ops.errors import ConfigError

# Plain dataclasses checked by _build below rather than pydantic: the exporter must stay small on a
# 2 GB server, and pydantic's import and schemas cost ~7 MB of its RSS for a dozen keys.

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
                if "key_check" in spec.metadata:  # e.g. upstream.headers: the name must be one we may send
                    try:
                        spec.metadata["key_check"](str(item))
                    except ValueError as exc:
                        problems.append(f"'{key}.{item}': {exc}")
                        continue
                if dataclasses.is_dataclass(item_kind):
                    table[str(item)] = _build(item_kind, item_raw, f"{key}.{item}.", problems, provenance)
                elif typing.get_origin(item_kind) is list:  # e.g. gateway.routes: {name: [models]}, checked each
                    items = _build_list(item_raw, typing.get_args(item_kind)[0], spec, f"{key}.{item}", problems,
                                        provenance)
                    if items is not _INVALID:
                        table[str(item)] = items
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
    "SINGULARITY_API_KEYS_FILE": "gateway.api_keys_file",
    "SINGULARITY_ALERTMANAGER_URL": "alerts.alertmanager_url",
    "SINGULARITY_LOG_LEVEL": "logging.level",
    "SINGULARITY_BACKUP_KEY_FILE": "backup.key_file",
}


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
