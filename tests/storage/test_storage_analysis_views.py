"""The analysis views and macro of the catalog: option_chain_latest, oi_summary, oi_buildup,
candles_resampled; on hand-made chains whose answers are worked out here, and on the
TradingView emulator's bars."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from storage_samples import T0, candle_rows

from providers.emulators.tradingview import bar_opens_desc, bar_values
from storage.catalog import connect
from storage.compaction import compact
from storage.writer import LakeWriter

T1 = T0 + timedelta(minutes=3)
YESTERDAY = T0 - timedelta(days=1)
E1 = date(2026, 11, 26)
E2 = date(2026, 12, 31)

#: (strike, type) -> (OI at T0, ltp at T0, OI at T1, ltp at T1), expiry E1.
LEGS = {
    (100.0, "CE"): (1.0, 10.0, 3.0, 12.0),  # price up, OI up: long build-up
    (100.0, "PE"): (30.0, 5.0, 35.0, 4.0),  # price down, OI up: short build-up
    (110.0, "CE"): (20.0, 8.0, 15.0, 9.0),  # price up, OI down: short covering
    (110.0, "PE"): (5.0, 6.0, 4.0, 5.0),  # price down, OI down: long unwinding
    (120.0, "CE"): (30.0, 2.0, 30.0, 2.0),  # unchanged: no reading
    (120.0, "PE"): (15.0, 9.0, 15.0, 9.0),
}
#: Provider IV (percent) at 110, the ATM strike at T0.
IV = {(110.0, "CE"): 12.0, (110.0, "PE"): 14.0}


def leg(
    ts: datetime,
    strike: float,
    kind: str,
    oi: float,
    ltp: float,
    *,
    spot: float,
    underlying: str = "NIFTY",
    expiry: date = E1,
) -> dict[str, Any]:
    return {
        "snapshot_ts": ts,
        "underlying": underlying,
        "expiry": expiry,
        "strike": strike,
        "option_type": kind,
        "open_interest": oi,
        "volume": oi * 10,
        "iv": IV.get((strike, kind)),
        "ltp": ltp,
        "underlying_value": spot,
        "provider": "nse",
    }


def write_chains(data_dir: Path) -> None:
    writer = LakeWriter(data_dir=data_dir)
    writer.write(
        "option_chain",
        [leg(YESTERDAY, s, k, 99.0, 1.0, spot=101.0) for (s, k) in LEGS]
        + [leg(YESTERDAY, 100.0, "CE", 7.0, 1.0, spot=101.0, underlying="BANKNIFTY")],
    )
    writer.write(
        "option_chain",
        [leg(T0, s, k, v[0], v[1], spot=113.0) for (s, k), v in LEGS.items()]
        + [leg(T0, 100.0, "CE", 4.0, 3.0, spot=113.0, expiry=E2)],
    )
    # Spot 115: halfway between 110 and 120; the lower strike is the ATM one.
    writer.write(
        "option_chain", [leg(T1, s, k, v[2], v[3], spot=115.0) for (s, k), v in LEGS.items()]
    )
    # A later version of one T1 row: the views keep it, as `option_chain` does.
    writer.write("option_chain", [leg(T1, 120.0, "CE", 31.0, 2.0, spot=115.0)])


def rows(data_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = connect(data_dir)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


LATEST = (
    "SELECT underlying, expiry, snapshot_ts, strike, option_type, open_interest "
    "FROM option_chain_latest ORDER BY ALL"
)


def test_option_chain_latest_is_each_expirys_newest_snapshot_on_the_underlyings_newest_day(
    data_dir: Path,
) -> None:
    write_chains(data_dir)
    got = rows(data_dir, LATEST)
    expected = sorted(
        [("BANKNIFTY", E1, YESTERDAY, 100.0, "CE", 7.0)]
        + [
            ("NIFTY", E1, T1, s, k, 31.0 if (s, k) == (120.0, "CE") else v[2])
            for (s, k), v in LEGS.items()
        ]
        + [("NIFTY", E2, T0, 100.0, "CE", 4.0)]
    )
    assert got == expected


def test_option_chain_latest_answers_the_same_after_compaction(data_dir: Path) -> None:
    write_chains(data_dir)
    before = rows(data_dir, LATEST)
    report = compact("option_chain", T1.date() + timedelta(days=1), data_dir)
    assert report.ok and report.compacted
    assert rows(data_dir, LATEST) == before


def test_oi_summary_gives_totals_pcr_max_pain_atm_and_changes_per_snapshot(
    data_dir: Path,
) -> None:
    write_chains(data_dir)
    got = rows(
        data_dir,
        "SELECT snapshot_ts, trade_date, underlying_value, ce_oi, pe_oi, pcr_oi, pcr_volume, "
        "max_pain, atm_strike, atm_iv, prev_snapshot_ts, ce_oi_change, pe_oi_change "
        "FROM oi_summary WHERE underlying = 'NIFTY' AND expiry = DATE '2026-11-26' "
        "AND snapshot_ts >= TIMESTAMPTZ '2026-11-23 00:00:00+05:30' ORDER BY snapshot_ts",
    )
    # T0: CE OI 1/20/30, PE OI 30/5/15 at strikes 100/110/120. Writers pay at expiry, if it
    # settles at 100: PE 5*10 + 15*20 = 350; at 110: CE 1*10 + PE 15*10 = 160; at 120:
    # CE 1*20 + 20*10 = 220. Max pain: 110.
    # T1: CE 3/15/31, PE 35/4/15: at 100: 4*10 + 15*20 = 340; at 110: 3*10 + 15*10 = 180;
    # at 120: 3*20 + 15*10 = 210. Max pain: 110. Spot 115 is halfway: ATM is the lower, 110.
    assert got == [
        (T0, date(2026, 11, 23), 113.0, 51.0, 50.0, 50 / 51, 50 / 51, 110.0, 110.0, 13.0,
         YESTERDAY, 51.0 - 297.0, 50.0 - 297.0),
        (T1, date(2026, 11, 23), 115.0, 49.0, 54.0, 54 / 49, 54 / 49, 110.0, 110.0, 13.0,
         T0, -2.0, 4.0),
    ]  # fmt: skip


def test_oi_summary_atm_strike_is_the_strike_nearest_the_spot(data_dir: Path) -> None:
    LakeWriter(data_dir=data_dir).write(
        "option_chain",
        [leg(T0, s, "CE", 1.0, 1.0, spot=117.0) for s in (100.0, 110.0, 120.0, 130.0)],
    )
    assert rows(data_dir, "SELECT atm_strike, max_pain FROM oi_summary") == [(120.0, 100.0)]


def test_oi_buildup_reads_price_and_oi_changes_between_consecutive_snapshots(
    data_dir: Path,
) -> None:
    write_chains(data_dir)
    got = rows(
        data_dir,
        "SELECT strike, option_type, prev_snapshot_ts, price_change, oi_change, buildup "
        "FROM oi_buildup WHERE underlying = 'NIFTY' AND snapshot_ts = "
        "TIMESTAMPTZ '2026-11-23 04:03:00+00' ORDER BY strike, option_type",
    )
    assert got == [
        (100.0, "CE", T0, 2.0, 2.0, "long build-up"),
        (100.0, "PE", T0, -1.0, 5.0, "short build-up"),
        (110.0, "CE", T0, 1.0, -5.0, "short covering"),
        (110.0, "PE", T0, -1.0, -1.0, "long unwinding"),
        (120.0, "CE", T0, 0.0, 1.0, None),
        (120.0, "PE", T0, 0.0, 0.0, None),
    ]
    # A contract's first snapshot has nothing to compare with: no row.
    assert rows(data_dir, "SELECT count(*) FROM oi_buildup WHERE expiry = DATE '2026-12-31'") == [
        (0,)
    ]


RESAMPLED = (
    "SELECT symbol, interval, ts, open, high, low, close, volume, bars "
    "FROM candles_resampled('NSE:NIFTY', '1', {minutes})"
)


@pytest.mark.parametrize("timezone", ["UTC", "Asia/Kolkata", "America/New_York"])
def test_candles_resampled_groups_bars_from_the_0915_ist_open_in_any_session_time_zone(
    data_dir: Path, timezone: str
) -> None:
    start = datetime(2026, 11, 23, 3, 45, tzinfo=UTC)  # 09:15 IST
    LakeWriter(data_dir=data_dir).write("candles", candle_rows(start=start, count=12))
    conn = connect(data_dir, timezone=timezone)
    got = conn.execute(RESAMPLED.format(minutes=5)).fetchall()
    conn.close()
    # candle_rows bar i: open 1+i, high 2+i, low 0.5+i, close 1.5+i, volume 1000*i.
    at = [start + timedelta(minutes=m) for m in (0, 5, 10)]
    assert [(r[1], r[2].astimezone(UTC), *r[3:]) for r in got] == [
        ("5", at[0], 1.0, 6.0, 0.5, 5.5, 10_000.0, 5),
        ("5", at[1], 6.0, 11.0, 5.5, 10.5, 35_000.0, 5),
        ("5", at[2], 11.0, 13.0, 10.5, 12.5, 21_000.0, 2),  # the last, partial bar
    ]


def test_candles_resampled_hour_bars_start_at_0915_ist_not_on_the_hour(data_dir: Path) -> None:
    start = datetime(2026, 11, 23, 3, 45, tzinfo=UTC)  # 09:15 IST
    LakeWriter(data_dir=data_dir).write("candles", candle_rows(start=start, count=90))
    got = rows(data_dir, RESAMPLED.format(minutes=60))
    assert [(r[2].astimezone(UTC), r[-1]) for r in got] == [
        (start, 60),
        (start + timedelta(hours=1), 30),
    ]


EMULATOR_DAY_END = int(datetime(2026, 3, 4, 10, 0, tzinfo=UTC).timestamp())  # 15:30 IST


def emulator_bars(symbol: str, interval: str) -> list[dict[str, Any]]:
    """One session of the TradingView emulator's bars, as the emulator serves them."""
    day_start = EMULATOR_DAY_END - 375 * 60
    out = []
    for ts in bar_opens_desc(interval, EMULATOR_DAY_END - 1):
        if ts < day_start:
            break
        _, o, h, low, c, v = bar_values(symbol, interval, ts)
        out.append(
            {
                "symbol": symbol,
                "interval": interval,
                "ts": datetime.fromtimestamp(ts, UTC),
                "open": o,
                "high": h,
                "low": low,
                "close": c,
                "volume": v,
                "provider": "tradingview",
            }
        )
    return out


@pytest.mark.parametrize("minutes", ["5", "15"])
def test_emulator_one_minute_bars_resampled_equal_its_stored_longer_bars(
    data_dir: Path, minutes: str
) -> None:
    writer = LakeWriter(data_dir=data_dir)
    ones = emulator_bars("NSE:NIFTY", "1")
    longer = emulator_bars("NSE:NIFTY", minutes)
    assert len(ones) == 375 and len(longer) == 375 // int(minutes)
    writer.write("candles", ones)
    writer.write("candles", longer)
    cols = "symbol, ts, round(open, 2), round(high, 2), round(low, 2), round(close, 2), volume"
    resampled = rows(
        data_dir,
        f"SELECT {cols} FROM candles_resampled('NSE:NIFTY', '1', {minutes}) ORDER BY ts",
    )
    stored = rows(
        data_dir,
        f"SELECT {cols} FROM candles WHERE interval = '{minutes}' ORDER BY ts",
    )
    assert resampled == stored
