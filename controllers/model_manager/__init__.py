"""The auto model manager: loads and unloads Ollama models by time-of-day profile, recent demand and memory fit.

``plan`` is the pure planner (what to load and unload, and why), ``store`` its tables (events, model status,
acting replica), ``controller`` the loop that reads live state, plans and acts. docs/AUTO_MODEL_MANAGEMENT.md.
"""
