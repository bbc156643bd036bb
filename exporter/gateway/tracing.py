"""OpenTelemetry spans for gateway requests, with the GenAI semantic conventions' attributes.

Off unless the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, and
then configured entirely by the standard ``OTEL_*`` variables (headers, protocol, service name…). Off means
zero cost: the SDK is not even imported, so a 2 GB server pays nothing for a feature it does not use.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


class Tracing:
    def __init__(self, tracer: Any, provider: Any) -> None:
        self._tracer = tracer
        self._provider = provider

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Tracing | None:
        environ = os.environ if environ is None else environ
        if not any(environ.get(name) for name in ENDPOINT_VARIABLES):
            return None
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry SDK is not installed: "
                        "pip install 'singularity-ops[otel]'; tracing stays off")
            return None
        resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", "singularity-ops-gateway")})
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        log.info("tracing gateway requests to %s", next(environ[n] for n in ENDPOINT_VARIABLES if environ.get(n)))
        return cls(provider.get_tracer("singularity_ops.gateway"), provider)

    def record(self, name: str, start_ns: int, end_ns: int, attributes: dict[str, Any], error: str | None) -> None:
        """One finished request as a client span (it is recorded after the fact, with its real start time)."""
        from opentelemetry.trace import SpanKind, Status, StatusCode

        span = self._tracer.start_span(name, kind=SpanKind.CLIENT, start_time=start_ns,
                                       attributes={k: v for k, v in attributes.items() if v is not None})
        if error:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=end_ns)

    def close(self) -> None:
        self._provider.shutdown()
