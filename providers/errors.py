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

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from providers.records import AttemptRecord


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
    """Every provider failed for one operation; `failures` holds each provider's last failure.

    `attempts` holds every try of the call (retries included), so a caller can show an operator
    exactly what happened without reading the lake.
    """

    def __init__(
        self,
        operation: str,
        failures: Sequence[ProviderFailure],
        *,
        attempts: Sequence[AttemptRecord] = (),
    ) -> None:
        self.operation = operation
        self.failures = list(failures)
        self.attempts = list(attempts)
        if self.failures:
            detail = "; ".join(f"{f.provider}: {f.error_class}: {f.message}" for f in self.failures)
        else:
            detail = "no provider is enabled"
        super().__init__(f"{operation}: every provider failed ({detail})")


class NoCapableProviderError(AllProvidersFailedError, InvalidRequestError):
    """No enabled provider declares what an operation needs (a capability, an interval, that
    many bars); none was asked.

    Raised by the registry before any attempt, so it leaves no attempt record and says nothing
    about any provider's health. It is also an `InvalidRequestError`: as configured, the request
    is one no provider can serve, and retrying or failing over cannot change that.
    """

    def __init__(self, operation: str, capability: str, enabled: Sequence[str]) -> None:
        super().__init__(operation, [])
        self.capability = capability
        self.enabled = list(enabled)
        names = ", ".join(self.enabled) or "none"
        # The generic text is already set; replace it with the real reason.
        self.message = (
            f"{operation}: no enabled provider supports {capability!r} (enabled: {names})"
        )
        self.args = (self.message,)


#: `describe_network_failure`'s reason when the host name did not resolve (DNS).
UNKNOWN_HOST = "unknown host"


def describe_network_failure(exc: BaseException) -> str | None:
    """A short reason for a failed connection, from the OS error under `exc`; None if none.

    Client libraries wrap the OS error (often twice, behind a generic "All connection attempts
    failed"); the useful word ("refused", "reset", an unknown host) is at the bottom of the chain.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, socket.gaierror):
            return UNKNOWN_HOST
        if isinstance(current, ConnectionRefusedError):
            return "connection refused"
        if isinstance(current, ConnectionResetError):
            return "connection reset"
        if isinstance(current, TimeoutError):
            return "timed out"
        if isinstance(current, OSError) and current.errno is not None and current.strerror:
            return current.strerror.lower()
        current = current.__cause__ or current.__context__
    return None
