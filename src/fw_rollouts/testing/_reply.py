"""What the engine hands the HTTP layer: a :class:`Reply`, and the JSON encoding every body uses."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Final

__all__ = ["Reply", "decode_body", "dumps", "json_text", "status_phrase"]

_encoder: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)
#: Compact JSON text of a value, as the simulator writes it.
json_text: Final = _encoder.encode
_PHRASES: Final = {s.value: s.phrase for s in HTTPStatus}


def decode_body(body: bytes) -> object:
    """The decoded JSON of a request body, or None when it is empty or not JSON."""
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def dumps(obj: object) -> bytes:
    """Encode a body the way the simulator sends it (compact UTF-8 JSON)."""
    return _encoder.encode(obj).encode("utf-8")


def status_phrase(status: int, default: str) -> str:
    """The standard reason phrase of an HTTP status, or ``default`` for a status HTTP does not name."""
    return _PHRASES.get(status, default)


class Reply:
    """A response the server must write: a body, or SSE events when ``events`` is not None."""

    __slots__ = ("body", "events", "headers", "request_id", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        request_id: str,
        headers: list[tuple[str, str]] | None = None,
        events: list[bytes] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.request_id = request_id
        self.headers = headers if headers is not None else [("content-type", "application/json")]
        self.events = events
