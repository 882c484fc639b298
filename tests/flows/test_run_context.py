"""What every flow run gets from `run_context`: the catalog made sure of, and option rows
ranked and with their spot (and its source) filled where the provider sent none."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from flows import runtime
from flows.config import live_symbol
from flows.lake_rows import option_chain_table
from providers.interfaces import IOptionsDataProvider
from providers.journal import JournalEntry
from providers.records import OptionChainRow
from providers.registry import ProviderRegistry
from providers.settings import ProviderSettings
from storage.catalog import connect
from storage.journal import journal_days
from storage.writer import LakeWriter

T = datetime(2026, 3, 4, 5, 30, tzinfo=UTC)


class Options(IOptionsDataProvider):
    """Registration only: these tests never call a provider."""

    async def get_expiry_dates(self, underlying: str) -> list[date]:
        raise NotImplementedError

    async def get_option_chain(self, underlying: str, expiry: date | None = None) -> list:
        raise NotImplementedError

    async def get_oi_data(self, underlying: str, expiry: date, time_str: str) -> list:
        raise NotImplementedError


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> ProviderRegistry:
    registry = ProviderRegistry()
    registry.register("nse", Options(), 100)
    registry.register("trendlyne", Options(), 50)
    monkeypatch.setattr(runtime, "registry_factory", lambda _settings: registry)
    monkeypatch.delenv("PROTRADE_OPTIONS_PROVIDERS", raising=False)
    return registry


def rows(provider: str, strike: float = 24000.0) -> list[OptionChainRow]:
    return [
        OptionChainRow(
            T, "NIFTY", date(2026, 3, 26), strike, "CE", 1.0, 0.0, 1.0, None, 1.0, None, provider
        )
    ]


async def test_a_first_write_on_a_fresh_data_dir_leaves_a_catalog_whose_views_answer(
    data_dir: Path, registry: ProviderRegistry
) -> None:
    async with runtime.run_context() as ctx:
        ctx.writer.write("option_chain", option_chain_table(rows("nse")))
    with duckdb.connect(str(data_dir / "protrade.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT provider, source_rank FROM option_chain").fetchall() == [
            ("nse", 0)
        ]


async def write_in_a_run(records: list[OptionChainRow]) -> None:
    async with runtime.run_context() as ctx:
        ctx.writer.write("option_chain", option_chain_table(records))


@pytest.mark.parametrize("stamped", [True, False], ids=["stamped", "unstamped"])
def test_writing_goes_on_while_an_analyst_holds_the_catalog_read_write(
    data_dir: Path, registry: ProviderRegistry, caplog: pytest.LogCaptureFixture, stamped: bool
) -> None:
    """Stamped as current (its views unchanged since), the catalog is not even opened: no
    warning. Without the stamp the check must open it, cannot, and only warns."""
    asyncio.run(write_in_a_run([]))  # creates the catalog
    path = data_dir / "protrade.duckdb"
    if not stamped:
        (data_dir / ".protrade.duckdb.views").unlink()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, sys; c = duckdb.connect({str(path)!r}); print('ready', flush=True); "
            "sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with caplog.at_level(logging.WARNING):
            asyncio.run(write_in_a_run(rows("nse")))
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    assert ("open read-write in another process" in caplog.text) is not stamped
    assert connect(data_dir).execute("SELECT count(*) FROM option_chain").fetchall() == [(1,)]


async def test_option_rows_are_ranked_by_the_registry_order_at_write_time(
    data_dir: Path, registry: ProviderRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with runtime.run_context() as ctx:
        ctx.writer.write("option_chain", option_chain_table(rows("nse") + rows("trendlyne", 1.0)))
        registry.settings = ProviderSettings(options_providers=("trendlyne", "nse"))
        ctx.writer.write("option_chain", option_chain_table(rows("nse", 2.0) + rows("yahoo", 3.0)))
    got = (
        connect(data_dir)
        .execute("SELECT strike, provider, source_rank FROM option_chain ORDER BY strike")
        .fetchall()
    )
    assert got == [
        (1.0, "trendlyne", 1),
        (2.0, "nse", 1),  # after the reorder
        (3.0, "yahoo", None),  # not in the order: ranks last
        (24000.0, "nse", 0),
    ]


# ------------------------------------------------------------ the spot of rows that lack one

TICKS_FOLDER = "lake/ticks/date=2026-03-04"


def chain(provider: str, spot: float | None, at: datetime = T, strike: float = 24000.0) -> pa.Table:
    """One strike's two legs; `spot=None` is what Trendlyne's OI data sends."""
    return option_chain_table(
        [
            OptionChainRow(
                snapshot_ts=at,
                underlying="NIFTY",
                expiry=date(2026, 3, 26),
                strike=strike,
                option_type=kind,
                open_interest=1.0,
                change_in_oi=0.0,
                volume=1.0,
                iv=None,
                ltp=1.0,
                underlying_value=spot,
                provider=provider,
            )
            for kind in ("CE", "PE")
        ]
    )


def tick(symbol: str, price: float, at: datetime) -> dict[str, object]:
    return {
        "ts": at,
        "symbol": symbol,
        "price": price,
        "provider": "tradingview",
        "received_at": at,
        "capture_id": "cap",
        "seq": int(at.timestamp()),
    }


def stored_spots(data_dir: Path, provider: str) -> list[tuple[object, ...]]:
    return (
        connect(data_dir)
        .execute(
            "SELECT DISTINCT underlying_value, underlying_value_source FROM option_chain_raw "
            "WHERE provider = ?",
            [provider],
        )
        .fetchall()
    )


def test_rows_whose_provider_sent_the_spot_are_marked_provider(
    data_dir: Path, registry: ProviderRegistry
) -> None:
    runtime.RunWriter(registry).write("option_chain", chain("nse", 22100.5))
    assert stored_spots(data_dir, "nse") == [(22100.5, "provider")]


def test_a_row_without_spot_takes_the_last_tick_of_its_index_in_that_minute(
    data_dir: Path, registry: ProviderRegistry
) -> None:
    lake = LakeWriter(data_dir=data_dir)
    lake.write("ticks", [tick("NSE:NIFTY", 22101.0, T + timedelta(seconds=2))])
    lake.write("ticks", [tick("NSE:NIFTY", 22102.0, T + timedelta(seconds=40))])
    lake.write("ticks", [tick("NSE:BANKNIFTY", 48000.0, T + timedelta(seconds=50))])
    lake.write("ticks", [tick("NSE:NIFTY", 22999.0, T + timedelta(minutes=1))])  # next minute
    runtime.RunWriter(registry).write("option_chain", chain("trendlyne", None))
    assert stored_spots(data_dir, "trendlyne") == [(22102.0, "ticks")]


def test_a_row_without_spot_takes_the_spot_of_the_chain_written_in_that_minute(
    data_dir: Path, registry: ProviderRegistry
) -> None:
    writer = runtime.RunWriter(registry)
    LakeWriter(data_dir=data_dir).write("ticks", [tick("NSE:NIFTY", 22101.0, T)])
    writer.write("option_chain", chain("nse", 22100.5, at=T + timedelta(seconds=9)))
    writer.write("option_chain", chain("trendlyne", None, strike=24100.0))
    assert stored_spots(data_dir, "trendlyne") == [(22100.5, "chain")]


def test_a_row_without_spot_takes_the_close_of_its_indexs_one_minute_candle(
    data_dir: Path, registry: ProviderRegistry
) -> None:
    bars = [
        {"symbol": "NSE:NIFTY", "interval": interval, "ts": T, "close": close}
        for interval, close in (("1", 22103.0), ("5", 1.0))
    ]
    LakeWriter(data_dir=data_dir).write("candles", bars)
    runtime.RunWriter(registry).write("option_chain", chain("trendlyne", None))
    assert stored_spots(data_dir, "trendlyne") == [(22103.0, "candles")]


def test_a_row_without_spot_stays_without_one_when_nothing_of_that_minute_is_held(
    data_dir: Path, registry: ProviderRegistry
) -> None:
    writer = runtime.RunWriter(registry)
    writer.write("option_chain", chain("nse", 22100.5, at=T + timedelta(minutes=1)))
    writer.write("option_chain", chain("trendlyne", None))
    assert stored_spots(data_dir, "trendlyne") == [(None, None)]


def test_a_failed_spot_lookup_is_a_warning_and_the_rows_are_written_unfilled(
    data_dir: Path, registry: ProviderRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    folder = data_dir / TICKS_FOLDER
    folder.mkdir(parents=True)
    (folder / "broken.parquet").write_bytes(b"not a parquet file")
    rows = pa.concat_tables([chain("trendlyne", None), chain("nse", 22100.5, strike=1.0)])
    with caplog.at_level(logging.WARNING, logger="flows.runtime"):
        result = runtime.RunWriter(registry).write("option_chain", rows)
    assert result.rows == 4
    assert "could not look up the spot of NIFTY" in caplog.text
    (folder / "broken.parquet").unlink()  # the views would not bind over it either
    assert stored_spots(data_dir, "trendlyne") == [(None, None)]
    assert stored_spots(data_dir, "nse") == [(22100.5, "provider")]


@pytest.mark.parametrize(
    ("underlying", "symbol"),
    [
        ("NIFTY", "NSE:NIFTY"),
        ("BANKNIFTY", "NSE:BANKNIFTY"),
        ("FINNIFTY", "NSE:CNXFINANCE"),
        ("midcpnifty", "NSE:NIFTY_MID_SELECT"),
        ("NIFTYNXT50", "NSE:NIFTYJR"),
        ("RELIANCE", "NSE:RELIANCE"),
    ],
)
def test_an_underlyings_live_symbol_is_its_index_symbol_or_nse_and_its_name(
    underlying: str, symbol: str
) -> None:
    assert live_symbol(underlying) == symbol


def test_journal_entries_a_run_could_not_write_are_reported_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from flows.runtime import _report_unwritten

    with caplog.at_level(logging.ERROR, logger="flows.runtime"):
        _report_unwritten(["entry"] * 3)
        _report_unwritten([])

    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].getMessage().startswith("3 raw journal entries")


def _journal_entry() -> JournalEntry:
    return JournalEntry(1_795_000_000_000_000, "nse", "option-chain-v3", "{}", b"{}", "c1", 1, 200)


async def test_a_run_whose_journal_write_fails_says_how_many_entries_were_lost(
    data_dir: Path,
    registry: ProviderRegistry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    written = runtime.RunWriter.write

    def full_disk_for_the_journal(self, dataset, rows, **kw):  # type: ignore[no-untyped-def]
        if dataset == "journal":
            raise OSError(28, "No space left on device")
        return written(self, dataset, rows, **kw)

    monkeypatch.setattr(runtime.RunWriter, "write", full_disk_for_the_journal)
    with caplog.at_level(logging.ERROR):
        async with runtime.run_context() as ctx:
            assert ctx.journal is not None
            ctx.journal.record(_journal_entry())

    lost = [r.getMessage() for r in caplog.records if "raw journal entries" in r.getMessage()]
    assert lost and lost[-1].startswith("1 raw journal entries could not be written")


async def test_the_journal_is_flushed_even_when_closing_the_providers_fails(
    data_dir: Path, registry: ProviderRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_close() -> None:
        raise RuntimeError("session close failed")

    monkeypatch.setattr(registry, "aclose", broken_close)
    with pytest.raises(RuntimeError, match="session close failed"):
        async with runtime.run_context() as ctx:
            assert ctx.journal is not None
            ctx.journal.record(_journal_entry())

    assert [d.files for d in journal_days(data_dir)] == [1]
