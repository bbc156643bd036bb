"""The exporter process: collectors and /metrics (the metering gateway joins it later)."""
