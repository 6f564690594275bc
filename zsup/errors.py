"""Errors that carry a bus error code, so every layer can answer with the same words.

The codes are the ones of the bus protocol (docs/bus.md): a caller maps an error to a reply
without knowing where it was raised.
"""


class ZsupError(Exception):
    code = "internal"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message}


class BadRequest(ZsupError):
    code = "bad_request"


class NotFound(ZsupError):
    code = "not_found"


class Conflict(ZsupError):
    code = "conflict"


class Forbidden(ZsupError):
    code = "forbidden"


class Unavailable(ZsupError):
    code = "unavailable"


ERRORS_BY_CODE = {cls.code: cls for cls in (ZsupError, BadRequest, NotFound, Conflict, Forbidden, Unavailable)}


def error_from_dict(err: dict) -> ZsupError:
    """Rebuild an error received over the bus, keeping its code."""
    cls = ERRORS_BY_CODE.get(err.get("code"), ZsupError)
    exc = cls(err.get("message", "unknown error"))
    exc.code = err.get("code", "internal")
    return exc
