"""The Ollama stand-in, noting what reached it: each request's headers, and the status it answered with."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiohttp import web

from tests.conftest import DEFAULT_MODELS
from tests.standins.models import REAL_MODELS
from tests.standins.ollama import OllamaStandIn

MARK = "X-Fuzz-Case"  # a request's number, to find the status the stand-in gave it


class RecordingOllama(OllamaStandIn):
    """The stand-in, noting each request's headers and the status it answered with."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seen: set[str] = set()
        self.answered: dict[str, int] = {}
        self.headers: list[tuple[str, dict[str, str]]] = []  # (path, headers) of every request

    def headers_of(self, path: str) -> list[dict[str, str]]:
        return [headers for at, headers in self.headers if at == path]

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.headers.append((request.path, dict(request.headers)))
        case = request.headers.get(MARK, "")
        self.seen.add(case)
        try:
            response = await super()._middleware(request, handler)
        except Exception:  # the stand-in's own failure, which aiohttp answers with a 500
            self.answered[case] = 500
            raise
        self.answered[case] = response.status
        return response


def recording_ollama() -> Iterator[RecordingOllama]:
    """For a module's ``ollama`` fixture, in place of conftest's plain stand-in."""
    with RecordingOllama(models=[REAL_MODELS[name] for name in [*DEFAULT_MODELS, "nomic-embed-text:latest"]]) as s:
        yield s
