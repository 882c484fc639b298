"""IV and greeks of option-chain rows (flows/greeks.py) and the writer that stores them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from flows.greeks import (
    NOTE_ABOVE_BOUND,
    NOTE_BELOW_INTRINSIC,
    NOTE_EXPIRED,
    NOTE_NO_PRICE,
    NOTE_NO_SPOT,
    NOTE_OUT_OF_RANGE,
    bs_greeks,
    bs_price,
    implied_vol,
    with_greeks,
    years_to_expiry,
)
from flows.lake_rows import option_chain_table
from flows.runtime import RunWriter
from providers.records import OptionChainRow
from storage.catalog import connect

CALL, PUT = np.array([True]), np.array([False])


def one(x: float) -> np.ndarray:
    return np.array([x], dtype=float)


def test_prices_match_hulls_worked_example() -> None:
    # Hull, Options, Futures, and Other Derivatives: S=42, K=40, r=10%, sigma=20%, T=0.5.
    args = (one(42), one(40), one(0.5), 0.10, one(0.2))
    assert bs_price(*args, CALL)[0] == pytest.approx(4.76, abs=0.005)
    assert bs_price(*args, PUT)[0] == pytest.approx(0.81, abs=0.005)
    assert bs_greeks(*args, CALL)[0][0] == pytest.approx(0.7791, abs=5e-5)


def test_greeks_match_hulls_greek_letters_example() -> None:
    # Hull's call on a non-dividend stock: S=49, K=50, r=5%, sigma=20%, T=20 weeks (0.3846):
    # delta 0.522, gamma 0.066, theta -4.31 per year, vega 12.1 per 1.00 of volatility.
    delta, gamma, theta, vega = bs_greeks(one(49), one(50), one(0.3846), 0.05, one(0.2), CALL)
    assert delta[0] == pytest.approx(0.522, abs=5e-4)
    assert gamma[0] == pytest.approx(0.066, abs=5e-4)
    assert theta[0] == pytest.approx(-4.31, abs=5e-3)
    assert vega[0] == pytest.approx(12.1, abs=0.05)


def test_gamma_matches_haugs_example() -> None:
    # Haug, The Complete Guide to Option Pricing Formulas: S=55, K=60, T=0.75, r=b=10%,
    # sigma=30%: gamma 0.0278 (calls and puts alike).
    for kind in (CALL, PUT):
        gamma = bs_greeks(one(55), one(60), one(0.75), 0.10, one(0.3), kind)[1]
        assert gamma[0] == pytest.approx(0.0278, abs=5e-5)


def test_put_delta_is_call_delta_minus_one_and_put_call_parity_holds() -> None:
    s, k, t, r, v = one(25_800), one(26_000), one(0.05), 0.065, one(0.14)
    call, put = bs_price(s, k, t, r, v, CALL)[0], bs_price(s, k, t, r, v, PUT)[0]
    assert call - put == pytest.approx(s[0] - k[0] * np.exp(-r * t[0]), abs=1e-6)
    assert bs_greeks(s, k, t, r, v, PUT)[0][0] == pytest.approx(
        bs_greeks(s, k, t, r, v, CALL)[0][0] - 1.0, abs=1e-12
    )


def test_implied_vol_recovers_the_volatility_a_price_was_made_with() -> None:
    rng = np.random.default_rng(5)
    n = 2_000
    spot = np.full(n, 25_800.0)
    strike = spot * rng.uniform(0.85, 1.15, n)
    t = rng.uniform(2 / 365, 1.0, n)
    sigma = rng.uniform(0.08, 0.9, n)
    is_call = rng.random(n) < 0.5
    price = bs_price(spot, strike, t, 0.065, sigma, is_call)
    iv, note = implied_vol(price, spot, strike, t, 0.065, is_call)
    solved = np.isfinite(iv)
    # Every IV found reprices the option; a number is never returned otherwise.
    repriced = bs_price(spot[solved], strike[solved], t[solved], 0.065, iv[solved], is_call[solved])
    assert np.allclose(repriced, price[solved], rtol=0, atol=1e-6)
    assert all(x is None for x in note[solved]) and all(x is not None for x in note[~solved])
    # Where the price tells volatilities apart (a price the quote resolves, and a vega of at
    # least a rupee per 100 points of IV), it is the volatility the price was made with.
    vega = bs_greeks(spot, strike, t, 0.065, sigma, is_call)[3]
    usable = (price > 1.0) & (vega > 1.0)
    assert usable.sum() > n * 0.8
    assert np.allclose(iv[usable], sigma[usable], rtol=0, atol=1e-6)


def test_rows_without_an_iv_get_null_and_the_reason_never_a_number() -> None:
    spot = np.array([42.0, 42.0, 42.0, 42.0, np.nan, 42.0])
    strike = np.full(6, 40.0)
    t = np.array([0.5, 0.5, -0.01, 0.5, 0.5, 0.5])
    price = np.array([1.5, 0.0, 3.0, 38.0, 3.0, 43.0])
    is_call = np.array([True, True, True, False, True, True])
    iv, note = implied_vol(price, spot, strike, t, 0.10, is_call)
    assert np.isnan(iv).all()
    assert note.tolist() == [
        NOTE_BELOW_INTRINSIC,  # a call worth less than S - K e^-rT (3.95)
        NOTE_NO_PRICE,
        NOTE_EXPIRED,
        NOTE_OUT_OF_RANGE,  # a put at 38.0 (bound 40 e^-0.05 = 38.05): worth 34.97 at 500%
        NOTE_NO_SPOT,
        NOTE_ABOVE_BOUND,  # a call worth more than the stock
    ]


def test_time_to_expiry_runs_to_1530_ist_of_the_expiry_day() -> None:
    snap = pa.array([datetime(2026, 11, 26, 4, 0, tzinfo=UTC)], pa.timestamp("us", tz="UTC"))
    years = years_to_expiry(snap, pa.array([date(2026, 11, 26)], pa.date32()))
    assert years[0] == pytest.approx(6 / (365 * 24))  # 09:30 -> 15:30 IST


def chain_row(ltp: float | None, spot: float | None, **kw: object) -> OptionChainRow:
    base = dict(
        snapshot_ts=datetime(2026, 11, 23, 4, 0, tzinfo=UTC),
        underlying="NIFTY",
        expiry=date(2026, 11, 26),
        strike=26_000.0,
        option_type="CE",
        open_interest=10.0,
        change_in_oi=0.0,
        volume=1.0,
        iv=None,
        ltp=ltp,
        underlying_value=spot,
        provider="trendlyne",
    )
    base.update(kw)
    return OptionChainRow(**base)  # type: ignore[arg-type]


def test_with_greeks_stores_percent_iv_and_per_day_theta_per_point_vega() -> None:
    expiry = date(2026, 11, 26)
    snap = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)
    t = (datetime(2026, 11, 26, 10, 0, tzinfo=UTC) - snap) / timedelta(days=365)
    price = bs_price(one(25_900), one(26_000), one(t), 0.07, one(0.12), CALL)[0]
    table = with_greeks(option_chain_table([chain_row(price, 25_900.0)]), rate=0.07)
    row = table.to_pylist()[0]
    delta, gamma, theta, vega = bs_greeks(one(25_900), one(26_000), one(t), 0.07, one(0.12), CALL)
    assert row["expiry"] == expiry
    assert row["iv_calc"] == pytest.approx(12.0, abs=1e-5)
    assert row["delta"] == pytest.approx(delta[0], rel=1e-6)
    assert row["gamma"] == pytest.approx(gamma[0], rel=1e-6)
    assert row["theta"] == pytest.approx(theta[0] / 365, rel=1e-6)
    assert row["vega"] == pytest.approx(vega[0] / 100, rel=1e-6)
    assert row["risk_free_rate"] == 0.07
    assert row["greeks_note"] is None


class Registry:
    """Just what RunWriter asks of the registry: the options providers' order."""

    def providers(self, kind: str) -> list[tuple[str, object]]:
        return [("nse", object()), ("trendlyne", object())]


def test_the_run_writer_stores_greeks_for_every_provider_and_says_why_when_it_cannot(
    data_dir: Path,
) -> None:
    writer = RunWriter(Registry(), data_dir, risk_free_rate=0.05)  # type: ignore[arg-type]
    writer.write(
        "option_chain",
        option_chain_table(
            [
                chain_row(150.0, 25_950.0),  # Trendlyne sends no IV: ours is computed anyway
                chain_row(None, 25_950.0, strike=26_100.0),
                chain_row(150.0, None, strike=26_200.0),  # no spot held for that minute
            ]
        ),
    )
    conn = connect(data_dir)
    got = conn.execute(
        "SELECT strike, iv, iv_calc IS NOT NULL, delta > 0, theta < 0, risk_free_rate, "
        "greeks_note FROM option_chain ORDER BY strike"
    ).fetchall()
    conn.close()
    assert got == [
        (26_000.0, None, True, True, True, 0.05, None),
        (26_100.0, None, False, None, None, 0.05, NOTE_NO_PRICE),
        (26_200.0, None, False, None, None, 0.05, NOTE_NO_SPOT),
    ]


def test_the_run_context_does_not_import_scipy_until_a_chain_is_priced() -> None:
    """Every flow command imports the run context; only chain writers need scipy (~0.1 s)."""
    import subprocess
    import sys

    code = (
        "import sys, flows.runtime\n"
        "before = 'scipy' in sys.modules\n"
        "import numpy as np\n"
        "from flows.greeks import ndtr\n"
        "assert abs(float(ndtr(np.array([0.0]))[0]) - 0.5) < 1e-12\n"
        "print(before, 'scipy' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]
