"""Alerting: the effective Alertmanager configuration (``alertmanager_config``) and what goes with it.

The rules themselves live in ``prometheus/rules/`` and the routing in ``alertmanager/``; docs/ALERTS.md
describes both.
"""
