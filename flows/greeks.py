"""Implied volatility and greeks for option-chain rows, computed before they are written.

The model, for every row whatever its provider: **Black-Scholes on the spot**
(`underlying_value`), European exercise (NSE index options are European), no dividend yield,
a continuously compounded risk-free rate `r` (`PROTRADE_RISK_FREE_RATE`, default 6.5 %, the
area of India's 91-day T-bill), time to expiry in years (ACT/365) from `snapshot_ts` to
15:30 IST on the expiry date. IV is solved from `ltp`.

Units match what NSE shows: `iv_calc` in percent (like the provider's `iv`), `delta` per unit,
`gamma` per point of spot, `theta` per calendar day, `vega` per IV point (1 %).

Rows that cannot be solved get nulls and a reason in `greeks_note`, never a made-up number.

Here, not in storage (storage knows no pricing) and not as a SQL function (the catalog is
opened by a DuckDB CLI that has no Python): the writer stores the results as columns. Fully
vectorized (numpy, `scipy.special.ndtr`): a 4,000-row snapshot costs a few milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flows.settings import DEFAULT_RISK_FREE_RATE


def ndtr(x: np.ndarray) -> np.ndarray:
    """The standard normal CDF (`scipy.special.ndtr`). scipy is imported on first use, not
    with this module: every flow command imports the run context, which imports this, and
    only those that write option chains need it (~0.1 s of start-up for the others)."""
    from scipy.special import ndtr as scipy_ndtr

    result: np.ndarray = scipy_ndtr(x)
    return result


#: Options on NSE expire at the close of the expiry day, 15:30 IST (10:00 UTC).
EXPIRY_TIME_IST = time(15, 30)
_EXPIRY_UTC_US = (15 * 3600 + 30 * 60 - 19_800) * 1_000_000
_YEAR_US = 365 * 86_400 * 1_000_000

#: The solver's volatility bracket (annual, as a fraction): 0.01 % .. 500 %.
SIGMA_LOW = 1e-4
SIGMA_HIGH = 5.0
_MAX_ITERATIONS = 100
#: Solved when the model price is within this of the market price (rupees; prices are quoted
#: to 0.05), or the bracket is narrower than this (absolute volatility).
_PRICE_TOLERANCE = 1e-8
_SIGMA_TOLERANCE = 1e-10

#: Why a row has no greeks (`greeks_note`).
NOTE_NO_PRICE = "no price"
NOTE_NO_SPOT = "no spot"
NOTE_EXPIRED = "expired"
NOTE_BELOW_INTRINSIC = "price at or below intrinsic value"
NOTE_ABOVE_BOUND = "price above the no-arbitrage bound"
NOTE_OUT_OF_RANGE = "implied volatility above 500%"
NOTE_NO_CONVERGENCE = "did not converge"

#: The columns `with_greeks` adds (all in the `option_chain` schema).
GREEK_COLUMNS = ("iv_calc", "delta", "gamma", "theta", "vega", "risk_free_rate", "greeks_note")


@dataclass(frozen=True, slots=True)
class Greeks:
    """Per row: annual IV as a fraction, and the greeks (theta per year, vega per 1.00 of vol);
    NaN where `note` says why."""

    iv: np.ndarray
    delta: np.ndarray
    gamma: np.ndarray
    theta: np.ndarray
    vega: np.ndarray
    note: np.ndarray  # object array: None where solved


def _d1_d2(
    spot: np.ndarray, strike: np.ndarray, t: np.ndarray, rate: np.ndarray, sigma: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    vol_t = sigma * np.sqrt(t)
    d1 = (np.log(spot / strike) + (rate + 0.5 * sigma * sigma) * t) / vol_t
    return d1, d1 - vol_t


def _pdf(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)


def bs_price(
    spot: np.ndarray,
    strike: np.ndarray,
    t: np.ndarray,
    rate: np.ndarray | float,
    sigma: np.ndarray,
    is_call: np.ndarray,
) -> np.ndarray:
    """Black-Scholes price of European calls (`is_call`) and puts, no dividends."""
    rate = np.broadcast_to(np.asarray(rate, dtype=float), np.shape(spot))
    d1, d2 = _d1_d2(spot, strike, t, rate, sigma)
    discounted = strike * np.exp(-rate * t)
    call = spot * ndtr(d1) - discounted * ndtr(d2)
    put = discounted * ndtr(-d2) - spot * ndtr(-d1)
    return np.where(is_call, call, put)


def bs_greeks(
    spot: np.ndarray,
    strike: np.ndarray,
    t: np.ndarray,
    rate: np.ndarray | float,
    sigma: np.ndarray,
    is_call: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(delta, gamma, theta per year, vega per 1.00 of volatility)."""
    rate = np.broadcast_to(np.asarray(rate, dtype=float), np.shape(spot))
    d1, d2 = _d1_d2(spot, strike, t, rate, sigma)
    sqrt_t = np.sqrt(t)
    density = _pdf(d1)
    discounted = strike * np.exp(-rate * t)
    delta = np.where(is_call, ndtr(d1), ndtr(d1) - 1.0)
    gamma = density / (spot * sigma * sqrt_t)
    decay = -spot * density * sigma / (2.0 * sqrt_t)
    theta = np.where(
        is_call, decay - rate * discounted * ndtr(d2), decay + rate * discounted * ndtr(-d2)
    )
    vega = spot * density * sqrt_t
    return delta, gamma, theta, vega


def implied_vol(
    price: np.ndarray,
    spot: np.ndarray,
    strike: np.ndarray,
    t: np.ndarray,
    rate: np.ndarray | float,
    is_call: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(IV as a fraction, note) per row: NaN with a reason where there is no IV to find.

    Newton's method on all rows at once, safeguarded by bisection: each row keeps a bracket
    [low, high] that holds its root (the price rises with volatility), and a Newton step that
    leaves the bracket (or a vanishing vega) is replaced by the bracket's midpoint. So every
    row converges, quadratically near the root, without a per-row Python loop.
    """
    price, spot, strike, t = (np.asarray(a, dtype=float) for a in (price, spot, strike, t))
    is_call = np.asarray(is_call, dtype=bool)
    rate = np.broadcast_to(np.asarray(rate, dtype=float), price.shape)
    n = price.shape[0]
    note = np.full(n, None, dtype=object)
    iv = np.full(n, np.nan)

    def flag(mask: np.ndarray, why: str) -> None:
        note[mask & (note == None)] = why  # noqa: E711 (elementwise on an object array)

    flag(~np.isfinite(spot) | (spot <= 0), NOTE_NO_SPOT)
    flag(~np.isfinite(price) | (price <= 0), NOTE_NO_PRICE)
    flag(~np.isfinite(t) | (t <= 0), NOTE_EXPIRED)
    ok = note == None  # noqa: E711
    # No-arbitrage bounds of a European option without dividends.
    discounted = strike * np.exp(-rate * np.where(ok, t, 0.0))
    lower = np.where(
        is_call, np.maximum(spot - discounted, 0.0), np.maximum(discounted - spot, 0.0)
    )
    upper = np.where(is_call, spot, discounted)
    flag(ok & (price <= lower + _PRICE_TOLERANCE), NOTE_BELOW_INTRINSIC)
    flag(ok & (price >= upper), NOTE_ABOVE_BOUND)
    ok = note == None  # noqa: E711
    idx = np.flatnonzero(ok)
    if idx.size:
        s, k, tt, r, c, p = spot[idx], strike[idx], t[idx], rate[idx], is_call[idx], price[idx]
        too_high = bs_price(s, k, tt, r, np.full(idx.size, SIGMA_HIGH), c) < p
        solved, converged = _solve(p, s, k, tt, r, c)
        iv[idx] = np.where(converged & ~too_high, solved, np.nan)
        note[idx[too_high]] = NOTE_OUT_OF_RANGE
        note[idx[~converged & ~too_high]] = NOTE_NO_CONVERGENCE
    return iv, note


def _solve(
    price: np.ndarray,
    spot: np.ndarray,
    strike: np.ndarray,
    t: np.ndarray,
    rate: np.ndarray,
    is_call: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    low = np.full(price.shape, SIGMA_LOW)
    high = np.full(price.shape, SIGMA_HIGH)
    # Brenner-Subrahmanyam's at-the-money approximation as the start, kept inside the bracket.
    sigma = np.clip(np.sqrt(2.0 * np.pi / t) * price / spot, 0.05, 1.0)
    done = np.zeros(price.shape, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for _ in range(_MAX_ITERATIONS):
            diff = bs_price(spot, strike, t, rate, sigma, is_call) - price
            done |= (np.abs(diff) < _PRICE_TOLERANCE) | (high - low < _SIGMA_TOLERANCE)
            if done.all():
                break
            high = np.where(~done & (diff > 0), sigma, high)
            low = np.where(~done & (diff < 0), sigma, low)
            vega = bs_greeks(spot, strike, t, rate, sigma, is_call)[3]
            newton = sigma - diff / vega
            inside = np.isfinite(newton) & (newton > low) & (newton < high)
            sigma = np.where(done, sigma, np.where(inside, newton, 0.5 * (low + high)))
    return sigma, done


def years_to_expiry(snapshot_ts: pa.Array, expiry: pa.Array) -> np.ndarray:
    """ACT/365 years from each snapshot to 15:30 IST of its expiry date (NaN where null)."""
    expiry_us = (
        pc.cast(expiry, pa.int32()).to_numpy(zero_copy_only=False).astype(float) * 86_400e6
        + _EXPIRY_UTC_US
    )
    snap_us = pc.cast(snapshot_ts, pa.int64()).to_numpy(zero_copy_only=False).astype(float)
    return (expiry_us - snap_us) / _YEAR_US


def _floats(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    column = pc.cast(table[name].combine_chunks(), pa.float64())
    return pc.fill_null(column, np.nan).to_numpy(zero_copy_only=False)


def chain_greeks(table: pa.Table, rate: float) -> Greeks:
    """IV and greeks of every option-chain row of `table`, from its ltp, spot and expiry."""
    is_call = pc.fill_null(pc.equal(table["option_type"], "CE"), False).to_numpy(
        zero_copy_only=False
    )
    is_put = pc.fill_null(pc.equal(table["option_type"], "PE"), False).to_numpy(
        zero_copy_only=False
    )
    spot = _floats(table, "underlying_value")
    strike = _floats(table, "strike")
    t = years_to_expiry(table["snapshot_ts"].combine_chunks(), table["expiry"].combine_chunks())
    price = _floats(table, "ltp")
    iv, note = implied_vol(price, spot, strike, t, rate, is_call)
    bad_type = ~(is_call | is_put)
    iv[bad_type] = np.nan
    note[bad_type] = "unknown option type"
    solved = np.isfinite(iv)
    safe_iv = np.where(solved, iv, 0.2)  # any valid volatility: the rows are masked below
    safe_t = np.where(solved, t, 1.0)
    safe_spot = np.where(solved, spot, 1.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        delta, gamma, theta, vega = bs_greeks(safe_spot, strike, safe_t, rate, safe_iv, is_call)
    nan = np.nan
    return Greeks(
        iv,
        np.where(solved, delta, nan),
        np.where(solved, gamma, nan),
        np.where(solved, theta, nan),
        np.where(solved, vega, nan),
        note,
    )


def with_greeks(table: pa.Table, rate: float = DEFAULT_RISK_FREE_RATE) -> pa.Table:
    """Option-chain rows with `GREEK_COLUMNS` set (replacing any present): IV in percent,
    theta per calendar day, vega per IV point; nulls and `greeks_note` where unsolved."""
    if table.num_rows == 0:
        return table
    g = chain_greeks(table, rate)

    def column(values: np.ndarray) -> pa.Array:
        return pa.array(values, pa.float64(), from_pandas=True)  # NaN -> null

    columns = {
        "iv_calc": column(g.iv * 100.0),
        "delta": column(g.delta),
        "gamma": column(g.gamma),
        "theta": column(g.theta / 365.0),
        "vega": column(g.vega / 100.0),
        "risk_free_rate": pa.array(np.full(table.num_rows, rate), pa.float64()),
        "greeks_note": pa.array(g.note.tolist(), pa.string()),
    }
    out = table
    for name, values in columns.items():
        if name in out.column_names:
            out = out.set_column(out.column_names.index(name), name, values)
        else:
            out = out.append_column(name, values)
    return out
