"""An extraction that fails after page k resumes, from the state persisted with page k, at page k + 1: in
every pagination style, the pages of both runs together are all the records, none twice."""

from __future__ import annotations

import json
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
    requested_start,
)

from resources.rest.client import RestStatusError
from resources.rest.config import RestConnection
from resources.rest.source import Page, RestApiSource

RECORDS = items(23)  # five pages of five, the last one short


class FailsOnce:
    """Serves `paged_items`, except that the request for page `failing_page` fails once with a 400."""

    def __init__(self, style: str, failing_page: int) -> None:
        self.serve = paged_items(RECORDS, style)
        self.style = style
        self.failing_page = failing_page
        self.failed = False

    def __call__(self, request: Recorded) -> Reply:
        page = requested_start(request, self.style) // PAGE_SIZE + 1
        if page == self.failing_page and not self.failed:
            self.failed = True
            return json_reply({"error": "bad request"}, 400)
        return self.serve(request)


def source(server: ScriptedServer) -> RestApiSource:
    return RestApiSource(RestConnection(base_url=server.base_url))


@pytest.mark.parametrize("style", PAGINATION_STYLES)
@pytest.mark.parametrize("failing_page", [2, 5])
def test_resuming_after_a_failure_continues_with_the_next_page(style: str, failing_page: int) -> None:
    endpoint = endpoint_for(style)
    with ScriptedServer(FailsOnce(style, failing_page)) as server:
        landed: list[Page] = []
        with pytest.raises(RestStatusError):
            for page in source(server).pages(endpoint):
                landed.append(page)
        assert [page.number for page in landed] == list(range(1, failing_page))
        checkpoint = json.loads(json.dumps(landed[-1].resume_after))  # as persisted
        served_before_resume = len(server.requests)
        resumed = list(source(server).pages(endpoint, resume=checkpoint))
    assert [page.number for page in resumed] == list(range(failing_page, 6))
    records = [record for page in landed + resumed for record in page.records]
    assert records == RECORDS
    assert [page.to_batch().column("_page").to_pylist()[0] for page in resumed] == list(
        range(failing_page, 6)
    )
    resumed_targets = [request.target for request in server.requests[served_before_resume:]]
    first_run_targets = [request.target for request in server.requests[: served_before_resume - 1]]
    assert not set(resumed_targets) & set(first_run_targets), "a page landed before was fetched again"


@pytest.mark.parametrize("style", PAGINATION_STYLES)
def test_resuming_after_the_last_page_fetches_nothing(style: str) -> None:
    with ScriptedServer(paged_items(RECORDS, style)) as server:
        pages = list(source(server).pages(endpoint_for(style)))
        served = len(server.requests)
        again = list(source(server).pages(endpoint_for(style), resume=pages[-1].resume_after))
    assert again == []
    assert len(server.requests) - served == (1 if style == "page_number" else 0)


def test_the_resume_state_is_plain_json_naming_endpoint_position_and_watermark() -> None:
    endpoint = endpoint_for("cursor", incremental={"param": "since", "cursor_field": "updated_at"})
    with ScriptedServer(paged_items(RECORDS, "cursor")) as server:
        first = next(source(server).pages(endpoint, watermark="2025-12-31 00:00:00"))
    assert first.resume_after == {
        "version": 1,
        "endpoint": "/items",
        "pagination": "cursor",
        "pages_done": 1,
        "watermark": "2025-12-31 00:00:00",
        "next": {"cursor": first.resume_after["next"]["cursor"]},
        "until": None,
    }
    assert isinstance(first.resume_after["next"]["cursor"], str)


def test_a_resumed_extraction_keeps_the_watermark_and_upper_bound_it_started_with() -> None:
    incremental = {"param": "since", "cursor_field": "updated_at", "until_param": "before"}
    endpoint = endpoint_for("cursor", incremental=incremental)
    with ScriptedServer(paged_items(RECORDS, "cursor")) as server:
        started = source(server).pages(endpoint, watermark="2025-12-31 00:00:00", until="2026-01-31 00:00:00")
        first = next(started)
        list(source(server).pages(endpoint, resume=first.resume_after))
        with pytest.raises(ValueError, match="pass the watermark the extraction started with"):
            list(source(server).pages(endpoint, resume=first.resume_after, watermark="2026-06-01 00:00:00"))
    sent = {(request.query.get("since"), request.query.get("before")) for request in server.requests}
    assert sent == {("2025-12-31 00:00:00", "2026-01-31 00:00:00")}
    assert len(server.requests) == 5


def test_an_upper_bound_is_refused_before_any_request_by_an_endpoint_without_until_param() -> None:
    endpoint = endpoint_for("cursor", incremental={"param": "since", "cursor_field": "updated_at"})
    with (
        ScriptedServer(paged_items(RECORDS, "cursor")) as server,
        pytest.raises(ValueError, match="until_param"),
    ):
        list(source(server).pages(endpoint, watermark="2025-12-31", until="2026-01-31"))
    assert server.requests == []


def test_a_resume_state_of_another_endpoint_is_refused() -> None:
    state: dict[str, Any] = {"version": 1, "endpoint": "/other", "pagination": "cursor", "pages_done": 1}
    with ScriptedServer(paged_items(RECORDS, "cursor")) as server, pytest.raises(ValueError, match="/other"):
        list(source(server).pages(endpoint_for("cursor"), resume={**state, "watermark": None, "next": None}))
    assert server.requests == []
