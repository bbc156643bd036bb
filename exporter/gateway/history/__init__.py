"""The gateway's request history: rows batched into PostgreSQL, buffered and spooled to disk while it is away,
and the per-minute rollups the dashboards read."""
