"""Spans over OTLP when the standard variables ask for them; nothing at all otherwise."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from singularity_ops.exporter.gateway.tracing import Tracing


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver on loopback: what a collector would get."""

    def __init__(self) -> None:
        self.spans: list = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                request = ExportTraceServiceRequest()
                request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        outer.spans.extend(scope.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def test_no_endpoint_means_no_tracing() -> None:
    assert Tracing.from_environment({}) is None


def test_each_inference_request_is_a_span_with_genai_attributes(make_gateway, receiver, monkeypatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.server_address[1]}")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    gateway = make_gateway()
    answer = httpx.post(gateway.gateway_url + "/api/chat", timeout=30, json={
        "model": "llama3.2:3b", "messages": [{"role": "user", "content": "hi"}], "stream": False}).json()
    deadline = time.monotonic() + 10
    while not receiver.spans:
        assert time.monotonic() < deadline, "no span arrived"
        time.sleep(0.05)
    (span,) = receiver.spans
    attributes = {a.key: a.value for a in span.attributes}
    assert span.name == "chat llama3.2:3b"
    assert attributes["gen_ai.operation.name"].string_value == "chat"
    assert attributes["gen_ai.request.model"].string_value == "llama3.2:3b"
    assert attributes["gen_ai.usage.input_tokens"].int_value == answer["prompt_eval_count"]
    assert attributes["gen_ai.usage.output_tokens"].int_value == answer["eval_count"]
    assert attributes["http.response.status_code"].int_value == 200
    assert span.end_time_unix_nano > span.start_time_unix_nano
