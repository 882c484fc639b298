"""Network failures read as host, port, path and the OS's reason, not as a bare exception name."""

from __future__ import annotations

import socket

import httpx
import pytest

from providers.errors import TransientError, describe_network_failure
from providers.http import HttpSession, error_for_exception


def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def failure_of(session: HttpSession, path: str) -> TransientError:
    try:
        with pytest.raises(TransientError) as info:
            await session.request("GET", path, params={"symbol": "NIFTY"})
    finally:
        await session.aclose()
    return info.value


async def test_a_refused_connection_names_host_port_and_path() -> None:
    port = closed_port()
    session = HttpSession(provider="nse", base_url=f"http://127.0.0.1:{port}/prefix")
    error = await failure_of(session, "/api/option-chain-v3")
    assert str(error) == (
        f"nse: cannot connect to 127.0.0.1:{port} (connection refused) "
        "for /prefix/api/option-chain-v3"
    )


async def test_a_host_that_does_not_resolve_says_cannot_resolve_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The resolver fails as it does offline, without a query leaving the machine.
    def no_such_host(*args: object, **kwargs: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    session = HttpSession(provider="trendlyne", base_url="https://smartoptions.invalid")
    error = await failure_of(session, "/phoenix/api/live-oi-data/")
    assert str(error) == (
        "trendlyne: cannot resolve host smartoptions.invalid for /phoenix/api/live-oi-data/"
    )


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (httpx.ReadTimeout("t"), "request to example.org:443/api/x timed out"),
        (httpx.ConnectTimeout("t"), "cannot connect to example.org:443 (timed out) for /api/x"),
        (httpx.RemoteProtocolError("p"), "connection to example.org:443 failed during /api/x"),
    ],
)
def test_timeouts_and_dropped_connections_name_the_peer(exc: httpx.HTTPError, text: str) -> None:
    exc.request = httpx.Request("GET", "https://example.org/api/x?symbol=NIFTY")
    error = error_for_exception(exc, provider="p", what="/api/x")
    assert isinstance(error, TransientError) and text in str(error)
    assert "symbol=" not in str(error)  # the path, not the query


def test_an_exception_without_a_request_still_reads_sensibly() -> None:
    error = error_for_exception(httpx.ConnectError("c"), provider="p", what="/api/x")
    assert str(error) == "p: cannot connect to ? (ConnectError) for /api/x"


def test_the_reason_is_found_under_wrapping_exceptions() -> None:
    try:
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except OSError as inner:
            raise OSError("All connection attempts failed") from inner
    except OSError as outer:
        assert describe_network_failure(RuntimeError("wrapped")) is None
        assert describe_network_failure(outer) == "connection reset"
