"""Trendlyne option chains and intraday OI: `query` (requests), `parse` (pure), `provider` (I/O)."""

from providers.trendlyne.provider import TrendlyneOptionsProvider

__all__ = ["TrendlyneOptionsProvider"]
