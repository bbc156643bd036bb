"""Configuration: flags > environment > YAML file > defaults, one typed object, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from singularity_ops.config import load_config
from singularity_ops.errors import ConfigError

pytestmark = pytest.mark.usefixtures("clean_env")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_match_the_design() -> None:
    config = load_config(environ={})
    assert config.ollama.host == "http://127.0.0.1:11434"
    assert config.exporter.metrics_listen == "127.0.0.1:9777"
    assert config.database.url is None
    assert str(config.home).endswith(".local/share/singularity-ops")
    assert config.memory.ollama_memory_bytes is None


def test_file_then_environment_then_flags_each_override_the_one_below(tmp_path: Path) -> None:
    path = write(tmp_path, "ollama:\n  host: file-host:1111\n  timeout_seconds: 9\nmemory:\n  reserve_bytes: 5\n")
    from_file = load_config(environ={"SINGULARITY_CONFIG": str(path)})
    assert from_file.ollama.host == "http://file-host:1111"
    assert from_file.ollama.timeout_seconds == 9

    environ = {"SINGULARITY_CONFIG": str(path), "OLLAMA_HOST": "env-host:2222"}
    from_env = load_config(environ=environ)
    assert from_env.ollama.host == "http://env-host:2222"
    assert from_env.ollama.timeout_seconds == 9, "keys the environment does not set still come from the file"

    from_flags = load_config(flags={"ollama.host": "https://flag-host"}, environ=environ)
    assert from_flags.ollama.host == "https://flag-host:443"
    assert from_flags.memory.reserve_bytes == 5


def test_design_environment_variables_are_honoured(tmp_path: Path) -> None:
    config = load_config(environ={
        "SINGULARITY_HOME": str(tmp_path),
        "SINGULARITY_DATABASE_URL": "postgresql://u:pw@db:5432/x",
        "SINGULARITY_OLLAMA_MEMORY_BYTES": "2040109465",
        "OLLAMA_NUM_PARALLEL": "2",
        "OLLAMA_CONTEXT_LENGTH": "8192",
    })
    assert config.home == tmp_path
    assert config.database.url is not None and config.database.url.get_secret_value().endswith("@db:5432/x")
    assert config.memory.ollama_memory_bytes == 2040109465
    assert (config.memory.num_parallel, config.memory.context_length) == (2, 8192)


def test_the_database_password_never_shows_in_repr() -> None:
    config = load_config(environ={"SINGULARITY_DATABASE_URL": "postgresql://u:hunter2@db/x"})
    assert "hunter2" not in repr(config)
    assert "hunter2" not in str(config.database.url)


def test_unknown_key_is_named_with_its_path(tmp_path: Path) -> None:
    path = write(tmp_path, "ollama:\n  hots: localhost\n")
    with pytest.raises(ConfigError, match=r"unknown key 'ollama\.hots'") as error:
        load_config(config_file=path, environ={})
    assert str(path) in str(error.value)


def test_wrong_type_is_named_with_its_path(tmp_path: Path) -> None:
    path = write(tmp_path, "ollama:\n  timeout_seconds: soon\n")
    with pytest.raises(ConfigError, match=r"'ollama\.timeout_seconds'.*number"):
        load_config(config_file=path, environ={})


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"SINGULARITY_OLLAMA_MEMORY_BYTES"):
        load_config(environ={"SINGULARITY_OLLAMA_MEMORY_BYTES": "two gigs"})


def test_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "ollama:\n  host: [unclosed\n")
    with pytest.raises(ConfigError, match=r"line \d+ is not valid YAML"):
        load_config(config_file=path, environ={})


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*nope\.yaml"):
        load_config(environ={"SINGULARITY_CONFIG": str(tmp_path / "nope.yaml")})


def test_empty_config_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(config_file=write(tmp_path, ""), environ={}).ollama.timeout_seconds == 5


def test_bad_listen_address_is_rejected() -> None:
    with pytest.raises(ConfigError, match="metrics_listen"):
        load_config(flags={"exporter.metrics_listen": "localhost"}, environ={})


def test_every_key_and_variable_is_documented() -> None:
    import dataclasses
    import typing

    from singularity_ops.config import ENVIRONMENT, Config

    doc = (Path(__file__).resolve().parents[2] / "docs" / "CONFIGURATION.md").read_text()

    def keys(model: type, prefix: str = "") -> list[str]:
        found = []
        hints = typing.get_type_hints(model)
        for field in dataclasses.fields(model):
            if dataclasses.is_dataclass(hints[field.name]):
                found += keys(hints[field.name], f"{prefix}{field.name}.")
            else:
                found.append(prefix + field.name)
        return found

    missing = [k for k in keys(Config) if f"`{k}`" not in doc] + [v for v in ENVIRONMENT if f"`{v}`" not in doc]
    assert not missing


def test_bounds_are_enforced() -> None:
    with pytest.raises(ConfigError, match=r"'ollama\.timeout_seconds'.*greater than 0"):
        load_config(flags={"ollama.timeout_seconds": "0"}, environ={})
    with pytest.raises(ConfigError, match=r"'memory\.kv_cache_type' \(from OLLAMA_KV_CACHE_TYPE\).*f16"):
        load_config(environ={"OLLAMA_KV_CACHE_TYPE": "f8"})


def test_a_section_that_is_not_a_mapping_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'ollama' must be a mapping"):
        load_config(config_file=write(tmp_path, "ollama: localhost\n"), environ={})
