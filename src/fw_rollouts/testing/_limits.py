"""The service's per-minute rate limits, enforced on a rolling minute of the simulator's clock.

Fireworks limits requests per minute (each choice of an ``n > 1`` request counts as one) and,
separately, prompt tokens and generated tokens per minute. :class:`RateLimits` keeps what the
requests it let through in the last 60 seconds (``window``; shorter only for tests) used; a request
that would take any count over its limit is refused (the engine answers 429 with Fireworks' usage-limit
body) and counts for nothing. It can also describe itself in the older documented headers, per minute:
``x-ratelimit-limit-{requests,tokens-prompt,tokens-generated}`` and the matching
``x-ratelimit-remaining-*``. Pure bookkeeping (no I/O), safe to call from any thread.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Final

__all__ = ["WINDOW", "RateLimits"]

WINDOW: Final = 60.0
"""Seconds a request counts for after it was let through."""

# The header suffix of each count: requests, prompt tokens, generated tokens.
_SUFFIXES: Final = ("requests", "tokens-prompt", "tokens-generated")


def _number(value: float) -> str:
    """A header value: an integer without a decimal point, every digit kept."""
    return str(int(value)) if value == int(value) else repr(value)


class RateLimits:
    """Per-minute limits on requests (choices), prompt tokens and generated tokens; None: no limit."""

    __slots__ = ("_clock", "_entries", "_lock", "_used", "admitted", "headers", "limits", "refused", "window")

    def __init__(
        self,
        requests_per_minute: float | None,
        prompt_tokens_per_minute: float | None,
        generated_tokens_per_minute: float | None,
        *,
        clock: Callable[[], float],
        headers: bool = False,
        window: float = WINDOW,
    ) -> None:
        self.limits = (requests_per_minute, prompt_tokens_per_minute, generated_tokens_per_minute)
        self.headers = headers
        self.window = window
        """Seconds a request counts for (the service's minute; shorter only for tests)."""
        self.admitted = 0
        """Requests let through while a limit was in force, since the start or :meth:`reset`."""
        self.refused = 0
        """Requests refused (answered 429) for going over a limit, since the start or :meth:`reset`."""
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: deque[tuple[float, tuple[int, int, int]]] = deque()
        self._used = [0, 0, 0]

    @property
    def enabled(self) -> bool:
        """Whether any limit is set or the headers are asked for (else the engine need not ask)."""
        return self.headers or any(limit is not None for limit in self.limits)

    def _expire(self, now: float) -> None:
        entries, used = self._entries, self._used
        while entries and now - entries[0][0] >= self.window:
            _, counts = entries.popleft()
            for i, count in enumerate(counts):
                used[i] -= count

    def admit(self, requests: int, prompt_tokens: int, generated_tokens: int) -> tuple[bool, list[tuple[str, str]]]:
        """Let a request through if its counts fit under every limit (and count it); the reply's headers."""
        counts = (requests, prompt_tokens, generated_tokens)
        with self._lock:
            now = self._clock()
            self._expire(now)
            ok = all(
                limit is None or self._used[i] + counts[i] <= limit for i, limit in enumerate(self.limits)
            )
            if ok:
                self.admitted += 1
                self._entries.append((now, counts))
                for i, count in enumerate(counts):
                    self._used[i] += count
            else:
                self.refused += 1
            headers = self._headers() if self.headers else []
        return ok, headers

    def _headers(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for suffix, limit, used in zip(_SUFFIXES, self.limits, self._used, strict=True):
            if limit is not None:
                out.append((f"x-ratelimit-limit-{suffix}", _number(limit)))
                out.append((f"x-ratelimit-remaining-{suffix}", _number(max(0.0, limit - used))))
        return out

    def used(self) -> dict[str, int]:
        """What the requests let through in the last minute used: requests, prompt and generated tokens."""
        with self._lock:
            self._expire(self._clock())
            return dict(zip(("requests", "prompt_tokens", "generated_tokens"), self._used, strict=True))

    def reset(self) -> None:
        """Forget every request counted so far."""
        with self._lock:
            self._entries.clear()
            self._used = [0, 0, 0]
            self.admitted = self.refused = 0
