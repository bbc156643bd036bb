"""Managed system prompts in the gateway: the registry of every system prompt seen (hash, counts, models, an
optional preview), the dialogues of enabled prompts with their outcomes (feedback and heuristics), and the A/B
substitution of a candidate prompt for a sticky share of clients (docs/PROMPT_OPTIMIZATION.md)."""
