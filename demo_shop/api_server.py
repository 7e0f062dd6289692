"""The demo shop's products REST API, served on loopback from the generated `api/products.json`.

`GET /v1/products?cursor=...&updated_since=...` answers `{"data": [...], "next_cursor": "..." | null}`:
products ordered by (updated_at, product_id), `updated_since` keeping those updated strictly later. The
cursor is opaque to clients (the key of the last product sent, base64), so pages stay stable while the
file changes. Every request needs header `X-API-Key`. The file is read per request, so an edited world is
served at once, and prices keep the digits the file has (`8.00` stays `8.00`).

    python -m demo_shop.api_server --products PATH --port 8765 --api-key-env SHOP_API_KEY
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import json
import os
import threading
from collections.abc import Iterator
from decimal import Decimal
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

PRODUCTS_PATH = "/v1/products"
API_KEY_HEADER = "X-API-Key"

Product = dict[str, Any]
ProductKey = tuple[str, int]


class _BadRequest(ValueError):
    pass


class ProductsApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def __init__(self, *args: Any, products_json: Path, api_key: str, page_size: int, **kwargs: Any) -> None:
        self.products_json = products_json
        self.api_key = api_key
        self.page_size = page_size
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != PRODUCTS_PATH:
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint {url.path}; try {PRODUCTS_PATH}"})
        elif self.headers.get(API_KEY_HEADER) != self.api_key:
            self._reply(HTTPStatus.UNAUTHORIZED, {"error": f"missing or wrong {API_KEY_HEADER} header"})
        else:
            query = {name: values[-1] for name, values in parse_qs(url.query).items()}
            try:
                page = self._page(query.get("cursor"), query.get("updated_since"))
            except _BadRequest as error:
                self._reply(HTTPStatus.BAD_REQUEST, {"error": str(error)})
            except (OSError, ValueError, KeyError) as error:
                self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"products unavailable: {error!r}"})
            else:
                self._reply(HTTPStatus.OK, page)

    def _page(self, cursor: str | None, updated_since: str | None) -> dict[str, Any]:
        after = _decode_cursor(cursor) if cursor else None
        selected = [
            product
            for product in sorted(_read_products(self.products_json), key=_key)
            if (updated_since is None or product["updated_at"] > updated_since)
            and (after is None or _key(product) > after)
        ]
        page = selected[: self.page_size]
        more = len(selected) > len(page)
        return {"data": page, "next_cursor": _encode_cursor(_key(page[-1])) if more else None}

    def _reply(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        body = _json(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: no line on stderr per request."""


def build_server(
    products_json: Path, api_key: str, *, page_size: int = 50, host: str = "127.0.0.1", port: int = 0
) -> ThreadingHTTPServer:
    handler = partial(ProductsApiHandler, products_json=products_json, api_key=api_key, page_size=page_size)
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


@contextlib.contextmanager
def serve_products_api(
    products_json: Path, api_key: str, page_size: int = 50, *, port: int = 0
) -> Iterator[str]:
    """Serve on 127.0.0.1 (`port`, by default a free one) in a daemon thread; yields the base URL, stops
    on exit."""
    with serving(
        build_server(products_json, api_key, page_size=page_size, port=port), "demo-products-api"
    ) as url:
        yield url


@contextlib.contextmanager
def serving(server: ThreadingHTTPServer, name: str) -> Iterator[str]:
    """`server` answering in a daemon thread called `name`; yields its base URL, shuts it down on exit."""
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name=name, daemon=True)
    thread.start()
    try:
        bound_host, bound_port = server.server_address[:2]
        yield f"http://{bound_host}:{bound_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _read_products(products_json: Path) -> list[Product]:
    products = json.loads(products_json.read_bytes(), parse_float=Decimal)
    if not isinstance(products, list):
        raise ValueError(f"{products_json}: expected a JSON array of products")
    return products


def _key(product: Product) -> ProductKey:
    return (product["updated_at"], product["product_id"])


def _encode_cursor(key: ProductKey) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def _decode_cursor(cursor: str) -> ProductKey:
    try:
        updated_at, product_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        raise _BadRequest(f"invalid cursor {cursor!r}") from None
    if not isinstance(updated_at, str) or not isinstance(product_id, int):
        raise _BadRequest(f"invalid cursor {cursor!r}")
    return (updated_at, product_id)


def _json(value: Any) -> str:
    """Compact JSON; `Decimal` prices are written with the digits the file has."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(key)}:{_json(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_json(item) for item in value) + "]"
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo_shop.api_server", description="Serve the demo shop's products REST API."
    )
    parser.add_argument("--products", type=Path, required=True, help="the world's api/products.json")
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (default: 8765)")
    parser.add_argument("--api-key-env", required=True, help="environment variable holding the API key")
    parser.add_argument("--page-size", type=int, default=50, help="products per page (default: 50)")
    args = parser.parse_args(argv)
    api_key = os.environ.get(args.api_key_env)
    if not api_key:
        parser.error(f"environment variable {args.api_key_env} is not set (it holds the API key)")
    if not args.products.is_file():
        parser.error(f"{args.products} does not exist; generate the world first (python -m demo_shop)")
    server = build_server(args.products, api_key, page_size=args.page_size, port=args.port)
    host, port = server.server_address[:2]
    print(f"Serving the demo products API on http://{host}:{port}{PRODUCTS_PATH} (Ctrl-C stops)", flush=True)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
