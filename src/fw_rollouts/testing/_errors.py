"""Fireworks' error bodies, and :class:`ApiError`, which carries one out of request handling."""

from __future__ import annotations

from typing import Any, Final

__all__ = [
    "MODEL_NOT_FOUND",
    "ApiError",
    "FieldErrors",
    "detail_error",
    "error_code",
    "extra_fields_error",
    "flat_error",
    "nested_error",
]

MODEL_NOT_FOUND: Final = "Model not found, inaccessible, and/or not deployed"

#: Validation errors as pydantic reports them: (loc, msg, type).
FieldErrors = list[tuple[list[str | int], str, str]]

_CODES: Final = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHORIZED",
    402: "PAYMENT_REQUIRED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    412: "PRECONDITION_FAILED",
    413: "PAYLOAD_TOO_LARGE",
    422: "UNPROCESSABLE_ENTITY",
    425: "TOO_EARLY",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "BAD_GATEWAY",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
    520: "UNKNOWN",
}


def error_code(status: int) -> str:
    """The ``code`` string used in error bodies for an HTTP status."""
    return _CODES.get(status, "UNKNOWN")


def nested_error(status: int, message: str, request_id: str, param: str | None = None) -> dict[str, Any]:
    """``{"error": {"message", "param", "code", "type"}, "request_id"}`` (fixture error-412-nested)."""
    return {
        "error": {"message": message, "param": param, "code": error_code(status), "type": "error"},
        "request_id": request_id,
    }


def flat_error(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """``{"message", "param", "code", "type"}`` (fixture error-404-flat)."""
    return {"message": message, "param": param, "code": error_code(status), "type": "error"}


def detail_error(errors: FieldErrors) -> dict[str, Any]:
    """FastAPI/pydantic ``{"detail": [{"loc", "msg", "type"}]}`` (fixture error-422-detail)."""
    return {"detail": [{"loc": loc, "msg": msg, "type": typ} for loc, msg, typ in errors]}


def extra_fields_error(fields: list[str]) -> dict[str, Any]:
    """The 400 body for fields outside the schema: pydantic's errors, printed as Python, inside the message."""
    items = ", ".join(
        f"{{'loc': ('body', {f!r}), 'msg': 'extra fields not permitted', 'type': 'value_error.extra'}}" for f in fields
    )
    return {"error": {"object": "error", "type": "invalid_request_error", "message": f"[{items}]"}}


class ApiError(Exception):
    """An error reply raised from deep inside request handling."""

    def __init__(self, status: int, body: object, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or []

    @classmethod
    def nested(
        cls,
        status: int,
        message: str,
        request_id: str,
        param: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> ApiError:
        """An error with the :func:`nested_error` body, the shape most Fireworks errors have."""
        return cls(status, nested_error(status, message, request_id, param), headers)
