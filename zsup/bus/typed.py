"""Typed methods for every bus command, made from the declaration (zsup/bus/schema.py).

`BusCommands` is a mixin for anything with `call(cmd, /, **args)` (the Client, the gateway's
BusGate): `client.scale("web", "+1")` sends `{"cmd": "scale", "args": {"name": "web",
"n": "+1"}}`. Required parameters come first and may be positional; optional ones are keyword
only, and only those given are sent (the daemon applies its defaults). Each method checks its
arguments against the declaration before sending, so a wrong type fails in the caller with
the daemon's own message.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from zsup.bus.schema import COMMANDS, Command, check_request

__all__ = ["BusCommands"]

_PY = {"string": str, "integer": int, "number": float, "boolean": bool, "object": dict, "array": list,
       "any": Any}
_UNSET: Any = inspect.Parameter.empty


def _annotation(type_: str) -> Any:
    kinds = [_PY[t] for t in type_.split("|")]
    return kinds[0] if len(kinds) == 1 else " | ".join(getattr(k, "__name__", "Any") for k in kinds)


def _name(annotation: Any) -> str:
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "Any")


def _method(spec: Command) -> Callable:
    names = [p.name for p in spec.params]

    def method(self, *args: Any, **kwargs: Any) -> Any:
        bound = method.__signature__.bind(self, *args, **kwargs)
        sent = {k: v for k, v in bound.arguments.items() if k != "self"}
        check_request(spec.name, sent)
        return self.call(spec.name, **sent)

    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=_annotation(p.type))
               for p in spec.params if p.required]
    # Optional ones default to "not sent"; the daemon's default applies.
    params += [inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                 annotation=f"{_name(_annotation(p.type))} | None")
               for p in spec.params if not p.required]
    method.__signature__ = inspect.Signature(params)
    method.__name__ = method.__qualname__ = spec.name
    method.__doc__ = f"{spec.doc}: {spec.result}." + "".join(
        f"\n    {p.name}: {p.doc}" for p in spec.params)
    method._bus_params = names  # noqa: SLF001 (read by the tests)
    return method


class BusCommands:
    """One method per declared bus command; the subclass provides `call(cmd, /, **args)`."""

    def call(self, cmd: str, /, **args: Any) -> Any:  # pragma: no cover - always overridden
        raise NotImplementedError


for _spec in COMMANDS.values():
    setattr(BusCommands, _spec.name, _method(_spec))
del _spec
