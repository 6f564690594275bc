"""The table each command module fills: bus command handlers by the command's name.

Every ``*_commands`` module has one (``HANDLERS = Handlers()``) and marks its handlers with
``@HANDLERS.add``; zsupd's Dispatcher is built from those tables, so a command is served only
if a module declares it here and zsup/bus/schema.py declares its parameters."""

from __future__ import annotations

from typing import Callable


class Handlers(dict):
    """``{command name: handler(daemon, **params)}``."""

    def add(self, fn: Callable) -> Callable:
        """Decorator: serve ``fn`` as the command named like the function."""
        self[fn.__name__] = fn
        return fn
