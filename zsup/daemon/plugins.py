"""gafferd's plugins: Python applications started with zsupd, and static sites.

A plugin is a folder in the plugin dir (`[zsup] plugin_dir`, `-p`). Its Python modules are
imported; every class named in a module's `__all__` that subclasses `Plugin` is a plugin,
whose `app(cfg)` returns an object with `start(ctx)`, `stop()` and optionally `restart()`.
gafferd's own plugins (`from gaffer import Plugin`, `start(loop, manager)`) run through the
shim in zsup.daemon.gaffer_plugins.
A plugin talks to zsupd like anyone else, over the bus (`ctx.client()`, `ctx.subscriber()`):
nothing reaches into the Manager from the side. A `mandatory` list names plugins that must be
present too, or zsupd refuses to start.

A folder with a `_site` subfolder, or with no Python file at all, is a site plugin: the HTTP
gateway serves it at `/_plugin/<name>/`. (gaffer moved such files under `_site`; zsup serves
them where they are and never rewrites a user's folder.)
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from dataclasses import dataclass, field

from zsup.errors import ZsupError

log = logging.getLogger("zsupd.plugins")


class Plugin:
    name = ""
    version = "0"
    description = ""
    mandatory: list = []

    def app(self, cfg):
        raise NotImplementedError


@dataclass
class PluginContext:
    """What a plugin app gets at start: where the bus is, and the daemon's config."""

    bus: str
    pub: str
    config: object
    plugin_dir: str
    settings: dict = field(default_factory=dict)

    def client(self, timeout: float = 5.0):
        from zsup.bus.client import Client

        return Client(self.bus, timeout=timeout)

    def subscriber(self, patterns=("",)):
        from zsup.bus.client import Subscriber

        return Subscriber(self.pub, list(patterns))


def plugin_folders(plugin_dir: str | None) -> list[str]:
    if not plugin_dir or not os.path.isdir(plugin_dir):
        return []
    return sorted(os.path.join(plugin_dir, n) for n in os.listdir(plugin_dir)
                  if not n.startswith((".", "_")) and os.path.isdir(os.path.join(plugin_dir, n)))


def discover(plugin_dir: str | None) -> list[Plugin]:
    """Import every plugin folder's modules and instantiate the Plugin classes they export."""
    found: list[Plugin] = []
    folders = plugin_folders(plugin_dir)
    if folders:
        from zsup.daemon import gaffer_plugins

        gaffer_plugins.install_shim(Plugin)  # `from gaffer import Plugin` in gafferd plugins
    for folder in folders:
        base = os.path.basename(folder)
        for root, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if d != "_site" and not d.startswith(".")]
            for fname in sorted(files):
                if not fname.endswith(".py"):
                    continue
                path = os.path.join(root, fname)
                modname = f"zsup_plugin_{base}_{os.path.relpath(path, folder)[:-3].replace(os.sep, '_')}"
                try:
                    spec = importlib.util.spec_from_file_location(modname, path)
                    module = importlib.util.module_from_spec(spec)
                    sys.modules[modname] = module
                    spec.loader.exec_module(module)
                except Exception as exc:
                    raise ZsupError(f"plugin {base}: cannot import {fname}: {exc}") from None
                for attr in getattr(module, "__all__", []):
                    cls = getattr(module, attr, None)
                    if isinstance(cls, type) and issubclass(cls, Plugin) and cls is not Plugin:
                        found.append(cls())
    names = {p.name for p in found}
    for plugin in found:
        missing = [m for m in plugin.mandatory if m not in names]
        if missing:
            raise ZsupError(f"plugin {plugin.name}: mandatory plugin(s) missing: {', '.join(missing)}")
    return found


class PluginHost:
    """Starts and stops the plugin apps; a failing plugin is logged, never fatal at run time."""

    def __init__(self, ctx: PluginContext):
        self.ctx = ctx
        self.found: list[Plugin] = []
        self.apps: list[tuple[Plugin, object]] = []

    def load(self) -> None:
        """Import the plugins (refusing missing mandatory ones) before any job starts."""
        self.found = discover(self.ctx.plugin_dir)

    def start(self) -> None:
        """Start the apps once zsupd answers on the bus, so that they may call it at once."""
        for plugin in self.found:
            app = plugin.app(self.ctx.config)
            try:
                from zsup.daemon import gaffer_plugins

                if gaffer_plugins.is_gaffer_style(app):  # start(loop, manager): the shim
                    app = gaffer_plugins.GafferApp(app, plugin.name)
                app.start(self.ctx)
            except Exception:
                log.exception("plugin %s failed to start", plugin.name)
                continue
            self.apps.append((plugin, app))
            log.info("plugin %s %s started", plugin.name, plugin.version)

    def restart(self) -> None:
        for plugin, app in self.apps:
            try:
                if hasattr(app, "restart"):
                    app.restart()
            except Exception:
                log.exception("plugin %s failed to restart", plugin.name)

    def stop(self) -> None:
        for plugin, app in reversed(self.apps):
            try:
                app.stop()
            except Exception:
                log.exception("plugin %s failed to stop", plugin.name)
        self.apps = []
