"""Flow `refresh-holidays`: save NSE's published trading holidays for the calendar.

exchange_calendars lags the exchange (its XBOM calendar ends 2026-12-31 today); NSE publishes
the next year's holidays in advance. Weekly is plenty: the list changes a few times a year.
"""

from __future__ import annotations

from datetime import datetime

from prefect import flow

from flows import clock
from flows.direct import run_logger
from flows.runtime import run_settings
from providers.calendar import IST, save_published_holidays
from providers.nse import NseOptionsProvider


def _run_name() -> str:
    return f"refresh-holidays {clock.now().astimezone(IST).date()}"


@flow(name="refresh-holidays", flow_run_name=_run_name)
async def refresh_holidays(only_on_trading_days: bool = False) -> dict[str, object]:
    """Fetch the F&O holiday list from NSE and merge it into the holiday file.

    `only_on_trading_days` is accepted for a uniform schedule and ignored: weekends are fine.
    """
    logger = run_logger()
    settings = run_settings()
    provider = NseOptionsProvider(settings.nse_base_url)
    try:
        days = await provider.get_trading_holidays()
    finally:
        await provider.aclose()
    path = save_published_holidays(days, source="nse holiday-master", path=settings.holidays_path)
    years = sorted({d.year for d in days})
    logger.info("%d published holidays for %s saved to %s", len(days), years, path)
    return {
        "holidays": len(days),
        "years": years,
        "file": str(path),
        "saved_at": datetime.now(IST).isoformat(timespec="seconds"),
    }
