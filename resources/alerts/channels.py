"""Where alerts go: Slack and Microsoft Teams incoming webhooks, e-mail over SMTP and a generic JSON webhook.

An `Alert` is what the healing layer says about one incident; `resources.alerts.rendering.render` turns a
group of them into a `RenderedAlert` (headline, one section per alert, the alerts as data) and a `Channel`
puts that into its own wire format and sends it.

Why the secrecy rules live here: a webhook URL *is* a credential (Slack and Teams URLs embed the token) and
so is the SMTP password. Every string a channel sends is passed through `resources.secrets.redact` with the
secrets it knows (its own URL, password and header values, plus any the caller gives), and its errors name
the channel, never the URL: a `requests` error quotes the URL, so it is replaced, not chained.

Teams: the payload is an Adaptive Card (version 1.4) in a `message` envelope with one attachment of type
`application/vnd.microsoft.card.adaptive`. Microsoft is retiring the Office 365 connectors (legacy incoming
webhooks, whose native format was the MessageCard) in favour of Workflows webhooks, and the Workflows
template "Send webhook alerts to a channel" posts exactly this envelope; the legacy connectors accept it
too, so one format serves both while the migration lasts.
"""

from __future__ import annotations

import smtplib
import ssl
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, urlsplit

import requests

from resources.secrets import redact

AlertKind = Literal["incident", "proposal", "escalation", "reminder", "resolution"]
Severity = Literal["info", "warning", "critical"]
SEVERITY_ORDER: Mapping[str, int] = {"info": 0, "warning": 1, "critical": 2}

DEFAULT_TIMEOUT_SECONDS = 10.0
_MAX_ERROR_BODY = 200
"""Characters of a rejecting server's reply quoted in the error: enough for Slack's `invalid_blocks`."""
_MIN_SECRET_PART = 16
"""Tokens, IDs and signatures in webhook URLs are longer; route words (`services`, `workflows`) shorter."""
_MAX_SLACK_SECTION = 3000
_MAX_SLACK_HEADER = 150
_MAX_SLACK_FIELDS = 10


@dataclass(frozen=True)
class Alert:
    """One thing to tell humans about one incident (the healing layer's vocabulary)."""

    kind: AlertKind
    """incident: diagnosed, auto-healing under way or done; proposal: an action awaits human approval;
    escalation: not healable / healing failed / open past its deadline; reminder: an escalated incident
    failed again (a human's repair did not hold, or nobody has acted yet); resolution: it healed."""
    severity: Severity
    incident_id: str
    source: str | None
    """The source system, e.g. `shop_api`: a routing key."""
    asset_key: str | None
    group_key: str
    """The root asset: alerts with the same group_key are grouped."""
    category: str
    confidence: float
    title: str
    diagnosis: str
    evidence: Mapping[str, object]
    """JSON-able: error classes and messages, HTTP status, check metadata."""
    action: str | None
    approve_hint: str | None
    opened_at: datetime
    deadline: datetime | None

    def as_dict(self) -> dict[str, Any]:
        """A `json.dumps`-able form (datetimes as ISO 8601) for the JSON webhook and for stored state."""
        data = asdict(self)
        data["evidence"] = dict(self.evidence)
        data["opened_at"] = self.opened_at.isoformat()
        data["deadline"] = self.deadline.isoformat() if self.deadline else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        """The inverse of `as_dict`."""
        deadline = data.get("deadline")
        return cls(
            **{
                **data,
                "opened_at": datetime.fromisoformat(data["opened_at"]),
                "deadline": datetime.fromisoformat(deadline) if deadline else None,
            }
        )


@dataclass(frozen=True)
class AlertSection:
    """One alert as a channel shows it; every text already masked for credentials."""

    heading: str
    facts: tuple[tuple[str, str], ...]
    """Short label/value pairs: severity, category, confidence, asset, source, incident, times."""
    lines: tuple[str, ...]
    """Longer paragraphs: diagnosis, action, how to approve, evidence."""


@dataclass(frozen=True)
class RenderedAlert:
    """A group of alerts ready for any channel: the neutral form each channel maps to its wire format."""

    headline: str
    kind: AlertKind
    """The group's most urgent kind (a lone alert's own kind)."""
    severity: Severity
    """The group's highest severity."""
    sections: tuple[AlertSection, ...]
    data: Mapping[str, Any] = field(default_factory=dict)
    """The alerts as JSON-able dicts (credentials masked): what the generic webhook posts."""

    def plain_text(self) -> str:
        """The whole message as plain text: the e-mail body and the chat fallback text."""
        parts = [self.headline]
        for section in self.sections:
            facts = [f"{label}: {value}" for label, value in section.facts]
            parts.append("\n".join([f"== {section.heading} ==", *facts, *section.lines]))
        return "\n\n".join(parts)


class AlertDeliveryError(RuntimeError):
    """A channel could not deliver: names the channel and the reason, never its URL or credentials."""

    def __init__(self, channel: str, reason: str) -> None:
        super().__init__(f"alert channel {channel!r} failed: {reason}")
        self.channel = channel


class Channel(ABC):
    """Something that delivers a `RenderedAlert` or raises `AlertDeliveryError`."""

    name: str

    @abstractmethod
    def send(self, message: RenderedAlert) -> None: ...


def redact_payload(value: Any, secrets: Sequence[str]) -> Any:
    """`value` with `redact` applied to every string inside it (keys included), before it is serialized:
    redacting the serialized JSON would miss a secret whose characters JSON escapes."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, Mapping):
        return {redact_payload(k, secrets): redact_payload(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_payload(item, secrets) for item in value]
    return value


def webhook_secrets(url: str, headers: Mapping[str, str] | None = None) -> list[str]:
    """What of a webhook must never be shown: the URL, and its path, query, path segments and query values
    when long (a server's error page may quote just the token: Slack's is the last path segment, a Teams
    Workflows URL signs with `sig=`), and every header value with its last word (`Bearer <credential>`).
    Short URL parts (`/`, `services`, `triggers`) stay readable."""
    parts = urlsplit(url)
    pieces = [
        parts.path,
        parts.query,
        *parts.path.split("/"),
        *(value for _, value in parse_qsl(parts.query)),
    ]
    values = list((headers or {}).values())
    credentials = [value.split()[-1] for value in values if value.strip()]
    return [url, *(piece for piece in pieces if len(piece) >= _MIN_SECRET_PART), *values, *credentials]


class _JsonWebhookBase(Channel):
    """POSTs a JSON document to a URL that is itself a secret; any 2xx reply is a delivery."""

    default_name: ClassVar[str]

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        secrets: Iterable[str] = (),
    ) -> None:
        self.name = name or self.default_name
        self._url = url
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        self._timeout = timeout
        self._secrets = [*webhook_secrets(url, headers), *secrets]

    @abstractmethod
    def payload(self, message: RenderedAlert) -> dict[str, Any]:
        """The channel's wire format for `message`."""

    def send(self, message: RenderedAlert) -> None:
        body = redact_payload(self.payload(message), self._secrets)
        try:
            response = requests.post(self._url, json=body, headers=self._headers, timeout=self._timeout)
        except requests.RequestException as error:
            # `from None`: the requests error names the URL, which holds the webhook's token.
            raise AlertDeliveryError(self.name, type(error).__name__) from None
        if not 200 <= response.status_code < 300:
            reply = redact(response.text[:_MAX_ERROR_BODY].strip(), self._secrets)
            raise AlertDeliveryError(self.name, f"HTTP {response.status_code} {reply}".strip())


class SlackWebhookChannel(_JsonWebhookBase):
    """A Slack incoming webhook: `text` (notification fallback) plus Block Kit `blocks`."""

    default_name = "slack"

    def payload(self, message: RenderedAlert) -> dict[str, Any]:
        blocks: list[dict[str, Any]] = [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": _cut(message.headline, _MAX_SLACK_HEADER)},
            }
        ]
        for section in message.sections:
            text = "\n".join([f"*{_slack_escape(section.heading)}*", *map(_slack_escape, section.lines)])
            fields = [
                {"type": "mrkdwn", "text": f"*{_slack_escape(label)}*\n{_slack_escape(value)}"}
                for label, value in section.facts[:_MAX_SLACK_FIELDS]
            ]
            block: dict[str, Any] = {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _cut(text, _MAX_SLACK_SECTION)},
            }
            if fields:
                block["fields"] = fields
            blocks += [{"type": "divider"}, block]
        return {"text": _cut(_slack_escape(message.plain_text()), _MAX_SLACK_SECTION), "blocks": blocks}


class TeamsWebhookChannel(_JsonWebhookBase):
    """A Microsoft Teams Workflows (or legacy connector) webhook: one Adaptive Card in a message envelope."""

    default_name = "teams"

    def payload(self, message: RenderedAlert) -> dict[str, Any]:
        color = {"critical": "Attention", "warning": "Warning", "info": "Default"}[message.severity]
        if message.kind == "resolution":
            color = "Good"
        body: list[dict[str, Any]] = [
            {"type": "TextBlock", "text": message.headline, "size": "Medium", "weight": "Bolder",
             "color": color, "wrap": True},
        ]  # fmt: skip
        for section in message.sections:
            body.append({"type": "TextBlock", "text": section.heading, "weight": "Bolder", "wrap": True,
                         "separator": True})  # fmt: skip
            body.append({"type": "FactSet", "facts": [{"title": t, "value": v} for t, v in section.facts]})
            body += [{"type": "TextBlock", "text": line, "wrap": True} for line in section.lines]
        card = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": body,
            "msteams": {"width": "Full"},
        }
        attachment = {
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": None,
            "content": card,
        }
        return {"type": "message", "attachments": [attachment]}


class JsonWebhookChannel(_JsonWebhookBase):
    """Any HTTP endpoint that takes the alerts as JSON (an incident tool, a ticketing bridge); header values
    (e.g. `Authorization`) count as secrets."""

    default_name = "webhook"

    def payload(self, message: RenderedAlert) -> dict[str, Any]:
        return {
            "headline": message.headline,
            "kind": message.kind,
            "severity": message.severity,
            **message.data,
        }


class EmailChannel(Channel):
    """Plain-text e-mail through an SMTP relay, optionally upgraded with STARTTLS and authenticated."""

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        recipients: Sequence[str],
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        *,
        name: str = "email",
        secrets: Iterable[str] = (),
    ) -> None:
        if username and not password:
            raise ValueError(f"alert channel {name!r}: a username needs a password")
        self.name = name
        self._host, self._port, self._timeout = host, port, timeout
        self._sender, self._recipients = sender, list(recipients)
        self._username, self._password, self._starttls = username, password, starttls
        self._secrets = [*([password] if password else []), *secrets]

    def message(self, rendered: RenderedAlert) -> EmailMessage:
        """The e-mail for `rendered`, every text redacted."""
        email = EmailMessage()
        email["Subject"] = " ".join(redact(rendered.headline, self._secrets).split())
        email["From"] = self._sender
        email["To"] = ", ".join(self._recipients)
        email["Date"] = formatdate(localtime=False)
        email["Message-ID"] = make_msgid(domain="self-healing-platform")
        email.set_content(redact(rendered.plain_text(), self._secrets))
        return email

    def send(self, message: RenderedAlert) -> None:
        email = self.message(message)
        try:
            with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as smtp:
                if self._starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self._username and self._password:
                    smtp.login(self._username, self._password)
                smtp.send_message(email, self._sender, self._recipients)
        except (OSError, smtplib.SMTPException) as error:
            reason = redact(f"{type(error).__name__}: {error}", self._secrets)
            raise AlertDeliveryError(self.name, reason) from None


def _slack_escape(text: str) -> str:
    """Slack's mrkdwn treats `&`, `<` and `>` as markup; these three must be escaped in text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
