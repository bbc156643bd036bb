"""Issue 15, item 3: one client holding 2,000 idle sockets under ``ulimit -n 1024`` used to exhaust the
exporter's descriptors (gateway and /metrics unreachable) and log ~3,000 EMFILE tracebacks a second. Now the
sockets over the per-client cap are closed at accept: others are served, and the log barely grows."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import DEFAULT_MODELS
from tests.exporter.flood import answers, limited_exporter, open_idle, raise_own_file_limit, timed_gets
from tests.helpers import series, wait_for
from tests.standins.models import REAL_MODELS
from tests.standins.ollama import OllamaStandIn

FLOOD = 2000


@pytest.mark.slow
def test_2000_idle_sockets_from_one_address_leave_the_gateway_and_metrics_to_everyone_else(tmp_path: Path) -> None:
    if not raise_own_file_limit(FLOOD + 200):
        pytest.skip(f"this process cannot hold {FLOOD} sockets (hard RLIMIT_NOFILE too low)")
    with OllamaStandIn(models=[REAL_MODELS[name] for name in DEFAULT_MODELS]) as ollama, \
            limited_exporter(ollama.host, tmp_path / "exporter.log", file_limit=1024) as exporter:
        metrics_url = f"http://{exporter.metrics}/metrics"
        log_before = exporter.log.stat().st_size
        flood = open_idle(exporter.gateway, FLOOD)
        try:
            def refused() -> float:
                text = httpx_get(metrics_url)
                return series(text, "singularity_http_connections_refused_total").get(
                    '{listener="gateway",reason="per_client"}', 0.0)

            kept = FLOOD - wait_for(lambda: refused() >= FLOOD - 256 and refused(), timeout=30,
                                    what="the flood counted at accept")
            assert kept <= 256  # the per-client cap, fitted to 1,024 descriptors: (1024 - 192) / 2 / 2
            assert timed_gets(f"http://{exporter.gateway}/api/version", 20, source="127.0.0.2")
            assert answers(metrics_url, source="127.0.0.2") and answers(metrics_url)
        finally:
            for sock in flood:
                sock.close()
        assert exporter.process.poll() is None
    grown = exporter.log.stat().st_size - log_before
    text = exporter.log.read_text()
    assert grown < 100_000, f"the log grew by {grown} bytes"
    assert "Traceback" not in text and "Too many open files" not in text
    assert text.count("closed connections at accept") <= 2  # the first at once, then one sum a minute at most


def httpx_get(url: str) -> str:
    import httpx

    return httpx.get(url, timeout=10).text
