"""The metering gateway: an Ollama-compatible proxy that measures, guards and records every request."""
