"""The failure classifier: every rule of `sensors/healing/failure_rules.yaml` against a failure the platform
really produces (real exceptions raised by our resources, real sockets on loopback, a real Dagster step
failure), plus the rule file's validation, first-match-wins ordering and the fallback to `unknown`.

Each rule id needs a sample below: a rule added to the YAML without one fails `test_every_rule_has_a_sample`.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import duckdb
import psycopg2
import psycopg2.errors
import pytest
import requests
import sqlalchemy as sa
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._utils import get_run_crash_explanation
from dagster._utils.error import serializable_error_info_from_exc_info
from dagster_dbt.errors import DagsterDbtCliRuntimeError
from rest_test_server import Reply, ScriptedServer, in_turn, json_reply, unused_port

from platform_assets.catalog.loader import load_catalog
from platform_assets.factories.staged_assets import (
    CONTRACT_CHECK_NAME,
    WARNINGS_CHECK_NAME,
    BadRowsError,
    SchemaDriftError,
    StagingError,
    UpstreamMissingError,
)
from platform_assets.quality.anomaly_checks import MEAN_SHIFT_CHECK, NULL_RATE_CHECK, VOLUME_CHECK
from platform_assets.quality.quarantine import DeliveryShare, SplitSummary, over_threshold_message
from platform_assets.quality.relationship_checks import (
    RELATIONSHIP_CHECK,
    ForeignKey,
    Orphans,
    relationship_result,
)
from platform_assets.staging.deletes import DeleteGuardError
from resources.databases.errors import DatabaseLocation, DatabaseSourceError, StatementTimeoutError
from resources.environment import PlatformSettings
from resources.files.read_context import ReadContext
from resources.landing.zone import LandingZone
from resources.rest.auth import build_auth
from resources.rest.client import Clock, RestApiError, RestClient, RestResponseError
from resources.rest.config import RestConnection, RetryPolicy
from resources.rest.pagination import LoopGuard
from resources.secrets import resolve_env
from resources.warehouses.load import repeated_keys_error
from resources.warehouses.postgres_warehouse import LoadConfigError, PostgresWarehouseError, SchemaChangeError
from sensors.healing.classifier import (
    Category,
    ErrorLink,
    Evidence,
    FailureRuleError,
    Rule,
    classify,
    evidence_from_check,
    evidence_from_error,
    evidence_from_freshness,
    load_rules,
)
from sensors.healing.dead_runs import DEAD_RUN_MESSAGE

ASSET = "staged/shop/orders"
DSN = "postgresql://etl:s3cret@127.0.0.1:{port}/shop"


def raised(action: Callable[[], object]) -> BaseException:
    """The exception `action` raises, with its real traceback and chain."""
    try:
        action()
    except BaseException as error:
        return error
    raise AssertionError("expected an exception")


def raised_from(error: BaseException, cause: BaseException | None = None) -> BaseException:
    def throw() -> None:
        raise error from cause

    return raised(throw)


def duckdb_query_interrupted() -> BaseException:
    """What DuckDB raises when the run's process gets a SIGINT in the middle of a query (its code server
    restarted): RuntimeError('Query interrupted'). A real query, a real signal to this process."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupt = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    try:
        with duckdb.connect(":memory:") as con:
            interrupt.start()
            return raised(lambda: con.execute("SELECT count(*) FROM range(100000000000)").fetchall())
    finally:
        interrupt.cancel()
        signal.signal(signal.SIGINT, previous)


def step(error: BaseException) -> Evidence:
    return evidence_from_error(error, kind="step_failure", asset_key=ASSET, run_id="run-1", step_key="s")


def failed_check(name: str, metadata: dict[str, object] | None = None) -> Evidence:
    evaluation = dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey.from_user_string(ASSET), check_name=name, passed=False, metadata=metadata or {}
    )
    return evidence_from_check(evaluation, run_id="run-1")


def rest_failure(reply: Reply, *, post: bool = False, timeout_seconds: float = 5) -> BaseException:
    """What our REST client raises against a loopback server answering `reply` (no retries, no waits)."""
    retry = RetryPolicy(max_attempts=1)
    with ScriptedServer(in_turn(reply)) as server:
        clock = Clock(sleep=lambda seconds: None)
        connection = RestConnection(base_url=server.base_url, retry=retry, timeout_seconds=timeout_seconds)
        client = RestClient(
            auth=build_auth(connection, clock), timeout_seconds=timeout_seconds, retry=retry, clock=clock
        )
        url = f"{server.base_url}/items"
        with client, pytest.raises(RestApiError) as failure:
            client.post_form(url, {"grant_type": "refresh_token"}) if post else client.get_json(url)
    return failure.value


def database_refused() -> BaseException:
    """What a database source raises when nothing listens on the port (a real psycopg2 connect)."""
    url = sa.make_url(DSN.format(port=unused_port()))
    driver_error = raised(lambda: psycopg2.connect(url.render_as_string(False), connect_timeout=2))
    location = DatabaseLocation(url, ["s3cret"])
    return raised_from(location.unavailable(driver_error, env_names=[]), driver_error)


def landing_busy(tmp_path: Path) -> BaseException:
    landing = LandingZone(root=str(tmp_path))

    def land_twice() -> None:
        with landing.extraction("shop", "orders"), landing.extraction("shop", "orders"):
            pass

    return raised(land_twice)


def disk_full() -> BaseException:
    def write() -> None:
        with open("/dev/full", "w") as full:
            full.write("x")

    return raised(write)


def duckdb_out_of_memory() -> BaseException:
    connection = duckdb.connect(config={"memory_limit": "10MB", "temp_directory": ""})
    with connection:
        return raised(lambda: connection.execute("SELECT list(range) FROM range(10000000)").fetchall())


def run_crash(exit_code: int) -> Evidence:
    """A run whose process died: Dagster's own message for the exit code."""
    message = get_run_crash_explanation(prefix="Run execution process for run-1", exit_code=exit_code)
    return Evidence(
        kind="run_crash", asset_key=None, run_id="run-1", errors=(ErrorLink("RunCrash", message),)
    )


INTERRUPTED_RUN = (
    'Execution of run for "ingestion" failed. Execution was interrupted unexpectedly. No user initiated '
    "termination request was found, treating as failure."
)
"""Dagster's run failure when a run worker is interrupted by a restart of its code server (the chaos soak)."""


DEQUEUE_FAILED = (
    "Caught an unrecoverable error while dequeuing the run. Marking the run as failed and dropping it "
    "from the queue"
)
"""The queued run coordinator's engine event for a run it could not launch (a code server shutting down)."""


def run_failure(message: str) -> Evidence:
    """A run that failed without a failed step, as the engine reads it (`_crash_evidence`)."""
    return Evidence(
        kind="run_crash", asset_key=None, run_id="run-1", errors=(ErrorLink("RunFailure", message),)
    )


def _interrupt() -> None:
    raise DagsterExecutionInterruptedError()


def step_process_killed(exit_code: int) -> Evidence:
    """A step of the multiprocess executor whose process died: its silent `ChildProcessCrashException`
    given the executor's engine event for the step, as the engine reads them (`test_healing_step_killed.py`
    kills a real step)."""
    message = get_run_crash_explanation(
        prefix="Multiprocess executor: child process for step s", exit_code=exit_code
    )
    return Evidence(
        kind="step_failure",
        asset_key=ASSET,
        run_id="run-1",
        step_key="s",
        errors=(ErrorLink("ChildProcessCrashException", message),),
    )


def orphans_check() -> Evidence:
    key = ForeignKey("customer_id", "shop", "customers", "id", "error")
    result = relationship_result([Orphans(key, True, values=10, orphans=2, examples=("7", "9"))])
    return failed_check(RELATIONSHIP_CHECK, dict(result.metadata))


def schema_drift() -> BaseException:
    return SchemaDriftError(
        "shop.orders: the delivery's schema drifted and the policy says fail (1 landed file(s)): column "
        "amount changed type from double to string."
    )


def over_threshold() -> BaseException:
    refused = DeliveryShare("2026-05-01 10:00:00", 100, 40)
    summary = SplitSummary(total=100, bad=40, deliveries=(refused,))
    summary.by_rule["amount_positive"] = 40
    return BadRowsError(over_threshold_message("shop.orders", "staged.shop__orders", summary, refused, 0.05))


def malformed_file() -> BaseException:
    context = ReadContext("orders.jsonl", "/landing/orders.jsonl", "fail", lambda record: None)
    return raised(lambda: context.malformed(3, "Expecting value", "{oops"))


def repeating_cursor() -> BaseException:
    guard = LoopGuard()
    url = "http://api.test/items?page=2"
    guard.before_request(url, "page 2", url)
    return raised(lambda: guard.before_request(url, "page 2", url))


def broken_body() -> BaseException:
    body = json.dumps([{"id": n} for n in range(100)]).encode()
    return rest_failure(Reply(200, body, {"Content-Type": "application/json"}, cut_after=10))


def db_error(message: str, sqlstate: str | None) -> BaseException:
    return raised_from(DatabaseSourceError(message, sqlstate=sqlstate))


SAMPLES: dict[str, Callable[[Path], Evidence]] = {
    "freshness_overdue": lambda _: evidence_from_freshness(ASSET, 7200.0, details={"fail_window": 3600}),
    "volume_anomaly_check": lambda _: failed_check(VOLUME_CHECK, {"z_score": -6.2, "row_count": 12}),
    "profile_drift_check": lambda _: failed_check(NULL_RATE_CHECK, {"columns_drifted": 1}),
    "schema_contract_failed": lambda _: failed_check(
        CONTRACT_CHECK_NAME, {"violations": 3, "violations_by_rule": dg.MetadataValue.json({"amount": 3})}
    ),
    "undeclared_column_dropped": lambda _: failed_check(
        WARNINGS_CHECK_NAME, {"violations": 0, "dropped_columns": dg.MetadataValue.json(["channel"])}
    ),
    "quality_warnings_failed": lambda _: failed_check(WARNINGS_CHECK_NAME, {"violations": 1}),
    "orphan_foreign_keys": lambda _: orphans_check(),
    "dbt_test_failed": lambda _: failed_check(
        "not_null_fct_orders_order_id", {"dagster_dbt/failed_row_count": 4, "status": "fail"}
    ),
    "check_failed": lambda _: failed_check("custom_business_rule"),
    "step_process_killed": lambda _: step_process_killed(-9),
    "process_oom_killed": lambda _: run_crash(-9),
    "run_interrupted": lambda _: step(raised(_interrupt)),
    "query_interrupted": lambda _: step(duckdb_query_interrupted()),
    "run_interrupted_unexpectedly": lambda _: run_failure(INTERRUPTED_RUN),
    "run_worker_gone": lambda _: run_failure(DEAD_RUN_MESSAGE.format(pid=4242, status="STARTING")),
    "run_launch_failed": lambda _: run_failure(DEQUEUE_FAILED),
    "oauth_token_expired": lambda _: step(
        rest_failure(json_reply({"error": "invalid_grant", "error_description": "expired"}, 400), post=True)
    ),
    "auth_rejected": lambda _: step(rest_failure(json_reply({"error": "bad key"}, 401))),
    "database_auth_rejected": lambda _: step(db_error("Cannot connect: FATAL: login refused", "28P01")),
    "database_auth_rejected_message": lambda _: step(
        db_error('Cannot connect to ...: FATAL:  password authentication failed for user "etl"', None)
    ),
    "permission_denied": lambda _: step(db_error("reading failed: permission denied for table x", "42501")),
    "permission_denied_driver": lambda _: step(
        psycopg2.errors.lookup("42501")("permission denied for table orders")
    ),
    "missing_secret": lambda _: step(raised(lambda: resolve_env("${SHOP_TOKEN}", {}, where="auth"))),
    "configuration_invalid": lambda _: step(
        raised(lambda: PlatformSettings.from_env({"PLATFORM_ENV": "mars"}))
    ),
    "pagination_config": lambda _: step(repeating_cursor()),
    "database_not_found": lambda _: step(
        db_error('Cannot connect: FATAL: database "shop" does not exist', None)
    ),
    "rate_limited": lambda _: step(rest_failure(json_reply({}, 429, {"Retry-After": "120"}))),
    "rate_limited_message": lambda _: step(
        RuntimeError("rateLimitExceeded: Exceeded rate limits: too many table update operations")
    ),
    "schema_drift_staging": lambda _: step(schema_drift()),
    "schema_change_load": lambda _: step(
        SchemaChangeError('cannot load into staged.orders: column "amount" is numeric in the table but text')
    ),
    "schema_drift_sqlstate": lambda _: step(db_error('column "amount" does not exist', "42703")),
    "schema_drift_driver": lambda _: step(psycopg2.errors.lookup("42703")('column "amount" does not exist')),
    "response_shape_changed": lambda _: step(RestResponseError("http://api.test/items: no list at `data`")),
    "load_config_invalid": lambda _: step(LoadConfigError("cannot upsert into staged.orders on (id)")),
    "dbt_relation_missing": lambda _: step(
        DagsterDbtCliRuntimeError(
            description=(
                "The dbt CLI process with command `dbt build --select dim_customers` failed with exit "
                "code `1`.\n\nErrors parsed from dbt logs:\n\n  Database Error in model dim_customers\n"
                '  relation "analytics.int_customer_orders" does not exist'
            )
        )
    ),
    "upstream_not_materialized": lambda _: step(
        UpstreamMissingError("raw/shop/orders has never been materialized; materialize it first.")
    ),
    "delete_guard_exceeded": lambda _: step(
        DeleteGuardError("the latest key scan lacks 9 of 18 staged key(s), over max_delete_fraction 0.1")
    ),
    "bad_rows_over_threshold": lambda _: step(over_threshold()),
    "duplicate_key_in_load": lambda _: step(repeated_keys_error("staged.orders", ["order_id"], [(11, 2)])),
    "unique_key_violated": lambda _: step(
        PostgresWarehouseError(
            "replace of staged.orders failed: Key (order_id)=(11) is duplicated", sqlstate="23505"
        )
    ),
    "malformed_file": lambda _: step(malformed_file()),
    "statement_timeout": lambda _: step(
        raised_from(
            StatementTimeoutError("extracting shop.orders was cancelled"), psycopg2.errors.QueryCanceled()
        )
    ),
    "statement_timeout_sqlstate": lambda _: step(
        db_error("canceling statement due to user request", "57014")
    ),
    "network_timeout": lambda _: step(
        rest_failure(Reply(200, b"[]", delay_seconds=0.5), timeout_seconds=0.1)
    ),
    "gateway_unavailable": lambda _: step(rest_failure(json_reply({}, 503))),
    "server_error": lambda _: step(rest_failure(json_reply({}, 500))),
    "database_connection_lost": lambda _: step(
        db_error("terminating connection due to administrator command", "57P01")
    ),
    "database_unavailable": lambda _: step(database_refused()),
    "database_connection_message": lambda _: step(
        PostgresWarehouseError(
            "reading from postgresql://etl:***@db/shop failed: server closed the connection unexpectedly"
        )
    ),
    "landing_busy": lambda tmp_path: step(landing_busy(tmp_path)),
    "transient_network": lambda _: step(broken_body()),
    "out_of_memory": lambda _: step(duckdb_out_of_memory()),
    "out_of_memory_message": lambda _: step(ValueError("cannot allocate memory for the hash table")),
    "disk_full": lambda _: step(disk_full()),
    "database_resources_exhausted": lambda _: step(db_error("sorry, too many clients already", "53300")),
    "http_client_error": lambda _: step(rest_failure(json_reply({"error": "no such endpoint"}, 404))),
    "code_defect": lambda _: step(raised(lambda: {}["order_id"])),
    "run_process_crashed": lambda _: run_crash(1),
    "unknown": lambda _: step(ValueError("something nobody has seen before")),
}
RULES = load_rules()


def test_every_rule_has_a_sample() -> None:
    assert [rule.id for rule in RULES if rule.id not in SAMPLES] == []
    assert sorted(set(SAMPLES) - {rule.id for rule in RULES}) == []


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.id)
def test_rule_classifies_its_sample(rule: Rule, tmp_path: Path) -> None:
    diagnosis = classify(SAMPLES[rule.id](tmp_path))
    assert (diagnosis.rule_id, diagnosis.category) == (rule.id, rule.category)
    assert diagnosis.explanation
    json.dumps(diagnosis.evidence.as_dict())


def test_a_run_whose_worker_never_started_it_is_interrupted_not_out_of_memory() -> None:
    """Run monitoring's start timeout fails a run launched while its code server restarted: nothing ran."""
    started = "Started process for run (pid: 23812)."
    timed_out = "Run timed out due to taking longer than 90 seconds to start."
    evidence = Evidence(
        kind="run_crash",
        asset_key=None,
        run_id="run-1",
        errors=(ErrorLink("RunFailure", started), ErrorLink("RunFailure", timed_out)),
    )
    assert (classify(evidence).rule_id, classify(evidence).category) == (
        "run_launch_failed",
        Category.interrupted,
    )


def test_requests_connection_error_is_transient_network() -> None:
    error = raised(lambda: requests.get(f"http://127.0.0.1:{unused_port()}/", timeout=2))
    assert classify(step(error)).category is Category.transient_network


def test_live_attributes_give_http_status_and_sqlstate() -> None:
    assert step(rest_failure(json_reply({}, 429))).http_status == 429
    assert step(db_error("boom", "08006")).sqlstate == "08006"


def test_recorded_errors_give_http_status_and_sqlstate_from_their_messages() -> None:
    """What the event log keeps has no attributes: status and SQLSTATE are read from the text."""
    rest = serializable_error_info_from_exc_info(_exc_info(rest_failure(json_reply({}, 401))))
    evidence = evidence_from_error(rest, kind="step_failure")
    assert (evidence.http_status, classify(evidence).rule_id) == (401, "auth_rejected")
    assert evidence.errors[0].class_name == "RestStatusError"
    assert not evidence.errors[0].message.startswith("resources.")

    database = serializable_error_info_from_exc_info(_exc_info(db_error("failed (SQLSTATE 08006)", "08006")))
    evidence = evidence_from_error(database, kind="step_failure")
    assert (evidence.sqlstate, classify(evidence).rule_id) == ("08006", "database_connection_lost")


def test_real_dagster_step_failure_is_seen_through_the_wrapper() -> None:
    @dg.asset
    def needs_a_secret() -> None:
        try:
            resolve_env("${SHOP_TOKEN}", {}, where="the shop connection")
        except KeyError as error:
            raise StagingError("cannot stage shop.orders without its token") from error

    result = dg.materialize([needs_a_secret], raise_on_error=False)
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    error = failure.step_failure_data.error
    assert error is not None and error.cls_name == "DagsterExecutionStepExecutionError"

    evidence = evidence_from_error(
        error, kind="step_failure", asset_key=dg.AssetKey("needs_a_secret"), run_id=result.run_id
    )
    assert [link.class_name for link in evidence.errors] == ["StagingError", "MissingSecretError"]
    assert evidence.errors[1].message.startswith("environment variable(s) SHOP_TOKEN not set")
    diagnosis = classify(evidence)
    assert (diagnosis.rule_id, diagnosis.category) == ("missing_secret", Category.configuration_error)
    assert evidence.as_dict()["asset_key"] == "needs_a_secret"


def test_first_matching_rule_wins(tmp_path: Path) -> None:
    rules = load_rules(
        _rules_file(
            tmp_path,
            """
  - {id: generic_network, category: transient_network, confidence: 0.5, explanation: x,
     exception: [ConnectionError]}
  - {id: refused, category: source_unavailable, confidence: 0.9, explanation: y, message: [refused]}
""",
        )
    )
    evidence = step(ConnectionError("Connection refused"))
    assert classify(evidence, rules).rule_id == "generic_network"
    assert classify(evidence, list(reversed(rules[:2])) + rules[2:]).rule_id == "refused"


def test_unmatched_failure_falls_back_to_unknown() -> None:
    diagnosis = classify(step(RuntimeError("the moon is in the wrong phase")))
    assert (diagnosis.category, diagnosis.confidence, diagnosis.rule_id) == (Category.unknown, 0.3, "unknown")


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        ("- {id: a, category: weather, confidence: 0.5, explanation: x, message: [a]}", "rule 'a': category"),
        (
            "- {id: b, category: timeout, confidence: 0.5, explanation: x, message: ['(']}",
            "rule 'b': message",
        ),
        (
            "- {id: c, category: timeout, confidence: 0.5, explanation: x, sqlstate: [57]}",
            "rule 'c': sqlstate",
        ),
        (
            "- {id: d, category: timeout, confidence: 1.5, explanation: x, message: [a]}",
            "rule 'd': confidence",
        ),
        ("- {id: e, category: timeout, confidence: 0.5, explanation: x, mesage: [a]}", "rule 'e': mesage"),
        ("- {id: f, category: timeout, confidence: 0.5, explanation: x, http_status: [4xx]}", "rule 'f'"),
        (
            "- {id: g, category: timeout, confidence: 0.5, explanation: x, message: [a]}\n"
            "  - {id: g, category: timeout, confidence: 0.5, explanation: x, message: [b]}",
            "rule 'g': duplicate id",
        ),
        ("- {id: h, category: timeout, confidence: 0.5, explanation: x}", "rule 'h' matches everything"),
    ],
)
def test_invalid_rule_files_name_the_file_and_the_rule(tmp_path: Path, rules: str, problem: str) -> None:
    path = _rules_file(tmp_path, "\n  " + rules)
    with pytest.raises(FailureRuleError, match=problem) as failure:
        load_rules(path)
    assert str(path) in str(failure.value)


def test_a_rule_file_without_a_catch_all_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - {id: a, category: timeout, confidence: 0.5, explanation: x, message: [a]}\n")
    with pytest.raises(FailureRuleError, match="rule 'a': the last rule must be a catch-all"):
        load_rules(path)


def test_catalog_error_is_a_configuration_error(tmp_path: Path) -> None:
    diagnosis = classify(step(raised(lambda: load_catalog(tmp_path))))
    assert (diagnosis.rule_id, diagnosis.category) == ("configuration_invalid", Category.configuration_error)


def test_profile_drift_covers_mean_shift() -> None:
    assert classify(failed_check(MEAN_SHIFT_CHECK)).rule_id == "profile_drift_check"


def _rules_file(directory: Path, rules: str) -> Path:
    path = directory / "rules.yaml"
    path.write_text(
        f"rules:{rules}\n  - {{id: fallback, category: unknown, confidence: 0.3, explanation: none}}\n"
    )
    return path


def _exc_info(error: BaseException) -> tuple[type[BaseException], BaseException, object]:
    return type(error), error, error.__traceback__


def test_a_step_process_ended_by_another_signal_is_not_read_as_out_of_memory() -> None:
    """SIGTERM is someone stopping the run, not the out-of-memory killer: no retry with smaller batches."""
    assert classify(step_process_killed(-15)).rule_id == "unknown"
