"""Alerting shared by every part: the effective Alertmanager configuration (``alertmanager_config``) and the
Alertmanager v2 push client the controllers use for their own alerts (``push``).

The rules themselves live in ``prometheus/rules/`` and the routing in ``alertmanager/``; docs/ALERTS.md
describes both.
"""
