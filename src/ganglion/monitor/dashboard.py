"""The Synapse monitor's web page, served by the gateway at ``/`` from the package itself.

The page is plain HTML, CSS and JavaScript (no build step, no CDN: a fleet may have no
internet). It needs no key to load; when the gateway enforces API keys, the page asks for
one and sends it with every API call and the event stream.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import PlainTextResponse

STATIC = files("ganglion.monitor") / "static"
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "runs.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
NO_CACHE = {"Cache-Control": "no-cache"}

router = APIRouter(tags=["monitor"])


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def page(request: Request) -> Response:
    """The dashboard for a browser; Ollama's own answer for anything else (``ollama`` and
    other clients check ``HEAD /`` or ``GET /`` to see that a server is up)."""
    if "text/html" not in request.headers.get("accept", ""):
        return PlainTextResponse("Ollama is running")
    html = (STATIC / "index.html").read_bytes()
    return Response(html, media_type="text/html; charset=utf-8", headers=NO_CACHE)


@router.get("/monitor/{asset}", include_in_schema=False)
async def asset(asset: str) -> Response:
    media_type = ASSETS.get(asset)
    if media_type is None:
        raise HTTPException(404, f"no monitor asset {asset!r}")
    return Response((STATIC / asset).read_bytes(), media_type=media_type, headers=NO_CACHE)
