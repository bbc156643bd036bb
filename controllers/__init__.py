"""Controllers: small loops that act on what is measured (model manager, backup, …).

Each controller is a class with a ``name``, an ``interval_seconds`` and a ``tick()`` that does one round of
work; ``controllers.registry`` maps names to factories. ``singularity-ops controller NAME`` runs one as its
own process, ``singularity-ops run`` runs them all beside the exporter.
"""
