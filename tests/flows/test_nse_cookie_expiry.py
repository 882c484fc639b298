"""A long `oi-snapshot` outlives its NSE cookies: it must re-prime and stay on NSE.

NSE answers a data call on an expired session with 200 and `{}`. The provider re-primes the
cookies (the HTML page again) and asks once more; the registry never sees a failure, so the
snapshot stays complete, all from NSE, with nothing in `provider_attempts` but successes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from emulated import Emulators, running_emulators
from tests_support import rows_of

from flows.snapshot import oi_snapshot
from providers.calendar import IST
from providers.emulators.chains import chain_at, expiries

# Friday 2026-11-20, 11:00 IST: a trading day, in session.
NOW = datetime(2026, 11, 20, 11, 0, tzinfo=IST)


@pytest.fixture
def emulators(monkeypatch: pytest.MonkeyPatch, data_dir, prefect_harness) -> Iterator[Emulators]:
    monkeypatch.setattr("flows.clock.now", lambda: NOW.astimezone(UTC))
    with running_emulators(monkeypatch, lambda: NOW.astimezone(UTC)) as emu:
        yield emu


def listed_contracts(symbol: str) -> int:
    """Legs the emulated chain lists for every expiry (placeholders are no contracts)."""
    return sum(
        (row.ce is not None) + (row.pe is not None)
        for expiry in expiries(symbol, NOW.date())
        for row in chain_at(symbol, expiry, NOW).strikes
    )


async def test_a_snapshot_whose_cookies_expire_mid_run_is_complete_and_all_from_nse(
    emulators: Emulators, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="providers.nse.provider")
    # contract-info + one v3 call per expiry (7 for NIFTY): a cookie good for 3 answers expires
    # twice in one snapshot.
    emulators.nse.configure(cookie_lifetime=3)

    results = await oi_snapshot(underlyings=["NIFTY"])

    assert results[0].provider == "nse"
    count, n_expiries, providers = rows_of(
        "select count(*), count(distinct expiry), string_agg(distinct provider) "
        "from option_chain where underlying = 'NIFTY'"
    )[0]
    assert count == results[0].rows == listed_contracts("NIFTY")
    assert n_expiries == len(expiries("NIFTY", NOW.date()))
    assert providers == "nse"
    assert len(emulators.nse.requests("page")) >= 3  # primed, then re-primed twice
    attempts = rows_of("select provider, outcome, error_class from provider_attempts")
    assert ("nse", "ok", None) in attempts
    assert [a for a in attempts if a[1] != "ok"] == []  # the re-primes are no failures
    reprimes = [
        r
        for r in caplog.records
        if r.name == "providers.nse.provider" and "re-priming" in r.getMessage()
    ]
    assert len(reprimes) == len(emulators.nse.requests("page")) - 1
    assert all(r.levelno in (logging.INFO, logging.WARNING) for r in reprimes)
    assert not emulators.trendlyne.requests("oi")
