"""Hostile input: path tricks, NUL, huge and unicode names, SQL text, bad intervals, huge frames,
deeply nested JSON. Each is a clear error (or stored safely), and nothing lands outside the lake."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from rel_matrix import Matrix

from providers.calendar import IST
from providers.emulators.tradingview import TradingViewEmulator
from providers.errors import AllProvidersFailedError, InvalidRequestError, ProtocolError
from providers.registry import ProviderRegistry, RetryPolicy
from providers.tradingview import codec
from providers.tradingview.historical import TradingViewHistoricalProvider
from storage.catalog import connect, run_readonly_query
from storage.errors import LakeWriteError, ReadOnlyQueryError
from storage.paths import decode_segment, store_for
from storage.queries import existing_candle_times
from storage.writer import LakeWriter

NOW = datetime(2026, 11, 20, 11, 0, tzinfo=IST).astimezone(UTC)

#: Names that must be stored safely inside the dataset folder, and read back unchanged.
STORABLE = ["../../x", "a/b", "..", "NSE:日本株", "'; DROP VIEW option_chain; --", "%2E%2E"]
#: Names storage must refuse outright.
REFUSED = {"x\x00y": "NUL", "A" * 500: "at most 200 characters", "": "non-empty"}


def chain_row(underlying: str) -> dict[str, object]:
    return {
        "snapshot_ts": NOW,
        "underlying": underlying,
        "expiry": date(2026, 11, 26),
        "strike": 24_000.0,
        "option_type": "CE",
        "provider": "nse",
    }


def files_outside(root: Path, lake: Path) -> set[Path]:
    return {p for p in root.rglob("*") if not p.is_relative_to(lake)}


def test_hostile_instrument_names_stay_inside_the_lake_or_are_refused(
    any_data_dir: Path | str, matrix: Matrix
) -> None:
    local = isinstance(any_data_dir, Path)
    cell = matrix.cell(
        "hostile",
        f"names: .., /, NUL, 500 chars, unicode, SQL ({'local' if local else 'S3'})",
        "stored encoded inside the lake, or clear error",
    )
    if local:
        lake = any_data_dir / "lake"
        outside_before = files_outside(any_data_dir.parent, lake)
    writer = LakeWriter()
    for name in STORABLE:
        writer.write("option_chain", [chain_row(name)])
    messages = []
    for name, reason in REFUSED.items():
        with pytest.raises(LakeWriteError, match=reason) as caught:
            writer.write("option_chain", [chain_row(name), chain_row("NIFTY")])
        messages.append(str(caught.value))
    # Every object is below the dataset folder, one encoded segment per name.
    keys = [o.key for o in store_for(any_data_dir).list("lake")]
    data = [k for k in keys if not k.endswith("_seed.parquet")]
    assert all(k.startswith("lake/option_chain/date=") and k.count("/") == 4 for k in data)
    assert {decode_segment(k.split("/")[3].removeprefix("underlying=")) for k in data} == set(
        STORABLE
    )
    if local:
        for path in (lake / "option_chain").rglob("*.parquet"):
            assert path.resolve().is_relative_to((lake / "option_chain").resolve())
        assert files_outside(any_data_dir.parent, lake) - outside_before <= {any_data_dir / "lake"}
        assert not (any_data_dir.parent / "x").exists() and not (any_data_dir / "x").exists()
    stored = {r[0] for r in connect().execute("SELECT underlying FROM option_chain").fetchall()}
    # A refused batch wrote nothing at all, not even its good row.
    assert stored == set(STORABLE)
    cell.observed = f"{len(STORABLE)} stored encoded; refused: " + " / ".join(
        m.split(": ", 1)[-1][:40] for m in messages
    )
    cell.rows_lost = 0


@pytest.mark.parametrize(
    ("call", "what"),
    [
        (lambda r: r.get_option_chain("../../etc"), "underlying '../../etc'"),
        (lambda r: r.get_option_chain("NIFTY\x00"), "underlying with NUL"),
        (lambda r: r.get_option_chain("NIFTY' OR 1=1 --"), "SQL text as underlying"),
        (lambda r: r.get_option_chain("Ω" * 300), "300-char unicode underlying"),
        (lambda r: r.get_hist_candles("NSE:../x", "1", 10), "symbol 'NSE:../x'"),
        (lambda r: r.get_hist_candles('NSE:X","p":[]', "1", 10), "JSON text as symbol"),
        (lambda r: r.get_hist_candles("NSE:NIFTY", "7", 10), "interval '7'"),
        (lambda r: r.get_hist_candles("NSE:NIFTY", "1S", 10), "interval '1S'"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
async def test_hostile_requests_are_refused_before_any_network_call(
    call: object, what: str, matrix: Matrix, data_dir: Path
) -> None:
    cell = matrix.cell("hostile", what, "InvalidRequestError, no request sent")
    from flows.runtime import default_registry

    # Every base URL points at a closed port (tests/conftest.py): a request that was sent would
    # come back as a TransientError, not as InvalidRequestError.
    registry: ProviderRegistry = default_registry()
    try:
        with pytest.raises(InvalidRequestError) as caught:
            await call(registry)  # type: ignore[operator]
    finally:
        await registry.aclose()
    cell.observed = str(caught.value)
    cell.rows_lost = 0
    assert not (data_dir / "lake").exists()  # nothing was written


def test_sql_text_in_query_parameters_and_statements_is_inert(
    data_dir: Path, matrix: Matrix
) -> None:
    cell = matrix.cell("hostile", "SQL text in symbol / query", "parameter is data; DDL refused")
    LakeWriter().write(
        "candles",
        [
            {
                "symbol": "NSE:NIFTY",
                "interval": "1",
                "ts": NOW,
                "open": 1.0,
                "high": 1.0,
                "low": 1.0,
                "close": 1.0,
                "volume": 1.0,
                "provider": "tradingview",
            }
        ],
    )
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    assert existing_candle_times("x' OR '1'='1", "1", start, end) == set()
    assert existing_candle_times("NSE:NIFTY", "1", start, end) == {NOW}
    refused = []
    for sql in (
        "DROP VIEW candles",
        "SELECT 1; DROP VIEW candles",
        "COPY candles TO '/tmp/escape.csv'",
        "ATTACH '/tmp/other.db'",
    ):
        with pytest.raises(ReadOnlyQueryError):
            run_readonly_query(sql)
        refused.append(sql.split()[0])
    # The sandbox: no file outside the lake, whatever the SELECT says.
    with pytest.raises(Exception, match=r"(?i)permission|not allowed|disabled"):
        run_readonly_query("SELECT * FROM read_csv('/etc/passwd')")
    assert run_readonly_query("SELECT count(*) FROM candles")[1] == [(1,)]
    assert not Path("/tmp/escape.csv").exists()
    cell.observed = f"parameters inert; refused {', '.join(refused)} and read_csv(/etc/passwd)"
    cell.rows_lost = 0


async def test_an_oversized_websocket_message_is_a_clear_transient_error(
    data_dir: Path, matrix: Matrix
) -> None:
    cell = matrix.cell("hostile", "oversized WebSocket frame", "connection closed (1009), error")
    with TradingViewEmulator(clock=lambda: NOW, tick_interval=None) as emu:
        registry = ProviderRegistry(policy=RetryPolicy(base_delay=0.001, max_delay=0.002))
        # A 16 KiB cap: the 1,000-bar page (~70 KB) is "oversized" for this client.
        registry.register(
            "tradingview",
            TradingViewHistoricalProvider(
                url=emu.url, max_message_size=16 * 1024, read_timeout=2.0
            ),
            100,
        )
        with pytest.raises(AllProvidersFailedError) as caught:
            await registry.get_hist_candles("NSE:NIFTY", "5", 1000)
    cell.observed = str(caught.value)
    cell.rows_lost = 0
    assert "1009" in str(caught.value) and "TransientError" in str(caught.value)
    # The framing layer refuses a length header beyond any sane size without buffering it.
    with pytest.raises(ProtocolError):
        codec.Connection(max_message_size=1024).receive_data("~m~99999999~m~{")


def test_deeply_nested_json_in_a_stream_message_is_a_protocol_error(matrix: Matrix) -> None:
    cell = matrix.cell("hostile", "deeply nested JSON (TradingView)", "ProtocolError, no crash")
    nested = '{"m":"du","p":' + "[" * 100_000 + "]" * 100_000 + "}"
    conn = codec.Connection()
    with pytest.raises(ProtocolError) as caught:
        conn.receive_data(codec.encode_frame(nested))
    cell.observed = str(caught.value)
    cell.rows_lost = 0
    assert conn.failed  # the stream is out of step: the client reconnects
