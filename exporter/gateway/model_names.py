"""Model labels come only from Ollama's own model list; any other name is counted as ``other``.

The list is refreshed in the background from the shared Ollama state, so the request path never waits
on a call to Ollama to find a label.
"""

from __future__ import annotations

OTHER = "other"


def canonical(name: str) -> str:
    """Ollama's short forms: ``llama3.2`` is ``llama3.2:latest``; the default registry prefix is dropped."""
    name = name.strip()
    for prefix in ("registry.ollama.ai/library/", "registry.ollama.ai/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


class ModelNames:
    def __init__(self, names: frozenset[str] = frozenset()) -> None:
        self._names = names

    def update(self, names: list[str] | frozenset[str]) -> None:
        self._names = frozenset(canonical(n) for n in names)

    def label(self, requested: object) -> str:
        if not isinstance(requested, str) or not requested:
            return OTHER
        name = canonical(requested)
        return name if name in self._names else OTHER

    def __contains__(self, name: str) -> bool:
        return canonical(name) in self._names
