"""Every auth kind checked by a real loopback server; OAuth2 tokens fetched once, renewed when they expire
or are refused; secrets resolved from the environment and kept out of every message and log line."""

from __future__ import annotations

import base64
import logging
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus, unquote_plus

import pytest
from rest_test_server import (
    Recorded,
    Reply,
    ScriptedServer,
    endpoint_for,
    items,
    json_reply,
    paged_items,
    unused_port,
)

from resources.rest.client import Clock, RestApiError, RestRetriesExhaustedError, RestStatusError
from resources.rest.config import RestConnection, RestEndpoint, RetryPolicy
from resources.rest.source import RestApiSource
from resources.secrets import MissingSecretError

API_KEY = "k3y+with/odd=chars&?"
FAST_RETRY = RetryPolicy(max_attempts=2, backoff_seconds=0.001, max_backoff_seconds=0.01)


def connect(base_url: str, auth: dict[str, Any], clock: Clock | None = None) -> RestApiSource:
    connection = RestConnection.model_validate({"base_url": base_url, "auth": auth, "retry": FAST_RETRY})
    return RestApiSource(connection, clock=clock or Clock())


def guarded(check: Any) -> Any:
    """A handler serving three pages of items to requests that `check` accepts, 401 to others."""
    serve = paged_items(items(12), "page_number")

    def handle(request: Recorded) -> Reply:
        return serve(request) if check(request) else json_reply({"error": "unauthorized"}, 401)

    return handle


def basic_credentials(request: Recorded) -> tuple[str, str]:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    assert scheme == "Basic"
    user, _, password = base64.b64decode(encoded).decode().partition(":")
    return user, password


def read_all(source: RestApiSource) -> list[dict[str, Any]]:
    return [record for page in source.pages(endpoint_for("page_number")) for record in page.records]


def test_no_auth_sends_no_credentials() -> None:
    with ScriptedServer(guarded(lambda request: "authorization" not in request.headers)) as server:
        assert read_all(connect(server.base_url, {"kind": "none"})) == items(12)


def test_api_key_in_a_header_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_KEY", API_KEY)
    auth = {"kind": "api_key", "name": "X-API-Key", "value": "${SHOP_KEY}"}
    with ScriptedServer(guarded(lambda request: request.headers.get("x-api-key") == API_KEY)) as server:
        assert read_all(connect(server.base_url, auth)) == items(12)


def test_api_key_in_the_query_is_encoded_sent_once_and_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_KEY", API_KEY)
    auth = {"kind": "api_key", "name": "api_key", "value": "${SHOP_KEY}", "location": "query"}

    def echoes_the_key(request: Recorded) -> Reply:
        """Like many APIs, put every parameter, the key included, into the next link."""
        if parse_qs(request.target.partition("?")[2]).get("api_key") != [API_KEY]:
            return json_reply({"error": "unauthorized"}, 401)
        page = int(request.query.get("page", "1"))
        next_link = f"/items?page={page + 1}&api_key={quote_plus(API_KEY)}" if page < 3 else None
        return json_reply({"data": [{"page": page}], "links": {"next": next_link}})

    with ScriptedServer(echoes_the_key) as server:
        pages = list(connect(server.base_url, auth).pages(endpoint_for("next_url")))
    assert [page.records for page in pages] == [[{"page": 1}], [{"page": 2}], [{"page": 3}]]
    assert pages[0].request_url == f"{server.base_url}/items?api_key=***"
    for page in pages:
        assert API_KEY not in str(page.resume_after) and quote_plus(API_KEY) not in str(page.resume_after)
        assert quote_plus(API_KEY) not in page.request_url


def test_bearer_token() -> None:
    with ScriptedServer(
        guarded(lambda request: request.headers.get("authorization") == "Bearer t0k")
    ) as server:
        assert read_all(connect(server.base_url, {"kind": "bearer", "token": "t0k"})) == items(12)


def test_basic_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_PASSWORD", "pä:ss")
    auth = {"kind": "basic", "username": "reader", "password": "${API_PASSWORD}"}
    check = guarded(lambda request: basic_credentials(request) == ("reader", "pä:ss"))
    with ScriptedServer(check) as server:
        assert read_all(connect(server.base_url, auth)) == items(12)


class OAuthServer:
    """A token endpoint and an API on one server; tokens can be revoked and counted."""

    def __init__(self, client_auth: str = "basic", expires_in: int | None = 3600) -> None:
        self.client_auth = client_auth
        self.expires_in = expires_in
        self.issued: list[str] = []
        self.valid: set[str] = set()
        self.api = paged_items(items(12), "page_number")

    def __call__(self, request: Recorded) -> Reply:
        if request.path == "/oauth/token":
            return self.token(request)
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        return self.api(request) if token in self.valid else json_reply({"error": "invalid_token"}, 401)

    def token(self, request: Recorded) -> Reply:
        form = {name: values[0] for name, values in parse_qs(request.body.decode()).items()}
        if self.client_auth == "basic":
            user, password = basic_credentials(request)
            client = (unquote_plus(user), unquote_plus(password))
        else:
            client = (form.get("client_id", ""), form.get("client_secret", ""))
        if client != ("my client", "s3cr:et&") or form.get("grant_type") != "client_credentials":
            return json_reply({"error": "invalid_client"}, 401)
        assert form.get("scope") == "catalog:read"
        token = f"token-{len(self.issued) + 1}"
        self.issued.append(token)
        self.valid.add(token)
        body: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return json_reply(body)

    def revoke_all(self) -> None:
        self.valid.clear()


def oauth(base_url: str, client_auth: str = "basic") -> dict[str, Any]:
    return {
        "kind": "oauth2_client_credentials",
        "token_url": f"{base_url}/oauth/token",
        "client_id": "${CLIENT_ID}",
        "client_secret": "${CLIENT_SECRET}",
        "scope": "catalog:read",
        "client_auth": client_auth,
    }


@pytest.fixture
def oauth_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIENT_ID", "my client")
    monkeypatch.setenv("CLIENT_SECRET", "s3cr:et&")


@pytest.mark.usefixtures("oauth_env")
@pytest.mark.parametrize("client_auth", ["basic", "body"])
def test_oauth2_token_is_fetched_once_for_all_pages(client_auth: str) -> None:
    api = OAuthServer(client_auth)
    with ScriptedServer(api) as server:
        assert read_all(connect(server.base_url, oauth(server.base_url, client_auth))) == items(12)
    assert api.issued == ["token-1"]
    assert [request.path for request in server.requests].count("/oauth/token") == 1


@pytest.mark.usefixtures("oauth_env")
def test_oauth2_token_is_renewed_shortly_before_it_expires() -> None:
    api = OAuthServer(expires_in=60)
    now = [1000.0]
    clock = Clock(monotonic=lambda: now[0])
    with ScriptedServer(api) as server:
        source = connect(server.base_url, oauth(server.base_url), clock)
        single = RestEndpoint(path="/items", record_path="data")
        list(source.pages(single))
        now[0] += 50  # within the margin: 60 s lifetime, renewed 6 s early
        list(source.pages(single))
        now[0] += 5
        list(source.pages(single))
    assert api.issued == ["token-1", "token-2"]
    assert [request.path for request in server.requests] == [
        "/oauth/token",
        "/items",
        "/items",
        "/oauth/token",
        "/items",
    ]


@pytest.mark.usefixtures("oauth_env")
@pytest.mark.parametrize("expires_in", [3600, None])
def test_oauth2_token_refused_by_the_api_is_renewed_once_and_the_request_repeated(
    expires_in: int | None,
) -> None:
    api = OAuthServer(expires_in=expires_in)
    with ScriptedServer(api) as server:
        pages = connect(server.base_url, oauth(server.base_url)).pages(endpoint_for("page_number"))
        first = next(pages)
        api.revoke_all()
        rest = list(pages)
    assert [record for page in [first, *rest] for record in page.records] == items(12)
    assert api.issued == ["token-1", "token-2"]
    api_calls = [
        request.headers.get("authorization") for request in server.requests if request.path == "/items"
    ]
    assert [request.path for request in server.requests].count("/oauth/token") == 2
    assert api_calls[1:3] == ["Bearer token-1", "Bearer token-2"]  # refused, then repeated with a new token


@pytest.mark.usefixtures("oauth_env")
def test_oauth2_a_token_refused_twice_fails_with_the_credentials_hint() -> None:
    api = OAuthServer()
    api.valid = set()
    api.api = lambda request: json_reply({"error": "invalid_token"}, 401)
    with (
        ScriptedServer(api) as server,
        pytest.raises(RestStatusError, match="CLIENT_ID, CLIENT_SECRET") as info,
    ):
        read_all(connect(server.base_url, oauth(server.base_url)))
    assert info.value.status_code == 401
    assert [request.path for request in server.requests] == [
        "/oauth/token",
        "/items",
        "/oauth/token",
        "/items",
    ]


@pytest.mark.usefixtures("oauth_env")
def test_oauth2_wrong_client_secret_fails_at_the_token_url_without_showing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLIENT_SECRET", "wrong-secret")
    with ScriptedServer(OAuthServer()) as server, pytest.raises(RestStatusError) as info:
        read_all(connect(server.base_url, oauth(server.base_url)))
    assert f"{server.base_url}/oauth/token failed with HTTP 401" in str(info.value)
    assert "CLIENT_ID, CLIENT_SECRET" in str(info.value)
    assert "wrong-secret" not in str(info.value)


def test_a_missing_environment_variable_is_named() -> None:
    auth = {"kind": "bearer", "token": "${NOT_SET_ANYWHERE_42}"}
    with ScriptedServer(lambda request: json_reply([])) as server, pytest.raises(MissingSecretError) as info:
        read_all(connect(server.base_url, auth))
    assert "NOT_SET_ANYWHERE_42" in str(info.value)
    assert server.requests == []


def key_free(text: str) -> bool:
    return all(form not in text for form in (API_KEY, quote_plus(API_KEY), quote(API_KEY, safe="")))


@pytest.mark.parametrize(
    "reply",
    [json_reply({"error": "no such thing"}, 404), json_reply({"error": "down"}, 503), None],
    ids=["404", "503-exhausted", "connection-refused"],
)
def test_the_api_key_appears_in_no_error_message_or_log_line(
    reply: Reply | None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SHOP_KEY", API_KEY)
    auth = {"kind": "api_key", "name": "api_key", "value": "${SHOP_KEY}", "location": "query"}
    caplog.set_level(logging.DEBUG)
    with ScriptedServer(lambda request: reply or json_reply([])) as server:
        base_url = server.base_url if reply else f"http://127.0.0.1:{unused_port()}"
        with pytest.raises(RestApiError) as info:
            read_all(connect(base_url, auth))
    chain: list[BaseException] = []
    error: BaseException | None = info.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert "api_key=***" in str(info.value)
    assert all(key_free(str(error)) and key_free(repr(error)) for error in chain)
    assert key_free(caplog.text)
    if reply is None:
        assert isinstance(info.value, RestRetriesExhaustedError) and len(chain) == 2
