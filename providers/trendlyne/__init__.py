"""Trendlyne option chains and intraday OI: `query` (requests), `parse` (pure), `provider` (I/O)."""

from providers.interfaces import ProviderPlugin
from providers.trendlyne.provider import TrendlyneOptionsProvider

#: The `protrade.providers` entry point (pyproject.toml): the fallback for chains and the one
#: provider that answers "as of HH:MM".
plugin = ProviderPlugin(
    name="trendlyne", factory=TrendlyneOptionsProvider, priority=50, kinds=("options",)
)

__all__ = ["TrendlyneOptionsProvider", "plugin"]
