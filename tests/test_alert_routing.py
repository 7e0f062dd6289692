"""The alert router against real servers: routing by severity, kind and source; grouping of one root
asset's alerts within the window; de-duplication; escalation past the deadline; resolution; state that
survives a new router; a failing channel (HTTP 500) that does not block the others; secrets nowhere."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from rest_test_server import Reply, ScriptedServer
from test_alert_channels import NOW, SECRETS, WEBHOOK_TOKEN, Inbox, assert_no_secret, make_alert, smtp_server

from resources.secrets import MissingSecretError
from resources.state.database import StateLocation
from sensors.alerting.routing import (
    AlertRouter,
    AlertRoutingConfig,
    AlertRoutingConfigError,
    Delivery,
    build_channel,
    load_alert_routes,
)

SMTP_PASSWORD = SECRETS[1]
HOOK_TOKEN = "hook-header-token-1234567"
CONFIG: dict[str, Any] = {
    "group_window_minutes": 10,
    "channels": {
        "slack": {"kind": "slack", "url": "${SLACK_URL}"},
        "teams": {"kind": "teams", "url": "${TEAMS_URL}"},
        "webhook": {
            "kind": "json_webhook", "url": "${HOOK_URL}", "headers": {"Authorization": "Bearer ${HOOK}"},
        },
        "email": {
            "kind": "email", "host": "127.0.0.1", "port": "${SMTP_PORT}", "username": "alerts",
            "password": "${SMTP_PASSWORD}", "sender": "platform@example.com", "recipients": "${MAIL_TO}",
        },
        "broken": {"kind": "json_webhook", "url": "${BROKEN_URL}"},
        "unset": {"kind": "slack", "url": "${NOT_SET_WEBHOOK_URL}"},
    },
    "routes": [
        {"name": "critical", "match": {"min_severity": "critical"},
         "channels": ["slack", "teams", "email", "broken"]},
        {"name": "shop_warnings", "match": {"min_severity": "warning", "sources": ["shop_*"]},
         "channels": ["slack"]},
        {"name": "crm", "match": {"sources": ["crm"], "kinds": ["proposal"]},
         "channels": ["unset", "webhook"]},
    ],
    "default": ["webhook"],
}  # fmt: skip


TABLES = ("sent", "held", "windows")
"""The delivery state's tables."""


@dataclass
class Platform:
    web: ScriptedServer
    inbox: Inbox
    environ: dict[str, str]
    state: StateLocation
    config: AlertRoutingConfig

    def router(self) -> AlertRouter:
        return AlertRouter(self.config, self.state, environ=self.environ, secrets=["customer-secret-99"])

    def stored_text(self) -> str:
        """Everything the delivery state holds, as text: the SQLite file's bytes, or every row."""
        if isinstance(self.state, Path):
            return self.state.read_bytes().decode(errors="replace")
        with sa.create_engine(self.state).connect() as connection:
            tables = ("sent", "held", "windows")
            return repr(
                [connection.execute(sa.text(f"SELECT * FROM platform_ops.{t}")).all() for t in tables]
            )

    def posts(self, channel: str) -> list[dict[str, Any]]:
        """JSON bodies received by `channel` (each checked for secrets)."""
        bodies = [r.body.decode() for r in self.web.requests if r.path.startswith(f"/{channel}")]
        for body in bodies:
            assert_no_secret(body)
            assert HOOK_TOKEN not in body and "customer-secret-99" not in body
        return [json.loads(body) for body in bodies]

    def mails(self) -> list[str]:
        texts = [raw.decode() for raw in self.inbox.raw]
        for text in texts:
            assert_no_secret(text)
        return texts


@pytest.fixture(params=["sqlite", "postgres"])
def platform(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Platform]:
    """The delivery state in a SQLite file (the embedded default) or in the state database (a deployment's
    instance PostgreSQL): the router behaves the same on both."""
    state = (
        tmp_path / "state" / "alerts.sqlite"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_database")
    )

    def handle(request: Any) -> Reply:
        return Reply(500, b"boom") if request.path.startswith("/broken") else Reply(200, b"ok")

    with ScriptedServer(handle) as web, smtp_server() as (inbox, port):
        environ = {
            "SLACK_URL": f"{web.base_url}/slack/services/{WEBHOOK_TOKEN}",
            "TEAMS_URL": f"{web.base_url}/teams/workflows/invoke?sig={WEBHOOK_TOKEN}",
            "HOOK_URL": f"{web.base_url}/webhook/alerts",
            "HOOK": HOOK_TOKEN,
            "BROKEN_URL": f"{web.base_url}/broken/{WEBHOOK_TOKEN}",
            "SMTP_PORT": str(port),
            "SMTP_PASSWORD": SMTP_PASSWORD,
            "MAIL_TO": "oncall@example.com, data@example.com",
        }
        config = AlertRoutingConfig.model_validate(CONFIG)
        yield Platform(web, inbox, environ, state, config)


def by_channel(deliveries: list[Delivery]) -> dict[str, str]:
    return {d.channel: d.status for d in deliveries}


def test_routes_by_severity_and_source_and_a_failing_channel_blocks_no_other(platform: Platform) -> None:
    router = platform.router()
    info = router.submit(make_alert(severity="info", incident_id="i-info", group_key="a"), NOW)
    shop = router.submit(make_alert(incident_id="i-shop", group_key="b"), NOW)
    crm = router.submit(make_alert(source="crm", incident_id="i-crm", group_key="c"), NOW)
    critical = router.submit(make_alert(severity="critical", incident_id="i-crit", group_key="d"), NOW)

    assert by_channel(info) == {"webhook": "sent"}
    assert by_channel(shop) == {"slack": "sent"}
    assert by_channel(crm) == {"webhook": "sent"}
    assert by_channel(critical) == {"slack": "sent", "teams": "sent", "email": "sent", "broken": "failed"}
    [failed] = [d for d in critical if d.status == "failed"]
    assert failed.detail == "alert channel 'broken' failed: HTTP 500 boom"
    assert len(platform.posts("slack")) == 2
    [card] = platform.posts("teams")
    assert card["attachments"][0]["content"]["body"][0]["text"].startswith("[CRITICAL] Incident:")
    [mail] = platform.mails()
    assert "Subject: [CRITICAL] Incident: shop_api products rate limited" in mail
    assert [p["alerts"][0]["incident_id"] for p in platform.posts("webhook")] == ["i-info", "i-crm"]

    # Resubmitting retries only the channel that failed: nobody else hears it twice.
    again = router.submit(make_alert(severity="critical", incident_id="i-crit", group_key="d"), NOW)
    assert by_channel(again) == {"broken": "failed"}
    assert len(platform.posts("slack")) == 2 and len(platform.mails()) == 1


def test_alerts_of_one_root_asset_are_grouped_into_one_follow_up(platform: Platform) -> None:
    router = platform.router()
    first = router.submit(make_alert(incident_id="g-1", title="orders failed"), NOW)
    second = router.submit(
        make_alert(incident_id="g-2", title="customers failed"), NOW + timedelta(minutes=2)
    )
    third = router.submit(make_alert(incident_id="g-3", title="payments failed"), NOW + timedelta(minutes=4))
    repeat = router.submit(
        make_alert(incident_id="g-2", title="customers failed"), NOW + timedelta(minutes=5)
    )

    assert [by_channel(d) for d in (first, second, third, repeat)] == [
        {"slack": "sent"}, {"slack": "held"}, {"slack": "held"}, {"slack": "duplicate"},
    ]  # fmt: skip
    assert router.flush(NOW + timedelta(minutes=9)) == []
    assert len(platform.posts("slack")) == 1

    [follow_up] = router.flush(NOW + timedelta(minutes=10))
    assert (follow_up.channel, follow_up.status, follow_up.incident_ids) == ("slack", "sent", ("g-2", "g-3"))
    assert router.flush(NOW + timedelta(minutes=20)) == []
    posts = platform.posts("slack")
    assert len(posts) == 2
    assert posts[1]["blocks"][0]["text"]["text"] == (
        "[WARNING] 2 more alerts for raw/shop_api/products: payments failed"
    )
    assert "customers failed" in posts[1]["text"] and "payments failed" in posts[1]["text"]

    # Already sent: a duplicate, even after the window; a new incident then opens a new window at once.
    assert by_channel(router.submit(make_alert(incident_id="g-1"), NOW + timedelta(minutes=30))) == {
        "slack": "duplicate"
    }
    assert by_channel(router.submit(make_alert(incident_id="g-4"), NOW + timedelta(minutes=30))) == {
        "slack": "sent"
    }


def test_a_new_alert_after_the_window_first_sends_what_was_held(platform: Platform) -> None:
    router = platform.router()
    router.submit(make_alert(incident_id="h-1"), NOW)
    router.submit(make_alert(incident_id="h-2"), NOW + timedelta(minutes=1))
    later = router.submit(make_alert(incident_id="h-3"), NOW + timedelta(minutes=11))
    assert [(d.incident_ids, d.status) for d in later] == [(("h-2",), "sent"), (("h-3",), "sent")]


def test_escalation_once_past_the_deadline_even_inside_the_window(platform: Platform) -> None:
    router = platform.router()
    incident = make_alert(incident_id="e-1", deadline=NOW + timedelta(minutes=5))
    router.submit(incident, NOW)
    assert router.due_escalations([incident], NOW + timedelta(minutes=4)) == []

    [escalation] = router.due_escalations([incident], NOW + timedelta(minutes=6))
    assert (escalation.kind, escalation.severity) == ("escalation", "critical")
    assert escalation.title == "Still open past its deadline: shop_api products rate limited"
    deliveries = router.submit(escalation, NOW + timedelta(minutes=6))
    assert by_channel(deliveries) == {"slack": "sent", "teams": "sent", "email": "sent", "broken": "failed"}
    [card] = platform.posts("teams")
    assert card["attachments"][0]["content"]["body"][0]["text"].startswith(
        "[CRITICAL] Escalation: Still open"
    )

    assert router.due_escalations([incident], NOW + timedelta(minutes=7)) == []
    assert platform.router().due_escalations([incident], NOW + timedelta(hours=1)) == []
    assert (
        router.due_escalations([make_alert(incident_id="e-2", deadline=None)], NOW + timedelta(days=1)) == []
    )


def test_an_escalated_incident_failing_again_is_reminded_at_most_every_remind_interval(
    platform: Platform,
) -> None:
    """The reminder's clock starts at the escalation: a source failing every minute after it pages once an
    hour (`remind_every_minutes`), not every minute; a channel that missed the escalation gets it."""
    router = platform.router()
    escalation = make_alert(kind="escalation", severity="critical", incident_id="m-1")
    reminder = make_alert(kind="reminder", severity="critical", incident_id="m-1", title="still failing")
    assert by_channel(router.submit(escalation, NOW))["slack"] == "sent"
    early = by_channel(router.submit(reminder, NOW + timedelta(minutes=5)))
    assert early == {"broken": "failed"}, "only the channel the escalation never reached is tried"
    late = by_channel(router.submit(reminder, NOW + timedelta(minutes=61)))
    assert late == {"slack": "sent", "teams": "sent", "email": "sent", "broken": "failed"}
    assert "Still failing: still failing" in platform.posts("slack")[-1]["text"]
    again = by_channel(platform.router().submit(reminder, NOW + timedelta(minutes=62)))
    assert again == {"broken": "failed"}
    assert by_channel(router.submit(reminder, NOW + timedelta(minutes=122)))["slack"] == "sent"
    assert len(platform.posts("slack")) == 3


def test_resolution_goes_at_once_to_everyone_who_saw_the_incident(platform: Platform) -> None:
    router = platform.router()
    router.submit(make_alert(severity="critical", incident_id="r-1"), NOW)
    router.submit(make_alert(incident_id="r-2"), NOW + timedelta(minutes=1))  # held in r-1's window
    resolution = make_alert(kind="resolution", severity="info", incident_id="r-2", title="products healed")
    router.submit(make_alert(incident_id="r-2", kind="proposal", approve_hint="approve it"), NOW)
    deliveries = router.submit(resolution, NOW + timedelta(minutes=2))
    # Info goes to the default route; r-2 never reached anyone, and its held alerts are dropped.
    assert by_channel(deliveries) == {"webhook": "sent"}
    assert router.flush(NOW + timedelta(minutes=30)) == []

    healed = make_alert(kind="resolution", severity="info", incident_id="r-1", title="orders healed")
    assert by_channel(router.submit(healed, NOW + timedelta(minutes=3))) == {
        "webhook": "sent", "slack": "sent", "teams": "sent", "email": "sent",
    }  # fmt: skip
    assert "Resolved: orders healed" in platform.posts("slack")[-1]["text"]
    assert "The incident is resolved" in platform.mails()[-1]
    [resolved] = platform.posts("webhook")[-1]["alerts"]
    assert (resolved["kind"], resolved["incident_id"]) == ("resolution", "r-1")
    assert by_channel(router.submit(healed, NOW + timedelta(minutes=4)))["slack"] == "duplicate"


def test_state_survives_a_new_router(platform: Platform) -> None:
    platform.router().submit(make_alert(incident_id="s-1"), NOW)
    platform.router().submit(make_alert(incident_id="s-2"), NOW + timedelta(minutes=1))

    restarted = platform.router()
    assert by_channel(restarted.submit(make_alert(incident_id="s-1"), NOW + timedelta(minutes=2))) == {
        "slack": "duplicate"
    }
    [follow_up] = restarted.flush(NOW + timedelta(minutes=10))
    assert follow_up.incident_ids == ("s-2",)
    assert len(platform.posts("slack")) == 2


def test_an_unconfigured_channel_is_skipped_with_one_warning(
    platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    router = platform.router()
    crm = [
        make_alert(kind="proposal", source="crm", incident_id=f"u-{i}", group_key=f"u{i}") for i in range(2)
    ]
    results = [by_channel(router.submit(alert, NOW)) for alert in crm]
    assert results == [{"unset": "skipped", "webhook": "sent"}] * 2
    skips = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skips) == 1
    assert "NOT_SET_WEBHOOK_URL" in skips[0] and "'unset'" in skips[0]
    assert_no_secret(caplog.text)


def test_nothing_secret_reaches_any_channel_or_log(
    platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sensors")
    caplog.set_level(logging.DEBUG, logger="resources")
    router = platform.router()
    leaky = {
        "title": f"leaked {WEBHOOK_TOKEN} and customer-secret-99 and {HOOK_TOKEN}",
        "diagnosis": f"password={SMTP_PASSWORD} rejected",
    }
    for kind in ("incident", "proposal", "escalation", "reminder", "resolution"):
        router.submit(make_alert(kind=kind, severity="critical", incident_id=f"x-{kind}", **leaky), NOW)
    router.submit(make_alert(severity="info", incident_id="x-info", group_key="x", **leaky), NOW)
    router.flush(NOW + timedelta(hours=1))

    for channel in ("slack", "teams", "webhook", "broken"):
        assert platform.posts(channel)
    assert len(platform.mails()) == 5
    assert_no_secret(caplog.text)
    assert HOOK_TOKEN not in caplog.text and "customer-secret-99" not in caplog.text
    assert_no_secret(platform.stored_text())


def test_a_missing_variable_names_the_channel_and_the_variable(platform: Platform) -> None:
    settings = platform.config.channels["unset"]
    with pytest.raises(MissingSecretError, match=r"NOT_SET_WEBHOOK_URL.*alert channel 'unset'"):
        build_channel("unset", settings, platform.environ)


def test_the_shipped_routes_load_and_route_to_nothing_without_variables(tmp_path: Path) -> None:
    config = load_alert_routes()
    assert config.group_window == timedelta(minutes=10)
    assert config.channels_for(make_alert(severity="critical")) == ["slack", "teams", "email", "webhook"]
    assert config.channels_for(make_alert(severity="warning")) == ["slack", "webhook"]
    assert config.channels_for(make_alert(severity="info", kind="resolution")) == ["webhook"]
    router = AlertRouter(config, tmp_path / "alerts.sqlite", environ={})
    deliveries = router.submit(make_alert(severity="critical"), NOW)
    assert {d.status for d in deliveries} == {"skipped"}


def test_routes_naming_unknown_channels_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text("channels: {}\nroutes: [{name: r, channels: [pager]}]\n")
    with pytest.raises(AlertRoutingConfigError, match="route 'r' names unknown channel 'pager'"):
        load_alert_routes(path)


def test_naive_times_are_refused(platform: Platform) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        platform.router().submit(make_alert(), NOW.replace(tzinfo=None))
