"""Shared core of Singularity Ops: config, store, Ollama client, memory-fit estimator, CLI."""
