"""Alert routing: which channels an alert goes to, when, and how often (see `routes.yaml`).

Why a router between the healing layer and the channels: one failing asset can raise a storm of alerts
(every downstream asset, every retry), and a human should get one message per root cause, a reminder when
it stays open past its deadline, and word when it heals. So the router

- routes by severity, kind and source (`routes` in the YAML, `default` when none matches);
- groups by root asset: the first alert of a `group_key` goes out at once and opens a window; incidents and
  proposals of the same group inside the window are held and sent as ONE follow-up by `flush` once the
  window has ended (or before the next alert of that group opens a new window);
- sends escalations and resolutions at once; a resolution also reaches every channel that saw the
  incident, and drops the incident's alerts still held (they are old news);
- de-duplicates: an (incident_id, kind) is sent to each channel once, and is not held twice; a reminder
  (an escalated incident failing again) goes to a channel only when that channel got the incident's
  escalation or last reminder more than `remind_every_minutes` ago;
- remembers all that in a small SQLite file (or the platform's state database in a deployment), so a
  restarted daemon neither resends nor forgets a held alert.

Delivery is at least once: a crash between a channel's reply and the state write resends that message.
A failed channel is recorded as not sent, so resubmitting the alert retries just the channels that failed;
one failing channel never stops the others. Channels whose `${VAR}` is unset are skipped with one warning
per router instance (the sensor builds one per tick) rather than failing every alert: an unconfigured
laptop must run. Nothing logged or returned carries a secret: errors name channels and variables only.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal

import sqlalchemy as sa
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from resources.alerts.channels import (
    SEVERITY_ORDER,
    Alert,
    AlertDeliveryError,
    AlertKind,
    Channel,
    EmailChannel,
    JsonWebhookChannel,
    Severity,
    SlackWebhookChannel,
    TeamsWebhookChannel,
    redact_payload,
    webhook_secrets,
)
from resources.alerts.rendering import mask_alert, render
from resources.secrets import MissingSecretError, env_references, redact, resolve_env
from resources.state.database import StateDatabase, StateLocation

DEFAULT_ROUTES_PATH = Path(__file__).with_name("routes.yaml")
IMMEDIATE_KINDS: frozenset[AlertKind] = frozenset({"escalation", "reminder", "resolution"})
"""Kinds never held for grouping: a human must hear of these now."""

logger = logging.getLogger(__name__)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _ChannelSettings(Strict):
    timeout_seconds: float = Field(default=10.0, gt=0)


class SlackSettings(_ChannelSettings):
    kind: Literal["slack"]
    url: str = Field(description="`${ENV_VAR}` reference: the URL holds the token.")


class TeamsSettings(_ChannelSettings):
    kind: Literal["teams"]
    url: str = Field(description="`${ENV_VAR}` reference: the URL holds the signature.")


class JsonWebhookSettings(_ChannelSettings):
    kind: Literal["json_webhook"]
    url: str
    headers: dict[str, str] = Field(default_factory=dict, description="Values are secrets (`${ENV_VAR}`).")


class EmailSettings(_ChannelSettings):
    kind: Literal["email"]
    host: str
    port: str | int = Field(default="", description="Empty or unset: 587 with STARTTLS, else 25.")
    sender: str
    recipients: str | list[str] = Field(description="A list, or one comma-separated string.")
    username: str = ""
    password: str = ""
    starttls: bool = False


ChannelSettings = Annotated[
    SlackSettings | TeamsSettings | JsonWebhookSettings | EmailSettings, Field(discriminator="kind")
]


class RouteMatch(Strict):
    min_severity: Severity = "info"
    kinds: tuple[AlertKind, ...] | None = None
    sources: tuple[str, ...] | None = Field(default=None, description="Glob patterns on `Alert.source`.")

    def matches(self, alert: Alert) -> bool:
        if SEVERITY_ORDER[alert.severity] < SEVERITY_ORDER[self.min_severity]:
            return False
        if self.kinds is not None and alert.kind not in self.kinds:
            return False
        if self.sources is None:
            return True
        return alert.source is not None and any(fnmatch.fnmatchcase(alert.source, p) for p in self.sources)


class Route(Strict):
    name: str
    match: RouteMatch = RouteMatch()
    channels: tuple[str, ...]


class AlertRoutingConfig(Strict):
    channels: dict[str, ChannelSettings]
    routes: tuple[Route, ...] = ()
    default: tuple[str, ...] = ()
    group_window_minutes: float = Field(default=10.0, gt=0)
    remind_every_minutes: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _known_channels(self) -> AlertRoutingConfig:
        named = [(f"route {r.name!r}", c) for r in self.routes for c in r.channels]
        named += [("default", c) for c in self.default]
        unknown = [f"{where} names unknown channel {c!r}" for where, c in named if c not in self.channels]
        if unknown:
            raise ValueError("; ".join(unknown))
        return self

    @property
    def group_window(self) -> timedelta:
        return timedelta(minutes=self.group_window_minutes)

    def channels_for(self, alert: Alert) -> list[str]:
        """The channels of every matching route, in order without repeats; `default` if none matches."""
        matched = [c for route in self.routes if route.match.matches(alert) for c in route.channels]
        return list(dict.fromkeys(matched or self.default))


class AlertRoutingConfigError(ValueError):
    """The routing file is invalid: names the file and what is wrong."""


def load_alert_routes(path: Path = DEFAULT_ROUTES_PATH) -> AlertRoutingConfig:
    try:
        return AlertRoutingConfig.model_validate(yaml.safe_load(path.read_text()) or {})
    except (ValidationError, yaml.YAMLError) as error:
        raise AlertRoutingConfigError(f"{path}: {error}") from error


def build_channel(
    name: str, settings: ChannelSettings, environ: Mapping[str, str], secrets: Iterable[str] = ()
) -> Channel:
    """The channel `name`, its `${VAR}` references resolved from `environ`. A required variable that is
    unset raises `MissingSecretError` naming the channel and the variable; `secrets` are redacted too."""
    where = f"alert channel {name!r}"

    def value(text: str, *, optional: bool = False) -> str:
        if optional and any(var not in environ for var in env_references(text)):
            return ""
        return resolve_env(text, environ, where=where)

    timeout = settings.timeout_seconds
    if isinstance(settings, SlackSettings):
        return SlackWebhookChannel(value(settings.url), name=name, timeout=timeout, secrets=secrets)
    if isinstance(settings, TeamsSettings):
        return TeamsWebhookChannel(value(settings.url), name=name, timeout=timeout, secrets=secrets)
    if isinstance(settings, JsonWebhookSettings):
        headers = {header: value(text) for header, text in settings.headers.items()}
        return JsonWebhookChannel(
            value(settings.url), name=name, headers=headers, timeout=timeout, secrets=secrets
        )
    recipients = settings.recipients
    if isinstance(recipients, str):
        recipients = value(recipients).split(",")
    port = value(str(settings.port), optional=True).strip()
    if port and not port.isdigit():
        raise ValueError(f"{where}: port must be a number")
    return EmailChannel(
        host=value(settings.host),
        port=int(port) if port else 587 if settings.starttls else 25,
        sender=value(settings.sender),
        recipients=[r.strip() for r in recipients if r.strip()],
        username=value(settings.username, optional=True) or None,
        password=value(settings.password, optional=True) or None,
        starttls=settings.starttls,
        timeout=timeout,
        name=name,
        secrets=secrets,
    )


def secret_values(config: AlertRoutingConfig, environ: Mapping[str, str]) -> list[str]:
    """The secret values of every channel whose variables are set (URLs and their tokens, passwords,
    header values): each channel redacts all of them, so none can quote another's URL."""
    values: list[str] = []
    for settings in config.channels.values():
        if isinstance(settings, EmailSettings):
            texts, headers = [settings.password], {}
        else:
            headers = settings.headers if isinstance(settings, JsonWebhookSettings) else {}
            texts = [settings.url, *headers.values()]
        if not all(var in environ for text in texts for var in env_references(text)):
            continue
        resolved = [resolve_env(text, environ) for text in texts]
        if isinstance(settings, EmailSettings):
            values += resolved
        else:
            values += webhook_secrets(resolved[0], dict(zip(headers, resolved[1:], strict=True)))
    return [value for value in values if value]


@dataclass(frozen=True)
class Delivery:
    """What became of one alert (or one grouped follow-up) on one channel."""

    channel: str
    kind: AlertKind
    incident_ids: tuple[str, ...]
    status: Literal["sent", "failed", "skipped", "held", "duplicate"]
    """sent; failed (the channel refused or was unreachable); skipped (not configured); held for the
    group's follow-up; duplicate (already sent to that channel, or already held)."""
    detail: str = ""
    """Why it failed or was skipped: channel and variable names, never a secret."""


class AlertRouter:
    """Routes, groups, de-duplicates and sends alerts; state at `state_path` (a SQLite file or the state
    database's URL)."""

    def __init__(
        self,
        config: AlertRoutingConfig,
        state_path: StateLocation,
        *,
        environ: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        self.config = config
        self._environ = os.environ if environ is None else environ
        self._secrets = [*secret_values(config, self._environ), *(s for s in secrets if s)]
        self._state = _DeliveryState(state_path)
        self._channels: dict[str, Channel | str] = {}
        """Built channels, or why a channel cannot be built (reported once)."""

    def submit(self, alert: Alert, now: datetime) -> list[Delivery]:
        """Route `alert` and send it now, hold it for its group's follow-up, or drop it as a duplicate."""
        _require_aware(now)
        alert = self._sanitize(alert)
        routed = self.config.channels_for(alert)
        if alert.kind == "resolution":
            self._state.drop_held(alert.incident_id)
            routed = list(dict.fromkeys([*routed, *self._state.channels_reached(alert.incident_id)]))
        if not routed:
            return []
        todo = [c for c in routed if not self._already_told(alert, c, now)]
        if not todo or self._state.is_held(alert.incident_id, alert.kind):
            return [Delivery(c, alert.kind, (alert.incident_id,), "duplicate") for c in routed]
        if alert.kind in IMMEDIATE_KINDS or len(todo) < len(routed):  # a retry of channels that failed
            return self._deliver([alert], todo, now, follow_up=False)
        opened = self._state.window_opened(alert.group_key)
        if opened is not None and now < opened + self.config.group_window:
            self._state.hold(alert, now)
            return [Delivery(c, alert.kind, (alert.incident_id,), "held") for c in todo]
        earlier = self._flush_group(alert.group_key, now)
        self._state.open_window(alert.group_key, now)
        return earlier + self._deliver([alert], todo, now, follow_up=False)

    def _already_told(self, alert: Alert, channel: str, now: datetime) -> bool:
        """Whether `channel` already has this alert: sent once for every kind but a reminder, which is due
        again `remind_every_minutes` after the incident's escalation or last reminder reached it."""
        if alert.kind != "reminder":
            return self._state.was_sent(alert.incident_id, alert.kind, channel)
        last = self._state.last_sent(alert.incident_id, ("escalation", "reminder"), channel)
        return last is not None and now.timestamp() - last < self.config.remind_every_minutes * 60

    def flush(self, now: datetime) -> list[Delivery]:
        """Send the follow-up of every group whose window has ended and that holds alerts."""
        _require_aware(now)
        deliveries: list[Delivery] = []
        for group_key, opened in self._state.groups_holding():
            if now >= opened + self.config.group_window:
                deliveries += self._flush_group(group_key, now)
        return deliveries

    def due_escalations(self, open_incidents: Iterable[Alert], now: datetime) -> list[Alert]:
        """Escalation alerts for the open incidents past their deadline that no channel has yet received
        an escalation for (so each escalates once; an undelivered one is produced again next time)."""
        _require_aware(now)
        return [
            replace(
                incident,
                kind="escalation",
                severity="critical",
                title=f"Still open past its deadline: {incident.title}",
            )
            for incident in open_incidents
            if incident.kind != "resolution"
            and incident.deadline is not None
            and now >= incident.deadline
            and not self._state.channels_reached(incident.incident_id, kind="escalation")
        ]

    def _sanitize(self, alert: Alert) -> Alert:
        """Credentials masked and known secrets redacted before the alert is stored or rendered."""
        return Alert.from_dict(redact_payload(mask_alert(alert).as_dict(), self._secrets))

    def _flush_group(self, group_key: str, now: datetime) -> list[Delivery]:
        held = self._state.held(group_key)
        deliveries: list[Delivery] = []
        for channel in dict.fromkeys(c for alert in held for c in self.config.channels_for(alert)):
            alerts = [
                alert
                for alert in held
                if channel in self.config.channels_for(alert)
                and not self._state.was_sent(alert.incident_id, alert.kind, channel)
            ]
            if alerts:
                deliveries += self._deliver(alerts, [channel], now, follow_up=True)
        self._state.release(group_key)
        return deliveries

    def _deliver(
        self, alerts: Sequence[Alert], channels: Sequence[str], now: datetime, *, follow_up: bool
    ) -> list[Delivery]:
        message = render(alerts, follow_up=follow_up)
        kind = message.kind
        ids = tuple(alert.incident_id for alert in alerts)
        deliveries = []
        for name in channels:
            channel = self._channel(name)
            if isinstance(channel, str):
                deliveries.append(Delivery(name, kind, ids, "skipped", channel))
                continue
            try:
                channel.send(message)
            except Exception as error:  # one channel's failure, whatever it is, must not stop the others
                known = isinstance(error, AlertDeliveryError)
                detail = redact(str(error) if known else f"{type(error).__name__}: {error}", self._secrets)
                logger.warning("alert not delivered (incidents %s): %s", ", ".join(ids), detail)
                deliveries.append(Delivery(name, kind, ids, "failed", detail))
                continue
            self._state.record_sent(alerts, name, now)
            deliveries.append(Delivery(name, kind, ids, "sent"))
        return deliveries

    def _channel(self, name: str) -> Channel | str:
        """The built channel, or the reason it cannot be built (logged the first time only)."""
        if name not in self._channels:
            try:
                self._channels[name] = build_channel(
                    name, self.config.channels[name], self._environ, self._secrets
                )
            except (MissingSecretError, ValueError) as error:
                reason = redact(str(error), self._secrets)
                logger.warning("alert channel %r skipped: %s", name, reason)
                self._channels[name] = reason
        return self._channels[name]


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("alert routing needs timezone-aware times (datetime.now(UTC))")


_STATE = sa.MetaData()
_SENT = sa.Table(
    "sent",
    _STATE,
    sa.Column("incident_id", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, primary_key=True),
    sa.Column("channel", sa.Text, primary_key=True),
    sa.Column("sent_at", sa.Float, nullable=False),
)
_HELD = sa.Table(
    "held",
    _STATE,
    sa.Column("incident_id", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, primary_key=True),
    sa.Column("group_key", sa.Text, nullable=False),
    sa.Column("alert", sa.Text, nullable=False),
    sa.Column("held_at", sa.Float, nullable=False),
)
_WINDOWS = sa.Table(
    "windows",
    _STATE,
    sa.Column("group_key", sa.Text, primary_key=True),
    sa.Column("opened_at", sa.Float, nullable=False),
)


class _DeliveryState:
    """What was sent where and when, what is held, and when each group's window opened: a SQLite file, or
    the platform's state database (`resources/state/database.py`). One short transaction per call: a
    sensor tick is seconds apart, not microseconds."""

    def __init__(self, location: StateLocation) -> None:
        self._db = StateDatabase(location)
        self._db.create(_STATE)

    def was_sent(self, incident_id: str, kind: str, channel: str) -> bool:
        query = sa.select(_SENT.c.incident_id).where(
            _SENT.c.incident_id == incident_id, _SENT.c.kind == kind, _SENT.c.channel == channel
        )
        with self._db.begin() as db:
            return db.execute(query).first() is not None

    def last_sent(self, incident_id: str, kinds: tuple[str, ...], channel: str) -> float | None:
        """When `channel` last got an alert of one of `kinds` of the incident (Unix seconds), if ever."""
        query = sa.select(sa.func.max(_SENT.c.sent_at)).where(
            _SENT.c.incident_id == incident_id, _SENT.c.kind.in_(kinds), _SENT.c.channel == channel
        )
        with self._db.begin() as db:
            return db.execute(query).scalar()

    def channels_reached(self, incident_id: str, kind: str | None = None) -> list[str]:
        """Channels that received any alert (or an alert of `kind`) of the incident, first reached first."""
        query = sa.select(_SENT.c.channel).where(_SENT.c.incident_id == incident_id)
        if kind is not None:
            query = query.where(_SENT.c.kind == kind)
        query = query.group_by(_SENT.c.channel).order_by(sa.func.min(_SENT.c.sent_at), _SENT.c.channel)
        with self._db.begin() as db:
            return [channel for (channel,) in db.execute(query)]

    def record_sent(self, alerts: Iterable[Alert], channel: str, now: datetime) -> None:
        with self._db.begin() as db:
            for alert in alerts:
                row = {"incident_id": alert.incident_id, "kind": alert.kind, "channel": channel}
                self._db.upsert(db, _SENT, {**row, "sent_at": now.timestamp()})

    def is_held(self, incident_id: str, kind: str) -> bool:
        query = sa.select(_HELD.c.incident_id).where(_HELD.c.incident_id == incident_id, _HELD.c.kind == kind)
        with self._db.begin() as db:
            return db.execute(query).first() is not None

    def hold(self, alert: Alert, now: datetime) -> None:
        row = {
            "incident_id": alert.incident_id,
            "kind": alert.kind,
            "group_key": alert.group_key,
            "alert": json.dumps(alert.as_dict()),
            "held_at": now.timestamp(),
        }
        with self._db.begin() as db:
            self._db.insert_new(db, _HELD, row)

    def held(self, group_key: str) -> list[Alert]:
        query = (
            sa.select(_HELD.c.alert)
            .where(_HELD.c.group_key == group_key)
            .order_by(_HELD.c.held_at, _HELD.c.incident_id)
        )
        with self._db.begin() as db:
            return [Alert.from_dict(json.loads(alert)) for (alert,) in db.execute(query)]

    def release(self, group_key: str) -> None:
        with self._db.begin() as db:
            db.execute(sa.delete(_HELD).where(_HELD.c.group_key == group_key))

    def drop_held(self, incident_id: str) -> None:
        with self._db.begin() as db:
            db.execute(sa.delete(_HELD).where(_HELD.c.incident_id == incident_id))

    def groups_holding(self) -> list[tuple[str, datetime]]:
        """Groups with held alerts and when their window opened."""
        query = (
            sa.select(_WINDOWS.c.group_key, _WINDOWS.c.opened_at)
            .where(_WINDOWS.c.group_key.in_(sa.select(_HELD.c.group_key)))
            .order_by(_WINDOWS.c.group_key)
        )
        with self._db.begin() as db:
            return [(group_key, _from_timestamp(opened)) for group_key, opened in db.execute(query)]

    def window_opened(self, group_key: str) -> datetime | None:
        query = sa.select(_WINDOWS.c.opened_at).where(_WINDOWS.c.group_key == group_key)
        with self._db.begin() as db:
            opened = db.execute(query).scalar()
        return _from_timestamp(opened) if opened is not None else None

    def open_window(self, group_key: str, now: datetime) -> None:
        with self._db.begin() as db:
            self._db.upsert(db, _WINDOWS, {"group_key": group_key, "opened_at": now.timestamp()})


def _from_timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
