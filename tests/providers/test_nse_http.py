"""The shared HTTP session code (providers/http.py) that the NSE and Trendlyne providers use."""

from __future__ import annotations

import asyncio
import gzip
import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import brotli
import httpx
import pytest

from providers.errors import (
    BlockedError,
    InvalidRequestError,
    ProtocolError,
    RateLimitedError,
    SchemaChangedError,
    TransientError,
)
from providers.http import (
    HttpSession,
    browser_headers,
    check_status,
    decode_json,
    error_for_exception,
    json_or_error,
    looks_like_html,
    make_async_client,
    normalize_underlying,
    parse_retry_after,
)
from providers.settings import BROWSER_USER_AGENT


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert parse_retry_after("12", now=now) == 12.0
    assert parse_retry_after(" 1.5 ", now=now) == 1.5
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now=now) == 90.0
    past = format_datetime(now - timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0
    assert parse_retry_after("-5", now=now) == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None


def test_browser_headers_and_client_defaults() -> None:
    headers = browser_headers()
    assert headers["User-Agent"] == BROWSER_USER_AGENT
    assert headers["Accept-Encoding"] == "gzip, deflate, br"
    assert headers["Accept-Language"].startswith("en")
    client = make_async_client(base_url="https://x.test", headers={"Accept": "text/html"})
    assert client.headers["user-agent"] == BROWSER_USER_AGENT
    assert client.headers["accept"] == "text/html"
    assert client.timeout.connect == 5.0 and client.timeout.read == 15.0


def _response(
    status: int, body: bytes = b"{}", ctype: str = "application/json", **headers: str
) -> httpx.Response:
    return httpx.Response(
        status,
        content=body,
        headers={"content-type": ctype, **headers},
        request=httpx.Request("GET", "https://x.test/api"),
    )


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, BlockedError),
        (403, BlockedError),
        (429, RateLimitedError),
        (500, TransientError),
        (503, TransientError),
        (404, SchemaChangedError),
        (400, SchemaChangedError),
    ],
)
def test_status_codes_map_to_typed_errors(status: int, error: type) -> None:
    with pytest.raises(error) as err:
        check_status(_response(status), provider="nse", what="/api/x")
    assert err.value.provider == "nse"


def test_html_bodies_are_blocks_and_broken_json_is_a_protocol_error() -> None:
    page = _response(200, b"<html><body>Access Denied</body></html>", ctype="text/html")
    assert looks_like_html(page)
    disguised = _response(200, b"  <!DOCTYPE html><html></html>", ctype="application/json")
    assert looks_like_html(disguised)
    with pytest.raises(BlockedError):
        decode_json(disguised, provider="nse", what="/api/x")
    with pytest.raises(ProtocolError):
        decode_json(_response(200, b'{"records": {"da'), provider="nse", what="/api/x")
    with pytest.raises(ProtocolError):
        decode_json(_response(200, b"\xff\xfe\x00"), provider="nse", what="/api/x")
    assert json_or_error(_response(200, b'{"a": [1]}'), provider="nse", what="/x") == {"a": [1]}


def test_transport_exceptions_map_to_transient_errors() -> None:
    assert type(error_for_exception(httpx.ReadTimeout("t"), provider="p", what="/x")) is (
        TransientError
    )
    assert isinstance(
        error_for_exception(httpx.DecodingError("d"), provider="p", what="/x"), ProtocolError
    )
    assert isinstance(
        error_for_exception(httpx.ConnectError("c"), provider="p", what="/x"), TransientError
    )


@pytest.mark.parametrize("encoding", ["br", "gzip"])
async def test_compressed_bodies_are_decoded_by_the_client(encoding: str) -> None:
    raw = json.dumps({"expiryDates": ["24-Nov-2026"]}).encode()
    body = brotli.compress(raw) if encoding == "br" else gzip.compress(raw)

    def handler(request: httpx.Request) -> httpx.Response:
        assert "br" in request.headers["accept-encoding"]
        return httpx.Response(
            200, stream=httpx.ByteStream(body), headers={"content-encoding": encoding}
        )

    async with make_async_client(transport=httpx.MockTransport(handler)) as client:
        response = await client.get("https://x.test/api")
    assert response.json() == {"expiryDates": ["24-Nov-2026"]}


def test_underlyings_are_upper_cased_and_validated() -> None:
    assert normalize_underlying(" nifty ", provider="p") == "NIFTY"
    assert normalize_underlying("m&m", provider="p") == "M&M"
    assert normalize_underlying("BAJAJ-AUTO", provider="p") == "BAJAJ-AUTO"
    for bad in ("", "A" * 21, "NIFTY 50", "../x", "NIFTY%00", "ÑIFTY"):
        with pytest.raises(InvalidRequestError):
            normalize_underlying(bad, provider="p")
    with pytest.raises(InvalidRequestError):
        normalize_underlying(None, provider="p")  # type: ignore[arg-type]


def test_the_session_makes_a_new_client_when_the_event_loop_changes() -> None:
    session = HttpSession(
        provider="p",
        base_url="https://x.test",
        transport=httpx.MockTransport(lambda r: httpx.Response(200)),
    )
    fresh: list[int] = []
    session.on_new_client = lambda: fresh.append(1)

    async def grab() -> httpx.AsyncClient:
        first = session.client
        assert session.client is first  # stable within one loop
        await session.request("GET", "/ping")
        return first

    one = asyncio.run(grab())
    two = asyncio.run(grab())
    assert one is not two and len(fresh) == 2
    asyncio.run(session.aclose())


def test_deeply_nested_json_over_http_is_a_protocol_error() -> None:
    from providers.errors import ProtocolError
    from providers.http import decode_json

    body = b"[" * 100_000 + b"]" * 100_000
    response = httpx.Response(200, content=body, headers={"content-type": "application/json"})
    with pytest.raises(ProtocolError):
        decode_json(response, provider="nse", what="/api/x")


def test_an_overlong_underlying_is_not_echoed_in_full() -> None:
    from providers.errors import InvalidRequestError
    from providers.http import normalize_underlying

    with pytest.raises(InvalidRequestError) as caught:
        normalize_underlying("X" * 300, provider="nse")
    assert len(str(caught.value)) < 150


def test_clients_share_one_verified_tls_context() -> None:
    import ssl

    from providers.http import make_async_client, shared_ssl_context

    context = shared_ssl_context()
    assert context is shared_ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    first, second = make_async_client(), make_async_client()
    assert first._transport._pool._ssl_context is context  # type: ignore[attr-defined]
    assert second._transport._pool._ssl_context is context  # type: ignore[attr-defined]
