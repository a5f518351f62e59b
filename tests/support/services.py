"""Production backends (Redis, PostgreSQL) for ``@pytest.mark.services`` tests.

A test that needs a service calls :func:`require_service` (or :func:`require_redis`) first: when
the service is down the test is skipped with the reason, unless ``DRIFTLOOP_REQUIRE_SERVICES=1``
(set by ``.ci/run``), in which case it fails — CI must not pass by skipping.
"""

from __future__ import annotations

import os
import socket

import pytest

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
POSTGRES_HOST = "127.0.0.1"
POSTGRES_PORT = 5432


def services_required() -> bool:
    return os.environ.get("DRIFTLOOP_REQUIRE_SERVICES", "") == "1"


def _unavailable(reason: str) -> None:
    if services_required():
        pytest.fail(f"{reason} (DRIFTLOOP_REQUIRE_SERVICES=1: required services must be up)")
    pytest.skip(f"{reason}; set DRIFTLOOP_REQUIRE_SERVICES=1 to make this a failure")


def _tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def redis_ping(host: str = REDIS_HOST, port: int = REDIS_PORT, timeout: float = 1.0) -> bool:
    """True when a Redis server answers PING on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def require_redis(host: str = REDIS_HOST, port: int = REDIS_PORT) -> str:
    """Skip (or fail, see module docstring) unless Redis answers; returns ``host:port``."""
    if not redis_ping(host, port):
        _unavailable(f"Redis is not answering on {host}:{port}")
    return f"{host}:{port}"


def require_service(name: str, host: str, port: int) -> None:
    """Skip (or fail) unless something listens on host:port."""
    if not _tcp_open(host, port):
        _unavailable(f"{name} is not reachable on {host}:{port}")


def require_postgres(host: str = POSTGRES_HOST, port: int = POSTGRES_PORT) -> None:
    require_service("PostgreSQL", host, port)
