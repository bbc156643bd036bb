"""The cache's metrics (docs/METRICS.md). Sample exposition::

    llm_cache_requests_total{model="llama3.2:3b",result="semantic"} 12.0
    llm_cache_lookup_seconds_bucket{le="0.001"} 40.0
    llm_cache_entries{model="llama3.2:3b"} 1523.0
    llm_cache_saved_seconds_total{model="llama3.2:3b"} 84.2
    llm_cache_embedding_failures_total{reason="timeout"} 0.0
    llm_cache_warmed_total{model="llama3.2:3b",reason="calendar"} 3.0
    llm_cache_warm_hits_total{model="llama3.2:3b"} 2.0
    llm_cache_up 1.0

Check by hand: ``curl -si localhost:11435/api/chat -d '{"model":"llama3.2:3b","messages":[...]}' | grep -i
x-singularity-cache``; ``SELECT model, count(*) FROM cache_entries GROUP BY model``.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LOOKUP_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5)
EMBEDDING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
RESULTS = ("hit", "semantic", "miss", "bypass")


class CacheMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("llm_cache_requests", "Inference requests by what the cache did: hit (exact), "
                                "semantic, miss or bypass", ["model", "result"], registry=registry)
        self.lookup = Histogram("llm_cache_lookup_seconds", "Time of a cache lookup, exact and semantic (the "
                                "gateway's index, and PostgreSQL for the entries it names), without the embedding "
                                "call", buckets=LOOKUP_BUCKETS, registry=registry)
        self.embedding = Histogram("llm_cache_embedding_seconds", "Time of the embedding call (/api/embed) of a "
                                   "lookup", buckets=EMBEDDING_BUCKETS, registry=registry)
        self.embedding_failures = Counter("llm_cache_embedding_failures", "Embedding calls that failed: the "
                                          "request was looked up by exact match only", ["reason"], registry=registry)
        self.entries = Gauge("llm_cache_entries", "Entries in the cache", ["model"], registry=registry)
        self.saved_seconds = Counter("llm_cache_saved_seconds", "Upstream time not spent: what making each answer "
                                     "took, less the hit's own time", ["model"], registry=registry)
        self.stored = Counter("llm_cache_stored", "Answers stored (complete upstream answers of misses)", ["model"],
                              registry=registry)
        self.errors = Counter("llm_cache_errors", "Cache operations that failed on the database (the request "
                              "was served without the cache)", ["operation"], registry=registry)
        self.up = Gauge("llm_cache_up", "1 when the cache is enabled and its database (with pgvector) answers",
                        registry=registry)
        self.warmed = Counter("llm_cache_warmed", "Entries the warmer made", ["model", "reason"], registry=registry)
        self.warm_hits = Counter("llm_cache_warm_hits", "Hits on entries the warmer made", ["model"],
                                 registry=registry)
        self._children: dict[Hashable, Any] = {}
        for result in RESULTS:
            self.requests.labels("other", result)

    def child(self, metric: Counter | Histogram | Gauge, *labels: str) -> Any:
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def set_entries(self, counts: dict[str, int]) -> None:
        for labels in list(self.entries._metrics):  # models whose entries are gone show 0, then disappear
            if labels[0] not in counts:
                self.entries.remove(*labels)
        for model, count in counts.items():
            self.entries.labels(model).set(count)
