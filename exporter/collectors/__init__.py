"""Collectors read at scrape time, one module per source: host, GPU, Ollama, runner RSS, the PostgreSQL-backed
ones (model manager, backups, catalogue), the alert thresholds, and ``scrape`` that runs them in parallel with
timeouts."""
