"""The prompt optimiser: for enabled system prompts, OPRO-style candidates from the optimiser model, scored offline
by replaying stored user turns with the validator's judge, then tested live in the gateway's A/B experiments and
decided by a sequential test (docs/PROMPT_OPTIMIZATION.md)."""
