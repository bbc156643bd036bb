"""The exporter process: one Python process that measures.

``app`` composes it: ``collectors/`` (read at scrape time: host, GPU, Ollama, runner RSS, and the ones that read
PostgreSQL: model manager, backups, catalogue) and ``gateway/`` (the Ollama-compatible metering proxy with its
breaker, guard and history), served on /metrics and the gateway port by ``listener`` (its own accept loop, caps
and timeouts, counted in ``connections``; ``access`` guards /metrics). Collectors and gateway never import each
other; the exporter never imports the controllers (they meet through PostgreSQL, metrics and HTTP).
"""
