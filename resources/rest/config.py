"""How to call a REST API: authentication, pagination, incremental parameter, rate limit and retries, as
declared in the catalog. Secret-bearing fields hold `${ENV_VAR}` references, resolved at the moment of use."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoAuth(Strict):
    kind: Literal["none"] = "none"


class ApiKeyAuth(Strict):
    kind: Literal["api_key"]
    name: str = Field(description="Header or query parameter name, e.g. `X-API-Key`.")
    value: str = Field(description="`${ENV_VAR}` reference.")
    location: Literal["header", "query"] = "header"


class BearerAuth(Strict):
    kind: Literal["bearer"]
    token: str


class BasicAuth(Strict):
    kind: Literal["basic"]
    username: str
    password: str


class OAuth2ClientCredentials(Strict):
    kind: Literal["oauth2_client_credentials"]
    token_url: str
    client_id: str
    client_secret: str
    scope: str | None = None
    client_auth: Literal["basic", "body"] = Field(
        default="basic",
        description="How the client authenticates to the token URL: HTTP basic (RFC 6749 preferred) or "
        "client_id/client_secret in the form body, for servers that only accept that.",
    )


Auth = Annotated[
    NoAuth | ApiKeyAuth | BearerAuth | BasicAuth | OAuth2ClientCredentials, Field(discriminator="kind")
]


class NoPagination(Strict):
    kind: Literal["none"] = "none"


class PageNumberPagination(Strict):
    """`?page=1,2,...` until a page has no records (or `total_pages_path` is reached)."""

    kind: Literal["page_number"]
    page_param: str = "page"
    start: int = 1
    page_size_param: str | None = None
    page_size: int | None = Field(default=None, gt=0)
    total_pages_path: str | None = None


class OffsetPagination(Strict):
    """`?offset=0&limit=N`, advancing by the records received, to a short or empty page (or `total_path`)."""

    kind: Literal["offset"]
    offset_param: str = "offset"
    limit_param: str = "limit"
    limit: int = Field(default=100, gt=0)
    total_path: str | None = None


class CursorPagination(Strict):
    """The response body carries the next cursor at `cursor_path`; sent back as `cursor_param`, none ends."""

    kind: Literal["cursor"]
    cursor_path: str
    cursor_param: str = "cursor"


class NextUrlPagination(Strict):
    """The response body carries the full URL of the next page at `next_url_path`."""

    kind: Literal["next_url"]
    next_url_path: str = "next"


class LinkHeaderPagination(Strict):
    """RFC 8288 `Link: <...>; rel="next"` response header."""

    kind: Literal["link_header"]


Pagination = Annotated[
    NoPagination
    | PageNumberPagination
    | OffsetPagination
    | CursorPagination
    | NextUrlPagination
    | LinkHeaderPagination,
    Field(discriminator="kind"),
]


class IncrementalParam(Strict):
    """Send the watermark as query parameter `param`; the new watermark: greatest `cursor_field` seen."""

    param: str
    cursor_field: str
    initial_value: str | None = None
    until_param: str | None = Field(
        default=None,
        description="The query parameter the API reads an upper bound from (e.g. `updated_before`): needed "
        "only to re-extract a bounded range (`dataplatform backfill --until`).",
    )


class RateLimit(Strict):
    requests_per_second: float = Field(gt=0)
    burst: int = Field(default=1, ge=1)


class RetryPolicy(Strict):
    """Retried: connection errors, timeouts, 429 and 5xx (honouring `Retry-After`); never other 4xx."""

    max_attempts: int = Field(default=5, ge=1)
    backoff_seconds: float = Field(default=0.5, gt=0, description="Base of the exponential backoff.")
    max_backoff_seconds: float = Field(default=30, gt=0)


class RestConnection(Strict):
    base_url: str
    auth: Auth = NoAuth()
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float = Field(default=30, gt=0)
    rate_limit: RateLimit | None = None
    retry: RetryPolicy = RetryPolicy()


class RestEndpoint(Strict):
    """One entity's endpoint: path below the base URL, fixed parameters, where the records are."""

    path: str
    params: dict[str, str] = Field(default_factory=dict)
    record_path: str | None = Field(default=None, description="Dotted path to the record array, e.g. `data`.")
    pagination: Pagination = NoPagination()
    incremental: IncrementalParam | None = None
    max_pages: int | None = Field(
        default=None, gt=0, description="Hard cap on the pages one extraction fetches; more is an error."
    )
