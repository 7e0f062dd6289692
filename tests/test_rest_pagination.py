"""Every pagination style end to end against a real loopback server: exactly the records, each page once,
and an API that sends us round in circles is stopped instead of followed forever."""

from __future__ import annotations

from typing import Any

import pytest
from rest_test_server import (
    PAGE_SIZE,
    PAGINATION_STYLES,
    Recorded,
    Reply,
    ScriptedServer,
    endpoint_for,
    items,
    json_reply,
    paged_items,
)

from resources.rest.config import RestConnection, RestEndpoint
from resources.rest.pagination import RepeatingCursorError, parse_link_header
from resources.rest.source import PageLimitError, RestApiSource


def source(server: ScriptedServer) -> RestApiSource:
    return RestApiSource(RestConnection(base_url=server.base_url, timeout_seconds=5))


@pytest.mark.parametrize("style", PAGINATION_STYLES)
@pytest.mark.parametrize("count", [23, 20, 3, 0])
def test_every_style_reads_exactly_the_records_each_page_once(style: str, count: int) -> None:
    records = items(count)
    with ScriptedServer(paged_items(records, style)) as server:
        pages = list(source(server).pages(endpoint_for(style)))
    assert [record for page in pages for record in page.records] == records
    assert [page.number for page in pages] == list(range(1, len(pages) + 1))
    assert all(len(page.records) == PAGE_SIZE for page in pages[:-1])
    targets = [request.target for request in server.requests]
    assert len(targets) == len(set(targets)), "a page was requested twice"
    assert len(pages) == -(-count // PAGE_SIZE)


@pytest.mark.parametrize(
    ("style", "requests_for_23"),
    [
        ("page_number", 6),  # five pages, then the empty sixth says it is over
        ("offset", 5),  # the fifth page is short
        ("cursor", 5),
        ("next_url", 5),
        ("link_header", 5),
    ],
)
def test_requests_stop_where_each_style_says_the_data_ends(style: str, requests_for_23: int) -> None:
    with ScriptedServer(paged_items(items(23), style)) as server:
        list(source(server).pages(endpoint_for(style)))
    assert len(server.requests) == requests_for_23


def test_page_number_and_offset_stop_at_the_announced_total_without_asking_for_an_empty_page() -> None:
    records = items(20)

    def with_totals(request: Recorded) -> Reply:
        page = int(request.query.get("page", "0"))
        offset = int(request.query.get("offset", str((page - 1) * PAGE_SIZE)))
        return json_reply({"data": records[offset : offset + PAGE_SIZE], "meta": {"pages": 4, "total": 20}})

    by_page = endpoint_for(
        "page_number", pagination={"kind": "page_number", "total_pages_path": "meta.pages"}
    )
    by_offset = endpoint_for(
        "offset", pagination={"kind": "offset", "limit": PAGE_SIZE, "total_path": "meta.total"}
    )
    for endpoint in (by_page, by_offset):
        with ScriptedServer(with_totals) as server:
            pages = list(source(server).pages(endpoint))
        assert [record for page in pages for record in page.records] == records
        assert len(server.requests) == 4


def test_pagination_parameters_travel_with_the_endpoint_params() -> None:
    with ScriptedServer(paged_items(items(12), "page_number")) as server:
        endpoint = endpoint_for("page_number", params={"status": "active"})
        pages = list(source(server).pages(endpoint))
    assert [request.query for request in server.requests] == [
        {"status": "active", "page": "1"},
        {"status": "active", "page": "2"},
        {"status": "active", "page": "3"},
        {"status": "active", "page": "4"},
    ]
    assert pages[0].request_url == f"{server.base_url}/items?status=active&page=1"


def test_an_endpoint_without_pagination_is_one_page() -> None:
    with ScriptedServer(lambda request: json_reply([{"id": 1}, {"id": 2}])) as server:
        pages = list(source(server).pages(RestEndpoint(path="/all")))
    assert [page.records for page in pages] == [[{"id": 1}, {"id": 2}]]
    assert pages[0].resume_after["next"] is None
    assert len(server.requests) == 1


def test_a_cursor_sent_twice_fails_loudly_naming_it() -> None:
    def stuck(request: Recorded) -> Reply:
        return json_reply(
            {"data": [{"id": request.query.get("after", "first")}], "meta": {"next_cursor": "abc"}}
        )

    with ScriptedServer(stuck) as server, pytest.raises(RepeatingCursorError, match="cursor 'abc'"):
        list(source(server).pages(endpoint_for("cursor")))
    assert [request.query.get("after") for request in server.requests] == [None, "abc"]


def test_a_next_url_pointing_back_fails_loudly() -> None:
    def circular(request: Recorded) -> Reply:
        page = int(request.query.get("page", "1"))
        return json_reply({"data": [{"page": page}], "links": {"next": f"/items?page={page % 2 + 1}"}})

    with ScriptedServer(circular) as server, pytest.raises(RepeatingCursorError, match=r"items\?page=2"):
        list(source(server).pages(endpoint_for("next_url")))
    assert [request.target for request in server.requests] == ["/items", "/items?page=2", "/items?page=1"]


def test_an_api_ignoring_the_page_parameter_is_stopped_at_the_second_page() -> None:
    same_records = pytest.raises(RepeatingCursorError, match=r"page=2 .* exactly the records of the previous")
    with ScriptedServer(lambda request: json_reply({"data": items(5)})) as server, same_records:
        list(source(server).pages(endpoint_for("page_number")))
    assert len(server.requests) == 2


def test_max_pages_caps_an_extraction() -> None:
    with ScriptedServer(paged_items(items(23), "cursor")) as server:
        pages = source(server).pages(endpoint_for("cursor", max_pages=2))
        with pytest.raises(PageLimitError, match="max_pages=2"):
            list(pages)
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('<https://x/a?page=2>; rel="next"', [("https://x/a?page=2", {"rel": "next"})]),
        (
            '<a>; rel="prev first", <b>;REL=next;title="x, <y>; z"',
            [("a", {"rel": "prev first"}), ("b", {"rel": "next", "title": "x, <y>; z"})],
        ),
        ('<c>; title="say \\"hi\\""; rel=next; rel=last', [("c", {"title": 'say "hi"', "rel": "next"})]),
        ("", []),
        ("  <d>  ,  <e>; anchor  ", [("d", {}), ("e", {"anchor": ""})]),
    ],
)
def test_link_headers_are_parsed_as_rfc_8288_says(
    header: str, expected: list[tuple[str, dict[str, Any]]]
) -> None:
    assert parse_link_header(header) == expected


@pytest.mark.parametrize("header", ['<a>; rel="next', "a; rel=next", "<a> rel=next", "<a"])
def test_a_malformed_link_header_is_refused(header: str) -> None:
    with pytest.raises(ValueError, match="Link"):
        parse_link_header(header)
