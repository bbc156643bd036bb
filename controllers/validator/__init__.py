"""Cross-model validation: one suite run on every model, scored, stored, and acted on (demotion and promotion).

``suite`` (YAML cases, versioned by content hash), ``scorers`` (equals, contains, regex, json, number, similar,
judge) with ``json_schema`` (the JSON Schema subset), ``ollama`` (the calls a run makes), ``runner`` (one model at a
time within the memory budget, then the loaded set restored), ``progress`` (the bar), ``results`` (the tables and
the demotion rule), ``controller`` (the cron schedule and digest changes). docs/MODEL_VALIDATION.md.
"""
