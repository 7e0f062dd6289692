"""Records from a REST endpoint, page by page, each page carrying the checkpoint that resumes after it.

A caller lands a page durably, then persists `page.resume_after`; after a failure it passes that state back
as `resume` and extraction continues with the next page (numbering included), so no page is landed twice
and none is skipped. The state is JSON:

    {"version": 1, "endpoint": "/v1/products", "pagination": "cursor", "pages_done": 3,
     "watermark": "2026-01-10 22:32:07", "next": {"cursor": "abc"}}

`next` is the paginator's position of the following page (`{"page": 4}`, `{"offset": 300}`,
`{"cursor": ...}`, `{"url": ...}`, `{}` for an unpaged endpoint) or null when the page was the last. The
watermark is the one the extraction started with: a cursor or page number only means something for the
query it came from, so a resumed extraction keeps sending it.

Values stay as delivered: `Page.to_batch` turns every top-level value into text (numbers with every digit
they were sent with), the raw layer's contract.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import pyarrow as pa

from resources.rest.auth import build_auth
from resources.rest.client import (
    SYSTEM_CLOCK,
    Clock,
    JsonResponse,
    RestApiError,
    RestClient,
    RestResponseError,
    url_with_params,
)
from resources.rest.config import RestConnection, RestEndpoint
from resources.rest.pagination import (
    LoopGuard,
    PageRequest,
    PageResponse,
    Position,
    build_paginator,
    value_at,
)

RESUME_STATE_VERSION = 1
LINEAGE_COLUMNS = ("_page", "_record")


class PageLimitError(RestApiError):
    """The endpoint has more pages than its `max_pages` allows in one extraction."""


@dataclass(frozen=True)
class Page:
    number: int
    """1-based, continuing across a resume."""
    records: list[dict[str, Any]]
    """As parsed; numbers with a fraction or exponent are `JsonNumber` (a `Decimal` printing as sent)."""
    resume_after: dict[str, Any]
    """JSON-serializable; passed back as `resume`, extraction continues with the next page."""
    request_url: str
    """Credentials redacted."""

    def to_batch(self) -> pa.RecordBatch:
        """Every top-level value as text (strings as is, anything else as compact JSON, null as null),
        columns in first-seen order, then `_page` and `_record` (1-based within the page)."""
        names = list(dict.fromkeys(name for record in self.records for name in record))
        clashing = [name for name in LINEAGE_COLUMNS if name in names]
        if clashing:
            raise RestResponseError(
                f"{self.request_url}: records have field(s) {clashing}, the names of lineage columns.",
                url=self.request_url,
            )
        columns = [
            pa.array([_as_text(record.get(name)) for record in self.records], pa.string()) for name in names
        ]
        count = len(self.records)
        columns += [pa.array([self.number] * count, pa.int64()), pa.array(range(1, count + 1), pa.int64())]
        return pa.RecordBatch.from_arrays(columns, names=[*names, *LINEAGE_COLUMNS])


class RestApiSource:
    """One REST connection: credentials, retries, rate limit and a session shared by its endpoints."""

    def __init__(
        self, connection: RestConnection, *, clock: Clock = SYSTEM_CLOCK, log: logging.Logger | None = None
    ) -> None:
        """`log`: where the client reports its retries (the caller's run log); its module's logger if None."""
        self._base_url = connection.base_url.rstrip("/")
        self._client = RestClient(
            auth=build_auth(connection, clock),
            timeout_seconds=connection.timeout_seconds,
            retry=connection.retry,
            rate_limit=connection.rate_limit,
            headers=connection.headers,
            clock=clock,
            log=log,
        )

    def pages(
        self,
        endpoint: RestEndpoint,
        *,
        resume: Mapping[str, Any] | None = None,
        watermark: str | None = None,
        until: str | None = None,
    ) -> Iterator[Page]:
        """The endpoint's pages from the first (or the one after `resume`); an empty last page is not
        yielded. `watermark` (else `incremental.initial_value`) is sent as the incremental parameter, and
        `until`, the upper bound of a re-extracted range, as `incremental.until_param` (a resumed extraction
        keeps the bound it started with)."""
        paginator = build_paginator(endpoint.pagination, self._client.without_credentials)
        if resume is None:
            start = _ResumeState.first(endpoint, paginator.first(), watermark, _until(endpoint, until))
        else:
            start = _ResumeState.restore(resume, endpoint, watermark)
        guard = LoopGuard()
        position, number, fetched = start.next, start.pages_done, 0
        while position is not None:
            url = self._url(endpoint, start, paginator.request(position))
            what, shown_url = paginator.describe(position), self._client.redact(url)
            if endpoint.max_pages is not None and fetched >= endpoint.max_pages:
                raise PageLimitError(
                    f"{shown_url}: more than max_pages={endpoint.max_pages} pages in one extraction (next: "
                    f"{what}); raise max_pages if the endpoint really holds that much.",
                    url=shown_url,
                )
            guard.before_request(url, what, shown_url)
            response = self._client.get_json(url)
            fetched += 1
            records = _records(response, endpoint.record_path)
            guard.after_page(records, what, response.shown_url)
            position = paginator.after(
                position, PageResponse(response.body, response.headers, records, url, response.shown_url)
            )
            if records or position is not None:
                number += 1
                yield Page(number, records, start.after_page(number, position), response.shown_url)

    def _url(self, endpoint: RestEndpoint, start: _ResumeState, request: PageRequest) -> str:
        """A URL the API gave us as is; else the endpoint's, with its parameters and the watermark."""
        if request.url is not None:
            return url_with_params(request.url, request.params)
        params = {**endpoint.params, **start.incremental_params(endpoint), **request.params}
        return url_with_params(f"{self._base_url}/{endpoint.path.lstrip('/')}", params)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RestApiSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def max_cursor(records: Iterable[Mapping[str, Any]], field: str, current: str | None) -> str | None:
    """The new watermark: the greatest `field` value across `records` and `current`, as text.

    Strings compare as strings: right for ISO 8601 timestamps written in one format and one zone (as
    `YYYY-MM-DD HH:MM:SS` or `...T...Z`), wrong for mixed formats or offsets. JSON numbers compare
    numerically, `current` read as a number. Records without the field, or with null, are skipped.
    """
    values = [record[field] for record in records if record.get(field) is not None]
    if not values:
        return current
    if all(isinstance(value, str) for value in values):
        greatest = max(values)
        return greatest if current is None or greatest > current else current
    if all(isinstance(value, int | float | Decimal) and not isinstance(value, bool) for value in values):
        greatest_number = max(values)
        try:
            if current is not None and Decimal(current) >= greatest_number:
                return current
        except InvalidOperation:
            raise ValueError(
                f"cursor_field {field!r} holds numbers but the current watermark {current!r} is not one"
            ) from None
        return str(greatest_number)
    kinds = sorted({type(value).__name__ for value in values})
    raise ValueError(f"cursor_field {field!r} must hold only strings or only numbers, found {kinds}")


@dataclass(frozen=True)
class _ResumeState:
    endpoint: str
    pagination: str
    watermark: str | None
    pages_done: int
    next: Position | None
    until: str | None = None

    @classmethod
    def first(
        cls, endpoint: RestEndpoint, position: Position, watermark: str | None, until: str | None
    ) -> _ResumeState:
        if watermark is None and endpoint.incremental is not None:
            watermark = endpoint.incremental.initial_value
        return cls(endpoint.path, endpoint.pagination.kind, watermark, 0, position, until)

    @classmethod
    def restore(cls, state: Mapping[str, Any], endpoint: RestEndpoint, watermark: str | None) -> _ResumeState:
        expected = (RESUME_STATE_VERSION, endpoint.path, endpoint.pagination.kind)
        found = (state.get("version"), state.get("endpoint"), state.get("pagination"))
        if found != expected:
            raise ValueError(
                f"resume state (version, endpoint, pagination) = {found} does not belong to {expected}"
            )
        if watermark is not None and watermark != state["watermark"]:
            raise ValueError(
                f"resuming {endpoint.path} with watermark {watermark!r}, but its pages so far were fetched "
                f"with {state['watermark']!r}: pass the watermark the extraction started with (or None)"
            )
        return cls(
            endpoint.path,
            endpoint.pagination.kind,
            state["watermark"],
            state["pages_done"],
            state["next"],
            state.get("until"),
        )

    def after_page(self, number: int, next_position: Position | None) -> dict[str, Any]:
        return {
            "version": RESUME_STATE_VERSION,
            "endpoint": self.endpoint,
            "pagination": self.pagination,
            "pages_done": number,
            "watermark": self.watermark,
            "next": next_position,
            "until": self.until,
        }

    def incremental_params(self, endpoint: RestEndpoint) -> dict[str, str]:
        incremental = endpoint.incremental
        if incremental is None:
            return {}
        params = {} if self.watermark is None else {incremental.param: self.watermark}
        if self.until is not None and incremental.until_param is not None:
            params[incremental.until_param] = self.until
        return params


def _until(endpoint: RestEndpoint, until: str | None) -> str | None:
    """`until`, refused (before any request) by an endpoint that cannot be asked for an upper bound."""
    if until is not None and (endpoint.incremental is None or endpoint.incremental.until_param is None):
        raise ValueError(
            f"{endpoint.path}: re-extracting up to {until!r} needs `incremental.until_param`, the query "
            f"parameter the API reads an upper bound from"
        )
    return until


def _records(response: JsonResponse, record_path: str | None) -> list[dict[str, Any]]:
    """The record array of a response; a missing one or one that is not a list of objects fails at once
    (the response is well-formed, so asking again would give the same)."""
    found = response.body if record_path is None else value_at(response.body, record_path)
    if not isinstance(found, list):
        where = "the top level" if record_path is None else f"record_path {record_path!r}"
        shape = (
            f"an object with top-level keys {list(response.body)[:20]}"
            if isinstance(response.body, dict)
            else f"a JSON {type(response.body).__name__}"
        )
        raise RestResponseError(
            f"{response.shown_url}: no list of records at {where}; the response is {shape}.",
            url=response.shown_url,
        )
    for index, record in enumerate(found, start=1):
        if not isinstance(record, dict):
            raise RestResponseError(
                f"{response.shown_url}: record {index} is a JSON {type(record).__name__}, not an object.",
                url=response.shown_url,
            )
    return found


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return _compact_json(value)


def _compact_json(value: Any) -> str:
    """Compact JSON in which numbers are written as they were sent (see `JsonNumber`)."""
    if isinstance(value, dict):
        members = (
            f"{json.dumps(key, ensure_ascii=False)}:{_compact_json(item)}" for key, item in value.items()
        )
        return "{" + ",".join(members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_compact_json(item) for item in value) + "]"
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value, ensure_ascii=False)
