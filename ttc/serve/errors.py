"""Errors in the OpenAI error shape.

Every refusal is ``{"error": {"message", "type", "param", "code"}}`` (the shape of the
OpenAI API reference, "Error codes"), with ``param`` the dotted name of the field at fault
(``messages[2].content``, ``ttc.budget.total_tokens``), so an agent framework shows the
user what to fix. ``type`` follows OpenAI's words: ``invalid_request_error`` (400, 413,
422), ``authentication_error`` (401), ``rate_limit_error`` (429), ``server_error`` (5xx).
A response may carry extra top-level members (``usage`` and ``ttc`` when work was paid for
before the failure: an engine error still reports what it cost).
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
         413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error",
         502: "server_error", 503: "server_error", 500: "server_error"}


class ApiError(Exception):
    """A refusal: HTTP ``status``, a message naming what is wrong, the ``param`` at fault."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        err = {"message": self.message, "type": TYPES.get(self.status, "invalid_request_error"),
               "param": self.param, "code": self.code}
        return {"error": err, **self.extra}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none", "is-instance"}


def first_error(errors: list[Any]) -> Any:
    """The most specific of pydantic's errors (a union reports one per branch: the deepest
    location says best what is wrong)."""
    return max(errors, key=lambda e: len(dotted(e["loc"])))


def dotted(loc: tuple[Any, ...] | list[Any]) -> str:
    """A pydantic error location as a dotted name: ``("messages", 2, "content")`` ->
    ``messages[2].content``; the union-branch tags pydantic inserts are dropped."""
    out = ""
    for part in loc:
        if isinstance(part, str) and part in _TYPE_TAGS:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and (part in ("body",) and not out):
            continue
        elif isinstance(part, str) and ("[" in part or part.startswith(("function-", "tagged-union"))):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out
