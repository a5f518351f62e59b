"""The REST clients wait out a busy server (503/429) and return every other answer as it is."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from driftloop import api


class _Server:
    """A loopback server that answers each path with the next code of its script."""

    def __init__(self) -> None:
        self.script: dict[str, list[int]] = {}
        self.bodies: list[bytes] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                owner.bodies.append(self.rfile.read(length))
                codes = owner.script[self.path]
                code = codes.pop(0) if len(codes) > 1 else codes[0]
                self.send_response(code)
                self.send_header("retry-after", "0")
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    thread = threading.Thread(target=s.httpd.serve_forever, daemon=True)
    thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()
    thread.join(timeout=5)


def test_a_busy_answer_is_retried_with_the_same_body(server: _Server) -> None:
    server.script["/runs"] = [503, 429, 503, 201]
    with api.client(server.url) as http:
        r = http.post("/runs", json={"n": 1})
    assert r.status_code == 201
    assert server.bodies == [b'{"n":1}'] * 4


def test_a_wrong_request_is_not_retried(server: _Server) -> None:
    server.script["/bad"] = [422, 201]
    with api.client(server.url) as http:
        assert http.post("/bad", json={}).status_code == 422
    assert len(server.bodies) == 1


def test_a_server_busy_for_ever_gives_its_last_answer(server: _Server) -> None:
    server.script["/down"] = [503]
    with api.client(server.url) as http:
        assert http.post("/down", json={}).status_code == 503
    assert len(server.bodies) == api.ATTEMPTS


def test_the_async_client_retries_too(server: _Server) -> None:
    server.script["/runs"] = [503, 200]

    async def call() -> int:
        async with api.async_client(server.url) as http:
            return (await http.post("/runs", json={})).status_code

    assert asyncio.run(call()) == 200
    assert len(server.bodies) == 2
