"""The dashboard's files (``/ui/``): static ES modules, CSS and one HTML page from zsup/http/ui/.

The files are the same in every installation and hold no data: they are served without
authentication (the page itself asks for a password or token and sends it with each API
call, websocket and stream it opens). Only GET and HEAD; ``/ui`` redirects to ``/ui/``; a
path that leaves the folder, or names no file, is 404. The page is never cached stale
(``Cache-Control: no-cache``: browsers revalidate with ``If-Modified-Since``), so an upgrade
of zsup shows at the next reload.
"""

from __future__ import annotations

import os

from webob import Request, Response
from webob.static import FileApp

from zsup.http.plugins import safe_join
from zsup.http.web import HTTPError

__all__ = ["PREFIX", "UI_DIR", "is_ui_path", "serve"]

PREFIX = "/ui"
UI_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ui")

# Set here, not guessed: ES modules need a JavaScript type, and mimetypes reads the host's
# /etc/mime.types, which may lack or differ for some of these.
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
         ".ico": "image/x-icon"}


def is_ui_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def serve(req: Request):
    """The answer (a WSGI app) for a request whose path is under /ui."""
    if req.method not in ("GET", "HEAD"):
        raise HTTPError(405, f"{req.method} is not allowed on {req.path_info} (allowed: GET, HEAD)",
                        headers={"Allow": "GET, HEAD"})
    relative = req.path_info[len(PREFIX):]
    if not relative:
        resp = Response(status=301)
        resp.location = f"{req.application_url}{PREFIX}/"
        return resp
    relative = relative.lstrip("/") or "index.html"
    target = safe_join(UI_DIR, relative)
    content_type = TYPES.get(os.path.splitext(target or "")[1])
    if target is None or content_type is None or not os.path.isfile(target):
        raise HTTPError(404, f"no file {relative!r} in the dashboard")
    app = FileApp(target, content_type=content_type)
    return _NoCache(app)


class _NoCache:
    """FileApp with ``Cache-Control: no-cache`` on its answers."""

    def __init__(self, app: FileApp):
        self.app = app

    def __call__(self, environ, start_response):
        def start(status, headers, exc_info=None):
            headers = [(k, v) for k, v in headers if k.lower() != "cache-control"]
            return start_response(status, headers + [("Cache-Control", "no-cache")], exc_info)
        return self.app(environ, start)
