"""The gateway's request metrics: DESIGN.md's names, and the OpenTelemetry GenAI histograms with the
buckets the semantic conventions recommend (OpenTelemetry semantic-conventions, docs/gen-ai/gen-ai-metrics.md,
"explicit bucket boundaries")."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

OPERATION_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96,
                              81.92)
TOKEN_USAGE_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
TIME_TO_FIRST_TOKEN_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                               7.5, 10.0)
TIME_PER_OUTPUT_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("llm_requests", "Requests answered by the gateway",
                                ["model", "endpoint", "status"], registry=registry)
        self.input_tokens = Counter("llm_input_tokens", "Prompt tokens Ollama evaluated (prompt_eval_count)",
                                    ["model"], registry=registry)
        self.output_tokens = Counter("llm_output_tokens", "Tokens Ollama generated (eval_count)",
                                     ["model"], registry=registry)
        self.generation_seconds = Counter("llm_generation_seconds",
                                          "Time Ollama spent generating (sum of eval_duration)", ["model"],
                                          registry=registry)
        self.cost = Counter("llm_cost", "Cost of the requests (price table + energy), in the currency",
                            ["model", "currency"], registry=registry)
        self.energy = Counter("llm_energy_joules", "Energy the requests used (power x request time)",
                              ["model"], registry=registry)
        self.compression = Histogram("llm_context_compression_ratio",
                                     "Original / sent prompt tokens of chat requests (1: nothing cut)", ["model"],
                                     buckets=(1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0), registry=registry)
        self.operation_duration = Histogram(
            "gen_ai_client_operation_duration_seconds", "GenAI operation duration, as the client sees it",
            ["gen_ai_request_model", "gen_ai_operation_name", "error_type"],
            buckets=OPERATION_DURATION_BUCKETS, registry=registry)
        self.token_usage = Histogram(
            "gen_ai_client_token_usage", "Tokens used per operation (input or output)",
            ["gen_ai_request_model", "gen_ai_token_type"], buckets=TOKEN_USAGE_BUCKETS, registry=registry)
        self.time_to_first_token = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Request received by the gateway to the first streamed chunk with content",
            ["gen_ai_request_model"], buckets=TIME_TO_FIRST_TOKEN_BUCKETS, registry=registry)
        self.time_per_output_token = Histogram(
            "gen_ai_server_time_per_output_token_seconds", "Generation time per output token after the first",
            ["gen_ai_request_model"], buckets=TIME_PER_OUTPUT_TOKEN_BUCKETS, registry=registry)
        self.rejected = Counter("singularity_gateway_rejected_requests",
                                "Requests refused by the gateway itself before reaching Ollama",
                                ["reason"], registry=registry)

        self._children: dict[Hashable, Any] = {}

    def child(self, metric: Counter | Histogram, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached: label values are bounded (installed models, known endpoints,
        HTTP statuses), and the lookup is the largest cost of metering a request otherwise."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found
