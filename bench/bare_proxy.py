"""The least a proxy written with aiohttp can do, as bench/gateway.py's baseline: read the request, send it on with
one kept-alive client session, stream the answer back unchanged. No metering, guard, history or rewriting.

Run: ``python bench/bare_proxy.py PORT UPSTREAM_URL`` (bench/gateway.py starts it).
"""

from __future__ import annotations

import sys

import aiohttp
from aiohttp import web

PASSED = ("Content-Type",)


async def forward(request: web.Request) -> web.StreamResponse:
    session: aiohttp.ClientSession = request.app["session"]
    body = await request.read()
    async with session.request(request.method, request.app["upstream"] + request.path_qs, data=body,
                               headers={k: v for k, v in request.headers.items() if k in PASSED}) as upstream:
        response = web.StreamResponse(status=upstream.status,
                                      headers={k: v for k, v in upstream.headers.items() if k in PASSED})
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def open_session(app: web.Application) -> None:
    app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)


async def close_session(app: web.Application) -> None:
    await app["session"].close()


def main() -> None:
    app = web.Application()
    app["upstream"] = sys.argv[2].rstrip("/")
    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)
    app.router.add_route("*", "/{tail:.*}", forward)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
