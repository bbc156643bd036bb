"""The gateway's guard in front of every request: who the client is (API keys with scopes, addresses, trusted
proxies), who may use the admin routes, and the threat detector: rate limits and spike detection, brute-force bans,
repeated prompts and the injection scorer (docs/ANOMALY_DETECTION.md). ``detector.Guard`` is the one entry point."""
