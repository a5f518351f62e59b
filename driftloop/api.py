"""HTTP clients for the stack's REST APIs that wait out a busy server.

A Prefect server on SQLite answers 503 (and 429 when rate limiting) while its database is locked
by a burst of writes; Prefect's own client retries those, and so do these, so a status page, the
catch-up run or a test never fails on a moment of contention. Other answers are returned as they
are.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

#: the answers of a server that is busy, not of a request that is wrong
BUSY = frozenset({429, 502, 503})
ATTEMPTS = 8
BACKOFF = 0.5  # seconds before the first retry; doubled each time, at most MAX_WAIT
MAX_WAIT = 8.0


def _wait(response: httpx.Response, attempt: int) -> float:
    after = response.headers.get("retry-after", "")
    if after.replace(".", "", 1).isdigit():
        return min(float(after), MAX_WAIT)
    return float(min(BACKOFF * 2**attempt, MAX_WAIT))


class BusyRetryTransport(httpx.HTTPTransport):
    """Re-sends a request answered 429/502/503, up to :data:`ATTEMPTS` times with back-off."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(ATTEMPTS):
            response = super().handle_request(request)
            if response.status_code not in BUSY or attempt == ATTEMPTS - 1:
                return response
            response.close()
            time.sleep(_wait(response, attempt))
        raise AssertionError("unreachable")  # pragma: no cover


class AsyncBusyRetryTransport(httpx.AsyncHTTPTransport):
    """The asynchronous :class:`BusyRetryTransport`."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(ATTEMPTS):
            response = await super().handle_async_request(request)
            if response.status_code not in BUSY or attempt == ATTEMPTS - 1:
                return response
            await response.aclose()
            await asyncio.sleep(_wait(response, attempt))
        raise AssertionError("unreachable")  # pragma: no cover


def client(base_url: str, *, timeout: float = 30.0, **kwargs: Any) -> httpx.Client:
    """An ``httpx.Client`` on ``base_url`` that waits out a busy server."""
    return httpx.Client(
        base_url=base_url.rstrip("/"), timeout=timeout, transport=BusyRetryTransport(), **kwargs
    )


def async_client(base_url: str, *, timeout: float = 30.0, **kwargs: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` on ``base_url`` that waits out a busy server."""
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        timeout=timeout,
        transport=AsyncBusyRetryTransport(),
        **kwargs,
    )
