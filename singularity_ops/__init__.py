"""The shared core of Singularity Ops: what every part needs and no part owns.

Config (``config/``), the history store and its migrations (``store``, ``migrate``), the Ollama client and state
(``ollama_*``), memory fit (``memory``, ``model_fit``, ``runners``), time expressions (``cron``, ``schedule``),
sensors (``hardware``), logs and errors, and alerting (``alerting/``: Alertmanager config and the v2 push client).
The parts are mapped into this package (pyproject.toml): ``cli`` (every command), ``exporter`` (collectors and
gateway), ``controllers`` (the loops that act). The core imports none of them (.importlinter).
"""
