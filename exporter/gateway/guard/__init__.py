"""The threat detector in front of every gateway request: API keys and client identity, rate limits and spike
detection, brute-force bans, repeated prompts and the injection scorer (docs/ANOMALY_DETECTION.md)."""
