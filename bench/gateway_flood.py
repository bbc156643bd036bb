"""Another client's latency while one address holds 2,000 idle sockets to the gateway (issue 15, item 3).

Run: ``.venv/bin/python bench/gateway_flood.py`` from the repository root. The exporter (collectors + gateway, no
database) runs as its own process under ``ulimit -n 1024`` (soft and hard: it cannot raise it), in front of the
Ollama stand-in. A client at 127.0.0.2 opens a new connection for each ``GET /api/version`` through the gateway:
with no flood (the baseline, after a warm-up) and while 127.0.0.1 holds 2,000 idle connections (those over the
per-client cap are closed at accept), in alternating blocks. Prints p50/p99 of both, the difference, and how much
the log grew while flooded.
Target: the other client is served in < 50 ms under the flood; the log grows < 100 kB.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import DEFAULT_MODELS  # noqa: E402
from tests.exporter.flood import limited_exporter, open_idle, raise_own_file_limit, timed_gets  # noqa: E402
from tests.helpers import series, wait_for  # noqa: E402
from tests.standins.models import REAL_MODELS  # noqa: E402
from tests.standins.ollama import OllamaStandIn  # noqa: E402

FLOOD, BLOCKS, ROUNDS, WARM_UP = 2000, 3, 100, 30


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def gateway_series(metrics: str, name: str) -> float:
    import httpx

    text = httpx.get(f"http://{metrics}/metrics", timeout=10).text
    return sum(v for labels, v in series(text, name).items() if 'listener="gateway"' in labels)


def main() -> None:
    if not raise_own_file_limit(FLOOD + 200):
        sys.exit(f"this process cannot hold {FLOOD} sockets: raise its hard open-file limit")
    with tempfile.TemporaryDirectory() as folder, \
            OllamaStandIn(models=[REAL_MODELS[name] for name in DEFAULT_MODELS]) as ollama, \
            limited_exporter(ollama.host, Path(folder) / "exporter.log", file_limit=1024) as exporter:
        url = f"http://{exporter.gateway}/api/version"
        timed_gets(url, WARM_UP, source="127.0.0.2")
        quiet: list[float] = []
        flooded: list[float] = []
        grown = 0
        for _ in range(BLOCKS):
            quiet += timed_gets(url, ROUNDS, source="127.0.0.2")
            log_before = exporter.log.stat().st_size
            refused = gateway_series(exporter.metrics, "singularity_http_connections_refused_total")
            flood = open_idle(exporter.gateway, FLOOD)
            wait_for(lambda: gateway_series(exporter.metrics, "singularity_http_connections_refused_total")
                     >= refused + FLOOD - 256, timeout=30, what="the flood counted")  # noqa: B023
            flooded += timed_gets(url, ROUNDS, source="127.0.0.2")
            grown += exporter.log.stat().st_size - log_before
            for sock in flood:
                sock.close()
            wait_for(lambda: gateway_series(exporter.metrics, "singularity_http_connections") == 0, timeout=30,
                     what="the flood's connections gone")
        alive = exporter.process.poll() is None
        tracebacks = exporter.log.read_text().count("Traceback")
    ms = 1000
    print(f"other client, {BLOCKS} x {ROUNDS} requests each (new connection per request, through the gateway):")
    for name, samples in (("no flood", quiet), (f"{FLOOD} idle sockets", flooded)):
        print(f"  {name:>18}: p50 {quantile(samples, 0.5) * ms:6.2f} ms   p99 {quantile(samples, 0.99) * ms:6.2f} ms"
              f"   max {max(samples) * ms:6.2f} ms   mean {statistics.fmean(samples) * ms:6.2f} ms")
    print(f"  difference: p50 {(quantile(flooded, 0.5) - quantile(quiet, 0.5)) * ms:+.2f} ms, "
          f"p99 {(quantile(flooded, 0.99) - quantile(quiet, 0.99)) * ms:+.2f} ms "
          f"(ratio p99 {quantile(flooded, 0.99) / quantile(quiet, 0.99):.2f}x)")
    print(f"target: p99 under the flood < 50 ms: {'met' if quantile(flooded, 0.99) < 0.05 else 'MISSED'}")
    print(f"log growth during the {BLOCKS} floods: {grown} bytes ({'< 100 kB: met' if grown < 100_000 else 'MISSED'}), "
          f"{tracebacks} tracebacks; exporter still running: {alive}")


if __name__ == "__main__":
    main()
