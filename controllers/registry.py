"""Controller name → factory. A controller appears here when it is built (never a stub)."""

from __future__ import annotations

from collections.abc import Callable

from singularity_ops.config import Config
from singularity_ops.controllers.base import Controller

CONTROLLERS: dict[str, Callable[[Config], Controller]] = {}


def register(name: str) -> Callable[[Callable[[Config], Controller]], Callable[[Config], Controller]]:
    def decorate(factory: Callable[[Config], Controller]) -> Callable[[Config], Controller]:
        CONTROLLERS[name] = factory
        return factory

    return decorate


def load_all() -> dict[str, Callable[[Config], Controller]]:
    """Import every controller module so that each registers itself."""
    import importlib
    import pkgutil

    import singularity_ops.controllers as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name in ("base", "registry", "leader"):  # shared pieces, not controllers
            continue
        # a controller with several files is a folder whose `controller` module registers it
        suffix = ".controller" if module.ispkg else ""
        importlib.import_module(f"{package.__name__}.{module.name}{suffix}")
    return CONTROLLERS
