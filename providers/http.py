"""Shared HTTP session code for the web-scraping providers (NSE, Trendlyne).

One job: turn an HTTP exchange into either decoded JSON or one typed `ProviderError`, with a
browser identity, explicit timeouts and a per-session rate limit. Payload parsing lives in each
provider's own pure module; nothing here knows a provider's JSON shape.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import ssl
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar

import certifi
import httpx
from aiolimiter import AsyncLimiter

from providers.errors import (
    UNKNOWN_HOST,
    BlockedError,
    InvalidRequestError,
    ProtocolError,
    ProviderError,
    RateLimitedError,
    SchemaChangedError,
    TransientError,
    describe_network_failure,
)
from providers.journal import (
    NULL_SINK,
    JournalEntry,
    PayloadSink,
    http_request_text,
    now_us,
    operation_of,
)
from providers.settings import BROWSER_USER_AGENT

#: Connect fast-fail, but give a slow exchange page time to answer.
DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
DEFAULT_LIMITS = httpx.Limits(max_connections=10, max_keepalive_connections=5, keepalive_expiry=30)
#: NSE asks scrapers to stay near 3 requests/s; Trendlyne gets the same courtesy.
DEFAULT_MAX_RATE = 3.0
#: Requests that may go back to back after a pause, before the pace of `DEFAULT_MAX_RATE`
#: applies. NSE publishes no figure; the evidence is what maintained clients do, and it is thin:
#: - `nse` on PyPI (github.com/BennyThadikaran/NseIndiaApi, src/nse/transport.py) paces every
#:   request with pyrate-limiter's `Limiter(Rate(3, Duration.SECOND))`: 3 requests back to back,
#:   then at most 3 in any second (its README: 3 requests/s, so as not to get blocked).
#: - jugaad-data's maintainer (jugaad-py/jugaad-data issue 59): no client-side limit, NSE's
#:   own limit unknown. NSE's block page (quoted in NSEDownload/NSEDownload issue 34, after ~50
#:   concurrent fetches) names no figure: requests per second above a threshold, IP restricted
#:   for 10 minutes.
#: So the burst is kept to that client's 3, no more. aiolimiter's leaky bucket differs from its
#: window in one way: after a pause up to 5 requests may fall within the first second (3 back to
#: back, then one every 1/3 s), where the window allows 3; the pace after that is the same 3/s.
DEFAULT_BURST = 3


class RateLimiter(Protocol):
    """Paces a session's requests: `await acquire()` returns when one more request may go.

    `aiolimiter.AsyncLimiter` is one (the default: one process's pace). Pacing that must hold
    across processes and hosts sharing one egress IP is injected by the flows (a Prefect global
    concurrency limit used as a rate limit): providers know nothing of Prefect.
    """

    async def acquire(self) -> Any: ...


#: What a provider's constructor accepts as its limiter.
Limiter = RateLimiter

_UNDERLYING_RE = re.compile(r"^[A-Z0-9&-]{1,20}$")

T = TypeVar("T")


class _RedactResponseHeaders(logging.Filter):
    """httpcore logs whole response headers at DEBUG, NSE's Set-Cookie values among them:
    keep the event, drop the values (cookies are session secrets)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg if isinstance(record.msg, str) else ""
        if message.startswith("receive_response_headers") and " " in message:
            record.msg, record.args = message.split(" ", 1)[0] + " [headers redacted]", ()
        return True


# Filters on a logger see only that logger's own records, so each httpcore transport gets one.
for _name in ("httpcore.http11", "httpcore.http2", "httpcore.proxy"):
    logging.getLogger(_name).addFilter(_RedactResponseHeaders())


def browser_headers() -> dict[str, str]:
    """Headers a desktop browser sends; bot protection rejects library defaults."""
    return {
        "User-Agent": BROWSER_USER_AGENT,
        "Accept-Language": "en-US,en;q=0.9,hi;q=0.8",
        "Accept-Encoding": "gzip, deflate, br",
        "Connection": "keep-alive",
    }


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One verified TLS context per process: loading the CA bundle costs ~6 ms per client,
    and every flow run builds fresh clients (sessions are bound to their event loop)."""
    # certifi's bundle, as httpx uses by default (`trust_env=False` ignores SSL_CERT_FILE).
    return ssl.create_default_context(cafile=certifi.where())


def make_async_client(
    *,
    base_url: str = "",
    headers: Mapping[str, str] | None = None,
    timeout: httpx.Timeout | float | None = None,
    limits: httpx.Limits | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The one long-lived client a provider session uses (cookies persist across calls)."""
    merged = browser_headers()
    merged.update(headers or {})
    return httpx.AsyncClient(
        base_url=base_url,
        headers=merged,
        timeout=timeout if timeout is not None else DEFAULT_TIMEOUT,
        limits=limits or DEFAULT_LIMITS,
        transport=transport,
        follow_redirects=True,
        verify=shared_ssl_context(),
        # Proxies from the environment would send NSE cookies through a third party.
        trust_env=False,
    )


def default_limiter() -> AsyncLimiter:
    """`DEFAULT_MAX_RATE` requests/s with a burst of `DEFAULT_BURST` after a pause.

    `AsyncLimiter(max_rate, time_period)` is a leaky bucket holding `max_rate` requests that
    drains at `max_rate / time_period` per second: a bucket of the burst's size, drained at the
    pace, lets the burst go at once and paces the rest.
    """
    return AsyncLimiter(DEFAULT_BURST, DEFAULT_BURST / DEFAULT_MAX_RATE)


async def gather_in_order(calls: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Run `calls` concurrently (each paced by its session's limiter); results in their order.

    Concurrency lets the limiter's waits overlap the round trips and the parsing, instead of
    adding to them. The first failure cancels the calls still running (their data would be
    thrown away) and is raised as itself, a typed `ProviderError`, never an `ExceptionGroup`
    the registry could not classify; when several failed before the cancellation took effect,
    the earliest call's error (in `calls` order) is the one raised.
    """
    tasks: list[asyncio.Task[T]] = []
    failure: BaseException | None = None
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call) for call in calls]
    except BaseExceptionGroup as failed:
        failure = _first_failure(tasks, failed)
    if failure is not None:
        # Raised outside the `except`: the group would otherwise become its `__context__`.
        raise failure
    return [task.result() for task in tasks]


def _first_failure(
    tasks: Sequence[asyncio.Task[Any]], failed: BaseExceptionGroup[BaseException]
) -> BaseException:
    for task in tasks:
        if task.done() and not task.cancelled():
            error = task.exception()
            if error is not None:
                return error
    return failed.exceptions[0]


class HttpSession:
    """A provider's long-lived client and rate limiter, bound to the running event loop.

    An `httpx.AsyncClient` cannot outlive its event loop (Prefect may run each task in a fresh
    loop), so the client is created lazily and recreated when the loop changes.
    """

    def __init__(
        self,
        *,
        provider: str,
        base_url: str,
        transport: httpx.AsyncBaseTransport | None = None,
        limiter: Limiter | None = None,
        timeout: httpx.Timeout | float | None = None,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self._transport = transport
        self._injected_limiter = limiter
        self._limiter: Limiter | None = limiter
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Called whenever a fresh client replaces an old one (cookies are gone).
        self.on_new_client: Callable[[], None] | None = None
        #: Where received bodies are journaled (the flows plug the lake's journal in).
        self.payload_sink: PayloadSink = NULL_SINK
        self._journal_id = uuid.uuid4().hex
        self._journal_seq = 0

    def use_limiter(self, limiter: Limiter) -> None:
        """Pace every later request with `limiter` instead of the process-local default."""
        self._injected_limiter = limiter
        self._limiter = limiter

    @property
    def client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop or self._client.is_closed:
            # An old client belongs to another (usually finished) loop and cannot be used or
            # closed from this one; drop it and start a fresh session.
            self._client = make_async_client(
                base_url=self.base_url, transport=self._transport, timeout=self._timeout
            )
            self._loop = loop
            if self._injected_limiter is None:
                self._limiter = default_limiter()
            if self.on_new_client is not None:
                self.on_new_client()
        return self._client

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one rate-limited request; transport failures become typed errors."""
        client = self.client
        limiter = self._limiter or default_limiter()
        await limiter.acquire()
        try:
            response = await client.request(method, path, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise error_for_exception(exc, provider=self.provider, what=path) from exc
        if self.payload_sink is not NULL_SINK:
            self._journal(method, path, params, response)
        return response

    def _journal(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        response: httpx.Response,
    ) -> None:
        """Record the body as received (after content decoding) when it is a payload.

        HTML documents are left out: they are the cookie-priming page or a bot wall, never
        data a parser could turn into rows, and the page is large. Headers never go in: NSE's
        cookies live there.
        """
        if "html" in response.headers.get("content-type", "").lower():
            return
        self._journal_seq += 1
        self.payload_sink.record(
            JournalEntry(
                received_at_us=now_us(),
                provider=self.provider,
                operation=operation_of(path),
                request=http_request_text(method, path, params),
                payload=response.content,
                connection_id=self._journal_id,
                seq=self._journal_seq,
                status=response.status_code,
            )
        )

    async def aclose(self) -> None:
        client, loop = self._client, self._loop
        self._client, self._loop = None, None
        if client is not None and not client.is_closed and loop is asyncio.get_running_loop():
            try:
                await client.aclose()
            except RuntimeError:
                # Its loop is gone; the sockets went with it.
                pass


def error_for_exception(exc: httpx.HTTPError, *, provider: str, what: str) -> ProviderError:
    """Map an httpx exception (raised before a usable response) to a typed error.

    The text names the host, port and path and the OS's reason ("cannot connect to
    127.0.0.1:9 (connection refused) for /api/x", "cannot resolve host example.invalid for
    /api/x"): operators read it in run artifacts, where "ConnectError" alone says nothing.
    """
    host, where, what = _peer_of(exc, what)
    reason = describe_network_failure(exc)
    if isinstance(exc, httpx.ConnectTimeout):
        return TransientError(
            f"cannot connect to {where} (timed out) for {what}", provider=provider
        )
    if isinstance(exc, httpx.TimeoutException):
        return TransientError(f"request to {where}{what} timed out", provider=provider)
    if isinstance(exc, httpx.DecodingError):
        return ProtocolError(f"response from {where}{what} could not be decoded", provider=provider)
    if isinstance(exc, httpx.ConnectError):
        if reason == UNKNOWN_HOST:
            return TransientError(f"cannot resolve host {host} for {what}", provider=provider)
        detail = reason or type(exc).__name__
        return TransientError(f"cannot connect to {where} ({detail}) for {what}", provider=provider)
    if isinstance(exc, httpx.TransportError):
        detail = reason or type(exc).__name__
        return TransientError(
            f"connection to {where} failed during {what} ({detail})", provider=provider
        )
    return TransientError(
        f"request to {where}{what} failed ({type(exc).__name__})", provider=provider
    )


def _peer_of(exc: httpx.HTTPError, what: str) -> tuple[str, str, str]:
    """Host, "host:port" and path (base URL prefix included, query left out) of the request.

    "?" for the peer, and `what` for the path, when httpx attached no request.
    """
    try:
        url = exc.request.url
    except RuntimeError:  # httpx raises this when the exception carries no request
        return "?", "?", what
    port = url.port or {"https": 443, "http": 80}.get(url.scheme)
    return url.host, f"{url.host}:{port}" if port else url.host, url.path or what


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None if absent."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def looks_like_html(response: httpx.Response) -> bool:
    """True when the body is an HTML page (a bot wall) rather than data."""
    ctype = response.headers.get("content-type", "").lower()
    if "html" in ctype:
        return True
    # JSON never starts with "<"; a markup page served as text/plain still does.
    return response.content[:64].lstrip().startswith(b"<")


def check_status(response: httpx.Response, *, provider: str, what: str) -> None:
    """Raise the typed error that an HTTP status means; return on 2xx."""
    status = response.status_code
    if 200 <= status < 300:
        return
    if status in (401, 403):
        raise BlockedError(
            f"{what} was refused with HTTP {status} (bot protection)", provider=provider
        )
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        raise RateLimitedError(
            f"{what} is rate limited (HTTP 429)", retry_after=retry_after, provider=provider
        )
    if status >= 500 or status == 408:
        raise TransientError(f"{what} failed with HTTP {status}", provider=provider)
    if status == 404:
        raise SchemaChangedError(f"{what} no longer exists (HTTP 404)", key=what, provider=provider)
    # Any other 4xx: our request no longer fits their API; another provider may still answer.
    raise SchemaChangedError(
        f"{what} rejected the request with HTTP {status}", key=what, provider=provider
    )


def decode_json(response: httpx.Response, *, provider: str, what: str) -> Any:
    """The JSON body of a 2xx response; an HTML body is a block, a broken one is transient."""
    if looks_like_html(response):
        raise BlockedError(f"{what} answered with an HTML page instead of JSON", provider=provider)
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: deeply nested JSON (a hostile or broken body) must not escape untyped.
        raise ProtocolError(
            f"{what} answered with invalid or truncated JSON", provider=provider
        ) from exc


def json_or_error(response: httpx.Response, *, provider: str, what: str) -> Any:
    """`check_status` then `decode_json`: the usual path for an API call."""
    check_status(response, provider=provider, what=what)
    return decode_json(response, provider=provider, what=what)


def normalize_underlying(underlying: str, *, provider: str) -> str:
    """Upper-cased underlying, or `InvalidRequestError` before any request is sent."""
    if not isinstance(underlying, str):
        raise InvalidRequestError("the underlying must be a string", provider=provider)
    value = underlying.strip().upper()
    if not _UNDERLYING_RE.fullmatch(value):
        raise InvalidRequestError(
            f"{underlying[:60]!r} is not a valid underlying (1-20 of A-Z, 0-9, & and -)",
            provider=provider,
        )
    return value
