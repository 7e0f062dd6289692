"""HTTP for the REST connector: one session, a timeout on every request, retries only where they can help.

`timeout_seconds` bounds connecting and each wait for the next bytes of a response (requests' connect and
read timeouts), not a whole slow-dripping download.

Retried, with exponential backoff and full jitter (or exactly the server's `Retry-After`): connection
errors, timeouts, a body cut short or not valid JSON, 429 and 5xx. Any other status from 300 up fails at
once, since retrying a bad key or a wrong path only delays the error; redirects included, which are not
followed (a header API key would travel to whatever host the redirect names).

A server asking (`Retry-After`) for a longer wait than `retry.max_backoff_seconds` is not retried early,
which would only earn another 429: we give up at once and expose `retry_after` so that the caller can
reschedule. A shorter `Retry-After` is waited exactly, without jitter.

Every URL and message that leaves this module is redacted with the credentials' secrets. The original
exception stays chained, as a copy with a redacted message, so a healing layer can classify a failure by
exception type, `status_code` and `retry_after`.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import requests

from resources.rest.config import RateLimit, RetryPolicy
from resources.secrets import env_references, redact, resolve_env

_log = logging.getLogger(__name__)

_TRANSPORT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)
_EXCERPT_CHARS = 200
_DELAY_SECONDS = re.compile(r"\d+(\.\d+)?")


class RestApiError(Exception):
    """Any failure of the REST connector; `status_code` and `retry_after` when an HTTP response caused it.

    `url` is redacted. `attempts` counts the requests made for the failing call.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str = "",
        status_code: int | None = None,
        retry_after: float | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status_code = status_code
        self.retry_after = retry_after
        self.attempts = attempts


class RestStatusError(RestApiError):
    """The API refused the request with a status that retrying cannot fix (a 4xx other than 429)."""


class RestRetriesExhaustedError(RestApiError):
    """Transient failures (connection, timeout, 429, 5xx, broken body) outlasted the retry policy."""


class RestResponseError(RestApiError):
    """A well-formed response that is not shaped as configured (record path, cursor, token...)."""


class Credentials(Protocol):
    """What the client needs from an authentication scheme (see `resources.rest.auth`)."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest: ...

    def secrets(self) -> list[str]:
        """Resolved secret values, in every form they may take in a URL, for redaction."""
        ...

    def env_vars(self) -> list[str]:
        """The environment variables the credentials come from, for the hint of a 401/403."""
        ...

    def renew_after_unauthorized(self) -> bool:
        """Drop cached credentials after a 401; True when a repeated request may now succeed."""
        ...

    def without_credentials(self, url: str) -> str:
        """`url` without the query parameters the credentials add, if any."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Clock:
    """Time as the connector sees it; tests inject a fake one to skip real waits (sockets stay real)."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep


SYSTEM_CLOCK = Clock()


class JsonNumber(Decimal):
    """A JSON number with a fraction or exponent: compares and computes as a `Decimal` (no digit lost to a
    float), prints exactly as it was sent (`8.00`, `1e3`), so the raw layer keeps what the API delivered."""

    __slots__ = ("_text",)

    def __new__(cls, text: str) -> JsonNumber:
        number = super().__new__(cls, text)
        number._text = text
        return number

    def __str__(self) -> str:
        return self._text

    def __reduce__(self) -> tuple[type[JsonNumber], tuple[str]]:
        return (JsonNumber, (self._text,))


@dataclass(frozen=True)
class JsonResponse:
    body: Any
    """Parsed JSON; numbers with a fraction or exponent are `JsonNumber`s."""
    headers: Mapping[str, str]
    url: str
    """The URL requested, without credentials: the base for relative links."""
    shown_url: str
    """The URL as sent, credentials redacted: for messages and lineage."""


@dataclass(frozen=True)
class _TransientFailure:
    shown_url: str
    reason: str
    error: BaseException | None = None
    status_code: int | None = None
    retry_after: float | None = None


class TokenBucket:
    """At most `burst` requests at once, then `requests_per_second` on average; safe across threads.

    A caller takes a token, going into debt when there is none, and sleeps (outside the lock) until its
    token would have been refilled, so concurrent callers queue up in order without busy waiting.
    """

    def __init__(self, limit: RateLimit, clock: Clock = SYSTEM_CLOCK) -> None:
        self._rate = limit.requests_per_second
        self._burst = float(limit.burst)
        self._clock = clock
        self._tokens = self._burst
        self._updated = clock.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = self._clock.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
            self._updated = now
            self._tokens -= 1
            wait = -self._tokens / self._rate
        if wait > 0:
            self._clock.sleep(wait)


class _RedactingFilter(logging.Filter):
    """Masks the secrets of every live client in urllib3's own log records: its DEBUG lines show request
    URLs, an API key in the query string included."""

    def __init__(self) -> None:
        super().__init__()
        self.clients: weakref.WeakSet[RestClient] = weakref.WeakSet()

    def filter(self, record: logging.LogRecord) -> bool:
        clients = list(self.clients)
        if clients:
            message = record.getMessage()
            for client in clients:
                message = client.redact(message)
            record.msg, record.args = message, ()
        return True


_URLLIB3_REDACTION = _RedactingFilter()
for _logger_name in ("urllib3.connectionpool", "urllib3.util.retry"):
    logging.getLogger(_logger_name).addFilter(_URLLIB3_REDACTION)


class RestClient:
    """JSON over HTTP with the connection's timeout, retry policy, rate limit, headers and credentials."""

    def __init__(
        self,
        *,
        auth: Credentials,
        timeout_seconds: float,
        retry: RetryPolicy,
        rate_limit: RateLimit | None = None,
        headers: Mapping[str, str] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        log: logging.Logger | None = None,
    ) -> None:
        """`log`: where each retry is reported (a caller's run log, so that waits show where the run is
        watched); this module's logger, hence stderr, if None."""
        self._log = log or _log
        self._auth = auth
        self._timeout = (timeout_seconds, timeout_seconds)
        self._retry = retry
        self._limiter = TokenBucket(rate_limit, clock) if rate_limit else None
        self._configured_headers = dict(headers or {})
        self._clock = clock
        self._session = requests.Session()
        self._headers_resolved = False
        self._header_secrets: list[str] = []
        _URLLIB3_REDACTION.clients.add(self)

    def get_json(self, url: str, params: Mapping[str, str] | None = None) -> JsonResponse:
        return self._request_json("GET", url_with_params(url, params))

    def post_form(self, url: str, form: Mapping[str, str]) -> JsonResponse:
        return self._request_json("POST", url, form)

    def redact(self, text: str) -> str:
        """`text` with every secret of these credentials and headers masked."""
        return redact(text, [*self._auth.secrets(), *self._header_secrets])

    def without_credentials(self, url: str) -> str:
        return self._auth.without_credentials(url)

    def close(self) -> None:
        self._session.close()
        self._auth.close()

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _request_json(self, method: str, url: str, form: Mapping[str, str] | None = None) -> JsonResponse:
        attempt = 1
        while isinstance(outcome := self._attempt(method, url, form), _TransientFailure):
            wait = self._wait_or_give_up(method, outcome, attempt)
            attempt += 1
            self._log.warning(
                f"{method} {outcome.shown_url}: {outcome.reason}; retrying in {wait:.2f} s "
                f"(attempt {attempt} of {self._retry.max_attempts})"
            )
            self._clock.sleep(wait)
        return outcome

    def _attempt(
        self, method: str, url: str, form: Mapping[str, str] | None
    ) -> JsonResponse | _TransientFailure:
        prepared = self._prepare(method, url, form)
        shown_url = self.redact(prepared.url or url)
        try:
            response = self._send(prepared)
            if response.status_code == 401 and self._auth.renew_after_unauthorized():
                response = self._send(self._prepare(method, url, form))
        except _TRANSPORT_ERRORS as error:
            message = self.redact(str(error))
            return _TransientFailure(
                shown_url, f"{type(error).__name__}: {message}", error=type(error)(message)
            )
        status = response.status_code
        if status == 429 or status >= 500:
            return _TransientFailure(
                shown_url,
                f"HTTP {status} {response.reason}: {self._excerpt(response.text)}",
                status_code=status,
                retry_after=retry_after_seconds(response.headers.get("Retry-After"), self._clock.wall()),
            )
        if status >= 300:
            raise RestStatusError(
                f"{method} {shown_url} failed with HTTP {status} {response.reason}: "
                f"{self._excerpt(response.text)}. {self._hint(response)}",
                url=shown_url,
                status_code=status,
            )
        try:
            body = json.loads(response.content, parse_float=JsonNumber)
        except ValueError as error:
            return _TransientFailure(
                shown_url,
                f"the body is not valid JSON, cut short? ({error}; {len(response.content)} bytes received)",
                error=error,
                status_code=status,
            )
        return JsonResponse(body=body, headers=response.headers, url=url, shown_url=shown_url)

    def _prepare(self, method: str, url: str, form: Mapping[str, str] | None) -> requests.PreparedRequest:
        request = requests.Request(method, url, data=form, headers=self._headers(), auth=self._auth)
        return self._session.prepare_request(request)

    def _send(self, prepared: requests.PreparedRequest) -> requests.Response:
        if self._limiter is not None:
            self._limiter.acquire()
        settings = self._session.merge_environment_settings(prepared.url, {}, None, None, None)
        return self._session.send(prepared, timeout=self._timeout, allow_redirects=False, **settings)

    def _headers(self) -> dict[str, str]:
        """The configured headers, `${ENV}` references resolved at first use and treated as secrets."""
        if not self._headers_resolved:
            resolved = {
                name: resolve_env(value, where=f"header {name}")
                for name, value in self._configured_headers.items()
            }
            self._header_secrets = [
                resolved[name] for name, value in self._configured_headers.items() if env_references(value)
            ]
            self._configured_headers = resolved
            self._headers_resolved = True
        return self._configured_headers

    def _wait_or_give_up(self, method: str, failure: _TransientFailure, attempt: int) -> float:
        """Seconds to wait before the next attempt; raises when there should be none."""
        policy = self._retry
        if attempt >= policy.max_attempts:
            why = f"failed after {attempt} attempts (retry.max_attempts)"
        elif failure.retry_after is not None and failure.retry_after > policy.max_backoff_seconds:
            why = (
                f"gave up after {attempt} attempt(s): the server asks to wait {failure.retry_after:g} s "
                f"(Retry-After), more than retry.max_backoff_seconds={policy.max_backoff_seconds:g}"
            )
        elif failure.retry_after is not None:
            return failure.retry_after
        else:
            ceiling = min(policy.max_backoff_seconds, policy.backoff_seconds * 2 ** (attempt - 1))
            return random.uniform(0, ceiling)
        raise RestRetriesExhaustedError(
            f"{method} {failure.shown_url} {why}; last failure: {failure.reason}",
            url=failure.shown_url,
            status_code=failure.status_code,
            retry_after=failure.retry_after,
            attempts=attempt,
        ) from failure.error

    def _hint(self, response: requests.Response) -> str:
        status = response.status_code
        if status < 400:
            location = self.redact(response.headers.get("Location", "?"))
            return (
                f"Hint: the API redirects to {location}; point base_url (or the path) there. Redirects are "
                f"not followed, so that credentials never travel to another host."
            )
        if status in (401, 403):
            sources = self._auth.env_vars()
            if not sources:
                return "Hint: the API wants credentials; configure `auth` for this connection."
            return f"Hint: check the credentials in environment variable(s) {', '.join(sources)}."
        if status == 404:
            return "Hint: check the endpoint path and the connection's base_url."
        if status in (400, 422):
            return "Hint: check the endpoint's params and incremental parameter."
        return "Not retried: only 429 and 5xx are."

    def _excerpt(self, text: str) -> str:
        flat = " ".join(text.split())
        cut = flat if len(flat) <= _EXCERPT_CHARS else flat[:_EXCERPT_CHARS] + "..."
        return repr(self.redact(cut))


def url_with_params(url: str, params: Mapping[str, str] | None) -> str:
    """`url` with `params` appended to its query string, encoded as `requests` encodes them."""
    if not params:
        return url
    prepared = requests.PreparedRequest()
    prepared.prepare_url(url, dict(params))
    return prepared.url or url


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds to wait per a `Retry-After` header: delay-seconds or an HTTP date (relative to `now`)."""
    if not value:
        return None
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)
