"""NSE India option chains: `query` (request building), `parse` (pure), `provider` (I/O)."""

from providers.interfaces import ProviderPlugin
from providers.nse.provider import NseOptionsProvider
from providers.settings import ProviderSettings


def _from_settings(settings: ProviderSettings) -> NseOptionsProvider:
    return NseOptionsProvider(settings.nse_base_url)


#: The `protrade.providers` entry point (pyproject.toml): first choice for option chains.
plugin = ProviderPlugin(name="nse", factory=_from_settings, priority=100, kinds=("options",))

__all__ = ["NseOptionsProvider", "plugin"]
