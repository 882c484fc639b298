"""Trendlyne option chains and intraday OI: `query` (requests), `parse` (pure), `provider` (I/O)."""

from providers.interfaces import ProviderPlugin
from providers.settings import ProviderSettings
from providers.trendlyne.provider import TrendlyneOptionsProvider


def _from_settings(settings: ProviderSettings) -> TrendlyneOptionsProvider:
    return TrendlyneOptionsProvider(settings.trendlyne_base_url)


#: The `protrade.providers` entry point (pyproject.toml): the fallback for chains and the one
#: provider that answers "as of HH:MM".
plugin = ProviderPlugin(name="trendlyne", factory=_from_settings, priority=50, kinds=("options",))

__all__ = ["TrendlyneOptionsProvider", "plugin"]
