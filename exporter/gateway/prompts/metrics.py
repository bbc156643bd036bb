"""The prompt layer's metrics. The ``prompt`` label is the operator's name for an enabled prompt (``prompts enable ID
--name NAME``), never its text or hash; only enabled prompts have series.

    llm_prompt_experiment_requests_total{prompt="support",variant="candidate"} 41.0
    llm_prompt_experiment_statistic{prompt="support"} 1.73

The request-path counters are plain dictionaries, read at scrape time: a prometheus_client child costs a lock and
microseconds per increment, and the A/B substitution's whole budget is 50 µs. Only the event loop's thread adds to
them; a scrape copies each (``dict.copy`` is atomic under the GIL) before reading.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from singularity_ops.exporter.gateway.prompts.store import Managed


class PromptMetrics(Collector):
    def __init__(self, registry: CollectorRegistry, managed: Callable[[], Iterable[Managed]]) -> None:
        self.registry = registry
        self._managed = managed
        self.requests: Tally[tuple[str, ...]] = Tally()  # (prompt,)
        self.outcomes: Tally[tuple[str, ...]] = Tally()  # (prompt, outcome)
        self.experiment_requests: Tally[tuple[str, ...]] = Tally()  # (prompt, variant)
        self.experiment_outcomes: Tally[tuple[str, ...]] = Tally()  # (prompt, variant, outcome)
        self.dropped = Counter("singularity_prompt_dialogues_dropped", "Dialogues not written: the database was "
                               "unreachable for longer than the buffer holds", registry=registry)
        self.write_failures = Counter("singularity_prompt_writes_failed", "Failed writes or reads of the prompt "
                                      "tables (retried)", registry=registry)
        registry.register(self)

    def describe(self) -> list[Metric]:
        return list(self._families({}, {}, {}, {}, []))

    def collect(self) -> Iterator[Metric]:
        return self._families(self.requests.copy(), self.outcomes.copy(), self.experiment_requests.copy(),
                              self.experiment_outcomes.copy(), list(self._managed()))

    @staticmethod
    def _families(requests: dict, outcomes: dict, experiment_requests: dict, experiment_outcomes: dict,
                  managed: list[Managed]) -> Iterator[Metric]:
        for name, help_text, labels, values in (
                ("llm_prompt_requests", "Requests carrying an enabled system prompt", ["prompt"], requests),
                ("llm_prompt_outcomes", "Dialogues of an enabled prompt settled, by outcome (feedback after a "
                 "heuristic counts again)", ["prompt", "outcome"], outcomes),
                ("llm_prompt_experiment_requests", "Requests in a running A/B experiment", ["prompt", "variant"],
                 experiment_requests),
                ("llm_prompt_experiment_outcomes", "Outcomes of dialogues in an A/B experiment",
                 ["prompt", "variant", "outcome"], experiment_outcomes)):
            family = CounterMetricFamily(name, help_text, labels=labels)
            for key, value in sorted(values.items()):
                family.add_metric(list(key), value)
            yield family
        statistic = GaugeMetricFamily("llm_prompt_experiment_statistic", "The running experiment's test statistic "
                                      "at the controller's last look: log of the mixture likelihood ratio",
                                      labels=["prompt"])
        threshold = GaugeMetricFamily("llm_prompt_experiment_threshold", "The statistic at which the experiment "
                                      "decides: log(1 / alpha)", labels=["prompt"])
        share = GaugeMetricFamily("llm_prompt_experiment_share", "Share of clients that get the candidate",
                                  labels=["prompt"])
        for prompt in managed:
            experiment = prompt.experiment
            if experiment is None:
                continue
            share.add_metric([prompt.name], experiment.share)
            if experiment.statistic is not None:
                statistic.add_metric([prompt.name], experiment.statistic)
            if experiment.threshold is not None:
                threshold.add_metric([prompt.name], experiment.threshold)
        yield from (statistic, threshold, share)
