"""The gateway's own HTTP surface for prompts: ``POST /singularity/v1/feedback``, and the response headers
``X-Request-Id`` (every response: the id a client rates by) and ``X-Singularity-Variant`` (requests in an experiment).

Feedback: ``{"request_id": "<the response's X-Request-Id>", "rating": 1 | -1 | 0..1}``. Only the client that made
the request (the same API key, or address) may rate it; a later rating replaces an earlier one. Answers: 200
``{"request_id", "prompt", "outcome", "rating"}``; 400 a malformed body; 403 another client's request; 404 a request
that was not kept (its prompt is not enabled, or retention passed); 405 a method other than POST; 503 the
database could not be asked. Without the prompt layer (``prompt_optimizer.enabled`` off, or no database) it is 404.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from singularity_ops.prompt_ab import rating_outcome

FEEDBACK_PATH = "/singularity/v1/feedback"
VARIANT_HEADER = "X-Singularity-Variant"
OUTCOME_KEY = web.RequestKey("singularity_outcome", Any)  # the proxy's Outcome of this request
MAX_BODY = 4096


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _read(body: bytes) -> tuple[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ValueError('the body must be JSON: {"request_id": "...", "rating": 1}') from None
    if not isinstance(payload, dict):
        raise ValueError('the body must be a JSON object: {"request_id": "...", "rating": 1}')
    request_id = payload.get("request_id")
    if not isinstance(request_id, str) or not request_id.strip():
        raise ValueError("request_id is required: the X-Request-Id of the response being rated")
    if "rating" not in payload:
        raise ValueError("rating is required: 1 or -1 (thumbs up or down), or a score from 0 to 1")
    unknown = set(payload) - {"request_id", "rating"}
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
    return request_id.strip().lower(), payload["rating"]


async def handle_feedback(layer: Any, method: str, body: bytes, client: str) -> web.Response:
    """``layer`` is the PromptLayer (None: off); ``client`` who is asking (the guard's client id: key id or address)."""
    if method != "POST":
        return _error(405, f"{FEEDBACK_PATH} takes POST", {"Allow": "POST"})
    if layer is None:
        return _error(404, "feedback is not recorded here: prompt_optimizer.enabled is false, or the gateway runs "
                           "without its database")
    if len(body) > MAX_BODY:
        return _error(413, f"feedback bodies are at most {MAX_BODY} bytes")
    try:
        request_id, raw = _read(body)
        outcome, rating = rating_outcome(raw)
    except ValueError as exc:
        return _error(400, str(exc))
    try:
        found = await layer.rate(request_id, client, outcome, rating)
    except Exception as exc:  # the database, asked for an older request
        return _error(503, f"the feedback could not be recorded now ({type(exc).__name__}); try again")
    if found == "forbidden":
        return _error(403, "a request can be rated only by the client that made it")
    if isinstance(found, str):
        return _error(404, found)
    return web.json_response({"request_id": request_id, "prompt": found.name, "outcome": outcome, "rating": rating})


async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response its request id; one in an experiment its variant, errors included."""
    outcome = request.get(OUTCOME_KEY)
    if outcome is not None:
        response.headers["X-Request-Id"] = outcome.request_id
        tracked = outcome.prompt
        if tracked is not None and tracked.variant is not None:
            response.headers[VARIANT_HEADER] = tracked.variant
