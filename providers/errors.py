"""The provider error hierarchy: each class tells the registry what to do with a failure.

- `TransientError` (timeout, connection error, 5xx, protocol hiccup): retry with backoff.
- `RateLimitedError`: retry after `retry_after` seconds (also feeds the circuit breaker cool-down).
- `BlockedError`, `SchemaChangedError`, `EmptyPayloadError`, `UnknownSymbolError`: this provider
  cannot answer now; fail over to the next one at once, without retrying.
- `InvalidRequestError`: the caller asked for something no provider can serve (an unknown interval,
  a malformed symbol); stop at once — failing over would only repeat the mistake.
- `AllProvidersFailedError`: what the caller gets when every provider failed; it lists each one.

Messages must never contain secrets (tokens, cookies): they reach logs, artifacts and the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class ProviderError(Exception):
    """Base class for every failure a provider reports."""

    #: Whether the registry should retry the same provider.
    retryable: bool = False
    #: Whether the registry should try the next provider.
    fail_over: bool = True

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider

    def __str__(self) -> str:
        return f"{self.provider}: {self.message}" if self.provider else self.message


class TransientError(ProviderError):
    """Timeout, connection failure, 5xx, dropped stream: worth retrying the same provider."""

    retryable = True


class RateLimitedError(TransientError):
    """HTTP 429 or equivalent; `retry_after` seconds, when the provider said so."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, provider: str | None = None
    ) -> None:
        super().__init__(message, provider=provider)
        self.retry_after = retry_after


class ProtocolError(TransientError):
    """The peer broke the wire protocol (bad framing, bad JSON): reconnecting may cure it."""


class BlockedError(ProviderError):
    """Bot protection answered (401/403, an HTML 'Access Denied' page)."""


class SchemaChangedError(ProviderError):
    """The payload is JSON but not the shape we know; `key` names what was missing or wrong."""

    def __init__(
        self, message: str, *, key: str | None = None, provider: str | None = None
    ) -> None:
        super().__init__(message, provider=provider)
        self.key = key


class EmptyPayloadError(ProviderError):
    """A well-formed answer with no data (`{}`, no rows)."""


class UnknownSymbolError(ProviderError):
    """This provider does not know the symbol or underlying; another one might."""


class UnsupportedOperationError(ProviderError):
    """This provider cannot serve this kind of request (NSE cannot answer "as of HH:MM")."""


class InvalidRequestError(ProviderError):
    """The caller's request is invalid for every provider (unknown interval, malformed symbol)."""

    fail_over = False


@dataclass(frozen=True, slots=True)
class ProviderFailure:
    provider: str
    error_class: str
    message: str


class AllProvidersFailedError(Exception):
    """Every provider failed for one operation; `failures` holds each provider's last failure."""

    def __init__(self, operation: str, failures: Sequence[ProviderFailure]) -> None:
        self.operation = operation
        self.failures = list(failures)
        if self.failures:
            detail = "; ".join(f"{f.provider}: {f.error_class}: {f.message}" for f in self.failures)
        else:
            detail = "no provider is enabled"
        super().__init__(f"{operation}: every provider failed ({detail})")
