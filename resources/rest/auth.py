"""Authentication for REST APIs: the catalog's five kinds as `requests` auth objects.

Secret fields stay `${ENV_VAR}` references until the first request needs them. Each scheme reports the
values it resolved (and the access tokens it obtained), raw and URL-encoded, so that the client can mask
them in every URL and message; nothing here logs a value.

OAuth2 client credentials (RFC 6749 section 4.4): the client authenticates to the token URL with HTTP
basic (the RFC's preferred method, id and secret form-encoded first) or, when configured, in the form body.
The token is cached until shortly before `expires_in` (until the API rejects it when the server gives no
lifetime); a 401 from the API drops it, and the client repeats the request once with a fresh one.
"""

from __future__ import annotations

import threading
from urllib.parse import quote, quote_plus, unquote_plus, urlencode, urlsplit, urlunsplit

import requests
from requests.auth import HTTPBasicAuth

from resources.rest.client import SYSTEM_CLOCK, Clock, RestClient, RestResponseError
from resources.rest.config import (
    ApiKeyAuth,
    BasicAuth,
    BearerAuth,
    OAuth2ClientCredentials,
    RestConnection,
)
from resources.secrets import env_references, resolve_env

_MAX_EXPIRY_MARGIN_SECONDS = 30.0


class ConfiguredValue:
    """A configuration value that may reference environment variables, resolved on first use."""

    def __init__(self, text: str, where: str) -> None:
        self._text = text
        self._where = where
        self._value: str | None = None

    @property
    def value(self) -> str:
        if self._value is None:
            self._value = resolve_env(self._text, where=self._where)
        return self._value

    def env_vars(self) -> list[str]:
        return env_references(self._text)

    def forms(self) -> list[str]:
        """The value as it may appear in text (raw, URL-encoded); nothing before it was resolved."""
        return [] if self._value is None else secret_forms(self._value)


def secret_forms(value: str) -> list[str]:
    return [value, quote(value, safe=""), quote_plus(value)]


class ApiAuth(requests.auth.AuthBase):
    """No credentials; the base of the schemes below, which override what they need."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return request

    def secrets(self) -> list[str]:
        return []

    def env_vars(self) -> list[str]:
        return []

    def renew_after_unauthorized(self) -> bool:
        return False

    def without_credentials(self, url: str) -> str:
        return url

    def close(self) -> None:
        """Release what the scheme holds open (the OAuth2 token client)."""


class ApiKeyCredentials(ApiAuth):
    """An API key in a header or a query parameter (replacing one the URL may already carry)."""

    def __init__(self, config: ApiKeyAuth) -> None:
        self._name = config.name
        self._in_query = config.location == "query"
        self._key = ConfiguredValue(config.value, where=f"api_key auth {config.name}")

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self._in_query:
            request.url = with_query_param(request.url or "", self._name, self._key.value)
        else:
            request.headers[self._name] = self._key.value
        return request

    def secrets(self) -> list[str]:
        return self._key.forms()

    def env_vars(self) -> list[str]:
        return self._key.env_vars()

    def without_credentials(self, url: str) -> str:
        return without_query_param(url, self._name) if self._in_query else url


class BearerToken(ApiAuth):
    def __init__(self, config: BearerAuth) -> None:
        self._token = ConfiguredValue(config.token, where="bearer auth token")

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token.value}"
        return request

    def secrets(self) -> list[str]:
        return self._token.forms()

    def env_vars(self) -> list[str]:
        return self._token.env_vars()


class BasicCredentials(ApiAuth):
    """HTTP basic in UTF-8 (RFC 7617); `form_encoded` applies RFC 6749's encoding of client id and secret
    first."""

    def __init__(self, username: str, password: str, *, where: str, form_encoded: bool = False) -> None:
        self._username = ConfiguredValue(username, where=f"{where} username")
        self._password = ConfiguredValue(password, where=f"{where} password")
        self._form_encoded = form_encoded

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        username, password = self._username.value, self._password.value
        if self._form_encoded:
            username, password = quote_plus(username), quote_plus(password)
        return HTTPBasicAuth(username.encode(), password.encode())(request)

    def secrets(self) -> list[str]:
        return self._password.forms()

    def env_vars(self) -> list[str]:
        return self._username.env_vars() + self._password.env_vars()


class ClientSecretInBody(ApiAuth):
    """OAuth2 client authentication by `client_id` and `client_secret` added to the form body."""

    def __init__(self, client_id: str, client_secret: str) -> None:
        self._client_id = ConfiguredValue(client_id, where="oauth2 client_id")
        self._client_secret = ConfiguredValue(client_secret, where="oauth2 client_secret")

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        fields = urlencode({"client_id": self._client_id.value, "client_secret": self._client_secret.value})
        body = request.body.decode() if isinstance(request.body, bytes) else request.body or ""
        request.body = f"{body}&{fields}" if body else fields
        request.prepare_content_length(request.body)
        return request

    def secrets(self) -> list[str]:
        return self._client_secret.forms()

    def env_vars(self) -> list[str]:
        return self._client_id.env_vars() + self._client_secret.env_vars()


class OAuth2ClientCredentialsFlow(ApiAuth):
    """A bearer token from the token URL, cached and shared by threads, renewed when it expires or fails."""

    def __init__(
        self, config: OAuth2ClientCredentials, token_client: RestClient, client_auth: ApiAuth, clock: Clock
    ) -> None:
        self._token_url = config.token_url
        self._scope = config.scope
        self._token_client = token_client
        self._client_auth = client_auth
        self._clock = clock
        self._token: str | None = None
        self._expires_at: float | None = None
        self._issued: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._current_token()}"
        return request

    def secrets(self) -> list[str]:
        return self._client_auth.secrets() + [form for token in self._issued for form in secret_forms(token)]

    def env_vars(self) -> list[str]:
        return self._client_auth.env_vars()

    def renew_after_unauthorized(self) -> bool:
        with self._lock:
            self._token = None
        return True

    def close(self) -> None:
        self._token_client.close()

    def _current_token(self) -> str:
        with self._lock:
            expired = self._expires_at is not None and self._clock.monotonic() >= self._expires_at
            if self._token is None or expired:
                self._token, self._expires_at = self._fetch_token()
            return self._token

    def _fetch_token(self) -> tuple[str, float | None]:
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        requested_at = self._clock.monotonic()
        response = self._token_client.post_form(self._token_url, form)
        body = response.body if isinstance(response.body, dict) else {}
        token, token_type = body.get("access_token"), str(body.get("token_type", "bearer"))
        if not isinstance(token, str) or not token or token_type.lower() != "bearer":
            raise RestResponseError(
                f"The token response of {response.shown_url} has no bearer access_token "
                f"(keys: {sorted(body)}, token_type {token_type!r}).",
                url=response.shown_url,
            )
        self._issued.append(token)
        lifetime = body.get("expires_in")
        if lifetime is None:
            return token, None
        try:
            seconds = float(lifetime)
        except (TypeError, ValueError):
            raise RestResponseError(
                f"The token response of {response.shown_url} has a non-numeric expires_in {lifetime!r}.",
                url=response.shown_url,
            ) from None
        return token, requested_at + seconds - min(_MAX_EXPIRY_MARGIN_SECONDS, seconds / 10)


def build_auth(connection: RestConnection, clock: Clock = SYSTEM_CLOCK) -> ApiAuth:
    """The credentials of a connection; OAuth2 gets a token client with the connection's timeout and retry
    policy (not its rate limit or headers, which belong to the API)."""
    config = connection.auth
    if isinstance(config, ApiKeyAuth):
        return ApiKeyCredentials(config)
    if isinstance(config, BearerAuth):
        return BearerToken(config)
    if isinstance(config, BasicAuth):
        return BasicCredentials(config.username, config.password, where="basic auth")
    if isinstance(config, OAuth2ClientCredentials):
        client_auth: ApiAuth = (
            BasicCredentials(config.client_id, config.client_secret, where="oauth2 client", form_encoded=True)
            if config.client_auth == "basic"
            else ClientSecretInBody(config.client_id, config.client_secret)
        )
        token_client = RestClient(
            auth=client_auth, timeout_seconds=connection.timeout_seconds, retry=connection.retry, clock=clock
        )
        return OAuth2ClientCredentialsFlow(config, token_client, client_auth, clock)
    return ApiAuth()


def with_query_param(url: str, name: str, value: str) -> str:
    """`url` with query parameter `name` set to `value`, other parameters left byte for byte."""
    parts = urlsplit(without_query_param(url, name))
    pair = f"{quote_plus(name)}={quote_plus(value)}"
    return urlunsplit(parts._replace(query=f"{parts.query}&{pair}" if parts.query else pair))


def without_query_param(url: str, name: str) -> str:
    parts = urlsplit(url)
    kept = [pair for pair in parts.query.split("&") if pair and unquote_plus(pair.partition("=")[0]) != name]
    return urlunsplit(parts._replace(query="&".join(kept)))
