"""The one exception hierarchy of proxygate.

    ProxyError                       anything proxygate reports to a user or client
    ├── ClientError                  the request itself is wrong: 4xx, never failed over
    │   ├── Unauthorized             missing or wrong proxy token
    │   ├── BodyTooLarge             over max_body_mb
    │   ├── ModelNotAllowed          outside a tenant's ``models`` globs (403)
    │   ├── TenantLimitReached       a tenant's rpm/tpm/concurrency/daily/monthly limit (429)
    │   └── NoAccountForModel        nothing in the pool serves the model
    ├── UpstreamError                the provider failed; the broker may fail over
    │   ├── RateLimited              429 (retry_after_s when the provider said)
    │   ├── Overloaded               529 / 503: capacity, not quota
    │   ├── UpstreamTimeout          connect / first byte / idle deadline passed
    │   ├── ConnectionLost           reset, refused, truncated stream or answer
    │   └── ResponseLimit            the answer passed max_response_mb or max_stream_s
    ├── AllAccountsBusy              every candidate is cooling down (a 429 to the client)
    ├── PoolError                    a pool file or account id problem (CLI)
    ├── StoreError                   the usage store cannot be opened or written
    └── ConfigError                  a bad setting: names the key and where it came from

Each class carries an IR ``error_class`` and an HTTP ``status`` (protocols.md §5.12); one
renderer per wire format (``wire/errors.py``) turns it into the client's body. Messages name
the thing and what happened, never a token or key.
"""

from __future__ import annotations


class ProxyError(Exception):
    error_class = "server"
    status = 500

    def __init__(self, message: str, *, status: int | None = None, error_class: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if error_class is not None:
            self.error_class = error_class


class ClientError(ProxyError):
    error_class = "invalid_request"
    status = 400


class Unauthorized(ClientError):
    error_class = "authentication"
    status = 401


class BodyTooLarge(ClientError):
    error_class = "too_large"
    status = 413


class ModelNotAllowed(ClientError):
    error_class = "permission"
    status = 403


class TenantLimitReached(ClientError):
    """A tenant's own limit (features/tenants.py): 429 with when the request would be accepted."""

    error_class = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NoAccountForModel(ClientError):
    error_class = "not_found"
    status = 404


class UpstreamError(ProxyError):
    error_class = "server"
    status = 502


class RateLimited(UpstreamError):
    error_class = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Overloaded(UpstreamError):
    error_class = "overloaded"
    status = 529


class UpstreamTimeout(UpstreamError):
    error_class = "timeout"
    status = 504


class ConnectionLost(UpstreamError):
    error_class = "server"
    status = 502


class ResponseLimit(UpstreamError):
    """The answer passed a local cap (``max_response_mb``, ``max_stream_s``). Never failed over
    and never a cooldown: any account would pass the same cap on the same request."""

    error_class = "server"
    status = 502


class AllAccountsBusy(ProxyError):
    error_class = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PoolError(ProxyError):
    error_class = "invalid_request"
    status = 400


class StoreError(ProxyError):
    pass


class ConfigError(ProxyError):
    pass
