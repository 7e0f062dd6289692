"""A scriptable HTTP server on loopback for the REST connector tests.

Real sockets (a `ThreadingHTTPServer` on port 0 in a daemon thread), replies decided per request by a
function, every request recorded with its arrival time so that tests count and inspect what the server
saw. `paged_items` serves one record list in each pagination style the connector supports.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from resources.rest.config import RestEndpoint


@dataclass(frozen=True)
class Recorded:
    method: str
    target: str
    """Path and query string, as sent."""
    path: str
    query: dict[str, str]
    """Last value of each query parameter."""
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes
    received_at: float
    """`time.monotonic()` when the request line arrived."""


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0
    """Wait this long before answering (a read timeout for a client with a shorter one)."""
    cut_after: int | None = None
    """Announce the whole body's length but send only this many bytes, then close the connection."""


Handler = Callable[[Recorded], Reply]


def json_reply(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})}
    )


def in_turn(*replies: Reply | Handler) -> Handler:
    """A handler answering with each reply (or handler) in turn, the last one for every later request."""
    steps = itertools.chain(replies, itertools.repeat(replies[-1]))
    lock = threading.Lock()

    def handle(request: Recorded) -> Reply:
        with lock:
            step = next(steps)
        return step(request) if callable(step) else step

    return handle


class ScriptedServer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Recorded] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.base_url = f"http://{host}:{port}"

    def requests_to(self, path: str) -> list[Recorded]:
        return [request for request in self.requests if request.path == path]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class ScriptedHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def _answer(self) -> None:
                received_at = time.monotonic()
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                request = Recorded(
                    method=self.command,
                    target=self.path,
                    path=url.path,
                    query={k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()},
                    headers={name.lower(): value for name, value in self.headers.items()},
                    body=self.rfile.read(length),
                    received_at=received_at,
                )
                server.requests.append(request)
                reply = server.handler(request)
                time.sleep(reply.delay_seconds)
                with contextlib.suppress(OSError):
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body if reply.cut_after is None else reply.body[: reply.cut_after])
                    self.wfile.flush()
                if reply.cut_after is not None or reply.delay_seconds:
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        return ScriptedHandler

    def __enter__(self) -> ScriptedServer:
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def unused_port() -> int:
    """A loopback port nobody listens on (bound, then released): connections to it are refused."""
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as probe:
        return probe.server_address[1]


PAGE_SIZE = 5
PAGINATION_STYLES = ("page_number", "offset", "cursor", "next_url", "link_header")


def items(count: int) -> list[dict[str, Any]]:
    return [
        {"id": i, "name": f"item {i}", "updated_at": f"2026-01-01 00:00:{i:02d}"} for i in range(1, count + 1)
    ]


def endpoint_for(style: str, **overrides: Any) -> RestEndpoint:
    """The endpoint configuration that reads `paged_items(..., style)`."""
    pagination: dict[str, Any] = {
        "page_number": {"kind": "page_number", "page_param": "page", "start": 1},
        "offset": {"kind": "offset", "limit": PAGE_SIZE},
        "cursor": {"kind": "cursor", "cursor_path": "meta.next_cursor", "cursor_param": "after"},
        "next_url": {"kind": "next_url", "next_url_path": "links.next"},
        "link_header": {"kind": "link_header"},
    }[style]
    return RestEndpoint.model_validate(
        {"path": "/items", "record_path": "data", "pagination": pagination, **overrides}
    )


def paged_items(records: list[dict[str, Any]], style: str, page_size: int = PAGE_SIZE) -> Handler:
    """`GET /items` serving `records` page by page the way `endpoint_for(style)` expects."""

    def handle(request: Recorded) -> Reply:
        start = requested_start(request, style, page_size)
        chunk = records[start : start + page_size]
        more = start + page_size < len(records)
        body: dict[str, Any] = {"data": chunk}
        headers: dict[str, str] = {}
        if style == "cursor":
            body["meta"] = {"next_cursor": _opaque(start + page_size) if more else None}
        elif style == "next_url":
            body["links"] = {"next": f"/items?page={start // page_size + 2}" if more else None}
        elif style == "link_header":
            headers["Link"] = _link_header(start // page_size + 1, more)
        return json_reply(body, headers=headers)

    return handle


def requested_start(request: Recorded, style: str, page_size: int = PAGE_SIZE) -> int:
    """The 0-based index of the first record a `paged_items` request asks for."""
    if style == "offset":
        return int(request.query.get("offset", "0"))
    if style == "cursor":
        cursor = request.query.get("after")
        return int(base64.urlsafe_b64decode(cursor).decode()) if cursor else 0
    return (int(request.query.get("page", "1")) - 1) * page_size


def _opaque(position: int) -> str:
    return base64.urlsafe_b64encode(str(position).encode()).decode()


def _link_header(page: int, more: bool) -> str:
    """Several links, quoted parameters holding commas and semicolons, `next` among other relations."""
    links = ['</items?page=1>; rel="first"; title="start, here; please"']
    if more:
        links.append(f'</items?page={page + 1}>; title="the, next; one"; rel="next nofollow"')
    links.append("</items?page=99>; rel=last")
    return ", ".join(links)
