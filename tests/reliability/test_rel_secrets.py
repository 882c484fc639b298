"""Secrets: the TradingView token and NSE's cookies never reach logs, errors or lake files.

Everything is captured at DEBUG (our loggers, `websockets`, `httpx`, `httpcore`) plus the
process's stdout/stderr, while the providers run clean calls and failing ones; then the captured
text, every error message and every byte under the data dir are searched for the secret values.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from aiolimiter import AsyncLimiter
from rel_matrix import Matrix

from flows.journal_log import JournalLog, attach
from flows.lake_rows import option_chain_rows
from flows.runtime import AttemptLog
from providers.calendar import IST
from providers.emulators.nse import NseEmulator
from providers.emulators.tradingview import TradingViewEmulator
from providers.emulators.trendlyne import TrendlyneEmulator
from providers.nse import NseOptionsProvider
from providers.registry import ProviderRegistry, RetryPolicy
from providers.tradingview.historical import TradingViewHistoricalProvider
from providers.trendlyne import TrendlyneOptionsProvider
from storage.writer import LakeWriter

NOW = datetime(2026, 11, 20, 11, 0, tzinfo=IST).astimezone(UTC)
LOGGERS = (
    "",
    "providers",
    "flows",
    "storage",
    "websockets",
    "websockets.client",
    "websockets.server",
    "httpx",
    "asyncio",
)
#: At DEBUG httpcore logs every response's headers (NSE's Set-Cookie values included);
#: providers/http.py redacts them, and this test proves it at the most verbose level.
HTTPCORE_LEVEL = logging.DEBUG


def all_bytes(root: Path) -> bytes:
    """Every file under `root` (Parquet stores short strings uncompressed in its statistics)."""
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


async def _quietly(awaitable: object) -> str | None:
    """Run a call that may fail; the error text (which must be clean too) or None."""
    try:
        await awaitable  # type: ignore[misc]
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


async def test_tokens_and_cookies_never_appear_in_logs_errors_or_files(
    data_dir: Path,
    matrix: Matrix,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cell = matrix.cell(
        "secrets", "TV token, NSE cookies at DEBUG, with faults", "absent from logs, errors, lake"
    )
    token = "tvtoken-" + secrets.token_hex(16)
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    caplog.set_level(HTTPCORE_LEVEL, logger="httpcore")
    errors: list[str] = []
    cookies: set[str] = set()
    writer = LakeWriter()
    attempts = AttemptLog(writer)

    with (
        TradingViewEmulator(clock=lambda: NOW, tick_interval=None) as tv,
        NseEmulator(clock=lambda: NOW) as nse,
        TrendlyneEmulator(clock=lambda: NOW) as tl,
    ):
        registry = ProviderRegistry(policy=RetryPolicy(base_delay=0.001, max_delay=0.002))
        registry.add_sink(attempts)
        limiter = AsyncLimiter(10_000, 1)
        nse_provider = NseOptionsProvider(nse.base_url, limiter=limiter, timeout=2.0)
        registry.register("nse", nse_provider, 100)
        registry.register(
            "trendlyne",
            TrendlyneOptionsProvider(tl.base_url, limiter=limiter, timeout=2.0, clock=lambda: NOW),
            50,
        )
        registry.register(
            "tradingview",
            TradingViewHistoricalProvider(url=tv.url, token=token, read_timeout=2.0),
            100,
        )
        # The raw journal keeps every payload received: the cookies must not be among them.
        journal = JournalLog(writer)
        attach(registry, journal)

        # Clean calls: the token and fresh cookies are on the wire.
        fetched = await registry.get_option_chain("NIFTY")
        writer.write("option_chain", option_chain_rows(fetched.value))
        cookies |= {c.value for c in nse_provider._session.client.cookies.jar}
        await registry.get_hist_candles("NSE:NIFTY", "5", 300)
        # The token really went on the wire (so the searches below can find a leak).
        assert ("set_auth_token", [token]) in tv.commands[1]
        # Failing calls: errors travel through logs, attempts and exceptions.
        nse.revoke_cookies()  # a 401 page, then a re-prime with new cookies
        nse.set_fault("truncated", "v3", times=1)
        errors.append(await _quietly(registry.get_option_chain("NIFTY")) or "")
        cookies |= {c.value for c in nse_provider._session.client.cookies.jar}
        nse.set_fault("block")
        tl.set_fault("status", status=500)
        errors.append(await _quietly(registry.get_option_chain("NIFTY")) or "")
        errors.append(await _quietly(registry.get_hist_candles("NSE:UNKNOWNX", "5", 10)) or "")
        tv.refuse_connections(1)
        errors.append(await _quietly(registry.get_hist_candles("NSE:NIFTY", "5", 10)) or "")
        history = asyncio.create_task(registry.get_hist_candles("NSE:NIFTY", "1", 2000))
        await asyncio.sleep(0.05)
        await asyncio.wrap_future(tv.send_protocol_error())
        errors.append(await _quietly(history) or "")
        await registry.aclose()
    attempts.flush()
    journal.flush()
    # The failing calls really failed (so their errors were searched too).
    assert "every provider failed" in errors[1] and "UnknownSymbolError" in errors[2]

    out, err = capfd.readouterr()
    texts = {
        "logs": caplog.text + "\n".join(r.getMessage() for r in caplog.records),
        "stdout": out,
        "stderr": err,
        "errors": "\n".join(errors),
    }
    lake_bytes = all_bytes(data_dir)
    # Journal payloads are zstd-compressed in their files: search them decompressed too.
    journal_files = list((data_dir / "lake" / "journal").rglob("*.parquet"))
    assert journal.written > 0 and journal_files
    for path in journal_files:
        for row in pq.read_table(path).to_pylist():
            lake_bytes += (row.get("payload") or b"") + (row.get("request") or "").encode()
    assert len(cookies) >= 3 and all(len(c) >= 16 for c in cookies)
    assert any("websockets" in r.name for r in caplog.records)  # the capture really saw them
    assert any(r.name.startswith("httpx") for r in caplog.records)
    leaks = (
        [
            f"{'token' if value == token else 'cookie'} in {where}"
            for value in (token, *cookies)
            for where, text in texts.items()
            if value in text
        ]
        + [
            f"{'token' if v == token else 'cookie'} in lake"
            for v in (token, *cookies)
            if v.encode() in lake_bytes
        ]
        + [
            f"{'token' if v == token else 'cookie'} in a {r.name} record: {r.getMessage()[:150]!r}"
            for r in caplog.records
            for v in (token, *cookies)
            if v in r.getMessage()
        ]
    )
    cell.observed = (
        f"{len(caplog.records)} log records, {len(errors)} errors, {len(lake_bytes)} lake bytes "
        f"searched for 1 token + {len(cookies)} cookies: {len(leaks)} leaks"
    )
    cell.rows_lost = 0
    assert leaks == [], "\n".join(leaks)
