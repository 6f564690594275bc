"""Site plugins (gaffer's ``/_plugin/<name>/``): static files from the plugin folder.

A folder of ``plugin_dir`` is a site when it has a ``_site`` subfolder (served from there), or
when it holds no Python file at all (served as it is). The folder is looked at on every
request, so plugins added while the gateway runs are served at once.
"""

from __future__ import annotations

import mimetypes
import os

from webob import Response
from webob.static import FileApp

from zsup.http.routes_api import api
from zsup.http.web import HTTPError

route = api.route


def _has_python(folder: str) -> bool:
    for _, dirs, files in os.walk(folder):
        if any(name.endswith(".py") for name in files):
            return True
        dirs[:] = [d for d in dirs if not d.startswith(".")]
    return False


def site_root(plugin_dir: str | None, name: str) -> str | None:
    """The folder served for plugin `name`, or None."""
    if not plugin_dir or not name or name.startswith(".") or "/" in name or "\\" in name:
        return None
    folder = os.path.join(plugin_dir, name)
    if not os.path.isdir(folder):
        return None
    site = os.path.join(folder, "_site")
    if os.path.isdir(site):
        return site
    if not _has_python(folder):
        return folder
    return None


def list_sites(plugin_dir: str | None) -> list[str]:
    if not plugin_dir or not os.path.isdir(plugin_dir):
        return []
    return sorted(n for n in os.listdir(plugin_dir) if site_root(plugin_dir, n))


def safe_join(root: str, relative: str) -> str | None:
    """`root/relative`, or None if it would leave root (``..``, absolute parts, symlinks out)."""
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    if any(p == ".." or "\0" in p or "\\" in p for p in parts):
        return None
    real_root = os.path.realpath(root)
    path = os.path.realpath(os.path.join(real_root, *parts))
    if path != real_root and not path.startswith(real_root + os.sep):
        return None
    return path


@route("GET", "/_plugin", "Site plugins that can be browsed", tag="plugins")
def plugins(ctx, req):
    return {"plugins": [{"name": n, "url": f"{req.host_url}/_plugin/{n}/"}
                        for n in list_sites(ctx.plugin_dir)]}


@route("GET", "/_plugin/{name}", "A site plugin (redirects to /_plugin/{name}/)", tag="plugins")
def plugin_redirect(ctx, req, name):
    if site_root(ctx.plugin_dir, name) is None:
        raise HTTPError(404, f"no site plugin {name!r}")
    resp = Response(status=301)
    resp.location = f"{req.host_url}/_plugin/{name}/"
    return resp


@route("GET", "/_plugin/{name}/{path:path}", "A file of a site plugin (index.html for folders)",
       tag="plugins", produces="*/*")
def plugin_file(ctx, req, name, path):
    root = site_root(ctx.plugin_dir, name)
    if root is None:
        raise HTTPError(404, f"no site plugin {name!r}")
    target = safe_join(root, path)
    if target is None:
        raise HTTPError(404, f"no file {path!r} in plugin {name!r}")
    if os.path.isdir(target):
        if path and not path.endswith("/"):
            resp = Response(status=301)
            resp.location = f"{req.host_url}/_plugin/{name}/{path}/"
            return resp
        target = os.path.join(target, "index.html")
    if not os.path.isfile(target):
        raise HTTPError(404, f"no file {path or 'index.html'!r} in plugin {name!r}")
    content_type, encoding = mimetypes.guess_type(target)
    return FileApp(target, content_type=content_type or "application/octet-stream",
                   content_encoding=encoding)
