"""Pagination: one paginator per catalog kind, each moving a JSON-serializable position from page to page.

A position says which page comes next (`{"page": 3}`, `{"offset": 200}`, `{"cursor": "abc"}`,
`{"url": "..."}`), so that an extraction persisted after any page can resume with the following one.
`LoopGuard` stops an API that sends us round in circles (a request made before, a page identical to the
previous one) instead of fetching forever.
"""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from resources.rest.client import RestResponseError
from resources.rest.config import (
    CursorPagination,
    LinkHeaderPagination,
    NextUrlPagination,
    OffsetPagination,
    PageNumberPagination,
    Pagination,
)

Position = dict[str, Any]
"""Where the next page is; JSON-serializable."""


class RepeatingCursorError(RestResponseError):
    """The API sent a cursor, next URL or page it had sent before: following it would never end."""


@dataclass(frozen=True)
class PageRequest:
    url: str | None
    """An absolute URL given by the API (used as is), or None: the endpoint's URL and parameters."""
    params: dict[str, str]
    """Pagination parameters added to the request."""


@dataclass(frozen=True)
class PageResponse:
    body: Any
    headers: Mapping[str, str]
    records: list[dict[str, Any]]
    url: str
    """The URL requested, without credentials: the base of relative links."""
    shown_url: str
    """The same URL, credentials redacted, for messages."""


def value_at(body: Any, dotted_path: str) -> Any:
    """The value at `dotted_path` (`meta.next`, `data.0.id`) in a JSON body, None when a step is missing."""
    value = body
    for step in dotted_path.split("."):
        if isinstance(value, dict):
            value = value.get(step)
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return None
    return value


class Paginator(ABC):
    @abstractmethod
    def first(self) -> Position: ...

    @abstractmethod
    def request(self, position: Position) -> PageRequest: ...

    @abstractmethod
    def after(self, position: Position, response: PageResponse) -> Position | None:
        """The position of the page after `response`, or None when it was the last."""

    @abstractmethod
    def describe(self, position: Position) -> str:
        """The position in words, for error messages."""


class SinglePage(Paginator):
    def first(self) -> Position:
        return {}

    def request(self, position: Position) -> PageRequest:
        return PageRequest(url=None, params={})

    def after(self, position: Position, response: PageResponse) -> Position | None:
        return None

    def describe(self, position: Position) -> str:
        return "the only page"


class PageNumberPaginator(Paginator):
    """`?page=N`, to the first empty page or the last of `total_pages_path` (when the body has it)."""

    def __init__(self, config: PageNumberPagination) -> None:
        self._config = config

    def first(self) -> Position:
        return {"page": self._config.start}

    def request(self, position: Position) -> PageRequest:
        params = {self._config.page_param: str(position["page"])}
        if self._config.page_size_param and self._config.page_size:
            params[self._config.page_size_param] = str(self._config.page_size)
        return PageRequest(url=None, params=params)

    def after(self, position: Position, response: PageResponse) -> Position | None:
        page = position["page"]
        if not response.records:
            return None
        total = _count_at(response, self._config.total_pages_path)
        if total is not None and page - self._config.start + 1 >= total:
            return None
        return {"page": page + 1}

    def describe(self, position: Position) -> str:
        return f"{self._config.page_param}={position['page']}"


class OffsetPaginator(Paginator):
    """`?offset=N&limit=L`, advancing by the records received, to an empty page and to the `total_path`
    count when the body gives one, else to a short page (an API capping `limit` lower than asked would
    end that early: configure `total_path` where it can)."""

    def __init__(self, config: OffsetPagination) -> None:
        self._config = config

    def first(self) -> Position:
        return {"offset": 0}

    def request(self, position: Position) -> PageRequest:
        config = self._config
        return PageRequest(
            url=None,
            params={config.offset_param: str(position["offset"]), config.limit_param: str(config.limit)},
        )

    def after(self, position: Position, response: PageResponse) -> Position | None:
        received = len(response.records)
        offset = position["offset"] + received
        total = _count_at(response, self._config.total_path)
        if received == 0 or (offset >= total if total is not None else received < self._config.limit):
            return None
        return {"offset": offset}

    def describe(self, position: Position) -> str:
        return f"{self._config.offset_param}={position['offset']}"


class CursorPaginator(Paginator):
    """The body's `cursor_path` holds the next cursor, sent back as `cursor_param`; missing, null or ""
    ends the extraction."""

    def __init__(self, config: CursorPagination) -> None:
        self._config = config

    def first(self) -> Position:
        return {"cursor": None}

    def request(self, position: Position) -> PageRequest:
        cursor = position["cursor"]
        return PageRequest(url=None, params={} if cursor is None else {self._config.cursor_param: cursor})

    def after(self, position: Position, response: PageResponse) -> Position | None:
        cursor = value_at(response.body, self._config.cursor_path)
        if cursor is None or cursor == "":
            return None
        if isinstance(cursor, bool) or not isinstance(cursor, str | int | Decimal):
            raise RestResponseError(
                f"{response.shown_url}: the cursor at {self._config.cursor_path!r} is "
                f"{type(cursor).__name__}, not a string or number.",
                url=response.shown_url,
            )
        return {"cursor": str(cursor)}

    def describe(self, position: Position) -> str:
        return f"cursor {position['cursor']!r}"


class UrlFollowingPaginator(Paginator, ABC):
    """Paginators whose responses name the next page's full URL: the position is that URL."""

    def __init__(self, clean_url: Callable[[str], str]) -> None:
        self._clean_url = clean_url

    def first(self) -> Position:
        return {"url": None}

    def request(self, position: Position) -> PageRequest:
        return PageRequest(url=position["url"], params={})

    def describe(self, position: Position) -> str:
        return f"next URL {position['url']!r}"


class NextUrlPaginator(UrlFollowingPaginator):
    """The body's `next_url_path` holds the next page's URL (relative ones resolved), followed as is."""

    def __init__(self, config: NextUrlPagination, clean_url: Callable[[str], str]) -> None:
        super().__init__(clean_url)
        self._config = config

    def after(self, position: Position, response: PageResponse) -> Position | None:
        target = value_at(response.body, self._config.next_url_path)
        if target is None or target == "":
            return None
        if not isinstance(target, str):
            raise RestResponseError(
                f"{response.shown_url}: the next URL at {self._config.next_url_path!r} is "
                f"{type(target).__name__}, not a string.",
                url=response.shown_url,
            )
        return {"url": self._clean_url(urljoin(response.url, target))}


class LinkHeaderPaginator(UrlFollowingPaginator):
    """RFC 8288: the target of the `Link` header's `rel="next"` link (relative ones resolved)."""

    def after(self, position: Position, response: PageResponse) -> Position | None:
        try:
            links = parse_link_header(response.headers.get("Link", ""))
        except ValueError as error:
            raise RestResponseError(f"{response.shown_url}: {error}", url=response.shown_url) from None
        targets = [target for target, params in links if "next" in params.get("rel", "").lower().split()]
        return {"url": self._clean_url(urljoin(response.url, targets[0]))} if targets else None

    def describe(self, position: Position) -> str:
        return f"Link rel=next {position['url']!r}"


def build_paginator(config: Pagination, clean_url: Callable[[str], str]) -> Paginator:
    """`clean_url` strips credentials from URLs the API gives us before they become part of a position."""
    if isinstance(config, PageNumberPagination):
        return PageNumberPaginator(config)
    if isinstance(config, OffsetPagination):
        return OffsetPaginator(config)
    if isinstance(config, CursorPagination):
        return CursorPaginator(config)
    if isinstance(config, NextUrlPagination):
        return NextUrlPaginator(config, clean_url)
    if isinstance(config, LinkHeaderPagination):
        return LinkHeaderPaginator(clean_url)
    return SinglePage()


class LoopGuard:
    """Remembers this extraction's requests and the previous page, to stop pagination going in circles."""

    def __init__(self) -> None:
        self._requests: set[str] = set()
        self._previous_digest: str | None = None

    def before_request(self, url: str, what: str, shown_url: str) -> None:
        """`url` is the full request URL, parameters included, without credentials."""
        parts = urlsplit(url)
        canonical = urlunsplit(parts._replace(query=urlencode(sorted(parse_qsl(parts.query, True)))))
        if canonical in self._requests:
            raise RepeatingCursorError(
                f"The API sent {what} again: {shown_url} was already fetched in this extraction; stopping "
                f"instead of fetching the same pages forever.",
                url=shown_url,
            )
        self._requests.add(canonical)

    def after_page(self, records: list[dict[str, Any]], what: str, shown_url: str) -> None:
        digest = hashlib.sha256(json.dumps(records, sort_keys=True, default=str).encode()).hexdigest()
        if records and digest == self._previous_digest:
            raise RepeatingCursorError(
                f"The page for {what} ({shown_url}) holds exactly the records of the previous page: the API "
                f"seems to ignore the pagination parameter; stopping instead of fetching it forever.",
                url=shown_url,
            )
        self._previous_digest = digest


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SPACE = " \t"


def parse_link_header(value: str) -> list[tuple[str, dict[str, str]]]:
    """RFC 8288 links as (target, parameters): several links, quoted strings with escapes and commas,
    parameter names lower-cased, the first occurrence of a parameter winning."""
    links: list[tuple[str, dict[str, str]]] = []
    position = _skip(value, 0, _SPACE + ",")
    while position < len(value):
        if value[position] != "<" or (end := value.find(">", position)) < 0:
            raise ValueError(f"malformed Link header at character {position}: {value!r}")
        target, params = value[position + 1 : end], {}
        position = _skip(value, end + 1, _SPACE)
        while position < len(value) and value[position] == ";":
            name_match = _TOKEN.match(value, _skip(value, position + 1, _SPACE))
            if name_match is None:
                raise ValueError(f"malformed Link parameter at character {position}: {value!r}")
            position = _skip(value, name_match.end(), _SPACE)
            parameter = ""
            if position < len(value) and value[position] == "=":
                parameter, position = _parameter_value(value, _skip(value, position + 1, _SPACE))
            params.setdefault(name_match.group().lower(), parameter)
            position = _skip(value, position, _SPACE)
        if position < len(value) and value[position] != ",":
            raise ValueError(f"malformed Link header at character {position}: {value!r}")
        links.append((target, params))
        position = _skip(value, position, _SPACE + ",")
    return links


def _parameter_value(text: str, position: int) -> tuple[str, int]:
    """A token or a quoted string starting at `position`, and the position after it."""
    if position < len(text) and text[position] == '"':
        chars: list[str] = []
        position += 1
        while position < len(text) and text[position] != '"':
            if text[position] == "\\":
                position += 1
            chars.append(text[position : position + 1])
            position += 1
        if position >= len(text):
            raise ValueError(f"unterminated quoted string in Link header: {text!r}")
        return "".join(chars), position + 1
    match = _TOKEN.match(text, position)
    return (match.group(), match.end()) if match else ("", position)


def _skip(text: str, position: int, characters: str) -> int:
    while position < len(text) and text[position] in characters:
        position += 1
    return position


def _count_at(response: PageResponse, path: str | None) -> int | None:
    """A total (of pages or records) at `path` in the body; None when not configured or not given."""
    if path is None:
        return None
    total = value_at(response.body, path)
    if total is None or isinstance(total, bool) or not isinstance(total, int | Decimal | str):
        return None
    try:
        return int(total)
    except ValueError:
        return None
