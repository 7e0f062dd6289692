"""Retries against a real loopback server: what is retried (connection, timeout, broken body, 429, 5xx), how
long we wait (Retry-After, full-jitter backoff), what fails at once (other 4xx), and the rate limit.

Waits between attempts go to a recording `sleep`, so the suite does not sleep through backoffs; sockets,
timeouts and the rate limiter's spacing stay real."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
import requests
from rest_test_server import Recorded, Reply, ScriptedServer, in_turn, json_reply, unused_port

from resources.rest.auth import build_auth
from resources.rest.client import (
    Clock,
    RestClient,
    RestRetriesExhaustedError,
    RestStatusError,
    retry_after_seconds,
)
from resources.rest.config import RateLimit, RestConnection, RetryPolicy

OK = json_reply([{"id": 1}])
FAST_RETRY = RetryPolicy(max_attempts=3, backoff_seconds=0.01, max_backoff_seconds=5)


class RecordingSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def client(
    base_url: str,
    sleep: RecordingSleep,
    *,
    retry: RetryPolicy = FAST_RETRY,
    timeout_seconds: float = 5,
    wall_clock: float | None = None,
) -> RestClient:
    connection = RestConnection(base_url=base_url, retry=retry, timeout_seconds=timeout_seconds)
    clock = Clock(sleep=sleep) if wall_clock is None else Clock(sleep=sleep, wall=lambda: wall_clock)
    return RestClient(
        auth=build_auth(connection, clock), timeout_seconds=timeout_seconds, retry=retry, clock=clock
    )


def test_429_waits_as_long_as_retry_after_says() -> None:
    sleep = RecordingSleep()
    with ScriptedServer(in_turn(json_reply({}, 429, {"Retry-After": "2"}), OK)) as server:
        assert client(server.base_url, sleep).get_json(f"{server.base_url}/x").body == [{"id": 1}]
    assert sleep.waits == [2.0]
    assert len(server.requests) == 2


def test_retry_after_as_an_http_date_counts_from_now() -> None:
    sleep = RecordingSleep()
    now = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(datetime(2026, 1, 5, 12, 0, 3, tzinfo=UTC), usegmt=True)
    with ScriptedServer(in_turn(json_reply({}, 503, {"Retry-After": later}), OK)) as server:
        client(server.base_url, sleep, wall_clock=now.timestamp()).get_json(f"{server.base_url}/x")
    assert sleep.waits == [3.0]


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        ("Mon, 05 Jan 2026 11:59:00 GMT", 0.0),
        ("soon", None),
        ("-1", None),
        (None, None),
    ],
)
def test_retry_after_values(header: str | None, seconds: float | None) -> None:
    now = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC).timestamp()
    assert retry_after_seconds(header, now) == seconds


def test_429_without_retry_after_backs_off_exponentially_with_full_jitter() -> None:
    sleep = RecordingSleep()
    retry = RetryPolicy(max_attempts=4, backoff_seconds=0.01, max_backoff_seconds=0.03)
    with ScriptedServer(in_turn(json_reply({}, 429), json_reply({}, 429), json_reply({}, 429), OK)) as server:
        client(server.base_url, sleep, retry=retry).get_json(f"{server.base_url}/x")
    ceilings = [0.01, 0.02, 0.03]  # 0.01 * 2**n, capped by max_backoff_seconds
    assert len(sleep.waits) == 3
    assert all(0 <= wait <= ceiling for wait, ceiling in zip(sleep.waits, ceilings, strict=True))


def test_a_server_asking_for_a_longer_wait_than_max_backoff_is_not_hammered() -> None:
    sleep = RecordingSleep()
    quota = json_reply({"error": "quota"}, 429, {"Retry-After": "120"})
    too_long = pytest.raises(RestRetriesExhaustedError, match=r"asks to wait 120 s .*max_backoff_seconds=5")
    with ScriptedServer(in_turn(quota, OK)) as server, too_long as info:
        client(server.base_url, sleep).get_json(f"{server.base_url}/x")
    assert (info.value.status_code, info.value.retry_after, info.value.attempts) == (429, 120.0, 1)
    assert len(server.requests) == 1 and sleep.waits == []


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_then_success(status: int) -> None:
    sleep = RecordingSleep()
    with ScriptedServer(in_turn(json_reply({"error": "boom"}, status), OK)) as server:
        assert client(server.base_url, sleep).get_json(f"{server.base_url}/x").body == [{"id": 1}]
    assert len(server.requests) == 2 and len(sleep.waits) == 1


def test_read_timeout_then_success() -> None:
    sleep = RecordingSleep()
    with ScriptedServer(in_turn(Reply(200, b"[]", delay_seconds=1.0), OK)) as server:
        response = client(server.base_url, sleep, timeout_seconds=0.2).get_json(f"{server.base_url}/x")
    assert response.body == [{"id": 1}]
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    "broken",
    [
        Reply(200, json.dumps([{"id": 1}, {"id": 2}]).encode(), cut_after=12),  # connection cut mid-body
        Reply(200, b'[{"id": 1}, {"id"'),  # a complete response whose JSON is cut short
    ],
    ids=["connection-cut", "invalid-json"],
)
def test_a_truncated_body_is_retried(broken: Reply) -> None:
    sleep = RecordingSleep()
    with ScriptedServer(in_turn(broken, OK)) as server:
        assert client(server.base_url, sleep).get_json(f"{server.base_url}/x").body == [{"id": 1}]
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (400, "check the endpoint's params"),
        (401, "the API wants credentials"),
        (403, "the API wants credentials"),
        (404, "check the endpoint path"),
        (409, "only 429 and 5xx are"),
        (301, "redirects to http://elsewhere.example/v2/things"),
    ],
)
def test_other_4xx_and_redirects_fail_at_once_with_status_excerpt_and_hint(status: int, hint: str) -> None:
    sleep = RecordingSleep()
    reply = json_reply(
        {"error": "nope", "detail": "x" * 500}, status, {"Location": "http://elsewhere.example/v2/things"}
    )
    with ScriptedServer(in_turn(reply, OK)) as server, pytest.raises(RestStatusError) as info:
        client(server.base_url, sleep).get_json(f"{server.base_url}/things", {"q": "1"})
    message = str(info.value)
    assert f"GET {server.base_url}/things?q=1 failed with HTTP {status}" in message
    assert '"error": "nope"' in message and "x" * 300 not in message  # an excerpt, not the whole body
    assert hint in message
    assert info.value.status_code == status
    assert len(server.requests) == 1 and sleep.waits == []


def test_exhausted_retries_name_the_attempts_and_the_last_failure() -> None:
    sleep = RecordingSleep()
    down = json_reply({"error": "down for maintenance"}, 503)
    with ScriptedServer(lambda request: down) as server, pytest.raises(RestRetriesExhaustedError) as info:
        client(server.base_url, sleep).get_json(f"{server.base_url}/x")
    assert "failed after 3 attempts" in str(info.value)
    assert "HTTP 503 Service Unavailable" in str(info.value) and "down for maintenance" in str(info.value)
    assert (info.value.status_code, info.value.attempts) == (503, 3)
    assert len(server.requests) == 3 and len(sleep.waits) == 2


def test_exhausted_retries_on_a_refused_connection_keep_the_exception_chained() -> None:
    sleep = RecordingSleep()
    base_url = f"http://127.0.0.1:{unused_port()}"
    with pytest.raises(RestRetriesExhaustedError, match=r"failed after 3 attempts.*ConnectionError") as info:
        client(base_url, sleep).get_json(f"{base_url}/x")
    assert isinstance(info.value.__cause__, requests.ConnectionError)
    assert info.value.status_code is None


def test_exhausted_retries_on_truncated_bodies_say_so() -> None:
    sleep = RecordingSleep()
    truncated = Reply(200, b'{"data": [1, 2')
    with (
        ScriptedServer(lambda request: truncated) as server,
        pytest.raises(RestRetriesExhaustedError, match="not valid JSON") as info,
    ):
        client(server.base_url, sleep).get_json(f"{server.base_url}/x")
    assert isinstance(info.value.__cause__, json.JSONDecodeError)


def test_rate_limit_spaces_requests_even_from_several_threads() -> None:
    """N requests at r per second with a burst of b cannot take less than (N - b) / r seconds."""
    limit = RateLimit(requests_per_second=40, burst=3)
    threads, per_thread = 4, 4
    with ScriptedServer(lambda request: OK) as server:
        rest = RestClient(
            auth=build_auth(RestConnection(base_url=server.base_url)),
            timeout_seconds=5,
            retry=FAST_RETRY,
            rate_limit=limit,
        )

        def fetch() -> None:
            for _ in range(per_thread):
                rest.get_json(f"{server.base_url}/x")

        workers = [threading.Thread(target=fetch) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    arrivals = sorted(request.received_at for request in server.requests)
    count = threads * per_thread
    assert len(arrivals) == count
    minimum = (count - limit.burst) / limit.requests_per_second
    assert arrivals[-1] - arrivals[0] >= minimum * 0.95  # 5%: connection set-up delays the first arrival only


def test_recorded_requests_are_what_the_server_saw() -> None:
    """The scripted server itself: method, query, headers and body as sent."""

    def echo(seen: Recorded) -> Reply:
        return json_reply({"method": seen.method, "query": seen.query, "body": seen.body.decode()})

    with ScriptedServer(echo) as server:
        rest = client(server.base_url, RecordingSleep())
        assert rest.get_json(f"{server.base_url}/x", {"a": "1 2"}).body == {
            "method": "GET",
            "query": {"a": "1 2"},
            "body": "",
        }
        assert rest.post_form(f"{server.base_url}/x", {"k": "v"}).body["body"] == "k=v"
