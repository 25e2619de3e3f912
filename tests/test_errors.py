"""The exception tree, error bodies -> exceptions (the fixtures in tests/data/fixtures included) and Retry-After."""

from __future__ import annotations

import datetime
import email.utils
import json
from typing import Any

import httpx2
import pytest

from _helpers import load_json_fixture
from fw_rollouts import (
    AccountError,
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    FwRolloutsError,
    InvalidTypeError,
    MalformedResponseError,
    MissingLogprobsError,
    NotFoundError,
    RateLimitError,
    ResponseError,
    ServerError,
    ValidationError,
    _exceptions,
)
from fw_rollouts._exceptions import status_error_class
from fw_rollouts._transport import error_from_response, parse_retry_after

NOW = datetime.datetime(2026, 11, 24, 12, 0, 0, tzinfo=datetime.timezone.utc)


def clock() -> float:
    return NOW.timestamp()


def http_date(delta_seconds: float) -> str:
    return email.utils.format_datetime(NOW + datetime.timedelta(seconds=delta_seconds), usegmt=True)


def fixture_bytes(name: str) -> bytes:
    return json.dumps(load_json_fixture(f"fireworks/{name}")).encode("utf-8")


class TestRetryAfter:
    @pytest.mark.parametrize(
        ("headers", "seconds"),
        [
            ({"retry-after": "2"}, 2.0),
            ({"retry-after": "0.5"}, 0.5),
            ({"Retry-After": " 3 "}, 3.0),
            ({"RETRY-AFTER": "0"}, 0.0),
            ({"retry-after-ms": "1500"}, 1.5),
            ({"Retry-After-Ms": "20"}, 0.02),
            ({"retry-after-ms": "250", "retry-after": "10"}, 0.25),  # milliseconds win
            ({"retry-after-ms": "soon", "retry-after": "4"}, 4.0),  # unreadable ms falls back
        ],
    )
    def test_seconds_and_milliseconds(self, headers: dict[str, str], seconds: float) -> None:
        assert parse_retry_after(headers, now=clock) == pytest.approx(seconds)

    def test_http_date(self) -> None:
        assert parse_retry_after({"retry-after": http_date(30)}, now=clock) == pytest.approx(30.0)
        assert parse_retry_after({"Retry-After": http_date(90.0)}, now=clock) == pytest.approx(90.0)

    def test_http_date_uses_the_injected_clock(self) -> None:
        headers = {"retry-after": http_date(30)}
        assert parse_retry_after(headers, now=lambda: clock() + 10) == pytest.approx(20.0)

    def test_http_date_in_the_past_is_zero(self) -> None:
        assert parse_retry_after({"retry-after": http_date(-60)}, now=clock) == 0.0

    @pytest.mark.parametrize(("headers"), [{"retry-after": "-5"}, {"retry-after-ms": "-100"}])
    def test_negative_is_zero(self, headers: dict[str, str]) -> None:
        assert parse_retry_after(headers, now=clock) == 0.0

    @pytest.mark.parametrize(
        "headers",
        [{}, {"retry-after": "soon"}, {"retry-after": ""}, {"retry-after": "inf"}, {"retry-after": "nan"},
         {"retry-after-ms": "nan"}, {"retry-after": "Mon, 99 Foo 2026"}, {"x-retry-after": "2"}],
    )
    def test_absent_or_garbage_is_none(self, headers: dict[str, str]) -> None:
        assert parse_retry_after(headers, now=clock) is None

    def test_httpx_headers(self) -> None:
        assert parse_retry_after(httpx2.Headers({"Retry-After": "7"}), now=clock) == 7.0


class TestFixtureErrorBodies:
    def test_400_extra_field(self) -> None:
        error = error_from_response(400, {}, fixture_bytes("error-400-extra-field.json"))
        assert type(error) is BadRequestError
        assert error.status_code == 400
        assert "extra fields not permitted" in error.message
        assert "best_of" in error.message
        assert error.type == "invalid_request_error"
        assert error.retryable is False

    def test_404_flat(self) -> None:
        error = error_from_response(404, {}, fixture_bytes("error-404-flat.json"))
        assert type(error) is NotFoundError
        assert error.message == "Model not found, inaccessible, and/or not deployed"
        assert error.param == "model"
        assert error.code == "NOT_FOUND"
        assert error.type == "error"
        assert error.retryable is False

    def test_412_nested(self) -> None:
        error = error_from_response(412, {}, fixture_bytes("error-412-nested.json"))
        assert type(error) is AccountError
        assert error.message == "Account is suspended, possibly due to reaching the monthly spending limit."
        assert error.request_id == "11650e2f-0000-4000-8000-000000000000"
        assert error.code == "PRECONDITION_FAILED"
        assert error.param is None
        assert error.retryable is False

    def test_412_header_request_id_wins_over_the_body(self) -> None:
        error = error_from_response(412, {"x-request-id": "hdr-1"}, fixture_bytes("error-412-nested.json"))
        assert error.request_id == "hdr-1"

    def test_422_detail(self) -> None:
        error = error_from_response(422, {}, fixture_bytes("error-422-detail.json"))
        assert type(error) is BadRequestError
        assert "logprobs" in error.message
        assert "ensure this value is less than or equal to 5" in error.message
        assert error.message == "logprobs: ensure this value is less than or equal to 5"
        assert error.retryable is False

    def test_429_string_error(self) -> None:
        error = error_from_response(429, {"retry-after": "3"}, fixture_bytes("error-429-string.json"))
        assert type(error) is RateLimitError
        assert "Too Many Requests" in error.message
        assert "You have exceeded your usage limits" in error.message
        assert error.retry_after == 3.0
        assert error.retryable is True
        assert error.body == load_json_fixture("fireworks/error-429-string.json")


class TestOtherErrorBodies:
    def test_html_body(self) -> None:
        html = b"<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n<h1>502 Bad Gateway</h1>\n</body></html>"
        error = error_from_response(502, {}, html)
        assert type(error) is ServerError
        assert "502 Bad Gateway" in error.message
        assert "\n" not in error.message
        assert error.body == html.decode()
        assert error.retryable is True

    def test_long_text_body_is_truncated(self) -> None:
        error = error_from_response(500, {}, "x" * 1000)
        assert len(error.message) <= 303 and error.message.endswith("...")

    @pytest.mark.parametrize("content", [b"", "", None, b"  \n"])
    def test_empty_body(self, content: bytes | str | None) -> None:
        error = error_from_response(503, {}, content)
        assert error.message == "HTTP 503 with an empty body"
        assert error.body is None or error.body == "  \n"
        assert type(error) is ServerError

    def test_invalid_utf8_body(self) -> None:
        error = error_from_response(500, {}, b"bad \xff bytes")
        assert "bad" in error.message and "bytes" in error.message

    def test_detail_string(self) -> None:
        assert error_from_response(404, {}, b'{"detail": "Not Found"}').message == "Not Found"

    def test_error_object_without_message(self) -> None:
        error = error_from_response(400, {}, b'{"error": {"code": "BAD", "type": "x"}}')
        assert "BAD" in error.message and error.code == "BAD"

    def test_null_error_with_message(self) -> None:
        error = error_from_response(503, {}, b'{"error": null, "message": "Model is loading"}')
        assert error.message == "Model is loading"

    @pytest.mark.parametrize(
        ("content", "fragment"),
        [
            (b'[{"loc": ["body", "user"], "msg": "extra fields not permitted"}]', "extra fields not permitted"),
            (b"42", "42"),
            (b'"Too Many Requests"', "Too Many Requests"),
        ],
    )
    def test_json_body_that_is_not_an_object(self, content: bytes, fragment: str) -> None:
        error = error_from_response(429, {}, content)
        assert fragment in error.message
        assert "empty body" not in error.message

    def test_request_id_headers(self) -> None:
        assert error_from_response(500, {"x-request-id": "req-123"}, b"").request_id == "req-123"
        assert error_from_response(500, {"x-fireworks-request-id": "fw-9"}, b"").request_id == "fw-9"
        assert error_from_response(500, {}, b"").request_id is None

    @pytest.mark.parametrize(
        ("status", "header", "retryable"),
        [
            (400, "true", True),
            (401, "TRUE", True),
            (503, "false", False),
            (429, "false", False),
            (500, "maybe", True),  # unreadable: the status decides
            (404, "maybe", False),
        ],
    )
    def test_x_should_retry_overrides_the_status(self, status: int, header: str, retryable: bool) -> None:
        error = error_from_response(status, {"x-should-retry": header}, b"")
        assert error.retryable is retryable

    def test_retry_after_is_kept(self) -> None:
        error = error_from_response(503, {"retry-after": http_date(5)}, b"", now=clock)
        assert error.retry_after == pytest.approx(5.0)
        assert error_from_response(503, {}, b"").retry_after is None


STATUS_CLASSES = [
    (400, BadRequestError, False),
    (401, AuthenticationError, False),
    (402, AccountError, False),
    (403, AuthenticationError, False),
    (404, NotFoundError, False),
    (405, BadRequestError, False),
    (408, ServerError, True),
    (409, ServerError, True),
    (412, AccountError, False),
    (413, BadRequestError, False),
    (422, BadRequestError, False),
    (425, ServerError, True),
    (429, RateLimitError, True),
    (500, ServerError, True),
    (502, ServerError, True),
    (503, ServerError, True),
    (504, ServerError, True),
    (520, ServerError, True),
]


class TestStatusMapping:
    @pytest.mark.parametrize(("status", "cls", "retryable"), STATUS_CLASSES)
    def test_status_class_and_retryable(self, status: int, cls: type[APIStatusError], retryable: bool) -> None:
        assert status_error_class(status) is cls
        error = error_from_response(status, {}, b'{"error": {"message": "boom"}}')
        assert type(error) is cls
        assert error.status_code == status
        assert error.retryable is retryable
        assert isinstance(error, APIStatusError) and isinstance(error, APIError) and isinstance(error, FwRolloutsError)

    def test_other_4xx_are_bad_requests(self) -> None:
        assert status_error_class(418) is BadRequestError
        assert error_from_response(418, {}, b"").retryable is False


class TestExceptionTree:
    def test_value_and_type_errors(self) -> None:
        assert issubclass(ValidationError, ValueError)
        assert issubclass(InvalidTypeError, TypeError)
        assert issubclass(InvalidTypeError, ValueError)
        assert issubclass(InvalidTypeError, ValidationError)
        assert issubclass(ConfigurationError, ValueError)
        for cls in (ConfigurationError, ValidationError, APIError, ResponseError):
            assert issubclass(cls, FwRolloutsError)

    def test_response_errors(self) -> None:
        assert issubclass(MalformedResponseError, ResponseError)
        assert issubclass(MissingLogprobsError, ResponseError)
        assert issubclass(ResponseError, APIError)
        assert MissingLogprobsError("x").retryable is True  # retried; the client stops a call that never saw any
        assert MalformedResponseError("x").retryable is True
        assert issubclass(APITimeoutError, APIConnectionError)
        assert APITimeoutError("t").retryable is True and APIConnectionError("c").retryable is True

    def test_validation_error_fields_and_message(self) -> None:
        error = ValidationError("temperature", 3.5, "must be in [0.0, 2.0]")
        assert (error.argument, error.value, error.allowed) == ("temperature", 3.5, "must be in [0.0, 2.0]")
        assert str(error) == "invalid temperature=3.5: must be in [0.0, 2.0]"
        assert error.message == str(error)
        assert str(ValidationError("x", 1, "y", message="custom")) == "custom"

    def test_long_values_are_shortened(self) -> None:
        error = ValidationError("prompt", "z" * 500, "short")
        assert len(str(error)) < 120
        assert "..." in str(error)

    def test_str_of_status_errors(self) -> None:
        error = error_from_response(429, {"x-request-id": "req-7"}, fixture_bytes("error-429-string.json"))
        error.attempts = 3
        text = str(error)
        assert text.startswith("HTTP 429: Too Many Requests: You have exceeded your usage limits.")
        assert "request id req-7" in text
        assert "after 3 attempts" in text
        assert text.endswith("(request id req-7, after 3 attempts)")

    def test_str_of_a_plain_status_error(self) -> None:
        error = error_from_response(404, {}, fixture_bytes("error-404-flat.json"))
        assert str(error) == "HTTP 404: Model not found, inaccessible, and/or not deployed"

    def test_str_of_api_errors_with_attempts(self) -> None:
        assert str(APIConnectionError("connection refused", attempts=4)) == "connection refused (after 4 attempts)"
        assert str(APIConnectionError("connection refused")) == "connection refused"

    def test_failure_bookkeeping_defaults(self) -> None:
        error = FwRolloutsError("x")
        assert error.rollouts is None and error.errors == {}
        other = FwRolloutsError("y")._evolve(errors={1: error})
        assert other.errors == {1: error} and error.errors == {}
        assert FwRolloutsError("z").errors == {}  # not shared between instances

    def test_exceptions_all_is_sorted_and_honest(self) -> None:
        names: list[Any] = list(_exceptions.__all__)
        assert names == sorted(names)
        for name in names:
            assert hasattr(_exceptions, name), name


# -- hostile error bodies --------------------------------------------------------------------------------------

SECRET = "fw-KEY-abcdef0123456789"


def test_an_error_body_echoing_the_key_json_escaped_is_scrubbed_in_every_field() -> None:
    from fw_rollouts._redact import redactor

    escaped = "".join(f"\\u{ord(c):04x}" for c in SECRET)
    body = (
        '{"error": {"message": "key %s is wrong", "code": "%s", "param": "%s", "type": "%s"}, "request_id": "%s"}'
        % ((escaped,) * 5)
    ).encode()
    error = error_from_response(401, {}, body, redact=redactor(SECRET))
    fields = [error.message, error.code, error.param, error.type, error.request_id, repr(error.body), str(error)]
    assert all(field is not None and SECRET not in field for field in fields)
    assert error.message == "key [REDACTED] is wrong" and error.request_id == "[REDACTED]"
    # Cut to length after scrubbing, never before: no piece of the key is left at the cut.
    long = json.dumps({"error": {"detail": "x" * 490 + SECRET}}).encode()
    cut = error_from_response(500, {}, long, redact=redactor(SECRET))
    assert SECRET[:8] not in cut.message


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000 + b"]" * 100_000, b'{"detail": [{"loc": 5, "msg": 1}]}', b'{"detail": [{"loc": [{"a": 1}]}]}'],
    ids=["nested past the parser", "loc a number", "loc of objects"],
)
def test_a_hostile_error_body_still_becomes_our_status_error(body: bytes) -> None:
    error = error_from_response(400, {}, body)
    assert type(error) is BadRequestError and error.status_code == 400 and error.message
