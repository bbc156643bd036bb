"""A small synchronous client for the parts of Ollama's API that describe its state.

Responses are checked field by field: anything that is not Ollama's API (a proxy's HTML page, a
truncated body) raises ``OllamaError`` with the endpoint and the reason, never a KeyError deep inside a
collector. Units are Ollama's: sizes in bytes, times RFC 3339.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from singularity_ops import tls
from singularity_ops.errors import OllamaError

if TYPE_CHECKING:
    from singularity_ops.config import Config


@dataclass(frozen=True)
class InstalledModel:
    """One entry of ``GET /api/tags``."""

    name: str
    digest: str
    size_bytes: int
    family: str = ""
    parameter_size: str = ""
    quantization_level: str = ""


@dataclass(frozen=True)
class LoadedModel:
    """One entry of ``GET /api/ps``."""

    name: str
    digest: str
    size_bytes: int
    vram_bytes: int
    expires_at: datetime | None
    context_length: int | None = None


@dataclass(frozen=True)
class ModelDetails:
    """What ``POST /api/show`` says about one model; immutable for a given digest."""

    model_info: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)
    blob_path: str | None = None

    @property
    def architecture(self) -> str:
        return str(self.model_info.get("general.architecture", ""))

    def arch_value(self, key: str) -> Any:
        """``model_info['<arch>.<key>']``, e.g. ``arch_value('block_count')``."""
        return self.model_info.get(f"{self.architecture}.{key}")


def _require(payload: Any, key: str, kind: type | tuple[type, ...], endpoint: str) -> Any:
    if not isinstance(payload, dict) or key not in payload:
        raise OllamaError(f"Ollama's {endpoint} answer has no '{key}' field: is OLLAMA_HOST really Ollama?")
    value = payload[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise OllamaError(f"Ollama's {endpoint} field '{key}' has type {type(value).__name__}")
    return value


def parse_time(text: Any) -> datetime | None:
    """Go's RFC 3339 (nanoseconds allowed); the zero time ``0001-01-01T00:00:00Z`` means none."""
    if not isinstance(text, str) or not text or text.startswith("0001-01-01"):
        return None
    main, _, rest = text.partition(".")
    if rest:  # Python takes at most 6 fractional digits
        digits = len(rest) - len(rest.lstrip("0123456789"))
        rest = rest[: min(digits, 6)] + rest[digits:]
        text = f"{main}.{rest}"
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def parse_parameters(text: str) -> dict[str, str]:
    """The ``parameters`` block of /api/show (``num_ctx    8192`` per line); repeated keys keep the last."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            result[key] = value.strip().strip('"')
    return result


def parse_blob_path(modelfile: str) -> str | None:
    """The first un-commented ``FROM`` line of the generated Modelfile: the weights blob on Ollama's disk."""
    for line in modelfile.splitlines():
        stripped = line.strip()
        if stripped.upper().startswith("FROM "):
            return stripped[5:].strip() or None
    return None


class OllamaClient:
    """Blocking JSON calls over one kept-alive connection (stdlib ``http.client``: the exporter's RSS
    budget has no room for a second HTTP stack). Calls are serialised; a stale kept-alive connection is
    retried once on a fresh one."""

    def __init__(self, base_url: str, timeout: float = 5.0, headers: Mapping[str, str] | None = None) -> None:
        self.base_url = base_url
        self._headers = dict(headers or {})  # upstream.headers: secrets, kept out of repr and errors
        parts = urlsplit(base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._connection: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> OllamaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _exchange(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        reused = self._connection is not None
        if self._connection is None:
            if self._https:  # one verifying context for every connection (singularity_ops/tls.py)
                self._connection = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout,
                                                               context=tls.client_context())
            else:
                self._connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        headers = {"Accept": "application/json", **self._headers}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            self._connection.request(method, self._prefix + path, body=body, headers=headers)
            response = self._connection.getresponse()
            return response.status, response.read()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self._drop()
            if not reused:
                raise
            return self._exchange(method, path, body)
        except BaseException:
            self._drop()
            raise

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        endpoint = f"{method} {path}"
        data = json.dumps(body).encode() if body is not None else None
        try:
            with self._lock:
                status, raw = self._exchange(method, path, data)
        except TimeoutError:
            raise OllamaError(f"Ollama at {self.base_url} did not answer {endpoint} within {self._timeout:g} s") \
                from None
        except (OSError, http.client.HTTPException) as exc:
            raise OllamaError(
                f"cannot reach Ollama at {self.base_url} ({type(exc).__name__}: {exc}); "
                "is it running, and is OLLAMA_HOST right?"
            ) from None
        try:
            payload = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise OllamaError(
                f"Ollama at {self.base_url} answered {endpoint} with HTTP {status} and a body "
                "that is not JSON: is OLLAMA_HOST really Ollama?"
            ) from None
        if status >= 400:
            message = payload.get("error") if isinstance(payload, dict) else None
            raise OllamaError(f"Ollama answered {endpoint} with HTTP {status}: {message or payload}")
        return payload

    def version(self) -> str:
        return parse_version(self._call("GET", "/api/version"))

    def installed(self) -> list[InstalledModel]:
        return parse_tags(self._call("GET", "/api/tags"))

    def loaded(self) -> list[LoadedModel]:
        return parse_ps(self._call("GET", "/api/ps"))

    def show(self, name: str) -> ModelDetails:
        return parse_show(self._call("POST", "/api/show", {"model": name}))

    def load(self, name: str, keep_alive: str | int) -> None:
        """Load the model and keep it ``keep_alive`` (a Go duration, or seconds; negative: forever): a generate
        request without a prompt. Embedding-only models refuse generate, so they are loaded by an empty embed."""
        try:
            self._call("POST", "/api/generate", {"model": name, "keep_alive": keep_alive})
        except OllamaError as exc:
            if "does not support generate" not in str(exc):
                raise
            self._call("POST", "/api/embed", {"model": name, "input": [], "keep_alive": keep_alive})

    def unload(self, name: str) -> None:
        """Unload the model now: a generate request without a prompt and ``keep_alive: 0``."""
        self._call("POST", "/api/generate", {"model": name, "keep_alive": 0})


Client = TypeVar("Client", bound=OllamaClient)


def client_for(config: Config, timeout: float | None = None, kind: type[Client] = OllamaClient) -> Client:  # type: ignore[assignment]
    """A client for OLLAMA_HOST that sends ``upstream.headers`` (an auth proxy's token, say) as the gateway does:
    the collectors', controllers' and commands' own calls reach an Ollama behind that proxy too."""
    return kind(config.ollama.host, config.ollama.timeout_seconds if timeout is None else timeout,
                upstream_headers(config))


def upstream_headers(config: Config) -> dict[str, str]:
    """``upstream.headers`` as they go on the wire (checked when the configuration was read): secrets, never
    logged."""
    return {name: value.get_secret_value() for name, value in config.upstream.headers.items()}


# Parsers of each answer, apart from the transport so that recorded answers render golden files.


def parse_version(payload: Any) -> str:
    return _require(payload, "version", str, "/api/version")


def parse_tags(payload: Any) -> list[InstalledModel]:
    result = []
    for entry in _require(payload, "models", list, "/api/tags"):
        details = entry.get("details") if isinstance(entry, dict) else None
        details = details if isinstance(details, dict) else {}
        result.append(InstalledModel(
            name=_require(entry, "name", str, "/api/tags"),
            digest=_require(entry, "digest", str, "/api/tags"),
            size_bytes=_require(entry, "size", int, "/api/tags"),
            family=str(details.get("family") or ""),
            parameter_size=str(details.get("parameter_size") or ""),
            quantization_level=str(details.get("quantization_level") or ""),
        ))
    return result


def _optional_int(entry: dict[str, Any], key: str) -> int | None:
    value = entry.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def parse_ps(payload: Any) -> list[LoadedModel]:
    result = []
    for entry in _require(payload, "models", list, "/api/ps"):
        result.append(LoadedModel(
            name=_require(entry, "name", str, "/api/ps"),
            digest=_require(entry, "digest", str, "/api/ps"),
            size_bytes=_require(entry, "size", int, "/api/ps"),
            vram_bytes=_optional_int(entry, "size_vram") or 0,
            expires_at=parse_time(entry.get("expires_at")),
            context_length=_optional_int(entry, "context_length") or None,
        ))
    return result


def parse_show(payload: Any) -> ModelDetails:
    if not isinstance(payload, dict):
        raise OllamaError("Ollama's /api/show answer is not a JSON object")
    info = payload.get("model_info")
    return ModelDetails(
        model_info=info if isinstance(info, dict) else {},
        parameters=parse_parameters(str(payload.get("parameters") or "")),
        blob_path=parse_blob_path(str(payload.get("modelfile") or "")),
    )
