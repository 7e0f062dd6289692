"""The whole demo graph on BigQuery: raw -> staged -> dbt marts -> checks, with `PLATFORM_ENV=bigquery`
against the session's BigQuery emulator (bqemulator) and GCS emulator, through the real clients.

The platform loads the staged tables with google-cloud-bigquery (Parquet staged on the GCS emulator, load
jobs, MERGE); dbt-bigquery builds the marts in its own subprocess, as in production. Both authenticate the
way a deployment does, with a service-account key: a fake one (a fresh RSA key) whose `token_uri` is a
token server on loopback, since neither emulator checks tokens but both clients insist on fetching one.
Landing stays on local disk (the platform's default in every environment).

Row counts of the staged tables and the marts are checked against the demo's source files read directly
(not through the platform), and no table may repeat its key; a second run lands only the database rows of
the lookback window, merges fct_orders incrementally, and leaves every count as it was.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import dagster as dg
import pytest
from conftest import LocalPlatform, demo_platform
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from demo_expectations import (
    DATABASE_TABLES,
    MART_KEYS,
    STAGED_KEYS,
    expected_marts,
    expected_staged,
    key_counts,
)
from fixtures.bigquery_emulator import BigQueryEmulator
from google.cloud import storage

from platform_assets.keys import STAGED_SCHEMA
from platform_assets.run_summary import format_summary
from resources.databases.config import DEFAULT_LOOKBACK_SECONDS
from resources.environment import PlatformSettings, build_warehouse

pytestmark = pytest.mark.slow  # two whole-graph runs with dbt-bigquery on an emulator

KEY_VAR = "PLATFORM_TEST_BQ_KEY"
DBT_SCHEMA = "analytics"
"""Where dbt builds the models (dbt_project/profiles.yml: the `bigquery` output's dataset)."""


class _TokenHandler(BaseHTTPRequestHandler):
    """OAuth token endpoint of the fake service account: any assertion gets a bearer token, and is counted
    (so that the test knows the key was used, not some other credentials)."""

    issued: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.issued.append(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
        body = json.dumps({"access_token": "emulator", "expires_in": 3600, "token_type": "Bearer"})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: object) -> None:
        """Silent: the test output is for failures."""


@pytest.fixture(scope="module")
def token_uri() -> Iterator[str]:
    _TokenHandler.issued.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/token"
    finally:
        server.shutdown()
        server.server_close()


def _fake_service_account_key(project: str, token_uri: str) -> dict[str, str]:
    """A well-formed key (the clients sign a JWT with it before asking `token_uri` for a token)."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return {
        "type": "service_account",
        "project_id": project,
        "private_key_id": uuid.uuid4().hex,
        "private_key": pem.decode(),
        "client_email": f"platform@{project}.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }


@pytest.fixture
def bigquery_platform(
    bigquery_emulator: BigQueryEmulator,
    gcs_bucket: str,
    token_uri: str,
    dbt_manifest: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[LocalPlatform]:
    """The demo world and the platform configured as a deployment would be: every setting from the
    environment (dbt's profile reads the same variables in its subprocess). `dbt_manifest`: the parsed
    project the dbt asset is built from."""
    key = _fake_service_account_key(bigquery_emulator.project, token_uri)
    keyfile = tmp_path / "service-account.json"
    keyfile.write_text(json.dumps(key))
    environment = {
        "PLATFORM_ENV": "bigquery",
        "PLATFORM_DATA_DIR": str(tmp_path / "data"),
        "PLATFORM_BQ_PROJECT": bigquery_emulator.project,
        "PLATFORM_BQ_STAGING_URI": f"gs://{gcs_bucket}/loads",
        "PLATFORM_BQ_API_ENDPOINT": bigquery_emulator.endpoint,
        "PLATFORM_BQ_CREDENTIALS_ENV": KEY_VAR,
        "PLATFORM_BQ_KEYFILE": str(keyfile),
        KEY_VAR: json.dumps(key),
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = PlatformSettings.from_env()
    with demo_platform(settings, monkeypatch) as platform:
        yield platform


def _in_lookback_window(sources: Path) -> dict[str, int]:
    """Rows of each shop_db table stamped within the default lookback before its watermark."""
    with sqlite3.connect(sources / "shop.sqlite") as db:
        return {
            f"shop_db/{table}": db.execute(
                f"SELECT count(*) FROM {table} WHERE updated_at >= "
                f"(SELECT datetime(max(updated_at), '-{DEFAULT_LOOKBACK_SECONDS:.0f} seconds') FROM {table})"
            ).fetchone()[0]
            for table in DATABASE_TABLES
        }


def _raw_rows(result: dg.ExecuteInProcessResult) -> dict[str, int]:
    return {
        "/".join(event.asset_key.path[1:]): event.materialization.metadata["dagster/row_count"].value
        for event in result.get_asset_materialization_events()
        if event.asset_key.path[0] == "raw"
    }


def _assert_green(result: dg.ExecuteInProcessResult) -> None:
    """The run succeeded and every check ran and passed: contracts, quality rules and the dbt tests."""
    failures = [
        event.step_failure_data.error.to_string()
        for event in result.all_events
        if event.event_type_value == "STEP_FAILURE"
    ]
    assert result.success, "\n".join(failures)[-8000:]
    checks = result.get_asset_check_evaluations()
    checked = {check.asset_key.path[0] for check in checks}
    assert {"staged", *MART_KEYS} <= checked, f"checks ran only on {sorted(checked)}"
    failed = [f"{c.asset_key.to_user_string()}:{c.check_name}" for c in checks if not c.passed]
    assert not failed, failed


def test_the_whole_demo_graph_runs_on_bigquery_and_a_second_run_adds_nothing(
    bigquery_platform: LocalPlatform, gcs_client: storage.Client
) -> None:
    sources = bigquery_platform.settings.sources_dir
    warehouse = build_warehouse(bigquery_platform.settings)
    assert warehouse.kind == "bigquery"
    first = bigquery_platform.materialize_all()
    _assert_green(first)
    staged = key_counts(warehouse, STAGED_SCHEMA, STAGED_KEYS)
    assert staged == expected_staged(sources)
    marts = key_counts(warehouse, DBT_SCHEMA, MART_KEYS)
    assert marts == expected_marts(sources)

    # A marker on the oldest order, far outside fct_orders' lookback window: dbt-bigquery's incremental
    # MERGE leaves it alone, a full rebuild would restore the status.
    fct_orders = warehouse.table_ref(DBT_SCHEMA, "fct_orders")
    ((oldest,),) = warehouse.query(
        f"SELECT order_id FROM {fct_orders} ORDER BY source_updated_at, order_id LIMIT 1"
    )
    warehouse.query(f"UPDATE {fct_orders} SET status = 'marker' WHERE order_id = ?", [oldest])

    second = bigquery_platform.materialize_all()
    _assert_green(second)
    marked = warehouse.query(f"SELECT status FROM {fct_orders} WHERE order_id = ?", [oldest])
    assert marked == [("marker",)], "fct_orders was rebuilt instead of merged incrementally"
    landed = _raw_rows(second)
    assert landed == {**dict.fromkeys(landed, 0), **_in_lookback_window(sources)}
    assert len(landed) == len(STAGED_KEYS)
    assert key_counts(warehouse, STAGED_SCHEMA, STAGED_KEYS) == staged
    assert key_counts(warehouse, DBT_SCHEMA, MART_KEYS) == marts
    summary = format_summary(second, warehouse)  # what `dataplatform run` prints, read from BigQuery
    for schema, counts in ((STAGED_SCHEMA, staged), (DBT_SCHEMA, marts)):
        for table, rows in counts.items():
            assert re.search(rf"\n  {schema}\.{table} +{rows:,} rows\n", summary), (table, summary)

    assert _TokenHandler.issued, "no client asked the fake service account's token server for a token"
    assert all("grant-type%3Ajwt-bearer" in request for request in _TokenHandler.issued)
    bucket = bigquery_platform.settings.warehouse_options["PLATFORM_BQ_STAGING_URI"].split("/")[2]
    assert [blob.name for blob in gcs_client.list_blobs(bucket)] == [], "staged load files were left behind"
