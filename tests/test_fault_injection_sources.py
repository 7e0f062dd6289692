"""Fault-injection scenarios at the sources: a flaky, slow, truncating or token-expiring REST API on
loopback, and a real PostgreSQL that drops the extraction's connection or holds a lock past the statement
timeout. Each runs real materializations, lets the real healing engine diagnose and act (or shows that the
connector's own retries absorbed the fault without an incident), asserts category, rule, action, outcome
and the data (every source key staged exactly once), and records a scoreboard row.

Faults the connector heals inside the step ("healed in-step") leave no incident; their scoreboard category
is what the platform's classifier says about the fault the server really sent, so that the row stays
comparable with the rows of faults that did fail a step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg2
import pytest
import sqlalchemy as sa
from fault_api import KEYS, MAX_ATTEMPTS, RECORDS, record, rest_source
from fixtures.postgres_server import PostgresCluster
from healing_harness import slice_for
from rest_test_server import PAGE_SIZE, Recorded, Reply, ScriptedServer, json_reply, paged_items

from resources.databases.engine import APPLICATION_NAME
from sensors.healing.classifier import ErrorLink, Evidence, classify
from sensors.healing.engine import ACTION_TAG

pytestmark = pytest.mark.faults

STAGED_API_ITEMS = "staged/api/items"
RAW_API_STEP = "raw__api__items"
PAGES = list(range(1, 7))
"""Pages requested by a full extraction: five with records, then the empty sixth that ends it."""


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A fresh instance, configured as the platform's (no managed Python loggers): the REST client's retry
    warnings reach the run log because the extraction hands it the run's log."""
    with dg.instance_for_test() as instance:
        yield instance


# ---- helpers ----


def page_of(request: Recorded) -> int:
    return int(request.query.get("page", "1"))


def pages_requested(server: ScriptedServer) -> list[int]:
    return [page_of(request) for request in server.requests_to("/items")]


def run_log_messages(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(result.run_id)]


# ---- 1. flaky 5xx ----


class FirstAttemptPerPageFails:
    """Serves `RECORDS`, but the first request for every page gets a 500 (odd pages) or a 503 (even)."""

    def __init__(self) -> None:
        self.serve = paged_items(RECORDS, "page_number", PAGE_SIZE)
        self.failed: set[int] = set()
        self.lock = threading.Lock()

    def __call__(self, request: Recorded) -> Reply:
        page = page_of(request)
        with self.lock:
            first = page not in self.failed
            self.failed.add(page)
        if first:
            status = 500 if page % 2 else 503
            return json_reply({"error": "upstream hiccup"}, status)
        return self.serve(request)


def test_flaky_5xx_is_absorbed_by_the_clients_retries_without_an_incident(
    tmp_path: Path, instance: dg.DagsterInstance, scoreboard: list
) -> None:
    with ScriptedServer(FirstAttemptPerPageFails()) as server:
        platform = slice_for(tmp_path, instance, rest_source(server.base_url))
        result = platform.materialize()
        assert result.success
        assert platform.heal() == [], "nothing failed, nothing to heal"
    assert platform.incidents() == []
    pages = pages_requested(server)
    assert pages == [page for page in PAGES for _ in (1, 2)], "each page failed once, then was retried"
    retries = [m for m in run_log_messages(instance, result) if "retrying in" in m]
    assert len(retries) == len(PAGES) and {"HTTP 500" in m or "HTTP 503" in m for m in retries} == {True}
    diagnosis = classify(
        Evidence(kind="step_failure", asset_key="raw/api/items", run_id=result.run_id, http_status=503)
    )
    row = record(
        scoreboard,
        "api_flaky_5xx",
        True,
        platform,
        KEYS,
        in_step=(diagnosis.category.value, "retry in-step"),
    )
    assert (row.category, row.outcome, row.rows_lost, row.rows_duplicated) == (
        "source_unavailable",
        "healed in-step",
        0,
        0,
    )


# ---- 2. timeouts ----


class FirstRequestsHang:
    """Serves `RECORDS`, but the first `count` requests are answered only after `delay` seconds."""

    def __init__(self, count: int, delay: float) -> None:
        self.serve = paged_items(RECORDS, "page_number", PAGE_SIZE)
        self.left, self.delay = count, delay
        self.lock = threading.Lock()

    def __call__(self, request: Recorded) -> Reply:
        with self.lock:
            hang = self.left > 0
            self.left -= hang
        reply = self.serve(request)
        return Reply(reply.status, reply.body, reply.headers, delay_seconds=self.delay) if hang else reply


def test_api_timeouts_beyond_the_clients_retries_shrink_the_batch_and_heal(
    tmp_path: Path, instance: dg.DagsterInstance, scoreboard: list
) -> None:
    with ScriptedServer(FirstRequestsHang(MAX_ATTEMPTS, delay=1.5)) as server:
        platform = slice_for(tmp_path, instance, rest_source(server.base_url, timeout_seconds=0.5))
        assert not platform.materialize().success, "three read timeouts exhaust the client's retries"
        launched = platform.heal()
    (incident,) = platform.incidents()
    assert (incident.category, incident.rule_id, incident.action) == (
        "timeout",
        "network_timeout",
        "shrink_batch",
    )
    assert "ReadTimeout" in incident.evidence_json
    assert incident.status == "resolved" and incident.attempts == 1
    assert [request.tags[ACTION_TAG] for request in launched] == ["shrink_batch"]
    assert launched[0].run_config["ops"][RAW_API_STEP]["config"]["batch_scale"] == 0.5
    assert pages_requested(server) == [1, 1, 1, *PAGES], "three timed out, then one healing run"
    row = record(scoreboard, "api_timeouts", True, platform, KEYS)
    assert (row.outcome, row.rows_lost, row.rows_duplicated) == ("healed", 0, 0)


# ---- 3. truncated JSON page ----


class PageCutShort:
    """Serves `RECORDS`, but the first `count` replies to page `page` stop halfway through the body (the
    full length announced, then the connection closed)."""

    def __init__(self, page: int, count: int) -> None:
        self.serve = paged_items(RECORDS, "page_number", PAGE_SIZE)
        self.page, self.left = page, count
        self.lock = threading.Lock()

    def __call__(self, request: Recorded) -> Reply:
        reply = self.serve(request)
        with self.lock:
            cut = page_of(request) == self.page and self.left > 0
            self.left -= cut
        if not cut:
            return reply
        return Reply(reply.status, reply.body, reply.headers, cut_after=len(reply.body) // 2)


def test_truncated_page_is_retried_and_the_next_run_resumes_from_the_checkpoint(
    tmp_path: Path, instance: dg.DagsterInstance, scoreboard: list
) -> None:
    """Page 3 is cut short six times: the client's three attempts, then the step's one retry in the run
    (sensors/healing/step_retry.py, resuming after page 2) with three more; the healing sensor's run resumes
    too."""
    with ScriptedServer(PageCutShort(page=3, count=2 * MAX_ATTEMPTS)) as server:
        platform = slice_for(tmp_path, instance, rest_source(server.base_url))
        # One page per landed group, so that pages 1 and 2 are checkpointed before page 3 breaks.
        config = {"ops": {RAW_API_STEP: {"config": {"batch_rows": PAGE_SIZE}}}}
        first = platform.materialize(run_config=config)
        assert not first.success
        assert pages_requested(server) == [1, 2, 3, 3, 3, 3, 3, 3], "the step retry resumed after page 2"
        assert [e.event_type_value for e in first.all_events].count("STEP_UP_FOR_RETRY") == 1
        launched = platform.heal()
    (incident,) = platform.incidents()
    assert (incident.category, incident.rule_id, incident.action) == (
        "transient_network",
        "transient_network",
        "retry_with_backoff",
    )
    assert "ChunkedEncodingError" in incident.evidence_json
    assert incident.status == "resolved" and incident.attempts == 1
    assert [request.tags[ACTION_TAG] for request in launched] == ["retry_with_backoff"]
    assert pages_requested(server) == [1, 2, *[3] * 6, *PAGES[2:]], "pages 1-2 are not fetched again"
    healing_run = platform.results[-1]
    assert any("Resuming api.items after page 2" in m for m in run_log_messages(instance, healing_run))
    row = record(scoreboard, "api_truncated_page", True, platform, KEYS)
    assert (row.outcome, row.rows_lost, row.rows_duplicated) == ("healed", 0, 0)


# ---- 4. expired OAuth token ----

EXPIRED = {"error": "invalid_token", "error_description": "The access token expired"}
EXPIRED_HEADERS = {
    "WWW-Authenticate": 'Bearer error="invalid_token", error_description="The access token expired"'
}


class ExpiringTokens:
    """A token endpoint and the API on one server; the API rejects the first `stale` tokens issued as
    expired (RFC 6750's 401 with `invalid_token`), as after a clock skew at the identity provider."""

    def __init__(self, stale: int) -> None:
        self.stale = stale
        self.issued: list[str] = []
        self.api = paged_items(RECORDS, "page_number", PAGE_SIZE)
        self.lock = threading.Lock()

    def __call__(self, request: Recorded) -> Reply:
        if request.path == "/oauth/token":
            with self.lock:
                token = f"token-{len(self.issued) + 1}"
                self.issued.append(token)
            return json_reply({"access_token": token, "token_type": "Bearer", "expires_in": 3600})
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in self.issued:
            return json_reply({"error": "invalid_client"}, 401)
        if self.issued.index(token) < self.stale:
            return json_reply(EXPIRED, 401, EXPIRED_HEADERS)
        return self.api(request)


def oauth_source(base_url: str) -> dict[str, Any]:
    auth = {
        "kind": "oauth2_client_credentials",
        "token_url": f"{base_url}/oauth/token",
        "client_id": "${FAULT_CLIENT_ID}",
        "client_secret": "${FAULT_CLIENT_SECRET}",
    }
    return rest_source(base_url, auth=auth)


@pytest.fixture
def oauth_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAULT_CLIENT_ID", "platform")
    monkeypatch.setenv("FAULT_CLIENT_SECRET", "s3cret")


def api_calls(server: ScriptedServer) -> list[tuple[str, str]]:
    """(path, bearer token sent, "" for none) of every request, in order."""
    calls = []
    for request in server.requests:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        calls.append((request.path, token if scheme == "Bearer" else ""))
    return calls


@pytest.mark.usefixtures("oauth_env")
def test_expired_oauth_token_is_refreshed_by_the_client_in_the_same_call(
    tmp_path: Path, instance: dg.DagsterInstance, scoreboard: list
) -> None:
    api = ExpiringTokens(stale=1)
    with ScriptedServer(api) as server:
        platform = slice_for(tmp_path, instance, oauth_source(server.base_url))
        result = platform.materialize()
        assert result.success
        assert platform.heal() == []
    assert platform.incidents() == []
    calls = api_calls(server)
    assert calls[:3] == [("/oauth/token", ""), ("/items", "token-1"), ("/oauth/token", "")]
    assert calls[3:] == [("/items", "token-2")] * len(PAGES), "the refused request repeated, fresh token"
    rejected = Evidence(
        kind="step_failure",
        asset_key="raw/api/items",
        run_id=result.run_id,
        errors=(ErrorLink("RestStatusError", f"HTTP 401 Unauthorized: {EXPIRED}"),),
        http_status=401,
    )
    diagnosis = classify(rejected)
    assert diagnosis.rule_id == "oauth_token_expired"
    row = record(
        scoreboard,
        "oauth_token_expired_once",
        True,
        platform,
        KEYS,
        in_step=(diagnosis.category.value, "refresh token in-step"),
    )
    assert (row.outcome, row.rows_lost, row.rows_duplicated) == ("healed in-step", 0, 0)


@pytest.mark.usefixtures("oauth_env")
def test_oauth_token_still_expired_after_the_in_call_refresh_is_refreshed_by_a_new_run(
    tmp_path: Path, instance: dg.DagsterInstance, scoreboard: list
) -> None:
    api = ExpiringTokens(stale=2)
    with ScriptedServer(api) as server:
        platform = slice_for(tmp_path, instance, oauth_source(server.base_url))
        assert not platform.materialize().success, "the client refreshes once per request, not twice"
        launched = platform.heal()
    (incident,) = platform.incidents()
    assert (incident.category, incident.rule_id, incident.action) == (
        "auth_permission",
        "oauth_token_expired",
        "refresh_credentials",
    )
    assert incident.status == "resolved" and incident.attempts == 1
    assert [request.tags[ACTION_TAG] for request in launched] == ["refresh_credentials"]
    assert api.issued == ["token-1", "token-2", "token-3"]
    assert api_calls(server)[-len(PAGES) :] == [("/items", "token-3")] * len(PAGES)
    for secret in ("s3cret", "token-1", "token-2"):
        assert secret not in incident.evidence_json
    row = record(scoreboard, "oauth_token_expired_twice", True, platform, KEYS)
    assert (row.outcome, row.rows_lost, row.rows_duplicated) == ("healed", 0, 0)


# ---- PostgreSQL sources ----

DB_ROWS = 40
DB_KEYS = set(range(1, DB_ROWS + 1))


def database_source(url: str, table: str, **connection: Any) -> dict[str, Any]:
    return {
        "source": "shop_pg",
        "connection": {"kind": "database", "url": url, **connection},
        "entities": {
            "items": {
                "table": {
                    "table": table,
                    "schema": "public",
                    "incremental": {"mode": "timestamp", "cursor_column": "updated_at"},
                },
                "primary_key": ["id"],
                "columns": {
                    "id": {"type": "integer", "nullable": False},
                    "name": {"type": "string"},
                    "updated_at": {"type": "timestamp", "nullable": False},
                },
            }
        },
    }


@pytest.fixture
def shop_pg(postgres_server: PostgresCluster, postgres_database: str) -> tuple[str, str]:
    """(SQLAlchemy URL, libpq DSN) of a database with a real `items` table of `DB_ROWS` rows, and a view
    `items_slowly` over it that takes 25 ms per row (a slow source: the extraction lasts about a second)."""
    name = sa.make_url(postgres_database).database
    assert name is not None
    postgres_server.execute(
        name,
        f"""
        CREATE TABLE items (id integer PRIMARY KEY, name text, updated_at timestamptz NOT NULL);
        INSERT INTO items
            SELECT i, 'item ' || i, timestamptz '2026-01-01 00:00:00+00' + i * interval '1 minute'
            FROM generate_series(1, {DB_ROWS}) AS i;
        CREATE FUNCTION slowly(seconds float8) RETURNS boolean LANGUAGE plpgsql VOLATILE
            AS $$ BEGIN PERFORM pg_sleep(seconds); RETURN true; END $$;
        CREATE VIEW items_slowly AS SELECT id, name, updated_at FROM items WHERE slowly(0.025);
        """,
    )
    return postgres_database, postgres_server.dsn(name)


def source_keys(dsn: str) -> set[int]:
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT id FROM items")
        keys = {key for (key,) in cursor.fetchall()}
    connection.close()
    return keys


class ExtractionKiller(threading.Thread):
    """Waits until the platform's extraction statement is running on the server (its application_name,
    a COPY in progress), lets it run a little, then terminates its backend from another connection, once."""

    def __init__(self, dsn: str, after_seconds: float = 0.3, timeout: float = 20) -> None:
        super().__init__(daemon=True)
        self.dsn, self.after_seconds, self.timeout = dsn, after_seconds, timeout
        self.terminated: list[tuple[int, str]] = []

    def run(self) -> None:
        connection = psycopg2.connect(self.dsn)
        connection.autocommit = True
        find = (
            "SELECT pid, query FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = %s AND state = 'active' AND query ILIKE 'COPY%%'"
        )
        try:
            with connection.cursor() as cursor:
                deadline = time.monotonic() + self.timeout
                while time.monotonic() < deadline:
                    cursor.execute(find, (APPLICATION_NAME,))
                    found = cursor.fetchall()
                    if found:
                        time.sleep(self.after_seconds)
                        for pid, query in found:
                            cursor.execute("SELECT pg_terminate_backend(%s)", (pid,))
                            if cursor.fetchone() == (True,):
                                self.terminated.append((pid, query))
                        return
                    time.sleep(0.01)
        finally:
            connection.close()


# ---- 5. connection dropped mid-extract ----


def test_postgres_connection_dropped_mid_extract_is_retried_and_heals(
    tmp_path: Path, instance: dg.DagsterInstance, scoreboard: list, shop_pg: tuple[str, str]
) -> None:
    url, dsn = shop_pg
    platform = slice_for(tmp_path, instance, database_source(url, "items_slowly"))
    killer = ExtractionKiller(dsn)
    killer.start()
    assert not platform.materialize().success
    killer.join()
    assert len(killer.terminated) == 1 and "items_slowly" in killer.terminated[0][1]
    launched = platform.heal()
    (incident,) = platform.incidents()
    assert (incident.category, incident.rule_id, incident.action) == (
        "source_unavailable",
        "database_connection_message",
        "retry_with_backoff",
    )
    # The server sent 57P01 (admin shutdown), but psycopg2's COPY reports only the lost connection.
    assert "server closed the connection unexpectedly" in incident.evidence_json
    assert incident.status == "resolved" and incident.attempts == 1
    assert [request.tags[ACTION_TAG] for request in launched] == ["retry_with_backoff"]
    keys = source_keys(dsn)
    assert keys == DB_KEYS
    row = record(scoreboard, "postgres_connection_dropped", True, platform, keys)
    assert (row.outcome, row.rows_lost, row.rows_duplicated) == ("healed", 0, 0)


# ---- 6. statement timeout ----


def test_postgres_statement_timeout_behind_a_transient_lock_heals(
    tmp_path: Path, instance: dg.DagsterInstance, scoreboard: list, shop_pg: tuple[str, str]
) -> None:
    url, dsn = shop_pg
    platform = slice_for(tmp_path, instance, database_source(url, "items", statement_timeout_seconds=1))
    # A migration holds the table locked: the extraction's SELECT waits for the lock until its
    # statement_timeout cancels it. The lock is released before the healing run (the fault is transient).
    migration = psycopg2.connect(dsn)
    try:
        with migration.cursor() as cursor:
            cursor.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        assert not platform.materialize().success
        assert time.monotonic() - started < 15, "cancelled by the timeout, not by the lock's release"
    finally:
        migration.rollback()
        migration.close()
    launched = platform.heal()
    (incident,) = platform.incidents()
    assert (incident.category, incident.rule_id, incident.action) == (
        "timeout",
        "statement_timeout",
        "shrink_batch",
    )
    assert "57014" in incident.evidence_json and "statement_timeout_seconds=1" in incident.evidence_json
    assert incident.status == "resolved" and incident.attempts == 1
    assert [request.tags[ACTION_TAG] for request in launched] == ["shrink_batch"]
    keys = source_keys(dsn)
    row = record(scoreboard, "postgres_statement_timeout", True, platform, keys)
    assert (row.outcome, row.rows_lost, row.rows_duplicated) == ("healed", 0, 0)
