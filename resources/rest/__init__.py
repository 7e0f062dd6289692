"""REST API sources: `config` (endpoint, auth and pagination models), `client` (HTTP with
retries and backoff), `auth` (API key, bearer, basic, OAuth2 client credentials), `pagination` (cursor, page,
offset, next URL, link header), `source` (`RestApiSource`: pages in, Arrow batches out, resumable).
"""
