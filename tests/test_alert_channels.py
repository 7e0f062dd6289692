"""Alert channels against real servers: a loopback HTTP server for Slack, Teams and the JSON webhook, and an
aiosmtpd SMTP server for e-mail. Each test checks what arrived (title, category, confidence, asset, action,
approval hint, resolution text) and that no secret did: not the webhook token, not the SMTP password, not
the database password or bearer token quoted in the evidence."""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from rest_test_server import Reply, ScriptedServer, unused_port

from resources.alerts.channels import (
    Alert,
    AlertDeliveryError,
    EmailChannel,
    JsonWebhookChannel,
    SlackWebhookChannel,
    TeamsWebhookChannel,
)
from resources.alerts.rendering import mask_credentials, render

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
WEBHOOK_TOKEN = "xoxb-T0001-B0002-webhooksecret42"
SMTP_USER = "alerts@example.com"
SMTP_PASSWORD = "smtp-pa55word!"
DB_URL = "postgresql://etl:s3cret@db/shop"
BEARER_TOKEN = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0.Zm9vYmFy"
SECRETS = (WEBHOOK_TOKEN, SMTP_PASSWORD, DB_URL, "s3cret", BEARER_TOKEN)
"""Strings that must never reach a channel or a log."""


def make_alert(**overrides: Any) -> Alert:
    """An incident whose evidence quotes a database URL with its password and a bearer token."""
    values: dict[str, Any] = {
        "kind": "incident",
        "severity": "warning",
        "incident_id": "inc-001",
        "source": "shop_api",
        "asset_key": "raw/shop_api/products",
        "group_key": "raw/shop_api/products",
        "category": "rate_limited",
        "confidence": 0.93,
        "title": "shop_api products rate limited",
        "diagnosis": "HTTP 429 from the source (rule http_429)",
        "evidence": {
            "errors": [{"class_name": "OperationalError", "message": f"could not reach {DB_URL}: timeout"}],
            "request": f"GET /products Authorization: Bearer {BEARER_TOKEN}",
            "http_status": 429,
        },
        "action": "retry with backoff (attempt 2 of 3)",
        "approve_hint": None,
        "opened_at": NOW,
        "deadline": NOW + timedelta(minutes=30),
    }
    return Alert(**{**values, **overrides})


def proposal() -> Alert:
    return make_alert(
        kind="proposal",
        severity="critical",
        incident_id="inc-002",
        category="schema_drift",
        confidence=0.71,
        title="staged/shop/orders: column `discount` changed type",
        action="evolve schema: widen discount to DOUBLE",
        approve_hint="launch job apply_healing_action with incident_id=inc-002",
    )


def assert_no_secret(text: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"secrets leaked: {leaked}"


@dataclass
class Inbox:
    """An aiosmtpd handler keeping every message it accepts, and the logins it saw."""

    password: str
    messages: list[EmailMessage] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    recipients: list[list[str]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        self.raw.append(content)
        self.recipients.append(list(envelope.rcpt_tos))
        self.messages.append(email.message_from_bytes(content, policy=email.policy.default))  # type: ignore[arg-type]
        return "250 OK"

    def authenticate(
        self, server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, auth_data: object
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data.password == self.password.encode()
        if ok:
            self.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)


@contextmanager
def smtp_server(password: str = SMTP_PASSWORD) -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server on loopback accepting AUTH without TLS (loopback only; the client may STARTTLS)."""
    inbox = Inbox(password)
    port = unused_port()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=port, authenticator=inbox.authenticate, auth_require_tls=False
    )
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def web() -> Iterator[ScriptedServer]:
    """Accepts Slack/Teams/JSON posts; paths under /broken answer 500 and quote the path (with its token)."""

    def handle(request: Any) -> Reply:
        if request.path.startswith("/broken"):
            return Reply(500, f"internal error at {request.path}".encode())
        return Reply(202 if request.path.startswith("/teams") else 200, b"ok")

    with ScriptedServer(handle) as server:
        yield server


def posted_json(server: ScriptedServer, path: str) -> list[dict[str, Any]]:
    bodies = [request.body.decode() for request in server.requests_to(path)]
    for body in bodies:
        assert_no_secret(body)
    return [json.loads(body) for body in bodies]


def test_slack_receives_text_and_blocks_without_secrets(web: ScriptedServer) -> None:
    path = f"/services/{WEBHOOK_TOKEN}"
    SlackWebhookChannel(web.base_url + path).send(render([make_alert()]))

    [payload] = posted_json(web, path)
    assert "shop_api products rate limited" in payload["text"]
    assert payload["blocks"][0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "[WARNING] Incident: shop_api products rate limited"},
    }
    section = payload["blocks"][2]
    assert "retry with backoff (attempt 2 of 3)" in section["text"]["text"]
    fields = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in section["fields"]}
    assert fields["*Category*"] == "rate_limited"
    assert fields["*Confidence*"] == "93%"
    assert fields["*Asset*"] == "raw/shop_api/products"
    assert "postgresql://etl:***@db/shop" in section["text"]["text"]
    assert "Bearer ***" in section["text"]["text"]


def test_teams_receives_an_adaptive_card_with_the_approval_hint(web: ScriptedServer) -> None:
    path = f"/teams/workflows/{WEBHOOK_TOKEN}"
    TeamsWebhookChannel(web.base_url + path).send(render([proposal()]))

    [payload] = posted_json(web, path)
    assert payload["type"] == "message"
    [attachment] = payload["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    texts = [block.get("text", "") for block in card["body"]]
    assert texts[0] == "[CRITICAL] Approval needed: staged/shop/orders: column `discount` changed type"
    assert card["body"][0]["color"] == "Attention"
    assert "To approve: launch job apply_healing_action with incident_id=inc-002" in texts
    assert "Proposed action: evolve schema: widen discount to DOUBLE" in texts
    [facts] = [block["facts"] for block in card["body"] if block["type"] == "FactSet"]
    assert {"title": "Confidence", "value": "71%"} in facts


def test_json_webhook_posts_the_alerts_as_data_with_its_secret_header(web: ScriptedServer) -> None:
    header_token = "hook-header-secret-77"
    channel = JsonWebhookChannel(web.base_url + "/hook", headers={"Authorization": f"Bearer {header_token}"})
    channel.send(render([make_alert(title=f"leaked {header_token} in a title")]))

    [request] = web.requests_to("/hook")
    assert request.headers["authorization"] == f"Bearer {header_token}"
    assert header_token not in request.body.decode()
    [payload] = posted_json(web, "/hook")
    assert payload["kind"] == "incident" and payload["severity"] == "warning"
    [alert] = payload["alerts"]
    assert alert["title"] == "leaked *** in a title"
    assert (alert["category"], alert["confidence"], alert["asset_key"]) == (
        "rate_limited",
        0.93,
        "raw/shop_api/products",
    )
    assert (
        alert["evidence"]["errors"][0]["message"] == "could not reach postgresql://etl:***@db/shop: timeout"
    )
    assert alert["opened_at"] == NOW.isoformat()


def test_email_over_smtp_with_login_carries_the_resolution(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    resolved = make_alert(kind="resolution", severity="info", title="shop_api products healed", action=None)
    with smtp_server() as (inbox, port):
        channel = EmailChannel(
            "127.0.0.1", port, "platform@example.com", ["oncall@example.com", "data@example.com"],
            username=SMTP_USER, password=SMTP_PASSWORD, timeout=5,
        )  # fmt: skip
        channel.send(render([resolved]))

    assert inbox.logins == [SMTP_USER]
    assert inbox.recipients == [["oncall@example.com", "data@example.com"]]
    [message] = inbox.messages
    assert message["Subject"] == "[INFO] Resolved: shop_api products healed"
    assert message["From"] == "platform@example.com"
    body = message.get_content()
    assert "The incident is resolved" in body
    assert "Category: rate_limited" in body and "Asset: raw/shop_api/products" in body
    assert_no_secret(inbox.raw[0].decode())
    assert_no_secret(caplog.text)


def test_smtp_refusals_name_the_channel_never_the_password() -> None:
    with smtp_server(password="the-right-one") as (inbox, port):
        channel = EmailChannel(
            "127.0.0.1", port, "platform@example.com", ["oncall@example.com"],
            username=SMTP_USER, password=SMTP_PASSWORD, timeout=5, name="oncall_mail",
        )  # fmt: skip
        with pytest.raises(AlertDeliveryError, match=r"'oncall_mail'.*SMTPAuthenticationError") as refused:
            channel.send(render([make_alert()]))
    assert inbox.messages == []
    assert_no_secret(str(refused.value))


def test_webhook_failures_name_the_channel_never_the_url(web: ScriptedServer) -> None:
    broken = SlackWebhookChannel(f"{web.base_url}/broken/{WEBHOOK_TOKEN}", name="ops_slack")
    with pytest.raises(AlertDeliveryError, match=r"'ops_slack' failed: HTTP 500 internal error at \*\*\*$"):
        broken.send(render([make_alert()]))

    unreachable = TeamsWebhookChannel(f"http://127.0.0.1:{unused_port()}/teams/{WEBHOOK_TOKEN}", timeout=2)
    with pytest.raises(AlertDeliveryError, match=r"'teams' failed: ConnectionError$") as refused:
        unreachable.send(render([make_alert()]))
    assert refused.value.__cause__ is None and refused.value.__suppress_context__


def test_a_group_renders_as_one_message_listing_every_alert() -> None:
    alerts = [make_alert(), proposal(), replace(make_alert(), incident_id="inc-003", title="third")]
    message = render(alerts, follow_up=True)
    assert message.headline == "[CRITICAL] 3 more alerts for raw/shop_api/products: third"
    assert message.kind == "proposal"
    assert [s.heading for s in message.sections] == [
        "Incident: shop_api products rate limited",
        "Approval needed: staged/shop/orders: column `discount` changed type",
        "Incident: third",
    ]
    assert_no_secret(message.plain_text())


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (f"connect {DB_URL} failed", "connect postgresql://etl:***@db/shop failed"),
        ("dsn=postgresql://u:p@ss@h:5432/db", "dsn=postgresql://u:***@h:5432/db"),
        (f"{{'Authorization': 'Bearer {BEARER_TOKEN}'}}", "{'Authorization': 'Bearer ***'}"),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***"),
        (f"token was Bearer {BEARER_TOKEN}", "token was Bearer ***"),
        ("GET /items?api_key=K-123&page=2", "GET /items?api_key=***&page=2"),
        ('{"password": "hunter2", "user": "etl"}', '{"password": ***, "user": "etl"}'),
        ("client_secret=abc;next", "client_secret=***;next"),
        (
            "Token expired at https://api.example.com:8443/v1",
            "Token expired at https://api.example.com:8443/v1",
        ),
    ],
)
def test_credentials_in_evidence_text_are_masked(text: str, masked: str) -> None:
    assert mask_credentials(text) == masked
    assert mask_credentials(masked) == masked


def test_evidence_values_under_secret_keys_are_masked() -> None:
    alert = make_alert(evidence={"api_key": "K-999", "headers": {"Authorization": "xyz"}, "rows": 3})
    [data] = render([alert]).data["alerts"]
    assert data["evidence"] == {"api_key": "***", "headers": {"Authorization": "***"}, "rows": 3}
