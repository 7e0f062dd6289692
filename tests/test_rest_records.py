"""What a page of records becomes: text columns with lineage, the record array found (or a clear error at
once), the incremental parameter sent and the new watermark computed."""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa
import pytest
from rest_test_server import Reply, ScriptedServer, endpoint_for, items, json_reply, paged_items

from resources.rest.client import RestResponseError
from resources.rest.config import RestConnection, RestEndpoint
from resources.rest.source import Page, RestApiSource, max_cursor


def source(server: ScriptedServer) -> RestApiSource:
    return RestApiSource(RestConnection(base_url=server.base_url))


def test_values_become_text_as_delivered_with_page_and_record_numbers() -> None:
    raw = b"""{"data": [
        {"id": 1, "price": 8.00, "ok": true, "tags": ["a", "b"], "meta": {"x": 1.50, "y": null}, "n": null},
        {"id": 2, "extra": "only here", "price": 1e3, "name": "caf\\u00e9", "big": 12345678901234567890.123}
    ]}"""
    with ScriptedServer(lambda request: Reply(200, raw)) as server:
        [page] = source(server).pages(RestEndpoint(path="/p", record_path="data"))
    batch = page.to_batch()
    assert batch.schema.names == [
        "id",
        "price",
        "ok",
        "tags",
        "meta",
        "n",
        "extra",
        "name",
        "big",
        "_page",
        "_record",
    ]
    assert all(batch.schema.field(name).type == pa.string() for name in batch.schema.names[:-2])
    assert batch.schema.field("_page").type == pa.int64() == batch.schema.field("_record").type
    assert batch.to_pydict() == {
        "id": ["1", "2"],
        "price": ["8.00", "1e3"],
        "ok": ["true", None],
        "tags": ['["a","b"]', None],
        "meta": ['{"x":1.50,"y":null}', None],
        "n": [None, None],
        "extra": [None, "only here"],
        "name": [None, "café"],
        "big": [None, "12345678901234567890.123"],
        "_page": [1, 1],
        "_record": [1, 2],
    }


def test_an_empty_page_is_a_batch_of_lineage_columns_only() -> None:
    page = Page(number=3, records=[], resume_after={}, request_url="http://x")
    assert page.to_batch().schema.names == ["_page", "_record"]
    assert page.to_batch().num_rows == 0


def test_records_named_like_lineage_columns_are_refused() -> None:
    with pytest.raises(RestResponseError, match=r"\['_page'\]"):
        Page(number=1, records=[{"_page": 1}], resume_after={}, request_url="http://x").to_batch()


def test_a_missing_record_path_fails_at_once_showing_the_top_level_keys() -> None:
    with (
        ScriptedServer(lambda request: json_reply({"items": [], "count": 0})) as server,
        pytest.raises(RestResponseError, match=r"record_path 'data'.*top-level keys \['items', 'count'\]"),
    ):
        list(source(server).pages(RestEndpoint(path="/p", record_path="data")))
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("body", "record_path", "message"),
    [
        ({"data": {"id": 1}}, "data", r"no list of records at record_path 'data'"),
        ({"data": [1, 2]}, "data", r"record 1 is a JSON int, not an object"),
        ({"data": []}, None, r"no list of records at the top level; the response is an object"),
        ([{"id": 1}], "data", r"the response is a JSON list"),
    ],
)
def test_records_that_are_not_a_list_of_objects_fail_at_once(
    body: object, record_path: str | None, message: str
) -> None:
    with (
        ScriptedServer(lambda request: json_reply(body)) as server,
        pytest.raises(RestResponseError, match=message),
    ):
        list(source(server).pages(RestEndpoint(path="/p", record_path=record_path)))
    assert len(server.requests) == 1


def test_a_dotted_record_path() -> None:
    with ScriptedServer(lambda request: json_reply({"result": {"rows": [{"id": 1}]}})) as server:
        [page] = source(server).pages(RestEndpoint(path="/p", record_path="result.rows"))
    assert page.records == [{"id": 1}]


def test_the_watermark_or_the_initial_value_is_sent_as_the_incremental_parameter() -> None:
    incremental = {"param": "since", "cursor_field": "updated_at", "initial_value": "2020-01-01 00:00:00"}
    endpoint = endpoint_for("cursor", incremental=incremental)
    with ScriptedServer(paged_items(items(7), "cursor")) as server:
        list(source(server).pages(endpoint))
        list(source(server).pages(endpoint, watermark="2026-01-01 00:00:05"))
    assert [request.query.get("since") for request in server.requests] == [
        "2020-01-01 00:00:00",
        "2020-01-01 00:00:00",
        "2026-01-01 00:00:05",
        "2026-01-01 00:00:05",
    ]


def test_max_cursor_compares_strings_as_strings_and_numbers_as_numbers() -> None:
    records = [{"t": "2026-01-02 00:00:00", "n": 9}, {"t": "2026-01-10 00:00:00", "n": 10}, {"t": None}, {}]
    assert max_cursor(records, "t", None) == "2026-01-10 00:00:00"
    assert max_cursor(records, "t", "2026-02-01 00:00:00") == "2026-02-01 00:00:00"
    assert max_cursor(records, "n", "9.5") == "10"  # numerically: as strings "9.5" > "10"
    assert max_cursor(records, "n", "11") == "11"
    assert max_cursor([{"n": Decimal("1.50")}], "n", None) == "1.50"
    assert max_cursor([], "t", "x") == "x"
    with pytest.raises(ValueError, match="only strings or only numbers"):
        max_cursor([{"t": "a"}, {"t": 1}], "t", None)
    with pytest.raises(ValueError, match="not one"):
        max_cursor(records, "n", "yesterday")
