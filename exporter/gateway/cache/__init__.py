"""The gateway's semantic cache: which requests may be answered from it (policy), their keys, exact and semantic
lookup in PostgreSQL with pgvector (store), capturing a complete upstream answer (answer), replaying a stored one in
each endpoint's own shape (replay), the embedding call (embed), its metrics, and carrying out the warms the
cache-warmer controller queues (warm). docs/PREDICTIVE_CACHE_WARMING.md says how it behaves."""
