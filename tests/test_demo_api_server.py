"""The demo shop's products API, read with the platform's REST connector over real loopback HTTP."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from demo_shop.api_server import serve_products_api
from demo_shop.catalog import build_catalog
from demo_shop.world import PRODUCTS_API
from resources.rest.client import RestStatusError
from resources.rest.config import RestConnection, RestEndpoint
from resources.rest.source import RestApiSource, max_cursor

API_KEY = "demo-key"
PRODUCTS = RestEndpoint.model_validate(
    {
        "path": "/v1/products",
        "record_path": "data",
        "pagination": {"kind": "cursor", "cursor_path": "next_cursor", "cursor_param": "cursor"},
        "incremental": {"param": "updated_since", "cursor_field": "updated_at"},
    }
)


@pytest.fixture
def products_json(tmp_path: Path) -> Path:
    path = tmp_path / PRODUCTS_API
    path.parent.mkdir(parents=True)
    path.write_bytes(build_catalog(seed=7, count=123).api_json())
    return path


def connect(base_url: str, api_key: str = API_KEY) -> RestApiSource:
    auth = {"kind": "api_key", "name": "X-API-Key", "value": api_key}
    return RestApiSource(RestConnection.model_validate({"base_url": base_url, "auth": auth}))


def test_pages_through_every_product_in_update_order(products_json: Path) -> None:
    products = json.loads(products_json.read_text(), parse_float=Decimal)
    with serve_products_api(products_json, API_KEY, page_size=50) as base_url:
        pages = list(connect(base_url).pages(PRODUCTS))
    assert [len(page.records) for page in pages] == [50, 50, 23]
    records = [record for page in pages for record in page.records]
    assert records == sorted(products, key=lambda product: (product["updated_at"], product["product_id"]))
    assert pages[-1].resume_after["next"] is None
    landed_prices = {
        row["product_id"]: row["unit_price"] for page in pages for row in page.to_batch().to_pylist()
    }
    written = json.loads(products_json.read_text(), parse_float=str)  # prices exactly as written, e.g. 8.00
    assert landed_prices == {str(product["product_id"]): product["unit_price"] for product in written}


def test_updated_since_returns_only_later_updates(products_json: Path) -> None:
    products = json.loads(products_json.read_text())
    since = sorted(product["updated_at"] for product in products)[100]
    with serve_products_api(products_json, API_KEY, page_size=10) as base_url:
        records = [
            record for page in connect(base_url).pages(PRODUCTS, watermark=since) for record in page.records
        ]
    assert {record["product_id"] for record in records} == {
        product["product_id"] for product in products if product["updated_at"] > since
    }
    assert max_cursor(records, "updated_at", since) == max(product["updated_at"] for product in products)


def test_a_missing_or_wrong_api_key_is_refused_with_401(products_json: Path) -> None:
    with serve_products_api(products_json, API_KEY) as base_url:
        response = requests.get(f"{base_url}/v1/products", timeout=5)
        with pytest.raises(RestStatusError, match="HTTP 401") as info:
            list(connect(base_url, api_key="wrong").pages(PRODUCTS))
    assert response.status_code == 401 and "X-API-Key" in response.json()["error"]
    assert info.value.status_code == 401


def test_a_forged_cursor_is_a_400(products_json: Path) -> None:
    with serve_products_api(products_json, API_KEY) as base_url:
        response = requests.get(
            f"{base_url}/v1/products",
            params={"cursor": "not-a-cursor"},
            headers={"X-API-Key": API_KEY},
            timeout=5,
        )
    assert response.status_code == 400 and "invalid cursor" in response.json()["error"]
