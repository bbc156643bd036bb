"""Numbered plain-SQL migrations, applied in order by `singularity-ops migrate`."""
